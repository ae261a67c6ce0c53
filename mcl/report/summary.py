"""Compact run summaries: what a results page keeps of a finished run (committed beside the
page, so the page can be regenerated from them alone), with the code, packages and hardware
that made each run (its own record, from ``mcl.utils.environment``).

A summary keeps the config, the matrices (with their column lists), the metrics, method_info
and the few run facts the tables show (trainable parameters, time, data faults); it drops the
per-sample scores, per-stage logs and everything a checkpoint or prediction file holds."""

from __future__ import annotations

# results.json fields a summary keeps (anything else a run writes is dropped)
KEEP = (
    "bench",
    "data_source",
    "method",
    "reference",
    "task_id_at_test",
    "seed",
    "complete",
    "tasks",
    "unseen_tasks",
    "columns",
    "unseen_columns",
    "chance",
    "matrix",
    "unseen_matrix",
    "stage_matrix",
    "scorer_mode",
    "skipped",
    "metrics",
    "params",
    "method_info",
    "timings",
    "devices",
    "processes",
    "config",
)
# where the run was made: recorded by the publisher when the run does not carry it
ENVIRONMENT = ("versions", "code_version", "hardware")


def compact(run: dict, env: dict | None) -> dict:
    """The run's summary: `KEEP`'s fields it has, and its versions, code version and hardware
    (the run's own if it recorded them, else `env`'s; None where neither says)."""
    out = {key: run[key] for key in KEEP if key in run}
    for key in ENVIRONMENT:
        out[key] = run.get(key, (env or {}).get(key))
    return out
