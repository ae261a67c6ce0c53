"""Human-readable views of the accuracy matrix: console table, CSV and heat-map PNG.

All three take the same arguments (column names, the (T+1) x C matrix, optional unseen columns
and their (T+1) x U matrix; ``stages``: the trained tasks naming the rows, when a task has
several eval sets and so the columns are not the tasks) and show missing cells as missing, never
as 0. Files are written atomically so an interrupted run never leaves a truncated report. The
heat map gives columns that score above 100 (CIDEr x100) their own colour scale and says when
the data is synthetic; :func:`data_faults` words results.json's count of unreadable samples.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mcl.eval.metrics import extra_keys
from mcl.utils.io import atomic_write_bytes, atomic_write_text

MISSING = "-"
Matrix = Sequence[Sequence[float | None]]

# (label, metrics key) in display order; aliases follow metrics.md's name table. Extra scores
# (e.g. MIF) follow them where a run has some: see `metric_rows`.
METRIC_ROWS = (
    ("Last (MFN)", "last"),
    ("MAA", "maa"),
    ("BWT", "bwt"),
    ("BWT_max", "bwt_max"),
    ("Forgetting", "forgetting"),
    ("FWT", "fwt"),
    ("Plasticity (MFT)", "plasticity"),
    ("Unseen", "unseen"),
    ("IF (held-out instr.)", "if_score"),
    ("Answer format ok %", "format_compliance"),
)


def _value(v: float | None) -> float | None:
    """None for a missing cell (None or NaN)."""
    return None if v is None or math.isnan(float(v)) else float(v)


def metric_rows(metrics: dict) -> list[tuple[str, str]]:
    """`METRIC_ROWS`, then two rows per extra score the metrics carry (its label from the scorer
    registry, e.g. "MIF" and "MIF unseen")."""
    keys = extra_keys(metrics)
    if not keys:
        return list(METRIC_ROWS)
    # imported here: the registry builds scorers (torch), which plain table readers do not need
    from mcl.eval.scorers.registry import extra_label

    rows = list(METRIC_ROWS)
    for key in keys:
        label = extra_label(key.lower())
        rows += [(label, key), (f"{label} unseen", f"{key}_unseen")]
    return rows


def row_labels(tasks: Sequence[str]) -> list[str]:
    """'0 (zero-shot)', '1 after <task 1>', ... — one per matrix row."""
    return ["0 (zero-shot)"] + [f"{i} after {t}" for i, t in enumerate(tasks, start=1)]


def _columns(
    tasks, matrix, unseen_tasks, unseen_matrix, stages=None
) -> tuple[list[str], list[list]]:
    """Column names (unseen ones included) and rows of floats/None, after checking shapes
    (``stages``: the row tasks, default ``tasks``)."""
    unseen_tasks = list(unseen_tasks or [])
    n_rows = len(tasks if stages is None else stages) + 1
    if len(matrix) != n_rows or any(len(r) != len(tasks) for r in matrix):
        raise ValueError(f"matrix must be {n_rows} rows of {len(tasks)} cells")
    if unseen_tasks:
        if unseen_matrix is None or len(unseen_matrix) != len(matrix):
            raise ValueError(f"unseen matrix must have {len(matrix)} rows")
        if any(len(r) != len(unseen_tasks) for r in unseen_matrix):
            raise ValueError(f"unseen matrix rows must have {len(unseen_tasks)} cells")
        rows = [list(r) + list(u) for r, u in zip(matrix, unseen_matrix)]
    else:
        rows = [list(r) for r in matrix]
    return list(tasks) + unseen_tasks, [[_value(v) for v in r] for r in rows]


def matrix_table(
    tasks: Sequence[str],
    matrix: Matrix,
    metrics: dict,
    unseen_tasks: Sequence[str] | None = None,
    unseen_matrix: Matrix | None = None,
    stages: Sequence[str] | None = None,
    summary: tuple[Matrix, Matrix | None] | None = None,
) -> str:
    """Fixed-width console table of the matrix (unseen columns marked '*'), then, when
    ``summary`` gives the per-stage matrices (tasks with several eval sets), the per-stage
    table, then the metrics."""
    out = _grid(tasks, matrix, unseen_tasks, unseen_matrix, stages)
    if summary is not None:
        out += ["", "per stage (mean of each task's eval sets):"]
        out += _grid(stages, summary[0], _unseen_tasks(unseen_tasks, summary[1]), summary[1])
    out.append("")
    shown = metric_rows(metrics)
    metric_w = max(len(label) for label, _ in shown)
    for label, key in shown:
        value = _value(metrics.get(key))
        text = "n/a" if value is None else f"{value:.2f}"
        out.append(f"{label.ljust(metric_w)}  {text:>7}")
    return "\n".join(out)


def _unseen_tasks(unseen_columns, unseen_stage) -> list[str]:
    """The unseen tasks of the per-stage table: column names' task parts, in order."""
    names = [str(c).split("/")[0] for c in unseen_columns or []]
    return list(dict.fromkeys(names)) if unseen_stage else []


def results_table(results: dict) -> str:
    """:func:`matrix_table` of a results.json: per-set columns (``columns``; a run without
    them has one per task) and, when some task has several sets, the per-stage table."""
    tasks, unseen = results["tasks"], results.get("unseen_tasks") or []
    names = [c["name"] for c in results.get("columns") or []] or list(tasks)
    unseen_names = [c["name"] for c in results.get("unseen_columns") or []] or list(unseen)
    summary = None
    if (names, unseen_names) != (list(tasks), list(unseen)) and results.get("stage_matrix"):
        summary = (results["stage_matrix"], results.get("unseen_stage_matrix"))
    return matrix_table(
        names,
        results["matrix"],
        results["metrics"],
        unseen_names,
        results.get("unseen_matrix"),
        stages=tasks,
        summary=summary,
    )


def _grid(tasks, matrix, unseen_tasks, unseen_matrix, stages=None) -> list[str]:
    """The matrix's lines: a header of column names, a rule, one line per row."""
    names, rows = _columns(tasks, matrix, unseen_tasks, unseen_matrix, stages)
    headers = list(tasks) + [f"*{u}" for u in names[len(tasks) :]]
    labels = row_labels(tasks if stages is None else stages)
    label_w = max(len(s) for s in labels + ["after task"])
    widths = [max(len(h), 6) for h in headers]

    def line(first: str, cells: list[str]) -> str:
        return "  ".join([first.ljust(label_w)] + [c.rjust(w) for c, w in zip(cells, widths)])

    out = [line("after task", headers)]
    out.append("-" * len(out[0]))
    for label, row in zip(labels, rows):
        out.append(line(label, [MISSING if v is None else f"{v:.1f}" for v in row]))
    if unseen_tasks:
        out.append("* = unseen task (never trained on)")
    return out


def write_matrix_csv(
    path: str | os.PathLike,
    tasks: Sequence[str],
    matrix: Matrix,
    unseen_tasks: Sequence[str] | None = None,
    unseen_matrix: Matrix | None = None,
    stages: Sequence[str] | None = None,
) -> None:
    """CSV with header `after_task,<columns>,unseen:<name>...`; `after_task` is 'zero-shot' for
    row 0, else the task just trained. Missing cells are empty; values keep full precision."""
    names, rows = _columns(tasks, matrix, unseen_tasks, unseen_matrix, stages)
    header = ["after_task"] + list(tasks) + [f"unseen:{u}" for u in names[len(tasks) :]]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for after, row in zip(["zero-shot"] + list(tasks if stages is None else stages), rows):
        writer.writerow([after] + ["" if v is None else repr(v) for v in row])
    atomic_write_text(path, buf.getvalue())


# accuracies stop at 100; a column whose scores pass it (CIDEr x100 reaches 400-600) gets its own
# colour scale and colour bar, so neither hides the other's differences
SCALE = 100.0


@dataclass
class MatrixImages:
    """What :func:`draw_matrix` drew: the 0-100 image and, when some columns score above 100
    (CIDEr), the image of those columns on their own scale; :func:`add_colorbars` labels both."""

    main: object
    wide: object | None = None
    wide_columns: list[str] = field(default_factory=list)


def _nice_max(value: float) -> float:
    """The colour scale's top for scores above 100: the next multiple of 50 (or 100)."""
    step = 50 if value <= 300 else 100
    return float(math.ceil(value / step) * step)


def wide_max(matrices: Sequence[Matrix]) -> float | None:
    """The shared top of the wide scale for several matrices (None if no cell passes 100)."""
    values = [v for m in matrices for row in m for v in map(_value, row) if v is not None]
    top = max(values, default=0.0)
    return _nice_max(top) if top > SCALE else None


def draw_matrix(
    ax,
    tasks: Sequence[str],
    matrix: Matrix,
    unseen_tasks: Sequence[str] | None = None,
    unseen_matrix: Matrix | None = None,
    fontsize: float | None = None,
    top: float | None = None,
    stages: Sequence[str] | None = None,
) -> MatrixImages:
    """Draw the annotated heat map on a matplotlib Axes: scores 0-100 on one colour scale;
    columns with a score above 100 (CIDEr x100) on a second scale up to ``top`` (default: their
    maximum, rounded up), so a colour bar never stops below a cell it colours. Missing cells are
    grey and hatched, a thick line comes before the unseen columns. Returns the images for
    :func:`add_colorbars`."""
    import numpy as np
    from matplotlib.patches import Rectangle

    names, rows = _columns(tasks, matrix, unseen_tasks, unseen_matrix, stages)
    data = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)
    n_rows, n_cols = data.shape
    headers = list(tasks) + [f"*{u}" for u in names[len(tasks) :]]
    with np.errstate(invalid="ignore"):
        wide = np.array([np.nanmax(data[:, j], initial=0.0) > SCALE for j in range(n_cols)])
    top = top or (_nice_max(float(np.nanmax(data[:, wide]))) if wide.any() else None)
    main_data = np.where(wide[None, :], np.nan, data)
    image = ax.imshow(
        np.ma.masked_invalid(main_data), cmap="viridis", vmin=0, vmax=SCALE, aspect="auto"
    )
    images = MatrixImages(image)
    if wide.any():
        wide_data = np.where(wide[None, :], data, np.nan)
        images.wide = ax.imshow(
            np.ma.masked_invalid(wide_data), cmap="magma", vmin=0, vmax=top, aspect="auto"
        )
        images.wide_columns = [names[j] for j in range(n_cols) if wide[j]]
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.set_facecolor("lightgrey")  # masked cells show the background
    for i in range(n_rows):
        for j in range(n_cols):
            if np.isnan(data[i, j]):
                ax.add_patch(
                    Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", color="grey", lw=0)
                )
            else:
                scale = top if wide[j] else SCALE
                colour = "white" if data[i, j] < 0.6 * scale else "black"
                label = f"{data[i, j]:.1f}"
                ax.text(j, i, label, ha="center", va="center", color=colour, fontsize=fontsize)
    if len(names) > len(tasks):
        ax.axvline(len(tasks) - 0.5, color="black", linewidth=3)
    ax.set_xticks(range(n_cols), headers, rotation=30, ha="right")
    ax.set_yticks(range(n_rows), row_labels(tasks if stages is None else stages))
    ax.set_xlabel("evaluated on (* = unseen)" if len(names) > len(tasks) else "evaluated on")
    return images


def add_colorbars(fig, images: MatrixImages, ax, label: str = "score", **kwargs) -> list:
    """One colour bar per scale drawn: ``0-100`` and, when some columns pass 100, theirs."""
    if images.wide is None:
        return [fig.colorbar(images.main, ax=ax, label=label, **kwargs)]
    return [
        fig.colorbar(images.main, ax=ax, label=f"{label}, 0-100", **kwargs),
        fig.colorbar(
            images.wide, ax=ax, label=f"{', '.join(images.wide_columns)} (> 100)", **kwargs
        ),
    ]


def shared_colorbars(fig, drawn: Sequence[MatrixImages], axes, label: str = "score", **kwargs):
    """The colour bars of several panels drawn with one ``top`` (:func:`wide_max`): the 0-100
    bar and, if any panel has columns above 100, theirs (naming those columns of every panel)."""
    images = next((d for d in drawn if d.wide is not None), drawn[0])
    wide = sorted({c for d in drawn for c in d.wide_columns})
    return add_colorbars(fig, MatrixImages(images.main, images.wide, wide), axes, label, **kwargs)


SYNTHETIC_NOTE = "SYNTHETIC data (a generated twin), not the real benchmark"


def _run_data_source(path: Path) -> str | None:
    """The data source the run's results.json next to ``path`` records, if any."""
    try:
        return json.loads((path.parent / "results.json").read_text()).get("data_source")
    except (OSError, ValueError, AttributeError):
        return None


def matrix_figure(
    tasks: Sequence[str],
    matrix: Matrix,
    unseen_tasks: Sequence[str] | None = None,
    unseen_matrix: Matrix | None = None,
    title: str = "",
    data_source: str | None = None,
    stages: Sequence[str] | None = None,
):
    """The heat map as a matplotlib Figure (Agg canvas: no display, no pyplot state); a
    synthetic data source is said in the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_cols = len(tasks) + len(unseen_tasks or [])
    top = wide_max([matrix, unseen_matrix or []])
    n_rows = len(matrix)
    fig = Figure(figsize=(3.2 + 0.9 * n_cols + (1.0 if top else 0), 1.4 + 0.5 * n_rows))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn = draw_matrix(ax, tasks, matrix, unseen_tasks, unseen_matrix, stages=stages)
    add_colorbars(fig, drawn, ax)
    if data_source == "synthetic":
        title = f"{title}\n{SYNTHETIC_NOTE}" if title else SYNTHETIC_NOTE
    if title:
        ax.set_title(title, color="darkred" if data_source == "synthetic" else "black")
    fig.tight_layout()
    return fig


def plot_matrix(
    path: str | os.PathLike,
    tasks: Sequence[str],
    matrix: Matrix,
    unseen_tasks: Sequence[str] | None = None,
    unseen_matrix: Matrix | None = None,
    title: str = "",
    data_source: str | None = None,
    stages: Sequence[str] | None = None,
) -> None:
    """Annotated heat map saved as PNG (see :func:`draw_matrix` for the colour scales). The
    title says when the data is synthetic: ``data_source``, else what the run's results.json
    next to ``path`` records."""
    path = Path(path)
    source = data_source or _run_data_source(path)
    rows = {} if stages is None else {"stages": stages}
    fig = matrix_figure(tasks, matrix, unseen_tasks, unseen_matrix, title, source, **rows)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


def data_faults(skipped: dict | None) -> list[str]:
    """results.json's ``skipped`` as lines, one per task with unreadable data: how many
    samples each split lost and why (``causes``), and the damaged shards."""
    lines = []
    for task, entry in (skipped or {}).items():
        if not isinstance(entry, dict):
            continue
        parts = []
        for split in ("train", "test"):
            n = entry.get(split) or 0
            if not n:
                continue
            causes = (entry.get("causes") or {}).get(split) or {}
            why = ", ".join(f"{c} {k}" for c, k in causes.items())
            parts.append(f"{split} {n}" + (f" ({why})" if why else ""))
        if parts:
            lines.append(f"{task}: {'; '.join(parts)} unreadable sample(s) skipped")
    return lines
