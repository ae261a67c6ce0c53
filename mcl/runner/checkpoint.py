"""Checkpoints a run resumes from, bit-identically:

- a task's checkpoint (``checkpoints/taskNN/``): the method's tensors plus the run's state, once
  the task is trained (and normally evaluated);
- a mid-task checkpoint (``checkpoints/taskNN-partial/last.ckpt``): Lightning's checkpoint of the
  running task, on a schedule and at a preemption signal, with the data position and RNG.

Every file is written whole or not at all, and a damaged one is never resumed from.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import load, save

from mcl.eval.state import RunState
from mcl.utils import dist, preempt
from mcl.utils.io import atomic_write_bytes, atomic_write_json

PREEMPTED_AT = "mcl/preempted_at"  # the step a fit stopped at on a preemption signal
STATE_KEY = "_MidTaskCheckpoint"  # where a last.ckpt holds the data position and RNG


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class MidTaskCheckpoint(L.Callback):
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

    @property
    def state_key(self) -> str:
        return STATE_KEY

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


def usable_partial(path: Path, method, task: int) -> bool:
    """Whether task ``task``'s mid-task checkpoint exists and holds everything a resume needs
    (loadable without unpickling, every tensor of the method, the data position). A damaged
    one is set aside with a warning: the task then reruns from its start, which gives the
    same result, only later."""
    if not path.exists():
        return False
    why = None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        own = method.adapter_state()
        have = ckpt.get("state_dict") or {}
        where = (ckpt.get("callbacks") or {}).get(STATE_KEY) or {}
        if set(have) != set(own):
            why = f"it holds {len(have)} of the method's {len(own)} tensors"
        elif any(tuple(have[k].shape) != tuple(v.shape) for k, v in own.items()):
            why = "its tensors have other shapes than the method's"
        elif not {"epoch", "drawn", "rng"} <= set(where) or "loops" not in ckpt:
            why = "it lacks the loop state or the data position"
    except Exception as e:  # truncated, bit-flipped, not a checkpoint at all
        why = f"it cannot be read ({one_line(e)})"
    if why is None:
        return True
    if dist.is_main():
        bad = path.with_name(path.name + ".damaged")
        os.replace(path, bad)
        print(
            f"[mcl] warning: ignoring the mid-task checkpoint {path}: {why}; task {task} "
            f"reruns from its start (the file is kept as {bad.name})"
        )
    return False


def save_task(d: Path, tensors: dict, state: RunState, t: int, evaluated: bool = True) -> None:
    """Task ``t``'s checkpoint in ``d``: the method's tensors and the run state.
    ``evaluated=False``: trained, but its evaluation row was cut short (a preemption); resume
    evaluates it."""
    d.mkdir(parents=True, exist_ok=True)
    # serialised in memory, then one atomic write: a full disk leaves no partial file, and
    # state.json (what resume looks for) is written only after the tensors are in place;
    # it records the tensors' digest, so a damaged file is never resumed from
    data = save(tensors)
    atomic_write_bytes(d / "adapters.safetensors", data)
    record = {"finished_task": t, **state.state_dict(), "evaluated": evaluated}
    record["adapters"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_json(d / "state.json", record)


def read_task(d: Path) -> tuple[dict | None, dict | None, str | None]:
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
        return state, load(data), None
    except FileNotFoundError as e:
        return None, None, f"{Path(e.filename or '?').name} is missing"
    except Exception as e:  # bad JSON, a damaged safetensors header, missing keys
        return None, None, f"it cannot be read ({one_line(e)})"


def newest_task(out: Path) -> tuple[Path, dict, dict] | None:
    """``(directory, state, tensors)`` of the newest intact task checkpoint under ``out``
    (older ones stand in for a damaged one, with a warning), or None."""
    dirs = sorted({p.parent for p in out.glob("checkpoints/task[0-9][0-9]/state.json")})
    for d in reversed(dirs):
        state, tensors, why = read_task(d)
        if why is None:
            return d, state, tensors
        print(
            f"[mcl] warning: cannot resume from {d.relative_to(out)}: {why}; "
            "using the checkpoint before it (the tasks after it run again)"
        )
    if dirs:
        print("[mcl] warning: no intact task checkpoint; the run starts from task 1")
    return None
