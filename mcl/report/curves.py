"""The results pages' own figures: Last against BWT for every group (with the trade-off curve
through a method's settings where a page sweeps one, e.g. a penalty weight), and each task's
score across the sequence (its forgetting curve). Byte-stable, as the other figures: fixed size
and dpi, no metadata."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from mcl.report.aggregate import setting, short_number
from mcl.report.plots import png_bytes
from mcl.utils.io import atomic_write_bytes


def _mean_std(g: dict, key: str) -> tuple[float, float]:
    s = g["metrics"][key]
    mean = math.nan if s["mean"] is None else s["mean"]
    return mean, 0.0 if s["std"] is None else s["std"]


# Where a point's label may go, in points from the point: beside it first, then further out
# (with a leader line), so that labels of a tight cluster of methods do not print over each other.
_NEAR = [(5, 3), (5, -3), (-5, 3), (-5, -3)]
_FAR = [(dx, dy) for dy in (14, -14, 26, -26, 38, -38) for dx in (6, -6)]


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _place_labels(fig, ax, labels: Sequence[tuple[str, float, float, str]]) -> None:
    """Annotate each point, choosing for each label (top to bottom) the first offset at which
    it overlaps no label already placed, no marker and stays inside the axes; where none is
    free, the offset with the least overlap. Deterministic: same points, same picture."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig.draw_without_rendering()  # settle the layout, so pixel positions are final
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pad = 4 * fig.dpi / 72
    markers = []
    for _, x, y, _ in labels:
        if math.isfinite(x) and math.isfinite(y):
            px, py = ax.transData.transform((x, y))
            markers.append(Bbox([[px - pad, py - pad], [px + pad, py + pad]]))
    placed: list = []
    order = sorted(range(len(labels)), key=lambda i: (-_finite(labels[i][2]), labels[i][1]))
    for i in order:
        text, x, y, color = labels[i]
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        best = None
        for dx, dy in _NEAR + _FAR:
            note = ax.annotate(
                text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=7, color=color,
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
                ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top",
                arrowprops=None if (dx, dy) in _NEAR else {"arrowstyle": "-", "lw": 0.4,
                                                           "color": "grey"},
            )  # fmt: skip
            note.set_in_layout(False)
            note.update_positions(renderer)
            box = Text.get_window_extent(note, renderer)  # the words, not the leader line
            cost = sum(_overlap(box, b) for b in placed + markers)
            cost += box.width * box.height - _overlap(box, frame)  # the part outside the axes
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, note, box)
            else:
                note.remove()
            if cost == 0:
                break
        placed.append(best[2])


def _finite(v: float) -> float:
    return v if math.isfinite(v) else -math.inf


def plot_tradeoff(path: str | os.PathLike, groups: Sequence[dict]) -> None:
    """Write :func:`tradeoff_figure` as a PNG."""
    atomic_write_bytes(path, png_bytes(tradeoff_figure(groups)))


def tradeoff_figure(groups: Sequence[dict]):
    """Last (y) against BWT (x), mean ± std over seeds for every group; groups of one method
    that differ only in a numeric setting are joined in the setting's order (a trade-off
    curve), each point labelled with its value. Bounds (reference methods) are hollow."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    methods = list(dict.fromkeys(g["method"] for g in groups))
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    curves = False
    labels: list[tuple[str, float, float, str]] = []
    for method in methods:
        members = [g for g in groups if g["method"] == method]
        swept = [g for g in members if setting(g) is not None]
        if len(swept) > 1:
            swept.sort(key=setting)
            xs = [_mean_std(g, "bwt")[0] for g in swept]
            ys = [_mean_std(g, "last")[0] for g in swept]
            ax.plot(xs, ys, "-", color=colors[method], linewidth=1, label=method)
            curves = True
        for g in members:
            (x, xerr), (y, yerr) = _mean_std(g, "bwt"), _mean_std(g, "last")
            face = "none" if g["reference"] else colors[method]
            ax.errorbar(
                x, y, xerr=xerr, yerr=yerr, fmt="o", color=colors[method], mfc=face, capsize=3
            )
            if len(swept) > 1 and g in swept:  # on a curve: its value, in the curve's colour
                labels.append((short_number(setting(g)), x, y, colors[method]))
            else:
                labels.append((g["label"], x, y, "black"))
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("BWT (higher: less forgetting)")
    ax.set_ylabel("Last (mean over tasks after the last)")
    ax.set_title("Last against BWT, mean ± std over seeds (hollow: bounds)")
    _place_labels(fig, ax, labels)
    if curves:
        ax.legend(fontsize=7)
    return fig


def plot_forgetting(path: str | os.PathLike, groups: Sequence[dict]) -> None:
    """One panel per task: its score (mean over seeds) after each training stage, one line per
    group; the drop after the task's own stage is its forgetting."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(t for g in groups for t in g["tasks"]))
    n_cols = min(len(tasks), 3)
    n_rows = math.ceil(len(tasks) / n_cols)
    fig = Figure(figsize=(4.0 * n_cols + 1.5, 2.8 * n_rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for j, (ax, task) in enumerate(zip(axes, tasks)):
        for i, g in enumerate(groups):
            if task not in g["tasks"]:
                continue
            col = g["tasks"].index(task)
            ys = [math.nan if row[col] is None else row[col] for row in g["stage_matrix"]]
            style = "--" if g["reference"] else "-"
            ax.plot(range(len(ys)), ys, style, marker=".", color=f"C{i % 10}", label=g["label"])
        ax.axvline(j + 1, color="grey", linewidth=0.6, linestyle=":")
        ax.set_title(f"{task} (trained at stage {j + 1})", fontsize=9)
        ax.set_xticks(range(len(tasks) + 1))
        ax.set_xlabel("after stage (0: before training)", fontsize=8)
    for ax in axes[len(tasks) :]:
        ax.set_axis_off()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=7)
    fig.suptitle("Each task's score across the sequence, mean over seeds (dashed: bounds)")
    atomic_write_bytes(path, png_bytes(fig))
