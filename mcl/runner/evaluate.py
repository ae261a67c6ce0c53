"""One evaluation row: every eval set of the row's tasks answered (a task has one, named after
it, unless its benchmark declares several: ``<task>/<set>``), its answers saved under
``predictions/rowN/``, scored by the set's own scorer and recorded in the run's state.

With several processes each rank answers every world-th batch and rank 0 gathers the answers
back in test-set order (:func:`merge_ranks`), so the scores equal a single process's.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from tqdm.auto import tqdm

from mcl.eval.scorers import format_ok, score_records
from mcl.runner.results import is_number
from mcl.utils import dist, preempt
from mcl.utils.io import atomic_write_text

if TYPE_CHECKING:
    from mcl.runner.loop import ContinualRunner


class EvalStopped(Exception):
    """An evaluation row cut short by a preemption signal."""


def to_device(batch: dict, device: torch.device) -> dict:
    """A test batch with its tensors on ``device`` (the model's): the collator builds batches
    on the CPU, and ``generate`` does not move them itself as a Trainer's fit does."""
    return move_data_to_device(batch, device)


def evaluate_task(runner: ContinualRunner, name: str, row: int) -> dict:
    """Eval set ``name``'s answers (a task's, or ``<task>/<set>``) at row ``row``, saved,
    scored and recorded in ``runner.state``; returns the scores (``score``, ``held``,
    ``extras``)."""
    method, dm, bench = runner.method, runner.dm, runner.bench
    spec = bench.task(name)
    task = spec.get("task", name)  # the task the set belongs to
    records, n_format = [], 0
    method.eval()
    index = bench.task_names.index(task) if task in bench.task_names else None
    if method.task_id_at_test:  # an oracle the method's paper uses; recorded
        method.set_eval_task(task, index)
    for samples, batch in dm.test_batches(name, dist.rank(), dist.world()):
        if dist.world() == 1 and preempt.requested():  # ranks agree once per task instead
            raise EvalStopped
        batch = to_device(batch, runner.device)
        preds = method.generate(batch, max_new_tokens=spec.get("max_new_tokens", 8))
        for s, p in zip(samples, preds):
            n_format += format_ok(spec["scorer"], spec.get("answer_type"), p)
            heldout = s["meta"].get("template") == "heldout"
            records.append(
                {"key": s["key"], "pred": p, "answers": s["answers"], "heldout": heldout}
            )
    extra = method.eval_metrics(index)  # told the task only after it answered
    records, n_format, extra = merge_ranks(
        dist.gather((records, n_format, extra, len(records))), dm.eval_batch_size
    )
    if dist.is_main():
        lines = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write_text(runner.out / "predictions" / f"row{row}" / f"{name}.jsonl", lines)
    scores = score_records(records, spec["scorer"], runner.modes[name], extras=runner.extras)
    runner.state.record(row, name, scores, 100.0 * n_format / max(1, len(records)))
    if extra:
        runner.state.method_eval[row][name] = extra
        runner.log({f"eval/{name}/{k}": v for k, v in extra.items() if is_number(v)})
    return scores


def evaluate_row(runner: ContinualRunner, row: int, columns: list[int]) -> None:
    """Row ``row``: the eval sets of the trained tasks ``columns`` and of every unseen task."""
    t0 = time.time()
    runner.place()
    runner.ran_on("eval")
    bench = runner.bench
    tasks = [bench.tasks[j]["name"] for j in columns]
    names = [c["name"] for c in bench.columns if c["task"] in tasks]
    names += [c["name"] for c in bench.unseen_columns]
    bar = tqdm(names, desc=f"evaluating row {row}", disable=not runner.progress, leave=False)
    for name in bar:
        if preempt.agreed():
            raise EvalStopped
        scores = evaluate_task(runner, name, row)
        runner.log({f"eval/{name}": scores["score"], "eval/row": row})
    runner.state.timings["eval_s"].append(round(time.time() - t0, 2))


def merge_ranks(parts: list[tuple], batch_size: int) -> tuple[list, int, dict]:
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
        weighted = [(p[2].get(k), p[3]) for p in parts if is_number(p[2].get(k)) and p[3]]
        if is_number(v) and weighted:
            extra[k] = sum(x * n for x, n in weighted) / sum(n for _, n in weighted)
    return records, n_format, extra
