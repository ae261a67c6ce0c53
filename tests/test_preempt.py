"""Preemption: SIGTERM, SIGUSR1 (``#SBATCH --signal``) and SIGUSR2 (submitit) save a checkpoint
at the next training step, or the trained task when the signal comes during its evaluation, write
the results so far and stop with exit code 75; ``resume=true`` then finishes the run with an
uninterrupted run's weights and matrix. Before, SIGTERM inside a task exited 0 and lost the
task's progress (the scheduler saw a success)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mcl.train import run
from mcl.utils import preempt
from mcl.utils.preempt import Preempted
from tests.conftest import MICRO, compose_cfg

pytestmark = pytest.mark.slow  # signals into running trainings, then a resume

ROOT = Path(__file__).resolve().parent.parent
OVER = [o for o in MICRO if not o.startswith("train.steps")] + ["train.steps=12"]


def _same_weights(a: Path, b: Path, tasks=(0, 1)) -> None:
    for t in tasks:
        x = load_file(str(a / "checkpoints" / f"task{t:02d}" / "adapters.safetensors"))
        y = load_file(str(b / "checkpoints" / f"task{t:02d}" / "adapters.safetensors"))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), t


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    cfg = compose_cfg(tmp, OVER)
    out = Path(cfg.paths.output_dir)
    return out, run(cfg, out)


def _signal_at_step(monkeypatch, sig, task: int, step: int) -> None:
    """Send ``sig`` to this process from inside training step ``step`` of ``task``, once."""
    from mcl.methods.base import ContinualMethod

    real, sent = ContinualMethod.training_step, []

    def step_then_signal(self, batch, i):
        if self.current_task == task and self.trainer.global_step == step and not sent:
            sent.append(step)
            os.kill(os.getpid(), sig)
        return real(self, batch, i)

    monkeypatch.setattr(ContinualMethod, "training_step", step_then_signal)


def _resume(tmp_path, out: Path) -> dict:
    return run(compose_cfg(tmp_path, [*OVER, "resume=true"]), out)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1", "SIGUSR2"])
def test_a_signal_inside_a_task_saves_that_step_and_resume_is_bit_identical(
    reference, tmp_path, monkeypatch, sig
):
    ref_out, ref = reference
    cfg = compose_cfg(tmp_path, OVER)
    out = Path(cfg.paths.output_dir)
    _signal_at_step(monkeypatch, getattr(signal, sig), task=1, step=4)
    with pytest.raises(Preempted) as e:
        run(cfg, out)
    msg = str(e.value)
    assert "\n" not in msg and f"preempted by {sig} in task 2 (position) at step 5" in msg
    assert "resume=true" in msg
    ckpt = out / "checkpoints" / "task01-partial" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 5  # the step it was in
    partial = json.loads((out / "results.json").read_text())  # the results so far
    assert partial["complete"] is False and partial["matrix"][1] == ref["matrix"][1]
    assert partial["matrix"][2] == [None, None]
    assert not (out / "run.lock").exists()  # released
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.undo()
    resumed = _resume(tmp_path, out)
    assert resumed["complete"] and resumed["matrix"] == json.loads(json.dumps(ref["matrix"]))
    _same_weights(ref_out, out)
    assert not ckpt.parent.exists()


def test_a_signal_during_evaluation_keeps_the_trained_task(reference, tmp_path, monkeypatch):
    """SIGTERM while row 1 is evaluated: task 1's weights are saved (not evaluated yet), resume
    evaluates row 1 again and goes on."""
    from mcl.methods.base import ContinualMethod

    ref_out, ref = reference
    real, sent = ContinualMethod.generate, []

    def answer_then_signal(self, batch, max_new_tokens):
        if self.current_task == 0 and not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batch, max_new_tokens)

    monkeypatch.setattr(ContinualMethod, "generate", answer_then_signal)
    cfg = compose_cfg(tmp_path, OVER)
    out = Path(cfg.paths.output_dir)
    with pytest.raises(Preempted, match=r"after task 1 \(color\), before its evaluation finished"):
        run(cfg, out)
    state = json.loads((out / "checkpoints" / "task00" / "state.json").read_text())
    assert state["evaluated"] is False
    monkeypatch.undo()
    resumed = _resume(tmp_path, out)
    assert resumed["matrix"] == json.loads(json.dumps(ref["matrix"]))
    _same_weights(ref_out, out)


def test_a_signal_during_the_zero_shot_row_stops_at_once(reference, tmp_path, monkeypatch):
    from mcl.methods.base import ContinualMethod

    _, ref = reference
    real, sent = ContinualMethod.generate, []

    def answer_then_signal(self, batch, max_new_tokens):
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGUSR1)
        return real(self, batch, max_new_tokens)

    monkeypatch.setattr(ContinualMethod, "generate", answer_then_signal)
    cfg = compose_cfg(tmp_path, OVER)
    out = Path(cfg.paths.output_dir)
    with pytest.raises(Preempted, match="before the first task was trained: nothing to save"):
        run(cfg, out)
    assert json.loads((out / "results.json").read_text())["complete"] is False
    monkeypatch.undo()
    assert _resume(tmp_path, out)["matrix"] == json.loads(json.dumps(ref["matrix"]))


def test_the_handler_installed_before_runs_after_the_checkpoint(tmp_path, monkeypatch):
    """submitit installs its own SIGUSR2 handler (requeue, then exit): mcl keeps it for after
    its checkpoint, instead of letting it end the run mid-step."""
    seen = []

    def submitit_like(signum, frame):
        seen.append((signum, (out / "checkpoints" / "task01-partial" / "last.ckpt").exists()))

    old = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        cfg = compose_cfg(tmp_path, OVER)
        out = Path(cfg.paths.output_dir)
        _signal_at_step(monkeypatch, signal.SIGUSR2, task=1, step=2)
        with pytest.raises(Preempted):
            run(cfg, out)
        assert seen == []  # not called during the run
        assert signal.getsignal(signal.SIGUSR2) is submitit_like  # restored after it
        preempt.hand_on()
        assert seen == [(signal.SIGUSR2, True)]  # called once the checkpoint was there
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_ddp_cpu_ranks_stop_at_the_same_step(tmp_path, monkeypatch):
    """A signal seen by one forked rank stops both at the same step (an all-reduce per step),
    rank 0 saves, and the main process stops too."""
    from mcl.methods.base import ContinualMethod

    real = ContinualMethod.training_step

    def rank1_signalled(self, batch, i):
        if (
            self.current_task == 1
            and self.trainer.global_step == 2
            and torch.distributed.get_rank() == 1
        ):
            preempt.request("SIGTERM")
        return real(self, batch, i)

    monkeypatch.setattr(ContinualMethod, "training_step", rank1_signalled)
    over = [*OVER, "hardware=ddp_cpu", "train.steps=6"]
    cfg = compose_cfg(tmp_path, over)
    out = Path(cfg.paths.output_dir)
    with pytest.raises(Preempted, match=r"in task 2 \(position\) at step 3"):
        run(cfg, out)
    ckpt = torch.load(out / "checkpoints" / "task01-partial" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    monkeypatch.undo()
    resumed = run(compose_cfg(tmp_path, [*over, "resume=true"]), out)
    assert resumed["complete"]


def _cli(tmp: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "mcl.train", *MICRO, "train.steps=40",
        f"paths.log_dir={tmp}/logs", f"paths.data_dir={tmp}/data", f"paths.cache_dir={tmp}/cache",
        f"hydra.run.dir={out}", "progress=false", *extra,
    ]  # fmt: skip


def test_sigterm_to_python_m_mcl_train_exits_75_and_resume_finishes(tmp_path):
    """The command line, as a scheduler sees it: SIGTERM during the second task's training
    (its first mid-task checkpoint is there) exits 75, not 0, with one line on stderr; the same
    command with resume=true ends with the uninterrupted run's matrix and weights."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    full = tmp_path / "full"
    subprocess.run(_cli(tmp_path, full), check=True, env=env, capture_output=True, cwd=ROOT)
    out = tmp_path / "cut"
    cmd = _cli(tmp_path, out, "train.checkpoint_every=4")
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    first = out / "checkpoints" / "task01-partial" / "last.ckpt"
    deadline = time.time() + 600
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert first.exists(), "task 2 never reached its first mid-task checkpoint"
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == preempt.EXIT_CODE, err[-2000:]
    assert time.time() - t0 < 60
    lines = [ln for ln in err.splitlines() if "preempted by SIGTERM" in ln]
    assert len(lines) == 1 and "in task 2 (position) at step" in lines[0], err[-2000:]
    assert "Traceback" not in err
    partial = json.loads((out / "results.json").read_text())
    assert partial["complete"] is False
    step = torch.load(first, weights_only=True)["global_step"]
    assert 4 <= step < 40
    done = subprocess.run([*cmd, "resume=true"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming task 1 from its mid-task checkpoint" in done.stdout
    a = json.loads((full / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    assert b["complete"] and a["matrix"] == b["matrix"]
    _same_weights(full, out)


def test_a_requeued_slurm_job_resumes_without_being_told(tmp_path, monkeypatch, reference):
    """SLURM reruns a requeued job's command as it was: SLURM_RESTART_COUNT makes it resume."""
    import mcl.train

    _, ref = reference
    cfg = compose_cfg(tmp_path, OVER)
    out = Path(cfg.paths.output_dir)
    _signal_at_step(monkeypatch, signal.SIGTERM, task=1, step=4)
    with pytest.raises(SystemExit) as e:
        mcl.train.main.__wrapped__(cfg)
    assert e.value.code == preempt.EXIT_CODE
    monkeypatch.undo()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    cfg = compose_cfg(tmp_path, OVER)  # resume=false, as first submitted
    assert mcl.train.main.__wrapped__(cfg) == ref["metrics"]["last"]
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] and res["matrix"] == json.loads(json.dumps(ref["matrix"]))
