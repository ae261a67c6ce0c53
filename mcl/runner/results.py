"""results.json: the run's description around its measured state, written atomically (with
matrix.csv, and matrix.png once complete) after every row, so a stopped run has its results so
far; the loggers get the final metrics (W&B also the matrix as a table and heatmap).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from mcl.eval.report import plot_matrix, results_table, write_matrix_csv
from mcl.utils import dist
from mcl.utils.environment import environment
from mcl.utils.io import atomic_write_json

if TYPE_CHECKING:
    from mcl.runner.loop import ContinualRunner


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def numbers(info: dict, prefix: str) -> dict[str, float]:
    """The loggable numbers of a (one-level nested) dict: ``{prefix}key[/subkey]``."""
    out = {}
    for k, v in info.items():
        if isinstance(v, dict):
            out |= {f"{prefix}{k}/{kk}": vv for kk, vv in v.items() if is_number(vv)}
        elif is_number(v):
            out[f"{prefix}{k}"] = v
    return out


def n_processes(kw: dict) -> int:
    """Training processes a Trainer's ``devices`` x ``num_nodes`` start."""
    devices = kw.get("devices", 1)
    n = len(devices) if isinstance(devices, list) else devices
    return (n if isinstance(n, int) and n > 0 else 1) * int(kw.get("num_nodes", 1))


def build_results(runner: ContinualRunner, partial: bool) -> dict:
    """The results.json content of the run so far."""
    bench, method = runner.bench, runner.method
    runner.state.skipped = runner.dm.skipped  # the data module counts the faults
    specs = bench.tasks + bench.unseen
    return {
        "bench": bench.name,
        "data_source": bench.source,
        "method": method.method_name,
        "reference": bool(method.reference),  # an upper or lower bound, not a contender
        "task_id_at_test": bool(method.task_id_at_test),
        "seed": runner.seed,
        "complete": not partial,
        "tasks": bench.task_names,
        "unseen_tasks": bench.unseen_names,
        "chance": {t["name"]: t.get("chance") for t in specs},
        "scorer_mode": runner.mode_name,
        "scorers": {  # per matrix column (a task, or one of its eval sets)
            c["name"]: {"scorer": bench.task(c["name"])["scorer"], "mode": runner.modes[c["name"]]}
            for c in bench.columns + bench.unseen_columns
        },
        **runner.state.results(),
        # training processes (DDP ranks; ddp_cpu's forked ranks train, the main evaluates)
        "processes": max(dist.world(), n_processes(runner.trainer_kwargs)),
        **runner.meta,
        **environment(),  # package versions, code version, hardware: what made these numbers
    }


def write_results(runner: ContinualRunner, partial: bool) -> dict:
    """Build, write (rank 0) and, once complete, plot and log the results; returns them."""
    results = build_results(runner, partial)
    if not dist.is_main():  # rank 0 writes and logs; the others hold the same numbers
        return results
    state, bench, out = runner.state, runner.bench, runner.out
    atomic_write_json(out / "results.json", results)
    tables = (state.column_names, state.matrix, state.unseen_column_names, state.unseen_matrix)
    write_matrix_csv(out / "matrix.csv", *tables, stages=state.tasks)
    if partial:
        return results
    title = f"{runner.method.method_name} on {bench.name} (seed {runner.seed})"
    plot_matrix(out / "matrix.png", *tables, title=title, stages=state.tasks)
    final = {
        f"final/{k}": v
        for k, v in results["metrics"].items()
        if isinstance(v, (int, float)) and v is not None and not math.isnan(v)
    }
    runner.log(final)
    for lg in runner.loggers:
        if type(lg).__name__ == "WandbLogger":
            _wandb_extras(runner, lg.experiment, final)
    for lg in runner.loggers:
        lg.finalize("success")
    return results


def _wandb_extras(runner: ContinualRunner, exp, final: dict) -> None:
    """The accuracy matrix as a W&B table and heatmap, the final metrics in the summary
    (what a comparison dashboard's panels read)."""
    import wandb

    state = runner.state
    names = state.column_names + state.unseen_column_names
    rows = [[str(i), *r, *u] for i, (r, u) in enumerate(zip(state.matrix, state.unseen_matrix))]
    exp.log(
        {
            "matrix": wandb.Table(columns=["after task", *names], data=rows),
            "matrix_heatmap": wandb.Image(str(runner.out / "matrix.png")),
        }
    )
    exp.summary.update(final)


def summary(results: dict) -> str:
    """The console's closing lines: what ran, on which data, and its matrix with metrics."""
    source = "SYNTHETIC twin" if results["data_source"] == "synthetic" else "real data"
    head = f"{results['method']} on {results['bench']} ({source}), seed {results['seed']}\n"
    return head + results_table(results)
