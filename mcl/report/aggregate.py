"""Aggregating runs: one group per (bench, data, tasks, method, split values), each stat as mean
and sample std over seeds, the matrices cell by cell."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence

from mcl.eval.metrics import bwt_per_task
from mcl.eval.report import data_faults
from mcl.report.collect import config_diff, group_key, split_values, warn
from mcl.report.schema import METRICS, column_names, metric_keys, unseen_column_names

# every scalar metric all runs have, plus the two run facts the table shows (a group's extra
# scores come on top: `stat_names`)
STATS = [*METRICS, "trainable", "time_s"]
NO_STAT = {"mean": None, "std": None, "n": 0}
LOWER_IS_BETTER = {"forgetting", "trainable", "time_s"}


def _num(value) -> float | None:
    """A finite float, or None for null / NaN / anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def summarize(values: Iterable) -> dict:
    """Mean and sample std (ddof=1, None for a single value) of the defined values."""
    defined = [v for v in map(_num, values) if v is not None]
    return {
        "mean": statistics.fmean(defined) if defined else None,
        "std": statistics.stdev(defined) if len(defined) > 1 else None,
        "n": len(defined),
    }


def mean_matrix(matrices: Sequence[Sequence[Sequence]]) -> list[list[float | None]]:
    """Cell-wise mean over runs, skipping missing cells; None where no run has a value."""
    return [[summarize(cells)["mean"] for cells in zip(*rows)] for rows in zip(*matrices)]


def _last_trainable(run: dict) -> float | None:
    params = run.get("params") or []
    return _num(params[-1].get("trainable")) if params and isinstance(params[-1], dict) else None


def _stage(run: dict) -> list:
    """The run's per-stage matrix (its matrix where each task has one eval set)."""
    return run.get("stage_matrix") or run["matrix"]


def _per_set(runs: list[dict], names: Sequence[str]) -> dict[str, dict]:
    """Per eval-set column, its ``last`` and ``bwt`` over seeds (runs with several sets)."""
    out = {}
    for name in names:
        cells = [((r["metrics"].get("per_set") or {}).get(name) or {}) for r in runs]
        out[name] = {k: summarize(c.get(k) for c in cells) for k in ("last", "bwt")}
    return out


def _group(runs: list[dict], split: Sequence[str] = ()) -> dict:
    first = runs[0]
    unseen = list(first.get("unseen_tasks") or [])
    sets = column_names(first) != list(first["tasks"])  # some task has several eval sets
    keys = list(dict.fromkeys(k for r in runs for k in metric_keys(r)))
    stats = {key: summarize(r["metrics"].get(key) for r in runs) for key in keys}
    stats["trainable"] = summarize(map(_last_trainable, runs))
    stats["time_s"] = summarize((r.get("timings") or {}).get("total_s") for r in runs)
    diff = config_diff(runs)
    values = split_values(first, split)
    label = first["method"]
    shown = [(k.rsplit(".", 1)[-1], json.loads(v)) for k, v in zip(split, values) if v != "null"]
    if shown:  # keys a run does not have (another method's options) are left out
        label += " (" + ", ".join(f"{k}={short_number(v)}" for k, v in shown) + ")"
    if diff:
        warn(
            f"{first['bench']}/{first['method']} averages runs whose configs differ in "
            f"{', '.join(diff[:4])}{' ...' if len(diff) > 4 else ''}; check they belong together"
        )
    return {
        "bench": first["bench"],
        "data_source": first.get("data_source", "unknown"),
        "method": first["method"],
        "label": label,
        "split_values": list(values),  # JSON of each split key's value ("null": unset)
        "reference": any(r["reference"] for r in runs),  # a bound: never "best"
        # extra scores' metrics keys (e.g. MIF), each also with a K_unseen stat
        "extras": [k for k in keys if k not in METRICS and not k.endswith("_unseen")],
        "tasks": list(first["tasks"]),
        "unseen_tasks": unseen,
        "n_seeds": len(runs),
        "n_incomplete": sum(r.get("complete") is not True for r in runs),
        "seeds": [r["seed"] for r in runs],
        "runs": [r["dir"] for r in runs],
        "metrics": stats,
        # one matrix column per eval set (per task unless a task has several)
        "columns": column_names(first),
        "unseen_columns": unseen_column_names(first),
        "matrix": mean_matrix([r["matrix"] for r in runs]),
        "stage_matrix": mean_matrix([_stage(r) for r in runs]),
        "per_set": _per_set(runs, column_names(first)) if sets else {},
        # per earlier task, A[T][j] - A[j][j] over seeds (BWT is the mean of these)
        "bwt_tasks": [summarize(col) for col in zip(*(bwt_per_task(_stage(r)) for r in runs))],
        "unseen_matrix": mean_matrix([r["unseen_matrix"] for r in runs]) if unseen else [],
        "config_diff": diff,
        # per run with unreadable data: (seed, one line per task) from results.json's skipped
        "faults": [
            (r["seed"], data_faults(r.get("skipped")))
            for r in runs
            if data_faults(r.get("skipped"))
        ],
    }


def _label_variants(groups: list[dict]) -> None:
    """Where one bench has runs on different data or task lists, say so in every label."""
    for bench in sorted({g["bench"] for g in groups}):
        members = [g for g in groups if g["bench"] == bench]
        sources = {g["data_source"] for g in members}
        task_lists = {(tuple(g["tasks"]), tuple(g["unseen_tasks"])) for g in members}
        if len(sources) > 1:
            warn(f"bench {bench} has {' and '.join(sorted(sources))} runs; kept apart")
        if len(task_lists) > 1:
            warn(f"bench {bench} has runs with {len(task_lists)} different task lists; kept apart")
        for g in members:
            if len(sources) > 1:
                g["label"] += f" [{g['data_source']}]"
            if len(task_lists) > 1:
                unseen = f"; unseen: {','.join(g['unseen_tasks'])}" if g["unseen_tasks"] else ""
                g["label"] += f" [tasks: {','.join(g['tasks'])}{unseen}]"


def aggregate(runs: Sequence[dict], split: Sequence[str] = ()) -> list[dict]:
    """One dict per group of runs: `metrics` maps each stat to {mean, std, n} over seeds, and
    `matrix` / `unseen_matrix` are the cell-wise means. Ordered by bench, then method. `split`
    (dotted config keys) keeps runs that differ in them apart, labelled e.g. `dmole
    (allocator=fixed)`."""
    by_key: dict[tuple, list[dict]] = {}
    for run in sorted(runs, key=lambda r: (group_key(r, split), r["seed"])):
        by_key.setdefault(group_key(run, split), []).append(run)
    groups = [_group(members, split) for members in by_key.values()]
    _label_variants(groups)
    return groups


def variant_key(group: dict) -> tuple:
    """The table a group belongs in: bench, data source and task lists (not the method)."""
    return (
        group["bench"],
        group["data_source"],
        tuple(group["tasks"]),
        tuple(group["unseen_tasks"]),
        tuple(group.get("columns") or group["tasks"]),
    )


def short_number(v) -> str:
    """A setting as a label shows it: large and small numbers as ``1e4``, ``3e5``, ``2.5e-4``
    (a penalty weight reads better so than ``1000000.0``), lists as a Hydra override writes
    them (``[image,video]``, so a label can be pasted on a command line), others as they print."""
    if isinstance(v, list):
        return "[" + ",".join(short_number(x) for x in v) + "]"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        mantissa, exponent = f"{v:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{v:g}"


def setting(g: dict) -> float | None:
    """The numeric value of the group's split setting, if its label shows one setting and that
    one is a number (a sweep, such as λ). A group set apart by two settings, a number among
    them (a routing and an instruction count), is no point on one setting's curve."""
    values = [json.loads(v) for v in g.get("split_values", ()) if v != "null"]
    if len(values) != 1 or isinstance(values[0], bool):
        return None
    return float(values[0]) if isinstance(values[0], (int, float)) else None


def _by_setting(groups: list[dict]) -> list[dict]:
    """Each method whose groups all have a numeric setting (a sweep) lists them by that
    setting, in the places its groups already hold."""
    out = list(groups)
    for method in dict.fromkeys(g["method"] for g in groups):
        slots = [i for i, g in enumerate(out) if g["method"] == method]
        members = [out[i] for i in slots]
        if len(members) > 1 and all(setting(g) is not None for g in members):
            for i, g in zip(slots, sorted(members, key=setting)):
                out[i] = g
    return out


def order_groups(
    groups: Sequence[dict], sort: str = "last", order: Sequence[str] | None = None
) -> list[dict]:
    """Groups by table (variant_key), then best `sort` value first (lowest for forgetting,
    params and time; undefined last); methods named in `order` (method or label) lead, in order;
    a method swept over one numeric setting lists its groups by that setting.
    """

    def rank(g: dict) -> tuple:
        mean = g["metrics"].get(sort, NO_STAT)["mean"]
        if mean is None:
            return (1, 0.0)
        return (0, mean if sort in LOWER_IS_BETTER else -mean)

    ranked = sorted(groups, key=rank)
    if order:
        position = {name: i for i, name in enumerate(order)}
        last = len(position)
        ranked.sort(key=lambda g: position.get(g["label"], position.get(g["method"], last)))
    # sections stay together (stable sort), so the table, CSV and figures list groups alike
    return sorted(_by_setting(ranked), key=variant_key)


def extras_of(groups: Sequence[dict]) -> list[str]:
    """The extra scores' keys any of `groups` has, in order of first appearance."""
    return list(dict.fromkeys(k for g in groups for k in g["extras"]))


def stat_names(groups: Sequence[dict]) -> list[str]:
    """Every stat of `groups`: `STATS` with each extra score's K and K_unseen after METRICS."""
    extra = [k for key in extras_of(groups) for k in (key, f"{key}_unseen")]
    return [*METRICS, *extra, *STATS[len(METRICS) :]]
