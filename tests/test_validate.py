"""Config validated before any work: a value the user can fix stops ``python -m mcl.train`` in
one line naming the key, the value and what is allowed, with exit code 2, in seconds (before
Hydra creates a run directory and before torch is imported), leaving no run directory behind.
Before, most of these were tracebacks, some after minutes of zero-shot evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcl.config import ConfigError
from mcl.validate import precheck, unwritable, validate
from tests.conftest import MICRO, compose_cfg

ROOT = Path(__file__).resolve().parent.parent


def _mcl(tmp: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "MCL_LOGS": str(tmp / "logs"), "MCL_CACHE": str(tmp / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "mcl.train", *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout,
    )  # fmt: skip


def _no_work(tmp: Path) -> None:
    """Refused before any work: no run or sweep directory, nothing built into the cache (a
    check on what was done, not a wall-clock bound, which flakes on a loaded machine)."""
    assert not (tmp / "logs").exists()
    assert not (tmp / "cache").exists() or not any((tmp / "cache").iterdir())


def _one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr[-3000:]
    assert lines[0].startswith("error: ") and "Traceback" not in p.stderr
    return lines[0]


BAD = {
    # the issue's list, and the key / value / allowed each message must name
    "train.steps=-1": ("train.steps=-1", "an integer >= 1"),
    "train.steps=0": ("train.steps=0", "an integer >= 1"),
    "train.steps=abc": ("train.steps=abc", "an integer >= 1"),
    "steps=-5": ("steps=-5: unknown key", "did you mean"),
    "train.batch_size=0": ("train.batch_size=0", "an integer >= 1"),
    "method.lr=nan": ("method.lr=nan", "a finite number > 0"),
    "lr=nan": ("lr=nan: unknown key", "method.lr"),
    "seed=abc": ("seed=abc", "an integer in [0, "),
    "seed=-1": ("seed=-1", "an integer in [0, "),
    "bench.tasks=[]": ("bench.tasks=[]", "a non-empty list"),
    "data.max_bad_share=1.5": ("data.max_bad_share=1.5", "<= 1"),
    "method.r=abc": ("method.r=abc", "a number (default 8)"),
    "progress=maybe": ("progress=maybe", "true or false"),
    "train.checkpoint_every=0": ("train.checkpoint_every=0", "or null"),
    "train.threads=0": ("train.threads=0", "an integer >= 1"),
    "train.steps=[": ("cannot parse the command line", "["),
}


@pytest.mark.parametrize("arg", list(BAD))
def test_a_bad_value_is_one_line_exit_2_before_any_work(tmp_path, arg):
    p = _mcl(tmp_path, "experiment=smoke", arg)
    assert p.returncode == 2, p.stderr[-2000:]
    line = _one_error_line(p)
    for part in BAD[arg]:
        assert part in line, line
    _no_work(tmp_path)  # Hydra never started


def test_the_issue_command_line(tmp_path):
    """``python -m mcl.train experiment=smoke train.steps=-1``, exactly."""
    p = _mcl(tmp_path, "experiment=smoke", "train.steps=-1")
    assert p.returncode == 2
    assert _one_error_line(p) == (
        "error: train.steps=-1: expected an integer >= 1 (optimizer steps per task), or null"
    )
    _no_work(tmp_path)


def test_a_sweep_checks_every_value_before_the_first_job(tmp_path):
    p = _mcl(tmp_path, "-m", "experiment=smoke", "seed=0,1,-2", "train.steps=1")
    assert p.returncode == 2
    assert "seed=-2" in _one_error_line(p)
    _no_work(tmp_path)  # no sweep directory either


def test_a_missing_gpu_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    p = _mcl(tmp_path, "hardware=gpu")
    assert p.returncode == 2
    line = _one_error_line(p)
    assert "hardware.accelerator=gpu: no CUDA GPU" in line and "hardware=cpu" in line
    _no_work(tmp_path)


def test_a_read_only_log_directory_is_one_line(tmp_path, monkeypatch):
    ro = _read_only_dir(tmp_path)
    p = _mcl(tmp_path, f"paths.log_dir={ro}/logs")
    assert p.returncode == 2
    line = _one_error_line(p)
    assert f"paths.log_dir={ro}/logs: not writable" in line and "MCL_LOGS" in line
    _no_work(tmp_path)


def _read_only_dir(tmp_path: Path) -> Path:
    """A directory this process cannot write: chmod for a user, a read-only tmpfs for root
    (where chmod does not stop writes); skipped where neither is possible."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        return ro
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)])
    if r.returncode != 0:
        pytest.skip("root without mount: no read-only directory to test with")
    _MOUNTS.append(ro)
    return ro


_MOUNTS: list[Path] = []


@pytest.fixture(autouse=True)
def _unmount():
    yield
    while _MOUNTS:
        subprocess.run(["umount", str(_MOUNTS.pop())])


def test_unwritable_tries_for_real(tmp_path):
    assert unwritable(tmp_path / "new" / "deeper") is None
    assert not (tmp_path / "new").exists()  # the probe cleaned up after itself
    f = tmp_path / "file"
    f.write_text("x")
    assert "is a file" in unwritable(f / "sub")


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ('{"name": "x", "tasks": [', "is not valid JSON (line 1 column"),
        ("[]", "is not a JSON object"),
        ('{"name": "x"}', 'has no "tasks" list'),
        ('{"name": "x", "tasks": [{"train": {}}]}', 'without a "name"'),
        ('{"name": "x", "tasks": [{"name": "a", "train": {"shards": 3}}]}', '"shards" list'),
    ],
)
def test_a_malformed_bench_json_is_one_line(tmp_path, text, expect):
    root = tmp_path / "bench"
    root.mkdir()
    (root / "bench.json").write_text(text)
    p = _mcl(tmp_path, "bench=coin", f"bench.root={root}", "bench.source=real")
    assert p.returncode == 2
    line = _one_error_line(p)
    assert f"bench.root={root}" in line and expect in line, line
    _no_work(tmp_path)


def test_a_local_model_path_that_does_not_exist(tmp_path):
    p = _mcl(tmp_path, "model=llava15_7b", "model.path=/no/such/llava")
    assert p.returncode == 2
    assert "model.path=/no/such/llava" in _one_error_line(p)


@pytest.mark.parametrize(
    ("arg", "expect"),
    [
        ("bench.tasks=[color,nope]", "bench.tasks=[color,nope]: nope not in the synth twin"),
        ("bench.unseen=[compse]", "bench.unseen=[compse]: compse not in the synth twin"),
        ("bench.synthetic.twin=nope", "bench.synthetic.twin=nope: expected one of"),
    ],
)
def test_task_names_are_checked_against_the_benchmark(tmp_path, arg, expect):
    p = _mcl(tmp_path, "experiment=smoke", arg)
    assert p.returncode == 2
    assert expect in _one_error_line(p)
    _no_work(tmp_path)


@pytest.mark.slow
def test_an_error_found_once_the_run_started_removes_its_empty_run_dir(tmp_path):
    """A mistake only the benchmark's data reveals (a scorer mode a task cannot take): Hydra
    had made the run directory; mcl removes it again, since nothing was written to it."""
    bad = "bench.scorer_mode={color: best_ref_cider}"
    p = _mcl(tmp_path, *MICRO, bad, "progress=false", timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "bench.scorer_mode" in _one_error_line(p)
    runs = tmp_path / "logs" / "synth" / "seq_lora" / "s0"
    assert runs.exists() and not list(runs.iterdir())


def test_validate_is_also_the_programmatic_gate(tmp_path):
    from mcl.train import run

    with pytest.raises(ConfigError, match=r"^train.batch_size=0: expected an integer >= 1$"):
        run(compose_cfg(tmp_path, [*MICRO, "train.batch_size=0"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    validate(compose_cfg(tmp_path, MICRO))  # the test configuration itself is fine


@pytest.mark.slow
def test_every_shipped_option_passes_the_precheck():
    """No preset is refused by the validator (GPU presets aside, on a machine without one)."""
    from mcl.config import GROUPS, choices

    for group in GROUPS:
        for option in choices(group):
            try:
                precheck([f"{group}={option}"])
            except ConfigError as e:
                assert "GPU" in str(e), (group, option, str(e))


# ------------------------------------------------------------------------------------ threads
def test_threads_default_respects_omp_and_an_override(tmp_path, monkeypatch, capsys):
    import torch

    import mcl.train as train

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(train, "_THREADS_TOLD", False)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert train.set_threads(None) == 1 and torch.get_num_threads() == 1
        assert "torch threads: 1 (OMP_NUM_THREADS" in capsys.readouterr().out
        assert train.set_threads(None) == 1
        assert capsys.readouterr().out == ""  # said once
        assert train.set_threads(2) == 2 and torch.get_num_threads() == 2  # train.threads wins
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
        assert train.set_threads(None) == 3
        monkeypatch.delenv("SLURM_CPUS_PER_TASK")
        cpus = len(os.sched_getaffinity(0))
        assert train.set_threads(None) == max(1, min(8, cpus // 2))
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_the_cli_says_how_many_threads_once(tmp_path):
    env_over = [*MICRO, "bench.tasks=[color]", "bench.unseen=[]", "train.steps=2"]
    p = _mcl(tmp_path, *env_over, "progress=false", "train.threads=1", timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("[mcl] torch threads: 1 (train.threads;") == 1
    (res,) = (tmp_path / "logs").rglob("results.json")
    assert json.loads(res.read_text())["config"]["train"]["threads"] == 1


def test_a_run_directory_given_on_the_command_line_passes_the_precheck(tmp_path):
    """``paths.output_dir=DIR`` replaces Hydra's run directory; the defaults it is compared
    against still point at ``${hydra:...}``, which only resolves inside a run."""
    precheck(["experiment=smoke", f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match="train.steps"):
        precheck(["experiment=smoke", f"paths.output_dir={tmp_path / 'run'}", "train.steps=x"])
