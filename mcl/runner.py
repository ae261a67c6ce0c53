"""The continual loop (DESIGN.md): zero-shot row, then per task start -> fit -> end -> evaluate ->
checkpoint, then the report. It knows the ContinualMethod hooks, never a method's name.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import TQDMProgressBar
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from mcl.eval.metrics import continual_metrics, instruction_metrics, stage_metrics
from mcl.eval.report import matrix_table, plot_matrix, write_matrix_csv
from mcl.eval.scorers import format_ok, score_records, task_modes
from mcl.utils import dist
from mcl.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text


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


class _MidTaskCheckpoint(L.Callback):
    """Every ``every`` optimizer steps, the Lightning checkpoint of the running task (the
    method's non-base tensors, optimizer, scheduler, loop progress) as ``last.ckpt``, written
    to a temporary file and renamed, so a crash leaves the previous one intact."""

    def __init__(self, path: Path, every: int, dm):
        self.path, self.every, self.dm = path, every, dm
        self._where: dict = {}
        self._rng: torch.Tensor | None = None
        self._drawn = self._skip = 0  # samples drawn in the current epoch (incl. skipped ones)
        self._last = 0  # the step last saved (accumulation revisits a step)

    # where the data stream and the RNG stood: restored so the rest of the task is the same
    def state_dict(self) -> dict:
        return self._where

    def load_state_dict(self, state: dict) -> None:
        epoch, drawn = int(state["epoch"]), int(state["drawn"])
        self.dm.resume_at = (epoch, drawn)
        self._rng, self._skip = state["rng"], drawn

    def on_train_start(self, trainer, pl_module) -> None:
        if self._rng is not None:
            torch.set_rng_state(self._rng)
            self._rng = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._drawn, self._skip = self._skip, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._drawn += int(batch["n_skipped"]) + len(batch.get("input_ids", ()))
        step = trainer.global_step
        if step and step % self.every == 0 and step != self._last:
            self._last = step
            self._where = {
                "epoch": trainer.current_epoch,
                "drawn": self._drawn,
                "rng": torch.get_rng_state(),
            }
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".ckpt.tmp")
            trainer.save_checkpoint(tmp)
            if trainer.is_global_zero:
                os.replace(tmp, self.path)


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
        if self.checkpoint_every and t is not None:
            extra.append(_MidTaskCheckpoint(self._partial_ckpt(t), self.checkpoint_every, self.dm))
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
            ckpt = str(partial) if self.resume and partial.exists() else None
            if ckpt:
                print(f"[mcl] resuming task {t} from its mid-task checkpoint {partial}")
            trainer.fit(self.method, datamodule=self.dm, ckpt_path=ckpt, weights_only=True)
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

    def save_task(self, t: int) -> None:
        if not dist.is_main():  # one writer; every rank holds the same state
            return
        d = self._ckpt_dir(t)
        d.mkdir(parents=True, exist_ok=True)
        # serialised in memory, then one atomic write: a full disk leaves no partial file, and
        # state.json (what resume looks for) is written only after the tensors are in place
        atomic_write_bytes(d / "adapters.safetensors", save(self.method.adapter_state()))
        atomic_write_json(d / "state.json", self.state_dict(t))

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

    def try_resume(self) -> int:
        """Index of the first task still to run (0 when starting fresh)."""
        if not self.resume:
            return 0
        done = sorted(self.out.glob("checkpoints/task*/state.json"))
        if not done:
            return 0
        state = json.loads(done[-1].read_text())
        t = state["finished_task"]
        self.method.on_resume(t)
        self.method.keep_fp32_masters()  # before loading: fp32 tensors into fp32 parameters
        self.method.load_adapter_state(load_file(str(done[-1].parent / "adapters.safetensors")))
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
        print(f"[mcl] resuming after task {t + 1} ({self.bench.task_names[t]})")
        return t + 1

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        t_start = time.time()
        T = len(self.bench.tasks)
        start = self.try_resume()
        # the other ranks of a DDP run start at rank 0's first fit, after row 0 was evaluated
        if start == 0 and (dist.is_main() or dist.initialized()):
            self.evaluate_row(0, list(range(T)))
        for t in range(start, T):
            self.train_task(t)
            cols = list(range(T)) if t == T - 1 else list(range(min(t + 2, T)))
            self.evaluate_row(t + 1, cols)
            self.save_task(t)
            self.write_report(partial=t < T - 1)
            if dist.is_main():
                shutil.rmtree(self._partial_ckpt(t).parent, ignore_errors=True)
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


def _comparable(config: dict) -> dict:
    """The parts of a config that define a run (not how or where it was launched)."""
    c = {k: v for k, v in config.items() if k not in ("resume", "progress", "paths", "hydra")}
    return json.loads(json.dumps(c, sort_keys=True, default=str))


def find_resumable(out_dir: str | Path, config: dict) -> Path | None:
    """The run directory to continue: ``out_dir`` itself or else the newest sibling (the same
    command launched earlier gets a new timestamped directory) with the same config, finished
    tasks and no complete results."""
    out_dir = Path(out_dir)
    want = _comparable(config)
    siblings = sorted((p for p in out_dir.parent.glob("*") if p != out_dir), reverse=True)
    candidates = [out_dir, *siblings]
    for d in candidates:
        res = d / "results.json"
        if not res.exists() or not list(d.glob("checkpoints/task*/state.json")):
            continue
        old = json.loads(res.read_text())
        if not old.get("complete") and _comparable(old.get("config", {})) == want:
            return d
    return None
