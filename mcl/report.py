"""Compare runs: a Markdown table of mean ± std over seeds per benchmark, plus CSV and figures.

    python -m mcl.report logs/synth                       # every run below a directory
    python -m mcl.report logs/multirun/2026-11-27_10-00-00 logs/synth/joint/s0/<timestamp>
    python -m mcl.report logs --sort maa --order zero_shot,seq_lora,joint --out my_report/

Each `results.json` below an argument is one run. Runs are grouped by (bench, method); runs of
one bench that differ in data source or task list go to separate groups and tables (the method
is then labelled e.g. `seq_lora [real]`) and are never averaged together. Unfinished runs are
skipped unless --include-incomplete; when a (bench, method, seed) appears twice the newest run
is kept. Runs of one group whose configs differ (e.g. a learning-rate sweep) are averaged with
a warning naming the differing keys.

The table goes to stdout (warnings to stderr); --out (default: a `report` folder in the directory
given, or in the deepest directory holding all of them; never the current directory) receives
report.md, report.csv (one row per group), matrices.png (mean accuracy matrix per group) and
metrics.png (Last / MAA / BWT bars). Below each table, BWT task by task, with a note where one task
(often a CIDEr-scored caption task) makes up most of it, and the data faults: every run's
unreadable samples per task, as its results.json `skipped` counts them.
From Python: `print(markdown_table(aggregate(collect(paths))))`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from mcl.eval.metrics import bwt_per_task
from mcl.eval.report import METRIC_ROWS, data_faults, draw_matrix, shared_colorbars, wide_max
from mcl.utils.io import atomic_write_bytes, atomic_write_text

# every scalar metric of results.json, plus the two run facts the table shows
METRICS = [key for _, key in METRIC_ROWS]
STATS = [*METRICS, "trainable", "time_s"]
# (header, key) of the table's score columns
TABLE_COLUMNS = (
    ("Last", "last"),
    ("MAA", "maa"),
    ("BWT", "bwt"),
    ("Forgetting", "forgetting"),
    ("FWT", "fwt"),
    ("Plasticity (MFT)", "plasticity"),
    ("Unseen", "unseen"),
    ("IF", "if_score"),
    ("MIF", "MIF"),
)
LOWER_IS_BETTER = {"forgetting", "trainable", "time_s"}
# bounds rather than competitors (joint = upper, zero-shot = lower), so never bolded as "best"
REFERENCE_METHODS = {"joint", "zero_shot", "multitask"}
REQUIRED = {
    "bench": str,
    "method": str,
    "seed": int,
    "tasks": list,
    "matrix": list,
    "metrics": dict,
}
# config parts that say where or how a run was launched, not what was run
# definitions a run may carry without using them (bench.scorer_mode says which preset ran)
DEFINITION_PREFIXES = ("bench.scorer_presets.",)
LAUNCH_KEYS = {"seed", "resume", "progress", "paths", "hydra", "logger", "hardware"}
LAUNCH_LEAVES = {
    "cache_dir",
    "data_dir",
    "output_dir",
    "save_dir",
    "root",
    "progress",
    "num_workers",
}
OUTPUTS = ("report.md", "report.csv", "matrices.png", "metrics.png")


class ReportError(Exception):
    """A problem the user must fix; main() prints it as one `error:` line and exits with 2."""


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------- collecting


def results_name(scoring: str | None = None) -> str:
    """The results file of a scoring: results.json, or results.NAME.json written by
    `python -m mcl.eval.rescore --scorer-mode NAME`."""
    return f"results.{scoring}.json" if scoring else "results.json"


def find_results(path: str | os.PathLike, scoring: str | None = None) -> list[Path]:
    """Every results.json (or results.SCORING.json) at or below `path` (a run, a sweep or any
    parent directory)."""
    path, name = Path(path), results_name(scoring)
    if not path.exists():
        raise ReportError(f"no such path: {path}; pass existing run or sweep directories")
    if path.is_file():
        if path.name != name:
            raise ReportError(f"{path} is not a {name}; pass its run directory instead")
        return [path]
    found = sorted(path.rglob(name))
    if not found:
        hint = (
            f"; re-score the runs first: python -m mcl.eval.rescore {path} --scorer-mode {scoring}"
            if scoring
            else "; pass run directories or a multirun sweep directory"
        )
        raise ReportError(f"no {name} under {path}{hint}")
    return found


def _shape_ok(matrix, n_rows: int, n_cols: int) -> bool:
    return (
        isinstance(matrix, list)
        and len(matrix) == n_rows
        and all(isinstance(row, list) and len(row) == n_cols for row in matrix)
    )


def _problem(run) -> str | None:
    """Why a parsed results.json cannot be used, or None."""
    if not isinstance(run, dict):
        return "not a JSON object"
    for key, kind in REQUIRED.items():
        value = run.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"'{key}' is missing or not a {kind.__name__}"
    n_tasks, n_unseen = len(run["tasks"]), len(run.get("unseen_tasks") or [])
    if not n_tasks:
        return "'tasks' is empty"
    if not _shape_ok(run["matrix"], n_tasks + 1, n_tasks):
        return f"'matrix' is not {n_tasks + 1} x {n_tasks}"
    if n_unseen and not _shape_ok(run.get("unseen_matrix"), n_tasks + 1, n_unseen):
        return f"'unseen_matrix' is not {n_tasks + 1} x {n_unseen}"
    return None


def load_run(path: Path) -> dict | None:
    """The run stored in `path`, with `dir` and `mtime` added; None (and a warning) if unusable."""
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        problem = _problem(run)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = f"unreadable ({type(e).__name__}: {e})"
    if problem:
        warn(f"skipping {path}: {problem}")
        return None
    return run | {"dir": str(path.parent), "mtime": path.stat().st_mtime}


def split_values(run: dict, split: Sequence[str] = ()) -> tuple:
    """The run's values of the dotted config keys in `split` (e.g. method.allocator)."""
    flat = _flatten(run.get("config") or {})
    return tuple(flat.get(k, "null") for k in split)


def group_key(run: dict, split: Sequence[str] = ()) -> tuple:
    """What must match for runs to be averaged: same bench, data, task lists and method, and
    the same values of any `split` config keys (ablations, settings)."""
    return (
        run["bench"],
        run.get("data_source", "unknown"),
        tuple(run["tasks"]),
        tuple(run.get("unseen_tasks") or ()),
        run["method"],
        split_values(run, split),
    )


def variant_key(group: dict) -> tuple:
    """The table a group belongs in: bench, data source and task lists (not the method)."""
    return (
        group["bench"],
        group["data_source"],
        tuple(group["tasks"]),
        tuple(group["unseen_tasks"]),
    )


def _flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True, default=str)
    return out


def config_diff(runs: Sequence[dict]) -> list[str]:
    """Dotted config keys whose values differ between `runs` (launch details ignored)."""
    flat = [_flatten(r.get("config") or {}) for r in runs]
    keys = set().union(*flat)
    return sorted(
        k
        for k in keys
        if k.split(".")[0] not in LAUNCH_KEYS
        and k.split(".")[-1] not in LAUNCH_LEAVES
        and not k.startswith(DEFINITION_PREFIXES)
        and len({f.get(k, "null") for f in flat}) > 1  # a key added later defaults to null
    )


def _drop_duplicates(runs: list[dict], split: Sequence[str] = ()) -> list[dict]:
    """One run per (group, seed): a finished run beats an unfinished one, then the newest wins."""
    kept: dict[tuple, dict] = {}
    best_first = sorted(runs, key=lambda r: (r.get("complete") is True, r["mtime"]), reverse=True)
    for run in best_first:
        key = (*group_key(run, split), run["seed"])
        if key not in kept:
            kept[key] = run
            continue
        winner = kept[key]
        why = "newer" if winner.get("complete") == run.get("complete") else "finished"
        diff = config_diff([winner, run])
        note = f" (their configs differ in {', '.join(diff[:4])})" if diff else ""
        warn(
            f"{run['bench']}/{run['method']} seed {run['seed']} appears twice: keeping "
            f"{winner['dir']} ({why}), ignoring {run['dir']}{note}"
            + ("; --split-by those keys keeps both" if diff else "")
        )
    return sorted(kept.values(), key=lambda r: r["dir"])


def collect(
    paths: Iterable[str | os.PathLike],
    include_incomplete: bool = False,
    scoring: str | None = None,
    split: Sequence[str] = (),
) -> list[dict]:
    """Load every usable results.json below `paths`: unfinished runs are skipped unless
    `include_incomplete`, duplicate seeds keep the newest run. Raises ReportError if none is left.
    """
    # the same file reached through two arguments (a run and its parent) counts once
    files = {f.resolve(): f for p in paths for f in find_results(p, scoring)}
    runs = [run for run in map(load_run, files.values()) if run is not None]
    if not include_incomplete:
        for run in runs:
            if run.get("complete") is not True:
                warn(f"skipping unfinished run {run['dir']} (--include-incomplete keeps it)")
        runs = [run for run in runs if run.get("complete") is True]
    if not runs:
        raise ReportError(
            f"none of the {len(files)} results.json found is usable (see warnings); "
            "pass finished runs or add --include-incomplete"
        )
    return _drop_duplicates(runs, split)


def logs_dir(logs: str | os.PathLike | None = None) -> Path:
    """Where ``python -m mcl.train`` wrote its runs: ``logs`` if given, else ``$MCL_LOGS``, else
    ``./logs``, else the clone's ``logs/`` (a notebook runs in ``notebooks/``)."""
    from mcl.config import CONF_DIR

    if logs:
        return Path(logs).expanduser()
    candidates = [os.environ.get("MCL_LOGS"), "logs", CONF_DIR.parent / "logs"]
    for c in candidates:
        if c and Path(c).expanduser().is_dir():
            return Path(c).expanduser()
    raise ReportError(
        "no logs directory (set MCL_LOGS, or run from the directory holding logs/); "
        "make a run first: python -m mcl.train"
    )


def latest_run(logs: str | os.PathLike | None = None, complete: bool = True) -> Path:
    """The newest run directory below the logs directory (finished ones only if
    ``complete``), by its results.json's modification time."""
    root = logs_dir(logs)
    found = []
    for path in root.rglob("results.json"):
        run = load_run(path)
        if run is not None and (run.get("complete") is True or not complete):
            found.append((run["mtime"], path.parent))
    if not found:
        raise ReportError(f"no finished run under {root}; make one first: python -m mcl.train")
    return max(found)[1]


def latest_sweep(logs: str | os.PathLike | None = None) -> Path:
    """The newest multirun sweep directory (``<logs>/multirun/<timestamp>``)."""
    sweeps = sorted(p for p in (logs_dir(logs) / "multirun").glob("*") if p.is_dir())
    if not sweeps:
        raise ReportError(
            f"no sweep under {logs_dir(logs) / 'multirun'}; run one first, e.g. "
            "python -m mcl.train -m method=seq_lora,replay seed=0,1"
        )
    return sweeps[-1]


# --------------------------------------------------------------------------------- aggregating


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


def _group(runs: list[dict], split: Sequence[str] = ()) -> dict:
    first = runs[0]
    unseen = list(first.get("unseen_tasks") or [])
    stats = {key: summarize(r["metrics"].get(key) for r in runs) for key in METRICS}
    stats["trainable"] = summarize(map(_last_trainable, runs))
    stats["time_s"] = summarize((r.get("timings") or {}).get("total_s") for r in runs)
    diff = config_diff(runs)
    values = split_values(first, split)
    label = first["method"]
    shown = [(k.rsplit(".", 1)[-1], json.loads(v)) for k, v in zip(split, values) if v != "null"]
    if shown:  # keys a run does not have (another method's options) are left out
        label += " (" + ", ".join(f"{k}={v}" for k, v in shown) + ")"
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
        "tasks": list(first["tasks"]),
        "unseen_tasks": unseen,
        "n_seeds": len(runs),
        "n_incomplete": sum(r.get("complete") is not True for r in runs),
        "seeds": [r["seed"] for r in runs],
        "runs": [r["dir"] for r in runs],
        "metrics": stats,
        "matrix": mean_matrix([r["matrix"] for r in runs]),
        # per earlier task, A[T][j] - A[j][j] over seeds (BWT is the mean of these)
        "bwt_tasks": [summarize(col) for col in zip(*(bwt_per_task(r["matrix"]) for r in runs))],
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


def order_groups(
    groups: Sequence[dict], sort: str = "last", order: Sequence[str] | None = None
) -> list[dict]:
    """Groups by table (variant_key), then best `sort` value first (lowest for forgetting,
    params and time; undefined last); methods named in `order` (method or label) lead, in order.
    """

    def rank(g: dict) -> tuple:
        mean = g["metrics"][sort]["mean"]
        if mean is None:
            return (1, 0.0)
        return (0, mean if sort in LOWER_IS_BETTER else -mean)

    ranked = sorted(groups, key=rank)
    if order:
        position = {name: i for i, name in enumerate(order)}
        last = len(position)
        ranked.sort(key=lambda g: position.get(g["label"], position.get(g["method"], last)))
    # sections stay together (stable sort), so the table, CSV and figures list groups alike
    return sorted(ranked, key=variant_key)


# ---------------------------------------------------------------------------------- formatting


def _fixed(value: float, digits: int = 1) -> str:
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def format_stat(stat: dict, n_seeds: int) -> str:
    """`mean ± std`, `mean` for one seed, `n/a` when undefined; `(n=k)` if only k seeds count."""
    if stat["mean"] is None:
        return "n/a"
    text = _fixed(stat["mean"])
    if stat["std"] is not None:
        text += f" ± {_fixed(stat['std'])}"
    return text + (f" (n={stat['n']})" if stat["n"] < n_seeds else "")


def human_count(n: float | None) -> str:
    """12345 -> '12.3k', 1234567 -> '1.2M'."""
    if n is None:
        return "n/a"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}"
    return f"{n:.0f}"


def human_time(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _display(path: str) -> str:
    """`path` relative to the working directory when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def compact_dirs(dirs: Sequence[str]) -> str:
    """`logs/synth/seq_lora/{s0/<ts>, s1/<ts>}`: the shared prefix once, then each remainder."""
    shown = [_display(d) for d in dirs]
    if len(shown) == 1:
        return f"`{shown[0]}`"
    try:
        common = os.path.commonpath(shown)
    except ValueError:  # relative and absolute paths mixed
        common = ""
    if common in ("", os.sep):
        return ", ".join(f"`{s}`" for s in shown)
    rest = ", ".join(os.path.relpath(s, common) for s in shown)
    return f"`{common}/{{{rest}}}`"


def _source_note(source: str) -> str:
    if source == "synthetic":
        return "**SYNTHETIC twin** (generated data, not the real benchmark)"
    return "real data" if source == "real" else f"data source: {source}"


def _best(groups: Sequence[dict]) -> dict[str, float]:
    """Best shown (rounded) mean per score column among the continual methods; only where at
    least two of them compete and differ, so a lone method or an all-way tie is not bolded."""
    best = {}
    for _, key in TABLE_COLUMNS:
        values = [
            round(g["metrics"][key]["mean"], 1)
            for g in groups
            if g["method"] not in REFERENCE_METHODS and g["metrics"][key]["mean"] is not None
        ]
        if len(set(values)) > 1:
            best[key] = min(values) if key in LOWER_IS_BETTER else max(values)
    return best


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table_row(g: dict, best: dict[str, float]) -> str:
    unfinished = f" ({g['n_incomplete']} unfinished)" if g["n_incomplete"] else ""
    cells = [g["label"], f"{g['n_seeds']}{unfinished}"]
    for _, key in TABLE_COLUMNS:
        stat, text = g["metrics"][key], format_stat(g["metrics"][key], g["n_seeds"])
        is_best = stat["mean"] is not None and round(stat["mean"], 1) == best.get(key)
        cells.append(f"**{text}**" if is_best and g["method"] not in REFERENCE_METHODS else text)
    cells += [
        human_count(g["metrics"]["trainable"]["mean"]),
        human_time(g["metrics"]["time_s"]["mean"]),
    ]
    return _row(cells)


# a task whose share of a method's summed |per-task BWT| exceeds this gets a note
DOMINANT_SHARE = 0.5


def _bwt_section(groups: Sequence[dict]) -> list[str]:
    """BWT task by task (A[T][j] - A[j][j], mean ± std over seeds), and a note where one task
    makes up most of a method's BWT: scorers differ in scale (CIDEr can pass 400 where
    accuracies stop at 100), so one caption task can decide a BWT comparison on its own."""
    earlier = groups[0]["tasks"][:-1]
    if len(earlier) < 2:  # with one earlier task the table would repeat the BWT column
        return []
    lines = ["", "BWT per task (final score minus the score just after training it):", ""]
    lines += [_row(["method", *earlier]), _row(["---"] + ["--:"] * len(earlier))]
    notes = []
    for g in groups:
        lines.append(_row([g["label"], *(format_stat(s, g["n_seeds"]) for s in g["bwt_tasks"])]))
        means = [s["mean"] for s in g["bwt_tasks"]]
        total = sum(abs(m) for m in means if m is not None)
        if total > 0:
            top = max(range(len(means)), key=lambda j: abs(means[j] or 0.0))
            share = abs(means[top]) / total
            if share > DOMINANT_SHARE:
                notes.append(f"{earlier[top]} makes up {share:.0%} of {g['label']}'s")
    if notes:
        lines += [
            "",
            "Note: one task dominates BWT here (" + "; ".join(notes) + " summed per-task |BWT|). "
            "Scorers differ in scale, so compare the columns above too.",
        ]
    return lines


def _section(groups: Sequence[dict], split: bool, bold: bool) -> str:
    """One table: groups of one bench on the same data and tasks; `split` if the bench has
    other such tables."""
    first = groups[0]
    lines = [f"## {first['bench']}: {_source_note(first['data_source'])}", ""]
    if split:
        lines += [
            f"Bench {first['bench']} has runs on other data or task lists: they are in their own "
            "table, never averaged with these.",
            "",
        ]
    unseen = ", ".join(first["unseen_tasks"]) or "none"
    lines += [f"Tasks in order: {', '.join(first['tasks'])}; unseen: {unseen}", ""]
    header = ["method", "n seeds", *(h for h, _ in TABLE_COLUMNS), "trainable params", "time"]
    lines += [_row(header), _row(["---"] + ["--:"] * (len(header) - 1))]
    best = _best(groups) if bold else {}
    lines += [_table_row(g, best) for g in groups]
    lines += [
        "",
        "Scores as each task's scorer gives them (accuracies 0-100; CIDEr x100 can exceed 100),",
        "mean ± sample std (ddof=1) over seeds; (n=k) where only k seeds define the metric.",
        "Trainable params after the last task; time: whole run (training + eval).",
    ]
    if best:
        lines.append("Bold: best continual method per column (joint / zero_shot are bounds).")
    lines += _bwt_section(groups)
    faulty = [(g, seed, faults) for g in groups for seed, faults in g.get("faults", [])]
    if faulty:
        lines += ["", "Data faults (unreadable samples each run skipped and counted):", ""]
        for g, seed, faults in faulty:
            lines.append(f"- {g['label']} seed {seed}: " + "; ".join(faults))
    lines += ["", "Runs:"]
    for g in groups:
        seeds = f"seed{'s' if g['n_seeds'] > 1 else ''} {', '.join(map(str, g['seeds']))}"
        lines.append(f"- {g['label']} ({seeds}): {compact_dirs(g['runs'])}")
        if g["config_diff"]:
            lines.append(f"  - note: configs differ in {', '.join(g['config_diff'])}")
    return "\n".join(lines)


def markdown_table(
    groups: Sequence[dict],
    sort: str | None = None,
    order: Sequence[str] | None = None,
    bold: bool = True,
) -> str:
    """The comparison as Markdown: one section (table, notes, run directories) per bench, or
    per data source / task list where a bench has several, so best-of-column bolding only
    compares like with like. Rows keep the order of `groups` unless `sort` or `order` is given
    (see order_groups)."""
    if sort or order:
        groups = order_groups(groups, sort or "last", order)
    sections = []
    for key in dict.fromkeys(map(variant_key, groups)):
        members = [g for g in groups if variant_key(g) == key]
        split = any(g["bench"] == key[0] and variant_key(g) != key for g in groups)
        sections.append(_section(members, split, bold))
    return "\n\n".join(sections) + "\n"


# ------------------------------------------------------------------------------------- writing


def csv_text(groups: Sequence[dict]) -> str:
    """One row per group; each stat as <stat>_mean and <stat>_std at full precision, empty when
    undefined; list columns are joined with ';'."""
    header = ["bench", "data_source", "method", "n_seeds"]
    header += [f"{key}_{part}" for key in STATS for part in ("mean", "std")]
    header += ["label", "tasks", "unseen_tasks", "seeds", "runs"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for g in groups:
        stats = [g["metrics"][key][part] for key in STATS for part in ("mean", "std")]
        writer.writerow(
            [g["bench"], g["data_source"], g["method"], g["n_seeds"]]
            + ["" if v is None else repr(v) for v in stats]
            + [g["label"], *(";".join(map(str, g[k])) for k in ("tasks", "unseen_tasks", "seeds"))]
            + [";".join(g["runs"])]
        )
    return buf.getvalue()


def _title(g: dict, with_bench: bool) -> str:
    seeds = f"{g['n_seeds']} seed{'s' if g['n_seeds'] != 1 else ''}"
    return f"{g['bench']}: {g['label']} ({seeds})" if with_bench else f"{g['label']} ({seeds})"


def _data_note(groups: Sequence[dict]) -> str:
    """Figure title suffix: the data source when all groups share one (labels say it if not)."""
    sources = {g["data_source"] for g in groups}
    if sources == {"synthetic"}:
        return ": SYNTHETIC twin data"
    return ": real data" if sources == {"real"} else ""


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def plot_matrices(path: str | os.PathLike, groups: Sequence[dict]) -> None:
    """A grid of mean accuracy matrices, one panel per group, sharing one 0-100 colour bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_cols = min(len(groups), 3)
    n_rows = math.ceil(len(groups) / n_cols)
    width = max(len(g["tasks"]) + len(g["unseen_tasks"]) for g in groups)
    height = max(len(g["tasks"]) + 1 for g in groups)
    size = (n_cols * (2.6 + 0.75 * width) + 1.0, n_rows * (1.6 + 0.45 * height))
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    with_bench = len({g["bench"] for g in groups}) > 1
    top = wide_max([g["matrix"] for g in groups] + [g["unseen_matrix"] for g in groups])
    drawn = []
    for ax, g in zip(axes, groups):
        drawn.append(
            draw_matrix(
                ax, g["tasks"], g["matrix"], g["unseen_tasks"], g["unseen_matrix"], 8, top=top
            )
        )
        ax.set_title(_title(g, with_bench))
    for ax in axes[len(groups) :]:
        ax.set_axis_off()
    shared_colorbars(fig, drawn, list(axes), label="score (mean over seeds)", shrink=0.8)
    fig.suptitle(f"Accuracy matrices, mean over seeds{_data_note(groups)}")
    atomic_write_bytes(path, _png(fig))


def plot_metrics(path: str | os.PathLike, groups: Sequence[dict]) -> None:
    """Grouped bars of Last / MAA / BWT per group, with sample-std error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = (("Last", "last"), ("MAA", "maa"), ("BWT", "bwt"))
    width = 0.8 / len(shown)
    fig = Figure(figsize=(2.5 + 1.1 * len(groups), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (name, key) in enumerate(shown):
        stats = [g["metrics"][key] for g in groups]
        means = [math.nan if s["mean"] is None else s["mean"] for s in stats]
        stds = [math.nan if s["std"] is None else s["std"] for s in stats]  # no bar for 1 seed
        offsets = [x + (i - (len(shown) - 1) / 2) * width for x in range(len(groups))]
        ax.bar(offsets, means, width, yerr=stds, capsize=3, label=name)
    ax.axhline(0, color="black", linewidth=0.8)
    with_bench = len({g["bench"] for g in groups}) > 1
    labels = [_title(g, with_bench) for g in groups]
    ax.set_xticks(range(len(groups)), labels, rotation=20, ha="right")
    ax.set_ylabel("score (mean ± std over seeds)")
    ax.set_title(f"Last / MAA / BWT{_data_note(groups)}")
    ax.legend()
    atomic_write_bytes(path, _png(fig))


def write_outputs(out: str | os.PathLike, groups: Sequence[dict], markdown: str) -> None:
    out = Path(out)
    try:
        atomic_write_text(out / "report.md", markdown)
        atomic_write_text(out / "report.csv", csv_text(groups))
        plot_matrices(out / "matrices.png", groups)
        plot_metrics(out / "metrics.png", groups)
    except OSError as e:
        raise ReportError(f"cannot write to {out}: {e.strerror or e}; choose another --out") from e


# ----------------------------------------------------------------------------------------- CLI


def default_out(paths: Sequence[str | os.PathLike]) -> Path:
    """Where the report goes without --out: ``report/`` in the one directory given, or in the
    deepest directory holding all of them (the first one's when they share only the root) --
    beside the runs it describes, never the current directory."""
    dirs = [Path(p).resolve() for p in paths]
    dirs = [d if d.is_dir() else d.parent for d in dirs]
    common = Path(os.path.commonpath(dirs))
    return (dirs[0] if common == Path(common.anchor) else common) / "report"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mcl.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="+", metavar="RUN_DIR", help="run, sweep or parent directories"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default: RUN_DIR/report for one RUN_DIR, else a report folder in "
        "the deepest directory holding them all)",
    )
    parser.add_argument(
        "--sort",
        default="last",
        choices=STATS,
        help="order rows by this stat, best first (default: last)",
    )
    parser.add_argument(
        "--order",
        default="",
        help="comma-separated methods to list first, in this order (e.g. zero_shot,seq_lora)",
    )
    parser.add_argument(
        "--include-incomplete",
        action="store_true",
        help="keep runs whose results.json says complete: false (running or crashed)",
    )
    parser.add_argument(
        "--scoring",
        default=None,
        metavar="NAME",
        help="report results.NAME.json, written by `python -m mcl.eval.rescore --scorer-mode "
        "NAME` (e.g. smolora), instead of results.json",
    )
    parser.add_argument(
        "--split-by",
        default="",
        metavar="KEYS",
        help="comma-separated dotted config keys whose values keep runs apart (ablations, "
        "settings), e.g. method.allocator,bench.synthetic.instructions",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    order = [name.strip() for name in args.order.split(",") if name.strip()]
    try:
        split = [k.strip() for k in args.split_by.split(",") if k.strip()]
        runs = collect(args.paths, args.include_incomplete, args.scoring, split)
        groups = aggregate(runs, split)
        known = {g["method"] for g in groups} | {g["label"] for g in groups}
        for name in order:
            if name not in known:
                warn(f"--order names {name!r}, which matches no method found")
        groups = order_groups(groups, args.sort, order)
        markdown = markdown_table(groups)
        print(markdown, end="")
        out = args.out or default_out(args.paths)
        write_outputs(out, groups, markdown)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {', '.join(OUTPUTS)} to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
