"""Figures of groups: the mean accuracy matrices and Last / MAA / BWT bars (matplotlib is
imported only when one is drawn)."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence

from mcl.eval.report import draw_matrix, shared_colorbars, wide_max
from mcl.utils.io import atomic_write_bytes


def _title(g: dict, with_bench: bool) -> str:
    seeds = f"{g['n_seeds']} seed{'s' if g['n_seeds'] != 1 else ''}"
    return f"{g['bench']}: {g['label']} ({seeds})" if with_bench else f"{g['label']} ({seeds})"


def _data_note(groups: Sequence[dict]) -> str:
    """Figure title suffix: the data source when all groups share one (labels say it if not)."""
    sources = {g["data_source"] for g in groups}
    if sources == {"synthetic"}:
        return ": SYNTHETIC twin data"
    return ": real data" if sources == {"real"} else ""


def png_bytes(fig) -> bytes:
    """The figure as PNG at a fixed dpi, without metadata (no version stamp): the same figure
    gives the same bytes, so a committed figure can be checked."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def plot_matrices(path: str | os.PathLike, groups: Sequence[dict]) -> None:
    """A grid of mean accuracy matrices, one panel per group, sharing one 0-100 colour bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_cols = min(len(groups), 3)
    n_rows = math.ceil(len(groups) / n_cols)
    width = max(len(g["columns"]) + len(g["unseen_columns"]) for g in groups)
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
                ax,
                g["columns"],
                g["matrix"],
                g["unseen_columns"],
                g["unseen_matrix"],
                8,
                top=top,
                stages=g["tasks"],
            )
        )
        ax.set_title(_title(g, with_bench))
    for ax in axes[len(groups) :]:
        ax.set_axis_off()
    shared_colorbars(fig, drawn, list(axes), label="score (mean over seeds)", shrink=0.8)
    fig.suptitle(f"Accuracy matrices, mean over seeds{_data_note(groups)}")
    atomic_write_bytes(path, png_bytes(fig))


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
    atomic_write_bytes(path, png_bytes(fig))
