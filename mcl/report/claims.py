"""A paper's claim checked on a results page: does the method move a metric the way its paper
says, against a baseline, seed by seed?

A page's ``page.json`` lists claims; the sentence each one becomes is written from the page's
run summaries, so its numbers are generated like every other number on the page:

    {"method": "smolora", "baseline": "seq_lora", "metric": "last", "expect": "higher",
     "paper": "SMoLoRA reports a higher final accuracy than sequential LoRA on CVIT"}

``method`` and ``baseline`` name a table row (its label, e.g. ``smolora (if_route=oracle_type)``,
or its method where that names one row). The difference is taken per seed (the same seed's
data order and initialisation for both), then summarised as mean ± std over the seeds both
rows have."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from mcl.report.collect import ReportError

NAMES = {"last": "Last", "bwt": "BWT", "maa": "MAA", "forgetting": "forgetting"}
NAMES |= {"fwt": "FWT", "plasticity": "plasticity", "unseen": "unseen-task score"}
EXPECT = ("higher", "lower")


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
    elif agree == len(diffs):
        verdict = "holds"
    else:
        verdict = "holds on average, not on every seed"
    return {"seeds": seeds, "diffs": diffs, "mean": mean, "std": std, "agree": agree,
            "verdict": verdict}  # fmt: skip


def sentence(claim: dict, groups: Sequence[dict], runs: Sequence[dict]) -> str:
    """One sentence: the paper's claim, the measured difference and whether it holds here."""
    c = check(claim, groups, runs)
    metric = NAMES.get(claim.get("metric", "last"), claim.get("metric", "last"))
    expect = claim.get("expect", "higher")
    head = f"**{claim['paper'].rstrip('.')}.**"
    if c["mean"] is None:
        pair = f"`{claim['method']}` and `{claim['baseline']}`"
        return f"{head} Not measured here: no seed has both {pair}."
    spread = "" if c["std"] is None else f" ± {c['std']:.1f}"
    n = len(c["diffs"])
    return (
        f"{head} On this twin, `{claim['method']}` minus `{claim['baseline']}` on {metric} is "
        f"{c['mean']:+.1f}{spread} points (mean ± std of the per-seed differences, n = {n}; "
        f"{expect} on {c['agree']} of {n} seeds): **{c['verdict']}**."
    )
