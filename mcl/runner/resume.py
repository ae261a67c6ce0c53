"""Which run directory ``resume=true`` continues, and whether a directory already holds a run:
a run continues only under a config that gives the same results (launch, logging and paths
may differ), so a resumed run is the run it continues.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mcl.config import ConfigError

# what does not change a run's results: how it is launched and watched, where it writes
NOT_RESULTS = (
    "resume",
    "progress",
    "paths",
    "hydra",
    "logger",
    "train.checkpoint_every",
    "train.threads",
    "data.max_bad_share",
)


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def derived_keys(cfg) -> set[str]:
    """Keys of a composed config whose value is copied from one that does not change results
    (``model.cache_dir: ${paths.cache_dir}``, ``model.progress: ${progress}``)."""
    from omegaconf import DictConfig

    roots = "|".join(re.escape(x) for x in NOT_RESULTS)
    pattern = re.compile(rf"\$\{{(?:{roots})\b")
    out: set[str] = set()

    def walk(node, prefix: str) -> None:
        for k in list(node):
            child = node._get_node(k)
            key = f"{prefix}{k}"
            if isinstance(child, DictConfig):
                walk(child, key + ".")
            elif child is not None and child._is_interpolation():
                out.update([key] if pattern.search(str(child._value())) else [])

    walk(cfg, "")
    return out


def _comparable(config: dict, ignore=()) -> dict:
    """The config's values that shape the results, flat (``train.steps``: 250), as JSON reads
    them back."""
    flat = _flat(json.loads(json.dumps(config, sort_keys=True, default=str)))
    skip = (*NOT_RESULTS, *ignore)
    return {k: v for k, v in flat.items() if not any(k == x or k.startswith(x + ".") for x in skip)}


def config_changes(old: dict, new: dict, ignore=()) -> list[str]:
    """The keys whose values differ between two configs, in ways that change results."""
    a, b = _comparable(old, ignore), _comparable(new, ignore)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<unset>") != b.get(k, "<unset>"))


def _describe_changes(old: dict, new: dict, keys: list[str]) -> str:
    a, b = _comparable(old), _comparable(new)

    def show(v) -> str:
        return "unset" if v == "<unset>" else json.dumps(v)

    parts = [
        f"{k} ({show(a.get(k, '<unset>'))} then, {show(b.get(k, '<unset>'))} now)" for k in keys[:4]
    ]
    more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    return ", ".join(parts) + more


def run_record(d: Path) -> dict | None:
    """A run directory's ``results.json``, or None when it has none (or an unreadable one)."""
    try:
        rec = json.loads((Path(d) / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def holds_a_run(d: Path) -> str | None:
    """What in ``d`` belongs to an earlier run (results, checkpoints), or None."""
    d = Path(d)
    if (d / "results.json").exists():
        return "results.json"
    if any(d.glob("checkpoints/task*")):
        return "checkpoints/"
    return None


def find_resumable(out_dir: str | Path, config: dict, ignore=()) -> Path | None:
    """The run directory ``resume=true`` continues: ``out_dir`` itself, else the newest sibling
    (the same command launched earlier got another timestamped directory) whose run is
    unfinished and was started with a config that gives the same results. None: nothing to
    continue. Raises :class:`ConfigError` (one line, naming the keys) when the run to continue
    (``out_dir``'s own, or the newest unfinished one beside it) had other values. ``ignore``:
    more keys that do not change results (see :func:`derived_keys`)."""
    out_dir = Path(out_dir)
    siblings = sorted(
        (p for p in out_dir.parent.glob("*") if p.is_dir() and p != out_dir), reverse=True
    )
    mismatch = None
    for d in [out_dir, *siblings]:
        rec = run_record(d)
        if rec is None or "config" not in rec:
            continue
        keys = config_changes(rec["config"], config, ignore)
        if not keys and (d == out_dir or not rec.get("complete")):
            return d  # out_dir itself even when complete: nothing left to do there
        if keys and d == out_dir:  # this very directory: never continue or reuse it
            mismatch = (d, rec, keys)
            break
        if keys and not rec.get("complete") and mismatch is None:
            mismatch = (d, rec, keys)
    if mismatch is None:
        return None
    d, rec, keys = mismatch
    state = "finished" if rec.get("complete") else "unfinished"
    raise ConfigError(
        f"resume=true: the {state} run in {d} was started with other values of "
        f"{_describe_changes(rec['config'], config, keys)}; rerun with its values to continue "
        "it, or without resume=true in another directory to start a new run"
    )
