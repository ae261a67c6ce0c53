"""Finding and loading runs: every usable results.json below the paths given, one run per
(group, seed), and where the newest run or sweep is."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from mcl.report.schema import column_names, unseen_column_names
from mcl.report.schema import problem as problem_of

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


class ReportError(Exception):
    """A problem the user must fix; main() prints it as one `error:` line and exits with 2."""


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


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


def load_run(path: Path) -> dict | None:
    """The run stored in `path`, with `dir` and `mtime` added; None (and a warning) if unusable."""
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        problem = problem_of(run)
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
        tuple(column_names(run)),  # a task's eval sets: runs on other sets are kept apart
        tuple(unseen_column_names(run)),
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
    """Dotted config keys whose values differ between `runs` (launch details ignored). A key
    that some runs lack came with newer code than theirs (a new option, a new section of a
    benchmark's config): the older runs had no such setting to vary, so it sets no variant."""
    flat = [_flatten(r.get("config") or {}) for r in runs]
    keys = set.intersection(*map(set, flat)) if flat else set()
    return sorted(
        k
        for k in keys
        if k.split(".")[0] not in LAUNCH_KEYS
        and k.split(".")[-1] not in LAUNCH_LEAVES
        and not k.startswith(DEFINITION_PREFIXES)
        and len({f[k] for f in flat}) > 1
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
