"""The harness under benchmarks/perf.py: runners built from the configs with the user's cache,
and per-step wall times through mcl's own Trainer. Shared by every part, so each part times
the same thing the same way."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import compose_cfg  # noqa: E402

METHODS = (
    "seq_lora,seq_ft,replay,ewc,mas,lwf,moelora,olora,joint,eproj,tir_ewc,tir_mas,smolora,"
    "dmole,fwd_prompt"
)
MIXTURES = ("moelora", "smolora", "dmole", "olora")  # "mixture methods": step <= 1.5x seq_lora
EXPANDING = ("dmole", "eproj", "olora", "moelora", "pathweave")
TARGETS = {
    "overhead": 1.10,
    "data": 10.0,
    "eval": 5.0,
    "mixture_step": 1.5,
    "boundary_share": 0.10,
    "growth": 2.0,
}


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


class StepTimer(L.Callback):
    """Wall time between consecutive optimizer steps (data fetch included), after a warm-up."""

    def __init__(self, warmup: int = 3):
        self.warmup, self.marks = warmup, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.marks.append(time.perf_counter())

    @property
    def steps(self) -> list[float]:
        m = self.marks[self.warmup :]
        return [b - a for a, b in zip(m, m[1:])]


def build(tmp: Path, overrides: list[str]):
    from mcl.train import build as build_runner

    cfg = compose_cfg(tmp, ["logger=none", *overrides])
    # the user's cache: the tiny base and the twins are built once, not per benchmark run
    cache = os.environ.get("MCL_CACHE") or str(Path.home() / ".cache" / "mcl")
    cfg.paths.cache_dir = cache
    cfg.paths.data_dir = os.environ.get("MCL_DATA") or f"{cache}/data"
    return build_runner(cfg, Path(cfg.paths.output_dir)), cfg


def fit_steps(runner, task: int, steps: int, batches=None) -> list[float]:
    """Per-step times of ``steps`` optimizer steps on ``task`` through mcl's own Trainer."""
    timer = StepTimer()
    method = runner.method
    own = method.callbacks
    method.callbacks = lambda: [*own(), timer]
    runner.steps, budget = steps, runner.steps
    try:
        trainer = runner.build_trainer(task)
        method.train()
        if batches is None:
            trainer.fit(method, datamodule=runner.dm)
        else:
            loader = DataLoader(batches, batch_size=None, collate_fn=lambda b: b)
            trainer.fit(method, train_dataloaders=loader)
    finally:
        method.callbacks, runner.steps = own, budget
    return timer.steps
