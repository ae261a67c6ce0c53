"""The results.json schema as the report reads it: the fields a run must have, the metrics every
run carries (extra scores such as MIF come on top, as their metrics keys say), and the check
that tells a usable file from a broken or older one. Collecting and aggregating both use it."""

from __future__ import annotations

from mcl.eval.metrics import extra_keys
from mcl.eval.report import METRIC_ROWS

# every scalar metric all runs' results.json has (a run's extra scores: `metric_keys`)
METRICS = [key for _, key in METRIC_ROWS]
REQUIRED = {
    "bench": str,
    "method": str,
    "seed": int,
    "tasks": list,
    "matrix": list,
    "metrics": dict,
    "reference": bool,  # the method is an upper or lower bound, never "best"
}
OLDER_SCHEMA = (
    "written by an older mcl (no 'reference'); add \"reference\": false (true for a bound), "
    "rename 'mif_scores' to 'extra_scores' with rows {task: {\"mif\": value}}, or re-run it"
)


def column_names(run: dict) -> list[str]:
    """The matrix's column names: one per eval set (``columns``); a run that does not record
    them has one per task."""
    return [c["name"] for c in run.get("columns") or []] or list(run["tasks"])


def unseen_column_names(run: dict) -> list[str]:
    """The unseen matrix's column names (one per unseen task where ``unseen_columns`` is
    absent)."""
    return [c["name"] for c in run.get("unseen_columns") or []] or list(
        run.get("unseen_tasks") or []
    )


def _shape_ok(matrix, n_rows: int, n_cols: int) -> bool:
    return (
        isinstance(matrix, list)
        and len(matrix) == n_rows
        and all(isinstance(row, list) and len(row) == n_cols for row in matrix)
    )


def problem(run) -> str | None:
    """Why a parsed results.json cannot be used, or None."""
    if not isinstance(run, dict):
        return "not a JSON object"
    if "reference" not in run or "mif_scores" in run:
        return OLDER_SCHEMA
    for key, kind in REQUIRED.items():
        value = run.get(key)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            return f"'{key}' is missing or not a {kind.__name__}"
    n_tasks = len(run["tasks"])
    if not n_tasks:
        return "'tasks' is empty"
    n_cols, n_unseen = len(column_names(run)), len(unseen_column_names(run))
    if not _shape_ok(run["matrix"], n_tasks + 1, n_cols):
        return f"'matrix' is not {n_tasks + 1} x {n_cols}"
    if n_unseen and not _shape_ok(run.get("unseen_matrix"), n_tasks + 1, n_unseen):
        return f"'unseen_matrix' is not {n_tasks + 1} x {n_unseen}"
    if run.get("stage_matrix") is not None and not _shape_ok(
        run["stage_matrix"], n_tasks + 1, n_tasks
    ):
        return f"'stage_matrix' is not {n_tasks + 1} x {n_tasks}"
    return None


def metric_keys(run: dict) -> list[str]:
    """The run's scalar metrics: `METRICS`, then each extra score's K and K_unseen."""
    return METRICS + [k for key in extra_keys(run["metrics"]) for k in (key, f"{key}_unseen")]
