"""Human-readable views of the accuracy matrix: console table, CSV and heat-map PNG.

All three take the same arguments (task names, the (T+1) x T matrix, optional unseen tasks and
their (T+1) x U matrix) and show missing cells as missing, never as 0. Files are written
atomically so an interrupted run never leaves a truncated report.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence

from mcl.utils.io import atomic_write_bytes, atomic_write_text

MISSING = "-"
Matrix = Sequence[Sequence[float | None]]

# (label, metrics key) in display order; aliases follow metrics.md's name table
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
    ("MIF (SMoLoRA rule)", "MIF"),
    ("MIF unseen", "MIF_unseen"),
)


def _value(v: float | None) -> float | None:
    """None for a missing cell (None or NaN)."""
    return None if v is None or math.isnan(float(v)) else float(v)


def row_labels(tasks: Sequence[str]) -> list[str]:
    """'0 (zero-shot)', '1 after <task 1>', ... — one per matrix row."""
    return ["0 (zero-shot)"] + [f"{i} after {t}" for i, t in enumerate(tasks, start=1)]


def _columns(tasks, matrix, unseen_tasks, unseen_matrix) -> tuple[list[str], list[list]]:
    """Column names (unseen ones included) and rows of floats/None, after checking shapes."""
    unseen_tasks = list(unseen_tasks or [])
    if len(matrix) != len(tasks) + 1 or any(len(r) != len(tasks) for r in matrix):
        raise ValueError(f"matrix must be {len(tasks) + 1} rows of {len(tasks)} cells")
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
) -> str:
    """Fixed-width console table of the matrix (unseen columns marked '*'), then the metrics."""
    names, rows = _columns(tasks, matrix, unseen_tasks, unseen_matrix)
    headers = list(tasks) + [f"*{u}" for u in names[len(tasks) :]]
    labels = row_labels(tasks)
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
    out.append("")
    metric_w = max(len(label) for label, _ in METRIC_ROWS)
    for label, key in METRIC_ROWS:
        value = _value(metrics.get(key))
        text = "n/a" if value is None else f"{value:.2f}"
        out.append(f"{label.ljust(metric_w)}  {text:>7}")
    return "\n".join(out)


def write_matrix_csv(
    path: str | os.PathLike,
    tasks: Sequence[str],
    matrix: Matrix,
    unseen_tasks: Sequence[str] | None = None,
    unseen_matrix: Matrix | None = None,
) -> None:
    """CSV with header `after_task,<tasks>,unseen:<name>...`; `after_task` is 'zero-shot' for
    row 0, else the task just trained. Missing cells are empty; values keep full precision."""
    names, rows = _columns(tasks, matrix, unseen_tasks, unseen_matrix)
    header = ["after_task"] + list(tasks) + [f"unseen:{u}" for u in names[len(tasks) :]]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for after, row in zip(["zero-shot"] + list(tasks), rows):
        writer.writerow([after] + ["" if v is None else repr(v) for v in row])
    atomic_write_text(path, buf.getvalue())


def draw_matrix(
    ax,
    tasks: Sequence[str],
    matrix: Matrix,
    unseen_tasks: Sequence[str] | None = None,
    unseen_matrix: Matrix | None = None,
    fontsize: float | None = None,
):
    """Draw the annotated 0-100 heat map on a matplotlib Axes and return its image (for a colour
    bar). Missing cells are grey and hatched, a thick line comes before the unseen columns."""
    import numpy as np
    from matplotlib.patches import Rectangle

    names, rows = _columns(tasks, matrix, unseen_tasks, unseen_matrix)
    data = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)
    n_rows, n_cols = data.shape
    headers = list(tasks) + [f"*{u}" for u in names[len(tasks) :]]

    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_facecolor("lightgrey")  # masked cells show the background
    for i in range(n_rows):
        for j in range(n_cols):
            if np.isnan(data[i, j]):
                ax.add_patch(
                    Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", color="grey", lw=0)
                )
            else:
                colour = "white" if data[i, j] < 60 else "black"
                label = f"{data[i, j]:.1f}"
                ax.text(j, i, label, ha="center", va="center", color=colour, fontsize=fontsize)
    if len(names) > len(tasks):
        ax.axvline(len(tasks) - 0.5, color="black", linewidth=3)
    ax.set_xticks(range(n_cols), headers, rotation=30, ha="right")
    ax.set_yticks(range(n_rows), row_labels(tasks))
    ax.set_xlabel("evaluated on (* = unseen)" if len(names) > len(tasks) else "evaluated on")
    return image


def plot_matrix(
    path: str | os.PathLike,
    tasks: Sequence[str],
    matrix: Matrix,
    unseen_tasks: Sequence[str] | None = None,
    unseen_matrix: Matrix | None = None,
    title: str = "",
) -> None:
    """Annotated heat map (0-100) saved as PNG; missing cells grey and hatched, a thick line
    before the unseen columns. Uses the Agg canvas directly, so no display or pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_cols = len(tasks) + len(unseen_tasks or [])
    fig = Figure(figsize=(2.5 + 0.9 * n_cols, 1.2 + 0.5 * (len(tasks) + 1)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = draw_matrix(ax, tasks, matrix, unseen_tasks, unseen_matrix)
    fig.colorbar(image, ax=ax, label="score")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())
