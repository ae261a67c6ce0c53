"""Crashes that must lose nothing finished: ``python -m mcl.train`` killed with SIGKILL at a
fixed step of task 3 of 4, and a disk that fills up while a checkpoint is written. In both, the
same command with ``resume=true`` must end with the matrix of an uninterrupted run."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import mcl.runner.checkpoint as runner_mod
from mcl.train import run, user_error
from tests.conftest import MICRO, compose_cfg

pytestmark = pytest.mark.slow  # SIGKILL and full or read-only disks mid-run, then a resume

FOUR = [o for o in MICRO if not o.startswith("bench.tasks")] + [
    "bench.tasks=[color,count,position,ocr]",
    "train.steps=12",
]
KILL_STEP = 6  # task 3 dies at this training step: after its start, before its checkpoint

# ``python -m mcl.train``, with one hook: at a known point inside task 3 the process sends
# itself SIGKILL (no handler, no cleanup: what the OOM killer or a lost node does). The kill
# comes from the run itself, so no timing on the test's side decides where it lands.
KILLED_IN_TASK_3 = f"""
import os, signal, sys
from mcl.methods.base import ContinualMethod
from mcl.train import cli

real = ContinualMethod.training_step

def training_step(self, batch, i):
    if self.current_task == 2 and self.trainer.global_step == {KILL_STEP}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, batch, i)

ContinualMethod.training_step = training_step
cli(sys.argv[1:])
"""


def _cmd(root: Path, out: Path, *extra: str, launch=("-m", "mcl.train")) -> list[str]:
    return [
        sys.executable, *launch, *FOUR, *extra,
        f"paths.log_dir={root}/logs", f"paths.data_dir={root}/data",
        f"paths.cache_dir={root}/cache", f"hydra.run.dir={out}", "progress=false",
    ]  # fmt: skip


def test_sigkill_during_task_3_then_resume_gives_the_same_matrix(tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    full_dir = tmp_path / "full"
    subprocess.run(_cmd(tmp_path, full_dir), check=True, env=env, capture_output=True)
    full = json.loads((full_dir / "results.json").read_text())

    out = tmp_path / "crashed"
    killed = subprocess.run(
        _cmd(tmp_path, out, launch=("-c", KILLED_IN_TASK_3)), env=env, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert (out / "checkpoints" / "task01" / "state.json").exists()  # task 2 finished
    assert not (out / "checkpoints" / "task02").exists()  # it died during task 3
    partial = json.loads((out / "results.json").read_text())
    assert partial["complete"] is False and partial["matrix"][3] == [None] * 4

    # the same command with resume=true continues from task 3
    subprocess.run(_cmd(tmp_path, out, "resume=true"), check=True, env=env, capture_output=True)
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["complete"] is True
    assert resumed["matrix"] == full["matrix"]


def test_a_full_disk_while_checkpointing_keeps_finished_work_and_resumes(tmp_path, monkeypatch):
    over = [*MICRO, "bench.tasks=[color,count,position]"]
    cfg = compose_cfg(tmp_path / "a", over)
    full = run(cfg, Path(cfg.paths.output_dir))

    real = runner_mod.atomic_write_bytes

    def disk_full_at_task_2(path, data):
        if "task01" in str(path):
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path}")
        return real(path, data)

    monkeypatch.setattr(runner_mod, "atomic_write_bytes", disk_full_at_task_2)
    cfg = compose_cfg(tmp_path / "b", over)
    out = Path(cfg.paths.output_dir)
    with pytest.raises(OSError) as info:
        run(cfg, out)
    msg = user_error(info.value)
    assert msg.startswith("no space left on device while writing") and "\n" not in msg
    assert "resume=true" in msg
    # what finished survives, intact; nothing half-written is left for resume to trip on
    assert (out / "checkpoints" / "task00" / "state.json").exists()
    assert not list((out / "checkpoints" / "task01").glob("*"))
    partial = json.loads((out / "results.json").read_text())
    assert partial["complete"] is False and partial["matrix"][1] == full["matrix"][1]

    monkeypatch.undo()  # space freed
    resumed = run(compose_cfg(tmp_path / "b", [*over, "resume=true"]), out)
    assert resumed["matrix"] == json.loads(json.dumps(full["matrix"]))


def test_resume_inside_a_task_from_its_mid_task_checkpoint(tmp_path, monkeypatch, capsys):
    import torch

    from mcl.methods.base import ContinualMethod

    # 128 samples / batch 8 = 16 steps an epoch: the checkpoint at step 20 is inside epoch 2
    over = [*MICRO, "train.steps=24", "train.checkpoint_every=4"]
    cfg = compose_cfg(tmp_path / "a", over)
    full = run(cfg, Path(cfg.paths.output_dir))

    cfg = compose_cfg(tmp_path / "b", over)
    out = Path(cfg.paths.output_dir)
    real = ContinualMethod.training_step
    calls = []

    def dies_at_step_22_of_task_2(self, batch, i):
        if self.current_task == 1 and self.trainer.global_step == 22 and not calls:
            raise RuntimeError("power cut")
        if calls:
            calls.append((self.current_task, self.trainer.global_step))
        return real(self, batch, i)

    monkeypatch.setattr(ContinualMethod, "training_step", dies_at_step_22_of_task_2)
    with pytest.raises(RuntimeError, match="power cut"):
        run(cfg, out)
    ckpt = out / "checkpoints" / "task01-partial" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)  # loadable without unpickling code
    assert saved["global_step"] == 20
    assert saved["state_dict"] and all("lora_" in k for k in saved["state_dict"])  # no base
    assert not (out / "checkpoints" / "task01" / "state.json").exists()

    calls.append("resumed")
    resumed = run(compose_cfg(tmp_path / "b", [*over, "resume=true"]), out)
    assert "resuming task 1 from its mid-task checkpoint" in capsys.readouterr().out
    assert calls[1:] == [(1, s) for s in range(20, 24)]  # only the last 4 steps ran again
    # same data, same RNG from step 20 on: the weights and matrix of an uninterrupted run
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "run" / "checkpoints" / "task01" / "adapters.safetensors"))
    b = load_file(str(out / "checkpoints" / "task01" / "adapters.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["matrix"] == json.loads(json.dumps(full["matrix"]))
    assert not ckpt.parent.exists()  # removed once the task's own checkpoint is written


# ------------------------------------------------ real file systems: full, and read-only midway
def _tmpfs(path: Path, size_kb: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)])
    if r.returncode != 0:
        pytest.skip("mount is not permitted here")


@pytest.fixture
def mounts():
    made: list[Path] = []
    yield made
    for m in reversed(made):
        subprocess.run(["umount", "-l", str(m)])


@pytest.fixture(scope="module")
def micro_reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("micro_ref")
    cfg = compose_cfg(tmp, MICRO)
    return run(cfg, Path(cfg.paths.output_dir))


@pytest.mark.parametrize("free_kb", [40, 90])
def test_a_really_full_disk_stops_in_one_line_and_resume_finishes(
    tmp_path, mounts, micro_reference, free_kb
):
    """The run directory on a tmpfs with only ``free_kb`` free: the run stops with ENOSPC in one
    line wherever the disk fills (a prediction file, a checkpoint, results.json); after space
    is freed, resume=true ends with the uninterrupted matrix."""
    disk = tmp_path / "disk"
    _tmpfs(disk, 512)
    mounts.append(disk)
    ballast = disk / "ballast"
    ballast.write_bytes(b"\0" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize))
    ballast.write_bytes(b"\0" * (ballast.stat().st_size - free_kb * 1024))
    out = disk / "run"
    cfg = compose_cfg(tmp_path, MICRO)
    with pytest.raises(OSError) as info:
        run(cfg, out)
    msg = user_error(info.value)
    assert msg is not None and "\n" not in msg and "no space left" in msg.lower(), msg
    assert not list(out.rglob("*.tmp")), "a half-written file was left behind"
    if (out / "results.json").exists():  # what was written is whole
        json.loads((out / "results.json").read_text())
    ballast.unlink()  # space freed
    res = run(compose_cfg(tmp_path, [*MICRO, "resume=true"]), out)
    assert res["complete"] and res["matrix"] == json.loads(json.dumps(micro_reference["matrix"]))


def test_a_directory_turning_read_only_midway_is_one_line_and_resumable(
    tmp_path, mounts, micro_reference, monkeypatch
):
    """The file system goes read-only while task 2 trains (a remount, as after a disk error):
    the run stops with one line naming the file, keeps task 1, and resumes once writable."""
    from mcl.methods.base import ContinualMethod

    disk = tmp_path / "disk"
    _tmpfs(disk, 4096)
    mounts.append(disk)
    real, done = ContinualMethod.on_task_start, []

    def remount_at_task_2(self, t, dm):
        if t == 1 and not done:
            done.append(1)
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        return real(self, t, dm)

    monkeypatch.setattr(ContinualMethod, "on_task_start", remount_at_task_2)
    out = disk / "run"
    with pytest.raises(OSError) as info:
        run(compose_cfg(tmp_path, MICRO), out)
    msg = user_error(info.value)
    assert msg.startswith("cannot write") and "Read-only file system" in msg, msg
    assert "\n" not in msg and "resume=true" in msg
    assert (out / "checkpoints" / "task00" / "state.json").exists()
    monkeypatch.undo()
    subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    res = run(compose_cfg(tmp_path, [*MICRO, "resume=true"]), out)
    assert res["matrix"] == json.loads(json.dumps(micro_reference["matrix"]))
