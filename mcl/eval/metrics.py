"""Continual-learning summary metrics from the accuracy matrix (docs/concepts.md).

`matrix[i][j - 1]` is A[i][j]: the score (0-100) on task j after training task i, with row 0 the
untouched base model. Cells that were not evaluated are None/NaN and are skipped in every mean,
never read as 0. A metric with no defined term (BWT with one task) is None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CONVENTIONS = {
    "scale": "scores 0-100; A[i][j] = task j after training task i; row 0 = zero-shot",
    "missing": "unevaluated cells skipped in means; a metric with no terms is None",
    "last": "mean_j A[T][j], j=1..T (MFN, Avg, AA)",
    "maa": "mean_{i=1..T} mean_{j<=i} A[i][j]",
    "bwt": "mean_{j=1..T-1} (A[T][j] - A[j][j])",
    "bwt_max": "mean_{j=1..T} (A[T][j] - max_{i=0..T} A[i][j]); row 0 included (CLMM/EProj)",
    "forgetting": "mean_{j=1..T-1} (max_{i=1..T-1} A[i][j] - A[T][j]); row 0 excluded",
    "fwt": "mean_{j=2..T} (A[j-1][j] - A[0][j])",
    "plasticity": "mean_j A[j][j] (MFT)",
    "unseen": "mean_u U[T][u] over unseen tasks; unseen_per_row gives it for every row",
    "per_stage": "per task m: transfer T_m = A[m][m]; forgetting F_m = mean_{j<m} "
    "(A[m-1][j] - A[m][j]), the drop stage m caused (PathWeave's per-modality view)",
    "aliases": "MFN = AP = last; MAA = MAP = maa; MFT = plasticity (the anchors' names)",
    "extras": "per extra score N: N.upper() = mean over trained tasks at the last row, "
    "N.upper() + '_unseen' over unseen tasks",
}
# said in a run's conventions when some task has several eval sets
EVAL_SETS_CONVENTION = (
    "a task evaluated on several sets has a matrix column per set; the metrics above use "
    "stage_matrix (per task, the mean of its sets' cells); per_set gives each set's last, "
    "plasticity (A[j][j]) and bwt (A[T][j] - A[j][j], None for the last task)"
)


def _cell(value: float | None) -> float | None:
    """None for a missing cell (None or NaN), else the value as float."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _mean(values) -> float | None:
    """Mean of the defined values; None when there are none."""
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _max(values) -> float | None:
    defined = [v for v in values if v is not None]
    return max(defined) if defined else None


def _clean(matrix: Sequence[Sequence[float | None]]) -> list[list[float | None]]:
    """Rows of floats/None, checked to be rectangular."""
    rows = [[_cell(v) for v in row] for row in matrix]
    if any(len(row) != len(rows[0]) for row in rows):
        raise ValueError("every matrix row must have the same number of cells")
    return rows


def stage_metrics(matrix: Sequence[Sequence[float | None]]) -> list[dict]:
    """Per stage m = 1..T: ``transfer`` (A[m][m], the score on the task just learned) and
    ``forgetting`` (mean drop on the earlier tasks that stage m caused; None for m = 1)."""
    A = _clean(matrix)
    out = []
    for m in range(1, len(A)):
        drops = [_diff(A[m - 1][j], A[m][j]) for j in range(m - 1)]
        out.append({"transfer": A[m][m - 1], "forgetting": _mean(drops)})
    return out


def _continual(matrix: Sequence[Sequence[float | None]]) -> list[list[float | None]]:
    """The cleaned matrix, checked to have T+1 rows of T cells."""
    a = _clean(matrix)
    if len(a) < 2 or len(a[0]) != len(a) - 1:
        raise ValueError(f"matrix must have T+1 rows of T cells (T >= 1), got {len(a)} rows")
    return a


def _bwt_terms(a: list[list[float | None]]) -> list[float | None]:
    T = len(a) - 1
    return [_diff(a[T][j - 1], a[j][j - 1]) for j in range(1, T)]


def bwt_per_task(matrix: Sequence[Sequence[float | None]]) -> list[float | None]:
    """A[T][j] - A[j][j] for j = 1..T-1: each earlier task's share of BWT (BWT is their mean).
    Worth reading when tasks' scorers have different scales: a CIDEr task near 400 can make
    BWT mostly about itself."""
    return _bwt_terms(_continual(matrix))


def continual_metrics(
    matrix: Sequence[Sequence[float | None]],
    unseen: Sequence[Sequence[float | None]] | None = None,
) -> dict:
    """Last, MAA, BWT, BWT_max, Forgetting, FWT, Plasticity (+ anchor aliases) and Unseen.

    `matrix` has T+1 rows of T cells; `unseen` (optional) has T+1 rows, one cell per unseen task.
    Returns plain floats or None, plus a `conventions` dict naming the definitions used.
    """
    a = _continual(matrix)
    T = len(a) - 1

    def A(i: int, j: int) -> float | None:  # 1-based task index j, as in metrics.md
        return a[i][j - 1]

    tasks = range(1, T + 1)
    last = _mean(A(T, j) for j in tasks)
    plasticity = _mean(A(j, j) for j in tasks)
    out = {
        "last": last,
        "maa": _mean(_mean(A(i, j) for j in range(1, i + 1)) for i in tasks),
        "bwt": _mean(_bwt_terms(a)),
        "bwt_max": _mean(_diff(A(T, j), _max(A(i, j) for i in range(T + 1))) for j in tasks),
        "forgetting": _mean(
            _diff(_max(A(i, j) for i in range(1, T)), A(T, j)) for j in range(1, T)
        ),
        "fwt": _mean(_diff(A(j - 1, j), A(0, j)) for j in range(2, T + 1)),
        "plasticity": plasticity,
    }
    out |= {"MFT": plasticity, "MFN": last, "MAA": out["maa"], "BWT": out["bwt"]}
    out |= {"AP": last, "MAP": out["maa"]}  # another anchor's names (AP mixes CIDEr in)

    per_row = None
    if unseen is not None:
        u = _clean(unseen)
        if len(u) != T + 1:
            raise ValueError(f"unseen matrix must have {T + 1} rows, got {len(u)}")
        per_row = [_mean(row) for row in u]
    out["unseen"] = per_row[-1] if per_row else None
    out["unseen_per_row"] = per_row
    out["conventions"] = dict(CONVENTIONS)
    return out


def stage_means(
    matrix: Sequence[Sequence[float | None]], columns: Sequence[dict], tasks: Sequence[str]
) -> list[list[float | None]]:
    """Per row, per task the mean of its columns' cells (``columns``: ``{"name", "task",
    "set"}`` each, in the matrix's order); None where a set of the task was not evaluated. With
    one column per task, the matrix itself (its values untouched)."""
    if [c["task"] for c in columns] == list(tasks):
        return [list(row) for row in matrix]
    out = []
    for row in matrix:
        cells = [_cell(v) for v in row]
        means = []
        for t in tasks:
            mine = [v for v, c in zip(cells, columns) if c["task"] == t]
            means.append(None if not mine or None in mine else sum(mine) / len(mine))
        out.append(means)
    return out


def per_set_metrics(
    matrix: Sequence[Sequence[float | None]], columns: Sequence[dict], tasks: Sequence[str]
) -> dict[str, dict]:
    """Per matrix column (an eval set of task j): ``last`` A[T][c], ``plasticity`` A[j][c] and
    ``bwt`` A[T][c] - A[j][c] (None for the last task's sets)."""
    a = _clean(matrix)
    T = len(a) - 1
    out = {}
    for k, c in enumerate(columns):
        j = list(tasks).index(c["task"]) + 1
        last, learned = a[T][k], a[j][k]
        bwt = _diff(last, learned) if j < T else None
        out[c["name"]] = {"last": last, "plasticity": learned, "bwt": bwt}
    return out


def extra_names(extra_scores: Sequence[dict] | None) -> list[str]:
    """The extra scores found in results.json's `extra_scores` (one {task: {name: value}} per
    matrix row), in order of first appearance."""
    names: dict[str, None] = {}
    for row in extra_scores or []:
        for values in row.values():
            names |= dict.fromkeys(values)
    return list(names)


def extra_metric_keys(names: Sequence[str]) -> list[str]:
    """The metrics keys of extra scores `names`: N.upper() and N.upper() + "_unseen" each."""
    return [key for n in names for key in (n.upper(), n.upper() + "_unseen")]


def extra_keys(metrics: dict) -> list[str]:
    """The extra scores' keys in a metrics dict: each K that has its K + "_unseen" beside it."""
    return [k for k in metrics if f"{k}_unseen" in metrics]


def instruction_metrics(
    tasks: Sequence[str],
    unseen: Sequence[str],
    if_scores: Sequence[dict],
    format_scores: Sequence[dict],
    extra_scores: Sequence[dict] | None = None,
) -> dict:
    """The final row's instruction-following numbers, each a mean over tasks (None if empty):

    - `if_score`: accuracy on held-out instruction templates (trained and unseen tasks);
    - `format_compliance`: mcl's answer-form rule (`format_ok`), every evaluated task;
    - for each extra score N the benchmark declared (e.g. `mif`), `N.upper()` over the trained
      tasks and `N.upper() + "_unseen"` over the unseen ones, as the anchors report them."""

    def mean(values) -> float | None:
        vals = [v for v in values if v is not None]
        return sum(vals) / len(vals) if vals else None

    out = {
        "if_score": mean(if_scores[-1].values()),
        "format_compliance": mean(format_scores[-1].values()),
    }
    last = (extra_scores or [{}])[-1]
    for name in extra_names(extra_scores):
        key = name.upper()
        out[key] = mean(last.get(t, {}).get(name) for t in tasks)
        out[key + "_unseen"] = mean(last.get(t, {}).get(name) for t in unseen)
    return out
