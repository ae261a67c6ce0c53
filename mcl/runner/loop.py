"""The continual loop (DESIGN.md): zero-shot row, then per task start -> fit -> end -> evaluate ->
checkpoint, then the report. It knows the ContinualMethod hooks, never a method's name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import TQDMProgressBar
from safetensors.torch import save
from tqdm.auto import tqdm

from mcl.config import ConfigError
from mcl.eval.metrics import continual_metrics, instruction_metrics, stage_metrics
from mcl.eval.report import matrix_table, plot_matrix, write_matrix_csv
from mcl.eval.scorers import format_ok, score_records, task_modes
from mcl.utils import dist, preempt
from mcl.utils.io import (
    CheckpointError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(info: dict, prefix: str) -> dict[str, float]:
    """The loggable numbers of a (one-level nested) dict: ``{prefix}key[/subkey]``."""
    out = {}
    for k, v in info.items():
        if isinstance(v, dict):
            out |= {f"{prefix}{k}/{kk}": vv for kk, vv in v.items() if _is_number(vv)}
        elif _is_number(v):
            out[f"{prefix}{k}"] = v
    return out


class _SkipCounter(L.Callback):
    """Counts the unreadable training samples the collator dropped; stops the run when a task's
    share exceeds ``max_bad_share`` (checked once 100 samples were drawn, and at the end)."""

    def __init__(self, dm):
        self.dm, self.seen = dm, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        task = self.dm.bench.task_names[self.dm.task]
        n = int(batch["n_skipped"])
        self.seen += len(batch["input_ids"]) if "input_ids" in batch else 0
        if n:
            self.dm.count_skipped(task, "train", n, (batch.get("skipped_examples") or [None])[0])
        if self.seen + self.dm.skipped.get(task, {}).get("train", 0) >= 100:
            self.dm.check_bad_share(task, "train", self.seen)

    def on_train_end(self, trainer, pl_module) -> None:
        self.dm.check_bad_share(self.dm.bench.task_names[self.dm.task], "train", self.seen)


PREEMPTED_AT = "mcl/preempted_at"  # the step a fit stopped at on a preemption signal


class _MidTaskCheckpoint(L.Callback):
    """Every ``every`` optimizer steps (None: never on a schedule), and at the first step after
    a preemption signal, the Lightning checkpoint of the running task (the method's non-base
    tensors, optimizer, scheduler, loop progress, data position, RNG) as ``last.ckpt``, written
    to a temporary file and renamed, so a crash leaves the previous one intact. After a signal
    it stops the fit (``preempted`` holds the step it saved)."""

    def __init__(self, path: Path, every: int | None, dm):
        self.path, self.every, self.dm = path, every, dm
        self._where: dict = {}
        self._rng: torch.Tensor | None = None
        self._drawn = 0  # samples drawn in the current data pass (incl. skipped ones)
        # the data pass minus Lightning's epoch: a checkpoint taken at an epoch's last batch
        # resumes with the next pass inside the epoch Lightning restores
        self._lag: int | None = None
        self._prev = 0  # the step at the previous batch's end
        self.preempted: int | None = None  # the step saved on a preemption signal

    # where the data stream and the RNG stood: restored so the rest of the task is the same
    def state_dict(self) -> dict:
        return self._where

    def load_state_dict(self, state: dict) -> None:
        self.dm.resume_at = (int(state["epoch"]), int(state["drawn"]))
        self._rng = state["rng"]

    def on_train_start(self, trainer, pl_module) -> None:
        self._prev, self._lag = trainer.global_step, None
        self.restore_rng()
        preempt.reclaim()  # our stop (checkpoint first), not Lightning's immediate one

    def restore_rng(self) -> None:
        if self._rng is not None:
            torch.set_rng_state(self._rng)
            self._rng = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._lag is None:  # this fit's first epoch: where the data module began it
            epoch, self._drawn = getattr(self.dm, "resumed_at", (trainer.current_epoch, 0))
            self._lag = epoch - trainer.current_epoch
        else:
            self._drawn = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._drawn += int(batch["n_skipped"]) + len(batch.get("input_ids", ()))
        step = trainer.global_step
        # every rank takes part in the same collective at every batch, so all stop together
        stop = preempt.agreed() is not None and self.preempted is None
        # only where an optimizer step just ended (gradient accumulation revisits a step)
        stepped, self._prev = step != self._prev, step
        if not stepped or not step:
            return
        if (self.every and step % self.every == 0) or stop:
            self.save(trainer, step)
        if stop:
            self.preempted = step
            trainer.should_stop = True
            # forked ranks (ddp_cpu, fsdp_cpu) send callback_metrics back to the main process
            trainer.callback_metrics[PREEMPTED_AT] = torch.tensor(float(step))

    def save(self, trainer, step: int) -> None:
        self._where = {
            "epoch": trainer.current_epoch + (self._lag or 0),  # the data pass
            "drawn": self._drawn,
            "rng": torch.get_rng_state(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".ckpt.tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


class _EvalStopped(Exception):
    """An evaluation row cut short by a preemption signal."""


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class _WhereTrained(L.Callback):
    """Records the device the task's training steps ran on."""

    def __init__(self, runner):
        self.runner = runner

    def on_train_start(self, trainer, pl_module) -> None:
        self.runner.ran_on("train")


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
    ):
        self.method, self.dm = method, datamodule
        method.bind_data(datamodule)
        self.bench = datamodule.bench
        # {task: mode}; a bad mode fails here, before any training
        self.modes = task_modes(
            scorer_mode,
            {t["name"]: t["scorer"] for t in self.bench.tasks + self.bench.unseen},
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
        # mid-task checkpoints every this many optimizer steps (None: task boundaries only)
        self.checkpoint_every = checkpoint_every
        T = len(self.bench.tasks)
        self.matrix: list[list[float | None]] = [[None] * T for _ in range(T + 1)]
        self.unseen: list[list[float | None]] = [
            [None] * len(self.bench.unseen) for _ in range(T + 1)
        ]
        self.if_scores: list[dict] = [{} for _ in range(T + 1)]
        # per row and task: % of answers in the required format (letter, box, number, ...)
        self.format_scores: list[dict] = [{} for _ in range(T + 1)]
        # per row and task: % of answers SMoLoRA's IF rule accepts (its MIF; smolora_if_ok)
        self.mif_scores: list[dict] = [{} for _ in range(T + 1)]
        self.params: list[dict] = []
        self.method_info: list[dict] = []  # per task: what the method reports (task_info)
        # per row and task: the method's own evaluation numbers (eval_metrics), e.g. routing
        self.method_eval: list[dict] = [{} for _ in range(T + 1)]
        # per task: training, evaluation rows, and task-boundary work (on_task_start + _end)
        self.timings: dict[str, list[float] | float] = {
            "train_s": [],
            "eval_s": [],
            "boundary_s": [],
        }
        self.global_step = 0
        # per phase (eval, train, task_start, task_end): the devices it ran on
        self.devices: dict[str, list[str]] = {}
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
        seen = self.devices.setdefault(phase, [])
        if where not in seen:
            seen.append(where)

    # ------------------------------------------------------------------ evaluation
    def evaluate_task(self, name: str, row: int) -> tuple[float, float | None]:
        """Score on the main test samples; the held-out-template samples give the IF score.
        With several processes each rank answers every world-th batch; rank 0 gathers."""
        spec = self.bench.task(name)
        records, n_format = [], 0
        self.method.eval()
        index = self.bench.task_names.index(name) if name in self.bench.task_names else None
        if self.method.task_id_at_test:  # an oracle the method's paper uses; recorded
            self.method.set_eval_task(name, index)
        for samples, batch in self.dm.test_batches(name, dist.rank(), dist.world()):
            if dist.world() == 1 and preempt.requested():  # ranks agree once per task instead
                raise _EvalStopped
            preds = self.method.generate(batch, max_new_tokens=spec.get("max_new_tokens", 8))
            for s, p in zip(samples, preds):
                n_format += format_ok(spec["scorer"], spec.get("answer_type"), p)
                heldout = s["meta"].get("template") == "heldout"
                records.append(
                    {"key": s["key"], "pred": p, "answers": s["answers"], "heldout": heldout}
                )
        extra = self.method.eval_metrics(index)  # told the task only after it answered
        records, n_format, extra = _merge_ranks(
            dist.gather((records, n_format, extra, len(records))), self.dm.eval_batch_size
        )
        if dist.is_main():
            lines = "".join(json.dumps(r) + "\n" for r in records)
            atomic_write_text(self.out / "predictions" / f"row{row}" / f"{name}.jsonl", lines)
        scores = score_records(records, spec["scorer"], self.modes[name])
        self.format_scores[row][name] = 100.0 * n_format / max(1, len(records))
        self.mif_scores[row][name] = scores["mif"]
        score, held_score = scores["score"], scores["held"]
        if extra:
            self.method_eval[row][name] = extra
            self.log({f"eval/{name}/{k}": v for k, v in extra.items() if _is_number(v)})
        return score, held_score

    def evaluate_row(self, row: int, columns: list[int]) -> None:
        t0 = time.time()
        self.place()
        self.ran_on("eval")
        names = [self.bench.tasks[j]["name"] for j in columns] + self.bench.unseen_names
        bar = tqdm(names, desc=f"evaluating row {row}", disable=not self.progress, leave=False)
        for name in bar:
            if preempt.agreed():
                raise _EvalStopped
            score, held = self.evaluate_task(name, row)
            if name in self.bench.unseen_names:
                self.unseen[row][self.bench.unseen_names.index(name)] = score
            else:
                self.matrix[row][self.bench.task_names.index(name)] = score
            if held is not None:
                self.if_scores[row][name] = held
            self.log({f"eval/{name}": score, "eval/row": row})
        self.timings["eval_s"].append(round(time.time() - t0, 2))

    # ------------------------------------------------------------------ training
    def _partial_ckpt(self, t: int) -> Path:
        return self.out / "checkpoints" / f"task{t:02d}-partial" / "last.ckpt"

    def build_trainer(self, t: int | None = None) -> L.Trainer:
        extra = []
        if t is not None:  # on a schedule (train.checkpoint_every) and on preemption
            self._midtask = _MidTaskCheckpoint(
                self._partial_ckpt(t), self.checkpoint_every, self.dm
            )
            extra.append(self._midtask)
        kw = dict(
            logger=self.loggers or False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=self.progress,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[*self.method.callbacks(), _SkipCounter(self.dm), _WhereTrained(self), *extra]
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

    def _usable_partial(self, t: int) -> bool:
        """Whether task ``t``'s mid-task checkpoint exists and holds everything a resume needs
        (loadable without unpickling, every tensor of the method, the data position). A damaged
        one is set aside with a warning: the task then reruns from its start, which gives the
        same result, only later."""
        path = self._partial_ckpt(t)
        if not path.exists():
            return False
        why = None
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            own = self.method.adapter_state()
            have = ckpt.get("state_dict") or {}
            where = (ckpt.get("callbacks") or {}).get(_MidTaskCheckpoint.__qualname__) or {}
            if set(have) != set(own):
                why = f"it holds {len(have)} of the method's {len(own)} tensors"
            elif any(tuple(have[k].shape) != tuple(v.shape) for k, v in own.items()):
                why = "its tensors have other shapes than the method's"
            elif not {"epoch", "drawn", "rng"} <= set(where) or "loops" not in ckpt:
                why = "it lacks the loop state or the data position"
        except Exception as e:  # truncated, bit-flipped, not a checkpoint at all
            why = f"it cannot be read ({_one_line(e)})"
        if why is None:
            return True
        if dist.is_main():
            bad = path.with_name(path.name + ".damaged")
            os.replace(path, bad)
            print(
                f"[mcl] warning: ignoring the mid-task checkpoint {path}: {why}; task {t} "
                f"reruns from its start (the file is kept as {bad.name})"
            )
        return False

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
        self.params.append({"task": self.bench.task_names[t], **self.method.parameter_counts()})
        t0 = time.time()
        if self.method.trains:
            self.method.train()  # evaluation left it in eval mode
            trainer = self.build_trainer(t)
            partial = self._partial_ckpt(t)
            # a run that died inside this task continues from its last mid-task checkpoint
            ckpt = str(partial) if self.resume and self._usable_partial(t) else None
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
            if stopped is None and PREEMPTED_AT in trainer.callback_metrics:  # a forked rank's
                stopped = int(trainer.callback_metrics[PREEMPTED_AT])
                preempt.request(preempt.requested() or "a signal to a training rank")
            if (stopped is not None and stopped < self._budget()) or (cut and stopped is None):
                raise preempt.Preempted(self._preempted_message(t, stopped))
            self.global_step += trainer.global_step
            if "train" not in self.devices:  # trained in forked ranks (ddp_cpu): their device
                self.devices["train"] = [str(trainer.strategy.root_device)]
        self.timings["train_s"].append(round(time.time() - t0, 2))
        self.place()  # back from wherever the Trainer's teardown left it
        self.ran_on("task_end")
        t0 = time.time()
        self.method.on_task_end(t, self.dm)
        self.timings.setdefault("boundary_s", []).append(round(boundary + time.time() - t0, 2))
        self._sync_ranks(f"task {t} end")
        info = self.method.task_info(t)
        if info:
            self.method_info.append({"task": self.bench.task_names[t], **info})
            self.log(_numbers(info, "method/"))

    def _sync_ranks(self, when: str) -> None:
        """With several processes: every rank continues from rank 0's method state."""
        if dist.world() > 1:
            what = f"{when} ({self.method.method_name})"
            self.method.load_adapter_state(dist.sync_state(self.method.adapter_state(), what))

    # ------------------------------------------------------------------ checkpoints
    def _ckpt_dir(self, t: int) -> Path:
        return self.out / "checkpoints" / f"task{t:02d}"

    def save_task(self, t: int, evaluated: bool = True) -> None:
        """Task ``t``'s checkpoint: the method's tensors and the run state. ``evaluated=False``:
        trained, but its evaluation row was cut short (a preemption); resume evaluates it."""
        if not dist.is_main():  # one writer; every rank holds the same state
            return
        d = self._ckpt_dir(t)
        d.mkdir(parents=True, exist_ok=True)
        # serialised in memory, then one atomic write: a full disk leaves no partial file, and
        # state.json (what resume looks for) is written only after the tensors are in place;
        # it records the tensors' digest, so a damaged file is never resumed from
        data = save(self.method.adapter_state())
        atomic_write_bytes(d / "adapters.safetensors", data)
        state = self.state_dict(t)
        state["evaluated"] = evaluated
        state["adapters"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_json(d / "state.json", state)

    def state_dict(self, t: int) -> dict:
        return {
            "finished_task": t,
            "matrix": self.matrix,
            "unseen_matrix": self.unseen,
            "if_scores": self.if_scores,
            "format_scores": self.format_scores,
            "mif_scores": self.mif_scores,
            "params": self.params,
            "method_info": self.method_info,
            "method_eval": self.method_eval,
            "timings": self.timings,
            "global_step": self.global_step,
            "skipped": self.dm.skipped,
            "devices": self.devices,
        }

    def _task_checkpoint(self, d: Path) -> tuple[dict | None, dict | None, str | None]:
        """``(state, tensors, None)`` of a task checkpoint directory, or ``(.., .., why)`` when
        it cannot be resumed from (missing, truncated, bit-flipped, another task's)."""
        try:
            state = json.loads((d / "state.json").read_text())
            t = state["finished_task"]
            if d.name != f"task{t:02d}":
                return None, None, f"its state.json is task {t}'s"
            data = (d / "adapters.safetensors").read_bytes()
            digest = state.get("adapters")  # absent in checkpoints written before it was added
            if digest and (
                len(data) != digest["bytes"] or hashlib.sha256(data).hexdigest() != digest["sha256"]
            ):
                return state, None, "adapters.safetensors does not match the digest in state.json"
            from safetensors.torch import load

            return state, load(data), None
        except FileNotFoundError as e:
            return None, None, f"{Path(e.filename or '?').name} is missing"
        except Exception as e:  # bad JSON, a damaged safetensors header, missing keys
            return None, None, f"it cannot be read ({_one_line(e)})"

    def try_resume(self) -> int:
        """Index of the first task still to run (0 when starting fresh): the newest task
        checkpoint that is intact (older ones stand in for a damaged one, with a warning;
        everything after them reruns, to the same result)."""
        self._pending_row = None
        if not self.resume:
            return 0
        dirs = sorted({p.parent for p in self.out.glob("checkpoints/task[0-9][0-9]/state.json")})
        state = tensors = None
        for d in reversed(dirs):
            state, tensors, why = self._task_checkpoint(d)
            if why is None:
                break
            print(
                f"[mcl] warning: cannot resume from {d.relative_to(self.out)}: {why}; "
                "using the checkpoint before it (the tasks after it run again)"
            )
            state = None
        if state is None:
            if dirs:
                print("[mcl] warning: no intact task checkpoint; the run starts from task 1")
            return 0
        t = state["finished_task"]
        self.method.on_resume(t)
        self.method.keep_fp32_masters()  # before loading: fp32 tensors into fp32 parameters
        try:
            self.method.load_adapter_state(tensors)
        except CheckpointError as e:
            raise CheckpointError(
                f"{d / 'adapters.safetensors'}: {e}; move checkpoints/{d.name} aside to resume "
                "from the task before, or start a new run"
            ) from None
        self.matrix, self.unseen = state["matrix"], state["unseen_matrix"]
        self.if_scores, self.params = state["if_scores"], state["params"]
        self.format_scores = state.get("format_scores", self.format_scores)
        self.mif_scores = state.get("mif_scores", self.mif_scores)
        self.method_info = state.get("method_info", [])
        self.method_eval = state.get("method_eval", self.method_eval)
        self.timings, self.global_step = state["timings"], state["global_step"]
        self.devices = state.get("devices", {})
        self.dm.skipped = state.get("skipped", {})
        self.method.current_task = t
        if state.get("evaluated", True) is False:  # preempted during its evaluation row
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
        except _EvalStopped:
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
        except _EvalStopped:  # during the zero-shot row: nothing to save yet
            self._stop(self._preempted_message(None))
        self.timings["total_s"] = round(time.time() - t_start, 2)
        return self.write_report(partial=False)

    # ------------------------------------------------------------------ outputs
    def _wandb_extras(self, exp, final: dict) -> None:
        """The accuracy matrix as a W&B table and heatmap, the final metrics in the summary
        (what a comparison dashboard's panels read)."""
        import wandb

        names = self.bench.task_names + self.bench.unseen_names
        rows = [[str(i), *r, *u] for i, (r, u) in enumerate(zip(self.matrix, self.unseen))]
        exp.log(
            {
                "matrix": wandb.Table(columns=["after task", *names], data=rows),
                "matrix_heatmap": wandb.Image(str(self.out / "matrix.png")),
            }
        )
        exp.summary.update(final)

    def log(self, metrics: dict) -> None:
        for lg in self.loggers:
            lg.log_metrics(metrics, step=self.global_step)

    def write_report(self, partial: bool) -> dict:
        metrics = continual_metrics(self.matrix, unseen=self.unseen)
        metrics |= instruction_metrics(
            self.bench.task_names,
            self.bench.unseen_names,
            self.if_scores,
            self.format_scores,
            self.mif_scores,
        )
        results = {
            "bench": self.bench.name,
            "data_source": self.bench.source,
            "method": self.method.method_name,
            "task_id_at_test": bool(self.method.task_id_at_test),
            "seed": self.seed,
            "complete": not partial,
            "tasks": self.bench.task_names,
            "unseen_tasks": self.bench.unseen_names,
            "chance": {t["name"]: t.get("chance") for t in self.bench.tasks + self.bench.unseen},
            "matrix": self.matrix,
            "unseen_matrix": self.unseen,
            "if_scores": self.if_scores,
            "format_scores": self.format_scores,
            "mif_scores": self.mif_scores,
            "scorer_mode": self.mode_name,
            "scorers": {
                t["name"]: {"scorer": t["scorer"], "mode": self.modes[t["name"]]}
                for t in self.bench.tasks + self.bench.unseen
            },
            "skipped": self.dm.skipped,
            "metrics": metrics,
            "per_stage": [
                {"task": t, **s} for t, s in zip(self.bench.task_names, stage_metrics(self.matrix))
            ],
            "params": self.params,
            "method_info": self.method_info,
            "method_eval": self.method_eval,
            "timings": self.timings,
            "devices": self.devices,  # per phase, the devices it ran on
            # training processes (DDP ranks; ddp_cpu's forked ranks train, the main evaluates)
            "processes": max(dist.world(), _n_processes(self.trainer_kwargs)),
            **self.meta,
        }
        if not dist.is_main():  # rank 0 writes and logs; the others hold the same numbers
            return results
        atomic_write_json(self.out / "results.json", results)
        write_matrix_csv(
            self.out / "matrix.csv",
            self.bench.task_names,
            self.matrix,
            self.bench.unseen_names,
            self.unseen,
        )
        if not partial:
            plot_matrix(
                self.out / "matrix.png",
                self.bench.task_names,
                self.matrix,
                self.bench.unseen_names,
                self.unseen,
                title=f"{self.method.method_name} on {self.bench.name} (seed {self.seed})",
            )
            final = {
                f"final/{k}": v
                for k, v in metrics.items()
                if isinstance(v, (int, float)) and v is not None and not math.isnan(v)
            }
            self.log(final)
            for lg in self.loggers:
                if type(lg).__name__ == "WandbLogger":
                    self._wandb_extras(lg.experiment, final)
            for lg in self.loggers:
                lg.finalize("success")
        return results

    def summary(self, results: dict) -> str:
        source = "SYNTHETIC twin" if results["data_source"] == "synthetic" else "real data"
        head = f"{results['method']} on {results['bench']} ({source}), seed {results['seed']}\n"
        return head + matrix_table(
            results["tasks"],
            results["matrix"],
            results["metrics"],
            results["unseen_tasks"],
            results["unseen_matrix"],
        )


def _n_processes(kw: dict) -> int:
    devices = kw.get("devices", 1)
    n = len(devices) if isinstance(devices, list) else devices
    return (n if isinstance(n, int) and n > 0 else 1) * int(kw.get("num_nodes", 1))


def _merge_ranks(parts: list[tuple], batch_size: int) -> tuple[list, int, dict]:
    """Every rank's ``(records, n_format, method metrics, n)`` as one process's would be: the
    records back in test-set order (rank r answered batches r, r + world, ...), the method's
    numbers averaged weighted by how many samples each rank answered (they are per-sample
    means, e.g. task-id accuracy); other values are rank 0's."""
    if len(parts) == 1:
        return parts[0][:3]
    world, chunks = len(parts), []
    for r, (recs, *_) in enumerate(parts):
        for b, i in enumerate(range(0, len(recs), batch_size)):
            chunks.append((r + b * world, recs[i : i + batch_size]))
    records = [rec for _, chunk in sorted(chunks, key=lambda c: c[0]) for rec in chunk]
    n_format = sum(p[1] for p in parts)
    extra: dict = {}
    for p in parts:  # rank 0's values first; a key only ranks with answers report still counts
        for k, v in p[2].items():
            extra.setdefault(k, v)
    for k, v in extra.items():
        weighted = [(p[2].get(k), p[3]) for p in parts if _is_number(p[2].get(k)) and p[3]]
        if _is_number(v) and weighted:
            extra[k] = sum(x * n for x, n in weighted) / sum(n for _, n in weighted)
    return records, n_format, extra


# what does not change a run's results: how it is launched and watched, where it writes
NOT_RESULTS = (
    "resume",
    "progress",
    "paths",
    "hydra",
    "logger",
    "train.checkpoint_every",
    "train.threads",
    "data.max_bad_share",
)


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def derived_keys(cfg) -> set[str]:
    """Keys of a composed config whose value is copied from one that does not change results
    (``model.cache_dir: ${paths.cache_dir}``, ``model.progress: ${progress}``)."""
    from omegaconf import DictConfig

    roots = "|".join(re.escape(x) for x in NOT_RESULTS)
    pattern = re.compile(rf"\$\{{(?:{roots})\b")
    out: set[str] = set()

    def walk(node, prefix: str) -> None:
        for k in list(node):
            child = node._get_node(k)
            key = f"{prefix}{k}"
            if isinstance(child, DictConfig):
                walk(child, key + ".")
            elif child is not None and child._is_interpolation():
                out.update([key] if pattern.search(str(child._value())) else [])

    walk(cfg, "")
    return out


def _comparable(config: dict, ignore=()) -> dict:
    """The config's values that shape the results, flat (``train.steps``: 250), as JSON reads
    them back."""
    flat = _flat(json.loads(json.dumps(config, sort_keys=True, default=str)))
    skip = (*NOT_RESULTS, *ignore)
    return {k: v for k, v in flat.items() if not any(k == x or k.startswith(x + ".") for x in skip)}


def config_changes(old: dict, new: dict, ignore=()) -> list[str]:
    """The keys whose values differ between two configs, in ways that change results."""
    a, b = _comparable(old, ignore), _comparable(new, ignore)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<unset>") != b.get(k, "<unset>"))


def _describe_changes(old: dict, new: dict, keys: list[str]) -> str:
    a, b = _comparable(old), _comparable(new)

    def show(v) -> str:
        return "unset" if v == "<unset>" else json.dumps(v)

    parts = [
        f"{k} ({show(a.get(k, '<unset>'))} then, {show(b.get(k, '<unset>'))} now)" for k in keys[:4]
    ]
    more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    return ", ".join(parts) + more


def run_record(d: Path) -> dict | None:
    """A run directory's ``results.json``, or None when it has none (or an unreadable one)."""
    try:
        rec = json.loads((Path(d) / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def holds_a_run(d: Path) -> str | None:
    """What in ``d`` belongs to an earlier run (results, checkpoints), or None."""
    d = Path(d)
    if (d / "results.json").exists():
        return "results.json"
    if any(d.glob("checkpoints/task*")):
        return "checkpoints/"
    return None


def find_resumable(out_dir: str | Path, config: dict, ignore=()) -> Path | None:
    """The run directory ``resume=true`` continues: ``out_dir`` itself, else the newest sibling
    (the same command launched earlier got another timestamped directory) whose run is
    unfinished and was started with a config that gives the same results. None: nothing to
    continue. Raises :class:`ConfigError` (one line, naming the keys) when the run to continue
    (``out_dir``'s own, or the newest unfinished one beside it) had other values. ``ignore``:
    more keys that do not change results (see :func:`derived_keys`)."""
    out_dir = Path(out_dir)
    siblings = sorted(
        (p for p in out_dir.parent.glob("*") if p.is_dir() and p != out_dir), reverse=True
    )
    mismatch = None
    for d in [out_dir, *siblings]:
        rec = run_record(d)
        if rec is None or "config" not in rec:
            continue
        keys = config_changes(rec["config"], config, ignore)
        if not keys and (d == out_dir or not rec.get("complete")):
            return d  # out_dir itself even when complete: nothing left to do there
        if keys and d == out_dir:  # this very directory: never continue or reuse it
            mismatch = (d, rec, keys)
            break
        if keys and not rec.get("complete") and mismatch is None:
            mismatch = (d, rec, keys)
    if mismatch is None:
        return None
    d, rec, keys = mismatch
    state = "finished" if rec.get("complete") else "unfinished"
    raise ConfigError(
        f"resume=true: the {state} run in {d} was started with other values of "
        f"{_describe_changes(rec['config'], config, keys)}; rerun with its values to continue "
        "it, or without resume=true in another directory to start a new run"
    )
