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
from safetensors.torch import load_file

from mcl.config import ConfigError
from mcl.train import run
from tests.conftest import MICRO, compose_cfg

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
    with pytest.raises(ConfigError, match="train.steps"):
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
