"""Re-score finished runs under another scoring convention, without re-running them.

    python -m mcl.eval.rescore RUN_DIR... --scorer-mode PRESET
    python -m mcl.report RUN_DIR... --scoring PRESET

Every run keeps its answers (predictions/rowN/TASK.jsonl; TASK/SET.jsonl per eval set where a
task has several), so any scorer mode, per-task map or benchmark preset (e.g. one of cvit's
`scorer_presets`: best-reference CIDEr, exact-match VQAv2, ...) can be applied afterwards. The
matrix, unseen matrix, held-out IF and the benchmark's extra
scores (`bench.extra_scores`, e.g. MIF) are recomputed through the same `score_records` and
run state (`RunState.record`) the runner uses; everything else is copied. The result goes to
`results.NAME.json` next to the run's `results.json`, which is never touched.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from mcl.config import CONF_DIR
from mcl.eval.metrics import extra_keys, extra_names
from mcl.eval.scorers import column_modes, score_records
from mcl.eval.state import RunState
from mcl.utils.io import atomic_write_json


class RescoreError(ValueError):
    pass


def _bench_key(run: dict, key: str, default):
    """A benchmark setting: from the run's own config, else from conf/bench/, else `default`."""
    bench_cfg = (run.get("config") or {}).get("bench") or {}
    if bench_cfg.get(key) is not None:
        return bench_cfg[key]
    path = CONF_DIR / "bench" / f"{run['bench']}.yaml"
    if path.exists():
        value = OmegaConf.to_container(OmegaConf.load(path)).get(key)
        return default if value is None else value
    return default


def _presets(run: dict) -> dict:
    """The benchmark's scorer presets."""
    return _bench_key(run, "scorer_presets", {}) or {}


def _extras(run: dict) -> tuple[str, ...]:
    """The extra scores to compute: the benchmark's `extra_scores`, and any the run has."""
    declared = list(_bench_key(run, "extra_scores", []) or [])
    return tuple(dict.fromkeys(declared + extra_names(run.get("extra_scores"))))


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def rescore_run(run_dir: str | Path, scorer_mode: str | dict) -> dict:
    """Re-score one finished run; writes and returns its results.NAME.json content."""
    run_dir = Path(run_dir)
    src = run_dir / "results.json"
    if not src.exists():
        raise RescoreError(f"{run_dir} has no results.json; pass a run directory")
    run = json.loads(src.read_text(encoding="utf-8"))
    tasks = run["tasks"]
    state = RunState.from_results(run)  # its columns: one per eval set (per task if unsaid)
    names = state.column_names + state.unseen_column_names
    scorers = {n: run["scorers"][n]["scorer"] for n in names}
    owners = {c["name"]: c["task"] for c in state.columns + state.unseen_columns}
    try:
        modes = column_modes(
            scorer_mode, {n: (owners[n], scorers[n]) for n in names}, _presets(run)
        )
    except ValueError as e:
        raise RescoreError(f"--scorer-mode: {e}") from None
    extras = _extras(run)
    state.clear_scores()  # refilled from the saved answers; the rest is the run's
    n_files = 0
    for row in range(len(tasks) + 1):
        for name in names:
            path = run_dir / "predictions" / f"row{row}" / f"{name}.jsonl"
            if not path.exists():
                continue
            n_files += 1
            try:
                s = score_records(_records(path), scorers[name], modes[name], extras)
            except ValueError as e:
                raise RescoreError(f"{run_dir}: {e}") from None
            state.record(row, name, s)
    if not n_files:
        raise RescoreError(f"{run_dir} has no predictions/rowN/*.jsonl to re-score")
    name = scorer_mode if isinstance(scorer_mode, str) else "per-task"
    out = (
        run
        | state.results()
        | {
            "scorer_mode": name,
            "scorers": {n: {"scorer": scorers[n], "mode": modes[n]} for n in names},
            "rescored_from": "results.json",
        }
    )
    atomic_write_json(run_dir / f"results.{name}.json", out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mcl.eval.rescore",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="RUN_DIR", help="runs or sweep directories")
    parser.add_argument(
        "--scorer-mode",
        required=True,
        help="a scorer mode (e.g. coin_vqa_exact) or a benchmark preset (bench.scorer_presets)",
    )
    args = parser.parse_args(argv)
    runs = sorted({p.parent for d in args.paths for p in Path(d).rglob("results.json")})
    if not runs:
        print(f"error: no results.json under {', '.join(args.paths)}", file=sys.stderr)
        return 2
    for run_dir in runs:
        try:
            m = rescore_run(run_dir, args.scorer_mode)["metrics"]
        except RescoreError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        extra = "".join(f"{k} {fmt(m[k])}  " for k in extra_keys(m))
        print(
            f"{run_dir}: Last {fmt(m['last'])}  BWT {fmt(m['bwt'])}  "
            f"Unseen {fmt(m['unseen'])}  {extra}-> results.{args.scorer_mode}.json"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
