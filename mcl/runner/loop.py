"""The continual loop: zero-shot row, then per task start -> fit -> end -> evaluate ->
checkpoint, then the results. It knows the ContinualMethod hooks, never a method's name.

What the run has measured lives in one :class:`~mcl.eval.state.RunState` (``runner.state``);
evaluation (``evaluate``), checkpoints (``checkpoint``) and results.json (``results``) read and
fill it from their own modules.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import TQDMProgressBar

from mcl.eval.scorers import column_modes
from mcl.eval.state import RunState, declared_extras
from mcl.runner import checkpoint, evaluate, results
from mcl.runner.callbacks import BadShareAtFitEnd, WhereTrained
from mcl.utils import dist, preempt
from mcl.utils.io import CheckpointError


class ContinualRunner:
    def __init__(
        self,
        method,
        datamodule,
        out_dir: str | Path,
        trainer_kwargs: dict,
        steps_per_task: int | None = None,
        epochs_per_task: int | None = None,
        seed: int = 0,
        loggers: list | None = None,
        resume: bool = False,
        progress: bool = True,
        meta: dict | None = None,
        scorer_mode: str | dict = "strict",
        scorer_presets: dict | None = None,
        checkpoint_every: int | None = None,
        extra_scores: Sequence[str] | None = None,
    ):
        self.method, self.dm = method, datamodule
        method.bind_data(datamodule)
        self.bench = datamodule.bench
        # {task: mode}; a bad mode fails here, before any training
        self.modes = column_modes(
            scorer_mode,
            {
                c["name"]: (c["task"], self.bench.task(c["name"])["scorer"])
                for c in self.bench.columns + self.bench.unseen_columns
            },
            scorer_presets,
        )
        self.mode_name = scorer_mode if isinstance(scorer_mode, str) else "per-task"
        self.out = Path(out_dir)
        self.trainer_kwargs = trainer_kwargs
        self.steps, self.epochs = steps_per_task, epochs_per_task
        if not self.steps and not self.epochs:
            raise ValueError("set a per-task budget: train.steps or train.epochs")
        self.seed, self.loggers, self.resume, self.progress = seed, loggers or [], resume, progress
        for lg in self.loggers:  # W&B: evaluation curves against the task index (row)
            if type(lg).__name__ == "WandbLogger":
                lg.experiment.define_metric("eval/*", step_metric="eval/row")
        self.meta = meta or {}
        # the benchmark's extra per-cell scores: given, else what the run's config declares
        self.extras = (
            tuple(extra_scores)
            if extra_scores is not None
            else declared_extras(self.meta.get("config"))
        )
        # mid-task checkpoints every this many optimizer steps (None: task boundaries only)
        self.checkpoint_every = checkpoint_every
        self.state = RunState.fresh(
            self.bench.task_names,
            self.bench.unseen_names,
            self.bench.columns,
            self.bench.unseen_columns,
        )
        self._device: torch.device | None = None
        self._pending_row: int | None = None  # a task trained but not evaluated (preempted)

    # ------------------------------------------------------------------ placement
    @property
    def device(self) -> torch.device:
        """The device ``hardware`` names for this process (a DDP rank's own GPU), as the
        Trainer's strategy resolves it."""
        if self._device is None:
            self._device = self.build_trainer().strategy.root_device
        return self._device

    def place(self) -> None:
        """The method (model included) on the run's device. Lightning's teardown after every
        ``fit`` moves the module back to the CPU on GPU machines; evaluation and task-boundary
        work must not follow it there."""
        self.method.to(self.device)

    def ran_on(self, phase: str) -> None:
        where = str(next(self.method.parameters()).device)
        seen = self.state.devices.setdefault(phase, [])
        if where not in seen:
            seen.append(where)

    # ------------------------------------------------------------------ evaluation
    def evaluate_task(self, name: str, row: int) -> dict:
        return evaluate.evaluate_task(self, name, row)

    def evaluate_row(self, row: int, columns: list[int]) -> None:
        evaluate.evaluate_row(self, row, columns)

    # ------------------------------------------------------------------ training
    def _partial_ckpt(self, t: int) -> Path:
        return self.out / "checkpoints" / f"task{t:02d}-partial" / "last.ckpt"

    def _ckpt_dir(self, t: int) -> Path:
        return self.out / "checkpoints" / f"task{t:02d}"

    def build_trainer(self, t: int | None = None) -> L.Trainer:
        extra = []
        if t is not None:  # on a schedule (train.checkpoint_every) and on preemption
            self._midtask = checkpoint.MidTaskCheckpoint(
                self._partial_ckpt(t), self.checkpoint_every, self.dm
            )
            extra.append(self._midtask)
        own = [BadShareAtFitEnd(self.dm), WhereTrained(self), *extra]
        kw = dict(
            logger=self.loggers or False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=self.progress,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[*self.method.callbacks(), *own]
            + ([TQDMProgressBar(refresh_rate=20)] if self.progress else []),
            log_every_n_steps=10,
            **self.trainer_kwargs,
        )
        if isinstance(kw.get("strategy"), dict):  # configured (timeouts, FSDP options): a fresh
            kw["strategy"] = instantiate(kw["strategy"])  # instance per Trainer

        if self.steps:
            kw.update(max_steps=self.steps, max_epochs=-1)
        else:
            kw.update(max_epochs=self.epochs)
        return L.Trainer(**kw)

    def _budget(self) -> int | float:
        """The last optimizer step of a task (unknown, inf, with an epoch budget)."""
        return self.steps or math.inf

    def _preempted_message(self, t: int | None, step: int | None = None, what: str = "") -> str:
        name = preempt.requested() or "a signal"
        if t is None:
            where, saved = "before the first task was trained", "nothing to save yet"
        elif step is not None or self._partial_ckpt(t).exists():
            rel = self._partial_ckpt(t).relative_to(self.out)
            at = f" at step {step}" if step is not None else ""
            where = f"in task {t + 1} ({self.bench.task_names[t]}){at}"
            saved = f"checkpoint {rel}"
        else:
            where = f"after task {t + 1} ({self.bench.task_names[t]}){what}"
            saved = f"checkpoint {self._ckpt_dir(t).relative_to(self.out)}"
        return (
            f"preempted by {name} {where}: {saved}, results so far in "
            f"{self.out / 'results.json'}; continue with resume=true"
        )

    def check_trainable(self, t: int) -> None:
        actual = {n for n, p in self.method.named_parameters() if p.requires_grad}
        expected = self.method.expected_trainable()
        if actual != expected:
            extra, missing = sorted(actual - expected)[:3], sorted(expected - actual)[:3]
            raise RuntimeError(
                f"task {t}: trainable parameters differ from what the method declared "
                f"(unexpected {extra}, missing {missing}); fix its on_task_start"
            )

    def train_task(self, t: int) -> None:
        state = self.state
        L.seed_everything(self.seed * 1000 + t, workers=True, verbose=False)
        self.dm.set_task(t, mix=self.method.train_mixture(t, self.bench))
        self.place()
        self.ran_on("task_start")
        t0 = time.time()
        self.method.on_task_start(t, self.dm)
        self.method.keep_fp32_masters()  # what the task added, and what it now trains
        boundary = time.time() - t0
        self._sync_ranks(f"task {t} start")
        self.check_trainable(t)
        self.method.pin_trainable()
        state.params.append({"task": self.bench.task_names[t], **self.method.parameter_counts()})
        t0 = time.time()
        if self.method.trains:
            self._fit(t)
        state.timings["train_s"].append(round(time.time() - t0, 2))
        self.place()  # back from wherever the Trainer's teardown left it
        self.ran_on("task_end")
        t0 = time.time()
        self.method.on_task_end(t, self.dm)
        state.timings.setdefault("boundary_s", []).append(round(boundary + time.time() - t0, 2))
        self._sync_ranks(f"task {t} end")
        info = self.method.task_info(t)
        if info:
            state.method_info.append({"task": self.bench.task_names[t], **info})
            self.log(results.numbers(info, "method/"))

    def _fit(self, t: int) -> None:
        """Task ``t``'s training: from its start, or from its mid-task checkpoint on resume."""
        self.method.train()  # evaluation left it in eval mode
        trainer = self.build_trainer(t)
        partial = self._partial_ckpt(t)
        # a run that died inside this task continues from its last mid-task checkpoint
        usable = self.resume and checkpoint.usable_partial(partial, self.method, t)
        ckpt = str(partial) if usable else None
        if ckpt:
            print(f"[mcl] resuming task {t} from its mid-task checkpoint {partial}")
        cut = False
        try:
            trainer.fit(self.method, datamodule=self.dm, ckpt_path=ckpt, weights_only=True)
        except SystemExit:  # Lightning's own SIGTERM stop (a SystemExit that exits 0)
            if preempt.requested() is None:
                raise
            cut = True
        self._midtask.restore_rng()  # a restored run whose fit had no step left to run
        stopped = self._midtask.preempted
        if stopped is None and checkpoint.PREEMPTED_AT in trainer.callback_metrics:
            stopped = int(trainer.callback_metrics[checkpoint.PREEMPTED_AT])  # a forked rank's
            preempt.request(preempt.requested() or "a signal to a training rank")
        if (stopped is not None and stopped < self._budget()) or (cut and stopped is None):
            raise preempt.Preempted(self._preempted_message(t, stopped))
        self.state.global_step += trainer.global_step
        if "train" not in self.state.devices:  # trained in forked ranks (ddp_cpu): their device
            self.state.devices["train"] = [str(trainer.strategy.root_device)]

    def _sync_ranks(self, when: str) -> None:
        """With several processes: every rank continues from rank 0's method state."""
        if dist.world() > 1:
            what = f"{when} ({self.method.method_name})"
            self.method.load_adapter_state(dist.sync_state(self.method.adapter_state(), what))

    # ------------------------------------------------------------------ checkpoints
    def save_task(self, t: int, evaluated: bool = True) -> None:
        """Task ``t``'s checkpoint (rank 0; every rank holds the same state)."""
        if dist.is_main():
            self.state.skipped = self.dm.skipped  # the data module counts the faults
            tensors = self.method.adapter_state()
            checkpoint.save_task(self._ckpt_dir(t), tensors, self.state, t, evaluated)

    def try_resume(self) -> int:
        """Index of the first task still to run (0 when starting fresh)."""
        self._pending_row = None
        found = checkpoint.newest_task(self.out) if self.resume else None
        if found is None:
            return 0
        d, saved, tensors = found
        t = saved["finished_task"]
        self.method.on_resume(t)
        self.method.keep_fp32_masters()  # before loading: fp32 tensors into fp32 parameters
        try:
            self.method.load_adapter_state(tensors)
        except CheckpointError as e:
            raise CheckpointError(
                f"{d / 'adapters.safetensors'}: {e}; move checkpoints/{d.name} aside to resume "
                "from the task before, or start a new run"
            ) from None
        self.state.load_state_dict(saved)
        self.dm.skipped = self.state.skipped
        self.method.current_task = t
        if saved.get("evaluated", True) is False:  # preempted during its evaluation row
            self._pending_row = t
        print(f"[mcl] resuming after task {t + 1} ({self.bench.task_names[t]})")
        return t + 1

    # ------------------------------------------------------------------ the loop
    def _columns(self, t: int) -> list[int]:
        """The tasks evaluated after task ``t``: 1..t+1 (forward transfer), all after the last."""
        T = len(self.bench.tasks)
        return list(range(T)) if t == T - 1 else list(range(min(t + 2, T)))

    def _stop(self, message: str):
        """Write the results so far, flush the loggers, raise :class:`Preempted`."""
        self.write_report(partial=True)
        for lg in self.loggers:
            with contextlib.suppress(Exception):  # a logger's flush must not hide the stop
                lg.save()
        raise preempt.Preempted(message, preempt.requested())

    def _evaluate_after(self, t: int) -> None:
        """Row t+1, then task t's checkpoint. Cut short by a preemption, the trained task is
        still saved (``evaluated=False``) and its row is evaluated again on resume."""
        try:
            self.evaluate_row(t + 1, self._columns(t))
        except evaluate.EvalStopped:
            self.save_task(t, evaluated=False)
            self._stop(self._preempted_message(t, what=", before its evaluation finished"))
        self.save_task(t)

    def run(self) -> dict:
        t_start = time.time()
        T = len(self.bench.tasks)
        start = self.try_resume()
        try:
            # the other ranks of a DDP run start at rank 0's first fit, after row 0 was evaluated
            if start == 0 and (dist.is_main() or dist.initialized()):
                self.evaluate_row(0, list(range(T)))
                self.write_report(partial=True)  # a run has results (and its config) from here
            if self._pending_row is not None:  # trained before a preemption, not evaluated
                self._evaluate_after(self._pending_row)
                self.write_report(partial=start < T)
                if dist.is_main():
                    shutil.rmtree(self._partial_ckpt(start - 1).parent, ignore_errors=True)
            for t in range(start, T):
                if preempt.agreed():  # between tasks: nothing is lost
                    self._stop(self._preempted_message(t - 1 if t else None))
                try:
                    self.train_task(t)
                except preempt.Preempted as e:
                    self._stop(str(e))
                if preempt.agreed():  # trained (and its boundary work done): keep it
                    self.save_task(t, evaluated=False)
                    self._stop(self._preempted_message(t, what=", before its evaluation"))
                self._evaluate_after(t)
                self.write_report(partial=t < T - 1)
                if dist.is_main():
                    shutil.rmtree(self._partial_ckpt(t).parent, ignore_errors=True)
        except evaluate.EvalStopped:  # during the zero-shot row: nothing to save yet
            self._stop(self._preempted_message(None))
        self.state.timings["total_s"] = round(time.time() - t_start, 2)
        return self.write_report(partial=False)

    # ------------------------------------------------------------------ outputs
    def log(self, metrics: dict) -> None:
        for lg in self.loggers:
            lg.log_metrics(metrics, step=self.state.global_step)

    def write_report(self, partial: bool) -> dict:
        return results.write_results(self, partial)

    def summary(self, results_: dict) -> str:
        return results.summary(results_)
