"""A paper's claim checked on a results page: does the method move a metric the way its paper
says, against a baseline, seed by seed?

A page's ``page.json`` lists claims; the sentence each one becomes is written from the page's
run summaries, so its numbers are generated like every other number on the page:

    {"method": "replay", "baseline": "seq_lora", "metric": "bwt", "expect": "higher",
     "paper": "Rehearsal forgets less than sequential training"}

``method`` and ``baseline`` name a table row (its label, e.g. ``my_method (lr=0.1)`` for a variant,
or its method where that names one row). The difference is taken per seed (the same seed's
data order and initialisation for both), then summarised as mean ± std over the seeds both
rows have.

A claim about a trade-off (``"kind": "curve"``) compares two methods' curves across a swept
setting (every row of each method, e.g. one per λ): Last against BWT, each point the mean over
its seeds. Over the BWT range both curves cover, the method's curve is interpolated against the
baseline's at every point of either; it lies above where its Last is higher at the same BWT."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from mcl.report.collect import ReportError
from mcl.report.render import TABLE_COLUMNS

NAMES = {key: header for header, key in TABLE_COLUMNS}  # a metric as the tables head it
EXPECT = ("higher", "lower")


def _name(key: str) -> str:
    return NAMES.get(key, key)  # an extra score (e.g. MIF) is headed by its key


def _row(groups: Sequence[dict], name: str) -> dict | None:
    """The group a claim names: by label, else the one group of that method; None while the
    page has no such runs (a sweep published as it goes)."""
    by_label = [g for g in groups if g["label"] == name]
    by_method = [g for g in groups if g["method"] == name]
    if len(by_label) == 1:
        return by_label[0]
    if len(by_method) == 1:
        return by_method[0]
    if by_method:
        labels = ", ".join(g["label"] for g in by_method)
        raise ReportError(f"claim names {name!r}, which is several rows of the page: {labels}")
    return None


def _per_seed(group: dict | None, runs_by_dir: dict[str, dict], metric: str) -> dict[int, float]:
    out: dict[int, float] = {}
    if group is None:
        return out
    for seed, path in zip(group["seeds"], group["runs"]):
        value = runs_by_dir[path]["metrics"].get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[seed] = float(value)
    return out


def check(claim: dict, groups: Sequence[dict], runs: Sequence[dict]) -> dict:
    """The claim's per-seed differences (method - baseline) and its verdict."""
    expect = claim.get("expect", "higher")
    if expect not in EXPECT:
        raise ReportError(f"claim expect={expect!r}: use one of {', '.join(EXPECT)}")
    metric = claim.get("metric", "last")
    by_dir = {r["dir"]: r for r in runs}
    method = _per_seed(_row(groups, claim["method"]), by_dir, metric)
    base = _per_seed(_row(groups, claim["baseline"]), by_dir, metric)
    seeds = sorted(set(method) & set(base))
    diffs = [method[s] - base[s] for s in seeds]
    sign = 1 if expect == "higher" else -1
    agree = sum(sign * d > 0 for d in diffs)
    mean = statistics.fmean(diffs) if diffs else None
    std = statistics.stdev(diffs) if len(diffs) > 1 else None
    if not diffs:
        verdict = "not measured"
    elif sign * mean <= 0:
        verdict = "does not hold"
    elif len(diffs) == 1:
        verdict = "holds on its one seed"  # no spread measured: not a "holds" yet
    elif agree == len(diffs):
        verdict = "holds"
    else:
        verdict = "holds on average, not on every seed"
    return {"seeds": seeds, "diffs": diffs, "mean": mean, "std": std, "agree": agree,
            "verdict": verdict}  # fmt: skip


def _points(groups: Sequence[dict], method: str, x: str, y: str) -> list[tuple[float, float]]:
    """A method's curve: (x, y) means of each of its rows, by x."""
    out = []
    for g in groups:
        if g["method"] != method:
            continue
        px, py = (g["metrics"].get(k, {}).get("mean") for k in (x, y))
        if px is not None and py is not None:
            out.append((float(px), float(py)))
    return sorted(out)


def _at(points: list[tuple[float, float]], x: float) -> float:
    """The curve's y at x (linear between its points; x within its range)."""
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[0][1]  # a one-point curve


def check_curve(claim: dict, groups: Sequence[dict]) -> dict:
    """Where the method's curve lies against the baseline's over their common x range."""
    x, y = claim.get("x", "bwt"), claim.get("y", "last")
    mine = _points(groups, claim["method"], x, y)
    base = _points(groups, claim["baseline"], x, y)
    out = {"points": (len(mine), len(base)), "gaps": [], "range": None}
    if len(mine) < 2 or len(base) < 2:
        return out | {"verdict": "not measured"}
    lo, hi = max(mine[0][0], base[0][0]), min(mine[-1][0], base[-1][0])
    if lo >= hi:
        return out | {"verdict": "no common range"}
    grid = sorted({px for px, _ in mine + base if lo <= px <= hi} | {lo, hi})
    gaps = [_at(mine, g) - _at(base, g) for g in grid]
    if all(gap > 0 for gap in gaps):
        verdict = "holds"
    elif all(gap < 0 for gap in gaps):
        verdict = "does not hold: it lies below"
    elif statistics.fmean(gaps) > 0:
        verdict = "holds on average, not everywhere: the curves cross"
    else:
        verdict = "does not hold on average: the curves cross"
    return out | {"gaps": gaps, "range": (lo, hi), "mean": statistics.fmean(gaps),
                  "verdict": verdict}  # fmt: skip


def curve_sentence(claim: dict, groups: Sequence[dict]) -> str:
    c = check_curve(claim, groups)
    x, y = _name(claim.get("x", "bwt")), _name(claim.get("y", "last"))
    head = f"**{claim['paper'].rstrip('.')}.**"
    method, base = f"`{claim['method']}`", f"`{claim['baseline']}`"
    if c["range"] is None:
        why = "too few points" if c["verdict"] == "not measured" else "no common range of " + x
        return f"{head} Not measured here: {why} ({c['points'][0]} and {c['points'][1]} points)."
    lo, hi = c["range"]
    return (
        f"{head} Over the {x} range both curves cover ({lo:.1f} to {hi:.1f}), {method}'s "
        f"{y}-against-{x} curve ({c['points'][0]} points) minus {base}'s ({c['points'][1]} "
        f"points) at the same {x} is {c['mean']:+.1f} points on average (from "
        f"{min(c['gaps']):+.1f} to {max(c['gaps']):+.1f}; each point a mean over its seeds): "
        f"**{c['verdict']}**."
    )


def sentence(claim: dict, groups: Sequence[dict], runs: Sequence[dict]) -> str:
    """One sentence: the paper's claim, the measured difference and whether it holds here."""
    if claim.get("kind", "pair") == "curve":
        return curve_sentence(claim, groups)
    c = check(claim, groups, runs)
    metric = _name(claim.get("metric", "last"))
    expect = claim.get("expect", "higher")
    head = f"**{claim['paper'].rstrip('.')}.**"
    if c["mean"] is None:
        pair = f"`{claim['method']}` and `{claim['baseline']}`"
        return f"{head} Not measured here: no seed has both {pair}."
    n = len(c["diffs"])
    if n == 1:
        how = "one seed only"
    else:
        how = f"mean ± std of the per-seed differences, n = {n}; "
        how += f"{expect} on {c['agree']} of {n} seeds"
    spread = "" if c["std"] is None else f" ± {c['std']:.1f}"
    return (
        f"{head} On this twin, `{claim['method']}` minus `{claim['baseline']}` on {metric} is "
        f"{c['mean']:+.1f}{spread} points ({how}): **{c['verdict']}**."
    )
