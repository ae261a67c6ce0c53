"""Resume is default-safe: with every logger and the default timestamped run directories,
``resume=true`` continues the unfinished run; a config that would change its results refuses,
naming the keys; a run killed anywhere ends with an uninterrupted run's weights and matrix;
damaged checkpoints are never resumed from; a run directory is owned by one run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save

from mcl.config import ConfigError
from mcl.train import run
from tests.conftest import MICRO, compose_cfg

pytestmark = pytest.mark.slow  # kills, power cuts, damaged checkpoints, then a resume

ROOT = Path(__file__).resolve().parent.parent


def _adapters(out: Path, t: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"task{t:02d}" / "adapters.safetensors"))


def _same_weights(a: Path, b: Path, tasks=(0, 1)) -> None:
    for t in tasks:
        x, y = _adapters(a, t), _adapters(b, t)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), t


def _power_cut(monkeypatch, task: int, step: int) -> list:
    """Make training raise at ``step`` of ``task`` (0-based), once; returns the calls list."""
    from mcl.methods.base import ContinualMethod

    real = ContinualMethod.training_step
    calls: list = []

    def dies(self, batch, i):
        if self.current_task == task and self.trainer.global_step == step and not calls:
            calls.append("cut")
            raise RuntimeError("power cut")
        return real(self, batch, i)

    monkeypatch.setattr(ContinualMethod, "training_step", dies)
    return calls


def _cfg(tmp: Path, over: list[str], out: Path | None = None):
    cfg = compose_cfg(tmp, over)
    if out is not None:  # as Hydra's timestamped run directory would be
        cfg.paths.output_dir = str(out)
    return cfg


def _hydra_like(parent: Path, stamp: str, over: list[str], tmp: Path):
    """A config whose run directory (and so the CSV logger's save_dir) is timestamped, as
    ``python -m mcl.train`` makes it."""
    return _cfg(tmp, over, parent / stamp)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the sequences the tests below interrupt."""
    tmp = tmp_path_factory.mktemp("ref")
    out = {}
    for name, over in {"short": MICRO, "long": LONG}.items():
        cfg = compose_cfg(tmp / name, over)
        out[name] = (Path(cfg.paths.output_dir), run(cfg, Path(cfg.paths.output_dir)))
    return out


# 128 samples / batch 8 = 16 steps an epoch: 40 steps cross two epoch boundaries
LONG = [*MICRO, "train.steps=40", "train.checkpoint_every=4"]


@pytest.mark.parametrize(
    ("every", "cut", "saved"),
    [(4, 22, 20), (16, 18, 16), (8, 37, 32)],
    ids=["inside-epoch-2", "at-the-end-of-epoch-1", "at-the-end-of-epoch-2"],
)
def test_mid_task_resume_across_an_epoch_boundary_is_bit_identical(
    reference, tmp_path, monkeypatch, every, cut, saved
):
    """Killed at step 22 of task 2 (checkpoint at 20, inside epoch 2), the resumed stream must
    end epoch 2 where the uninterrupted one did (not 16 batches later) and go on identically;
    likewise from a checkpoint at an epoch's last step."""
    ref_out, ref = reference["long"]
    over = [*LONG, f"train.checkpoint_every={every}"]
    cfg = compose_cfg(tmp_path, over)
    out = Path(cfg.paths.output_dir)
    _power_cut(monkeypatch, task=1, step=cut)
    with pytest.raises(RuntimeError, match="power cut"):
        run(cfg, out)
    ckpt = out / "checkpoints" / "task01-partial" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == saved
    monkeypatch.undo()
    resumed = run(compose_cfg(tmp_path, [*over, "resume=true"]), out)
    _same_weights(ref_out, out)
    assert resumed["matrix"] == json.loads(json.dumps(ref["matrix"]))


def test_resume_true_continues_with_the_default_logger_in_a_new_timestamped_dir(
    reference, tmp_path, monkeypatch, capsys
):
    """Each launch gets its own timestamped directory, and the CSV logger's save_dir with it:
    resume=true must still find and continue the unfinished run (it used to start over)."""
    ref_out, ref = reference["short"]
    parent = tmp_path / "logs" / "synth" / "seq_lora" / "s0"
    first = parent / "2026-01-01_00-00-00"
    _power_cut(monkeypatch, task=1, step=3)
    with pytest.raises(RuntimeError, match="power cut"):
        run(_hydra_like(parent, first.name, MICRO, tmp_path), first)
    monkeypatch.undo()
    again = parent / "2026-01-01_00-05-00"
    cfg = _hydra_like(parent, again.name, [*MICRO, "resume=true"], tmp_path)
    resumed = run(cfg, again)
    out = capsys.readouterr().out
    assert f"continuing the run in {first}" in out and "resuming after task 1" in out
    assert resumed["complete"] and resumed["matrix"] == json.loads(json.dumps(ref["matrix"]))
    _same_weights(ref_out, first)
    assert not again.exists() or not any(again.iterdir())  # nothing written to the new one
    # the CSV logger followed the run to its directory
    assert (first / "logs").is_dir() and len(list((first / "logs").glob("version_*"))) == 2
    assert json.loads((first / "results.json").read_text())["complete"] is True


@pytest.mark.parametrize("logger", ["none", "wandb"])
def test_resume_true_continues_with_every_logger(tmp_path, monkeypatch, logger, reference):
    if logger == "wandb":
        pytest.importorskip("wandb")
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("HOME", str(tmp_path))
    _, ref = reference["short"]
    over = [*MICRO, f"logger={logger}"]
    parent = tmp_path / "runs"
    _power_cut(monkeypatch, task=1, step=3)
    with pytest.raises(RuntimeError, match="power cut"):
        run(_hydra_like(parent, "a", over, tmp_path), parent / "a")
    monkeypatch.undo()
    if logger == "wandb":
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("HOME", str(tmp_path))
    resumed = run(_hydra_like(parent, "b", [*over, "resume=true"], tmp_path), parent / "b")
    assert resumed["matrix"] == json.loads(json.dumps(ref["matrix"]))
    assert json.loads((parent / "a" / "results.json").read_text())["complete"] is True


def test_a_changed_config_refuses_to_resume_naming_the_keys(tmp_path, monkeypatch):
    parent = tmp_path / "runs"
    _power_cut(monkeypatch, task=1, step=3)
    with pytest.raises(RuntimeError, match="power cut"):
        run(_hydra_like(parent, "a", MICRO, tmp_path), parent / "a")
    monkeypatch.undo()
    over = [*MICRO, "resume=true", "train.steps=7", "method.lr=2e-3", "train.checkpoint_every=2"]
    with pytest.raises(ConfigError) as e:
        run(_hydra_like(parent, "b", over, tmp_path), parent / "b")
    msg = str(e.value)
    assert "\n" not in msg and str(parent / "a") in msg
    assert "train.steps (6 then, 7 now)" in msg and "method.lr" in msg
    assert "checkpoint_every" not in msg  # it does not change results
    assert not (parent / "b").exists()
    # the same directory with a changed config refuses too (never silently starts over)
    with pytest.raises(ConfigError, match="the unfinished run in .* train.steps"):
        run(_hydra_like(parent, "a", over, tmp_path), parent / "a")
    # and so does a finished run's directory (it used to hand back the old results as done)
    run(_hydra_like(parent, "a", [*MICRO, "resume=true"], tmp_path), parent / "a")
    with pytest.raises(ConfigError, match="the finished run in .* train.steps"):
        run(_hydra_like(parent, "a", over, tmp_path), parent / "a")


def test_resume_of_a_complete_run_changes_nothing(reference, tmp_path, capsys):
    import shutil

    ref_out, ref = reference["short"]
    out = tmp_path / "copy"
    shutil.copytree(ref_out, out)
    before = (out / "results.json").read_bytes()
    res = run(_cfg(tmp_path, [*MICRO, "resume=true"], out), out)
    assert "already complete" in capsys.readouterr().out
    assert (out / "results.json").read_bytes() == before and res["matrix"] == ref["matrix"]


# ---------------------------------------------------------------- kill anywhere, then resume
def _cli(tmp: Path, *extra: str, run_dir: Path | None = None) -> list[str]:
    return [
        sys.executable, "-m", "mcl.train", *FOUR, f"paths.log_dir={tmp}/logs",
        f"paths.data_dir={tmp}/data", f"paths.cache_dir={tmp}/cache", "progress=false",
        *([f"hydra.run.dir={run_dir}"] if run_dir else []), *extra,
    ]  # fmt: skip


FOUR = [o for o in MICRO if not o.startswith(("bench.tasks", "train.steps"))] + [
    "bench.tasks=[color,count,position,ocr]",
    "train.steps=30",
]


def test_kill_9_at_a_random_point_of_a_task_with_the_default_logger_then_resume(tmp_path):
    """The issue's check, as a user runs it: no pinned run directory (each launch gets its own
    timestamped one, and the CSV logger's save_dir with it), SIGKILL at a random moment after
    task 1, then the same command with resume=true: it continues the killed run's directory and
    ends with the uninterrupted run's matrix."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    full = tmp_path / "full"
    subprocess.run(_cli(tmp_path, run_dir=full), check=True, env=env, capture_output=True)
    runs = tmp_path / "logs" / "synth" / "seq_lora" / "s0"
    proc = subprocess.Popen(
        _cli(tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 600
    while not list(runs.glob("*/checkpoints/task00/state.json")) and time.time() < deadline:
        assert proc.poll() is None, "the run ended before task 1 was saved"
        time.sleep(0.02)
    # anywhere in tasks 2 and 3, measured on this machine: the uninterrupted run's checkpoints
    # say how long those two tasks took (a fixed number of seconds finished the run on a fast one)
    saved = [(full / f"checkpoints/task{t:02d}/state.json").stat().st_mtime for t in (0, 2)]
    span = saved[1] - saved[0]
    delay = random.Random().uniform(0.0, 0.9 * span)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (killed,) = runs.iterdir()
    partial = json.loads((killed / "results.json").read_text())
    assert partial["complete"] is False, f"finished within {delay:.2f} s"
    assert (killed / "run.lock").exists()  # left behind by the dead run: stale
    time.sleep(1.1)  # the next launch gets its own timestamp
    p = subprocess.run(_cli(tmp_path, "resume=true"), env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"continuing the run in {killed}" in p.stdout
    assert [d.name for d in runs.iterdir()] == [killed.name]  # no second directory left
    a = json.loads((full / "results.json").read_text())
    b = json.loads((killed / "results.json").read_text())
    assert b["complete"] and a["matrix"] == b["matrix"], f"killed {delay:.2f} s after task 1"
    _same_weights(full, killed, tasks=(0, 1, 2, 3))


# 40 steps of 16-step epochs, a checkpoint every 3 steps: most cuts resume inside an epoch and
# train on across the next epoch boundary
KILLS = [*MICRO, "train.steps=40", "train.checkpoint_every=3"]


@pytest.fixture(scope="module")
def kills_reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kills")
    cfg = compose_cfg(tmp, KILLS)
    return Path(cfg.paths.output_dir), run(cfg, Path(cfg.paths.output_dir))


@pytest.mark.parametrize("draw", range(4))
def test_power_cut_at_random_steps_then_resume_is_bit_identical(
    kills_reference, tmp_path, monkeypatch, draw
):
    """A crash at a random optimizer step of a random task (a fixed draw per case, named in the
    id), resumed: the weights of every task and the matrix are an uninterrupted run's."""
    ref_out, ref = kills_reference
    rng = random.Random(27_000 + draw)
    task, step = rng.randrange(2), rng.randrange(40)
    cfg = compose_cfg(tmp_path, KILLS)
    out = Path(cfg.paths.output_dir)
    _power_cut(monkeypatch, task=task, step=step)
    with pytest.raises(RuntimeError, match="power cut"):
        run(cfg, out)
    monkeypatch.undo()
    resumed = run(compose_cfg(tmp_path, [*KILLS, "resume=true"]), out)
    assert resumed["matrix"] == json.loads(json.dumps(ref["matrix"])), (task, step)
    _same_weights(ref_out, out)


def test_two_cuts_in_one_task_each_at_an_epoch_end(reference, tmp_path, monkeypatch):
    """Checkpoints at steps 16 and 32, each an epoch's last step: cut after each, resume twice.
    The second resume starts from a checkpoint taken by a resumed run."""
    ref_out, ref = reference["long"]
    over = [*LONG, "train.checkpoint_every=8"]
    out = tmp_path / "run"
    for cut in (17, 35):
        _power_cut(monkeypatch, task=1, step=cut)
        with pytest.raises(RuntimeError, match="power cut"):
            run(compose_cfg(tmp_path, [*over, "resume=true"]), out)
        monkeypatch.undo()
    resumed = run(compose_cfg(tmp_path, [*over, "resume=true"]), out)
    assert resumed["matrix"] == json.loads(json.dumps(ref["matrix"]))
    _same_weights(ref_out, out)


# ------------------------------------------------------------------------ damaged checkpoints
THREE = [*MICRO, "bench.tasks=[color,position,count]"]


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("three")
    cfg = compose_cfg(tmp, THREE)
    return Path(cfg.paths.output_dir), run(cfg, Path(cfg.paths.output_dir))


def _crashed_in_task_3(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    shutil.rmtree(dst / "checkpoints" / "task02")
    res = json.loads((dst / "results.json").read_text())
    res["complete"] = False
    (dst / "results.json").write_text(json.dumps(res))
    return dst


def _flip(data: bytes) -> bytes:
    i = len(data) * 3 // 4
    return data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1 :]


DAMAGE = {
    "empty file": lambda d: (d / "adapters.safetensors").write_bytes(b""),
    "truncated": lambda d: (d / "adapters.safetensors").write_bytes(
        (d / "adapters.safetensors").read_bytes()[:200]
    ),
    "one flipped bit": lambda d: (d / "adapters.safetensors").write_bytes(
        _flip((d / "adapters.safetensors").read_bytes())
    ),
    "no tensors": lambda d: (d / "adapters.safetensors").write_bytes(save({})),
    "state.json cut short": lambda d: (d / "state.json").write_text(
        (d / "state.json").read_text()[:50]
    ),
    "adapters missing": lambda d: (d / "adapters.safetensors").unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_task_checkpoint_is_never_resumed_from(three, tmp_path, capsys, damage):
    """Task 2's checkpoint damaged after a crash in task 3: resume says so in one line, starts
    from task 1's and ends with the uninterrupted matrix and weights (an empty or bit-flipped
    file used to load "fine" and give other results; a truncated one, a traceback)."""
    ref_out, ref = three
    out = _crashed_in_task_3(ref_out, tmp_path / "run")
    DAMAGE[damage](out / "checkpoints" / "task01")
    resumed = run(compose_cfg(tmp_path, [*THREE, "resume=true"]), out)
    printed = capsys.readouterr().out
    assert "cannot resume from checkpoints/task01" in printed and "resuming after task 1" in printed
    assert resumed["matrix"] == json.loads(json.dumps(ref["matrix"]))
    _same_weights(ref_out, out, tasks=(0, 1, 2))


def test_a_checkpoint_without_a_digest_is_loaded_strictly(three, tmp_path):
    """Checkpoints written before the digest existed: a file that lacks tensors is refused in
    one line (it used to load with strict=False and leave the adapters at their init)."""
    ref_out, _ = three
    out = _crashed_in_task_3(ref_out, tmp_path / "run")
    d = out / "checkpoints" / "task01"
    state = json.loads((d / "state.json").read_text())
    state.pop("adapters")
    (d / "state.json").write_text(json.dumps(state))
    tensors = load_file(str(d / "adapters.safetensors"))
    dropped = sorted(tensors)[0]
    (d / "adapters.safetensors").write_bytes(
        save({k: v for k, v in tensors.items() if k != dropped})
    )
    from mcl.utils.io import CheckpointError

    with pytest.raises(CheckpointError) as e:
        run(compose_cfg(tmp_path, [*THREE, "resume=true"]), out)
    msg = str(e.value)
    assert "\n" not in msg and "lacks 1 of the" in msg and dropped in msg
    assert "move checkpoints/task01 aside" in msg


def test_load_adapter_state_refuses_missing_unknown_and_misshapen_tensors(three, tmp_path):
    from mcl.train import build
    from mcl.utils.io import CheckpointError

    runner = build(compose_cfg(tmp_path, THREE), tmp_path / "run")
    good = runner.method.adapter_state()
    k = sorted(good)[0]
    with pytest.raises(CheckpointError, match="lacks 1 of the"):
        runner.method.load_adapter_state({n: v for n, v in good.items() if n != k})
    with pytest.raises(CheckpointError, match="does not have"):
        runner.method.load_adapter_state({**good, "mllm.nope": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="has shape"):
        runner.method.load_adapter_state({**good, k: torch.zeros(3, 3, 3)})
    runner.method.load_adapter_state(good)


def test_a_damaged_mid_task_checkpoint_reruns_the_task(reference, tmp_path, monkeypatch, capsys):
    ref_out, ref = reference["long"]
    cfg = compose_cfg(tmp_path, LONG)
    out = Path(cfg.paths.output_dir)
    _power_cut(monkeypatch, task=1, step=22)
    with pytest.raises(RuntimeError, match="power cut"):
        run(cfg, out)
    monkeypatch.undo()
    ckpt = out / "checkpoints" / "task01-partial" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    resumed = run(compose_cfg(tmp_path, [*LONG, "resume=true"]), out)
    printed = capsys.readouterr().out
    assert "ignoring the mid-task checkpoint" in printed and "reruns from its start" in printed
    assert resumed["matrix"] == json.loads(json.dumps(ref["matrix"]))
    _same_weights(ref_out, out)


# ---------------------------------------------------------------- one run per run directory
# ``python -m mcl.train`` that waits at its first training step until the file named by
# MCL_TEST_GO exists: the first run is certainly still running while the second launches, however
# fast the machine (on a fast one the whole run used to end before the second had started).
HELD_AT_STEP_0 = """
import os, sys, time
from mcl.methods.base import ContinualMethod
from mcl.train import cli

real = ContinualMethod.training_step

def training_step(self, batch, i):
    while not os.path.exists(os.environ["MCL_TEST_GO"]):
        time.sleep(0.02)
    return real(self, batch, i)

ContinualMethod.training_step = training_step
cli(sys.argv[1:])
"""


def test_a_second_run_in_the_same_directory_refuses_in_one_line(tmp_path):
    """Two launches into one run directory: the second stops at once (exit 2, one line naming
    the first's pid), the first finishes alone; they used to interleave their results."""
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONHASHSEED": "0", "MCL_TEST_GO": str(go)}
    out = tmp_path / "shared"
    held = [sys.executable, "-c", HELD_AT_STEP_0, *_cli(tmp_path, run_dir=out)[3:]]
    first = subprocess.Popen(held, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out / "run.lock").exists() and time.time() < deadline:
        assert first.poll() is None
        time.sleep(0.02)
    t0 = time.time()
    second = subprocess.run(
        _cli(tmp_path, run_dir=out), env=env, capture_output=True, text=True, timeout=300
    )
    go.touch()
    assert second.returncode == 2, second.stderr[-2000:]
    lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"in use by another run (pid {first.pid}" in lines[0], lines
    assert time.time() - t0 < 30
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] and not (out / "run.lock").exists()
    # a finished run's directory is not a new run's either
    third = subprocess.run(_cli(tmp_path, run_dir=out), env=env, capture_output=True, text=True)
    assert third.returncode == 2 and "already holds a run (results.json)" in third.stderr
    assert json.loads((out / "results.json").read_text()) == res


def test_a_stale_lock_is_taken_over(tmp_path, capsys):
    import socket

    out = tmp_path / "run"
    out.mkdir()
    dead = {"pid": 2**22 + 17, "host": socket.gethostname(), "since": time.time() - 60}
    (out / "run.lock").write_text(json.dumps(dead))
    res = run(compose_cfg(tmp_path, MICRO), out)
    assert res["complete"]
    assert "(killed?); taking the directory over" in capsys.readouterr().out
    assert not (out / "run.lock").exists()


def test_the_lock_is_exclusive_within_a_process_and_across_hosts(tmp_path):
    from mcl.utils.lock import RunDirError, RunLock

    with RunLock(tmp_path / "d"), pytest.raises(RunDirError, match="in use by another run"):
        RunLock(tmp_path / "d").acquire()
    # a lock written on another host, its heartbeat fresh: refused even where flock is local
    other = {"pid": 123, "host": "another-node", "since": time.time()}
    (tmp_path / "d" / "run.lock").write_text(json.dumps(other))
    with pytest.raises(RunDirError, match="pid 123 on another-node"):
        RunLock(tmp_path / "d").acquire()
    old = time.time() - 3600  # no heartbeat for an hour: stale
    os.utime(tmp_path / "d" / "run.lock", (old, old))
    lock = RunLock(tmp_path / "d")
    lock.acquire()
    assert lock.took_over["host"] == "another-node"
    lock.release()
