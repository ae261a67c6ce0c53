"""Rendering groups: the Markdown comparison (one table per bench and data variant, with
per-task BWT, data faults and run directories) and the CSV."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

from mcl.report.aggregate import (
    LOWER_IS_BETTER,
    NO_STAT,
    extras_of,
    order_groups,
    stat_names,
    variant_key,
)

# (header, key) of the table's score columns; each extra score a table's runs have (e.g. MIF)
# follows them, headed by its metrics key: `columns`
TABLE_COLUMNS = (
    ("Last", "last"),
    ("MAA", "maa"),
    ("BWT", "bwt"),
    ("Forgetting", "forgetting"),
    ("FWT", "fwt"),
    ("Plasticity (MFT)", "plasticity"),
    ("Unseen", "unseen"),
    ("IF", "if_score"),
)


def columns(groups: Sequence[dict]) -> list[tuple[str, str]]:
    """(header, key) of a table's score columns: `TABLE_COLUMNS`, then its extra scores."""
    return [*TABLE_COLUMNS, *((key, key) for key in extras_of(groups))]


def _stat(g: dict, key: str) -> dict:
    return g["metrics"].get(key, NO_STAT)


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


def _best(groups: Sequence[dict], shown: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Best shown (rounded) mean per score column among the continual methods (reference runs,
    the upper and lower bounds, never compete); only where at least two of them compete and
    differ, so a lone method or an all-way tie is not bolded."""
    best = {}
    for _, key in shown:
        values = [
            round(_stat(g, key)["mean"], 1)
            for g in groups
            if not g["reference"] and _stat(g, key)["mean"] is not None
        ]
        if len(set(values)) > 1:
            best[key] = min(values) if key in LOWER_IS_BETTER else max(values)
    return best


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table_row(g: dict, best: dict[str, float], shown: Sequence[tuple[str, str]]) -> str:
    unfinished = f" ({g['n_incomplete']} unfinished)" if g["n_incomplete"] else ""
    cells = [g["label"], f"{g['n_seeds']}{unfinished}"]
    for _, key in shown:
        stat = _stat(g, key)
        text = format_stat(stat, g["n_seeds"])
        is_best = stat["mean"] is not None and round(stat["mean"], 1) == best.get(key)
        cells.append(f"**{text}**" if is_best and not g["reference"] else text)
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


def _sets_section(groups: Sequence[dict]) -> list[str]:
    """Where a task has several eval sets: each set's Last and BWT (mean ± std over seeds);
    the table above is on the per-stage summary (per task, the mean of its sets)."""
    names = groups[0].get("columns") or []
    if not any(g.get("per_set") for g in groups):
        return []
    lines = [
        "",
        "Per eval set (the metrics above are on the per-stage summary: per task, the mean of "
        "its sets' scores); Last / BWT of each set:",
        "",
    ]
    lines += [_row(["method", *names]), _row(["---"] + ["--:"] * len(names))]
    for g in groups:
        cells = []
        for name in names:
            stat = (g.get("per_set") or {}).get(name) or {}
            last, bwt = (format_stat(stat.get(k, NO_STAT), g["n_seeds"]) for k in ("last", "bwt"))
            cells.append(f"{last} / {bwt}")
        lines.append(_row([g["label"], *cells]))
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
    shown = columns(groups)
    header = ["method", "n seeds", *(h for h, _ in shown), "trainable params", "time"]
    lines += [_row(header), _row(["---"] + ["--:"] * (len(header) - 1))]
    best = _best(groups, shown) if bold else {}
    lines += [_table_row(g, best, shown) for g in groups]
    lines += [
        "",
        "Scores as each task's scorer gives them (accuracies 0-100; CIDEr x100 can exceed 100),",
        "mean ± sample std (ddof=1) over seeds; (n=k) where only k seeds define the metric.",
        "Trainable params after the last task; time: whole run (training + eval).",
    ]
    if best:
        lines.append("Bold: best continual method per column (reference methods are bounds).")
    lines += _bwt_section(groups)
    lines += _sets_section(groups)
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


def csv_text(groups: Sequence[dict]) -> str:
    """One row per group; each stat as <stat>_mean and <stat>_std at full precision, empty when
    undefined; list columns are joined with ';'."""
    header = ["bench", "data_source", "method", "n_seeds"]
    names = stat_names(groups)
    header += [f"{key}_{part}" for key in names for part in ("mean", "std")]
    header += ["label", "tasks", "unseen_tasks", "seeds", "runs"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for g in groups:
        stats = [_stat(g, key)[part] for key in names for part in ("mean", "std")]
        writer.writerow(
            [g["bench"], g["data_source"], g["method"], g["n_seeds"]]
            + ["" if v is None else repr(v) for v in stats]
            + [g["label"], *(";".join(map(str, g[k])) for k in ("tasks", "unseen_tasks", "seeds"))]
            + [";".join(g["runs"])]
        )
    return buf.getvalue()
