"""A paper's claim on a results page becomes a sentence whose numbers come from the runs: the
per-seed difference against a baseline, its mean ± std, and a verdict that can say "does not
hold"."""

from __future__ import annotations

import copy
import json
import shutil
import statistics
from pathlib import Path

import pytest

from mcl.report.claims import check, check_curve, sentence
from mcl.report.collect import ReportError
from mcl.report.publish import Page, _groups, markdown, page_runs

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "results" / "cvit_fwd_prompt"
LABEL = "fwd_prompt (projection=none)"


def _runs():
    page = Page.load(PAGE)
    runs = page_runs(PAGE, page.split)
    return page, runs, _groups(page, runs)


def _last(runs, name, seed):
    return next(r for r in runs if r["dir"].endswith(f"/{name}_s{seed}"))["metrics"]["last"]


def test_the_difference_is_taken_seed_by_seed_from_the_summaries():
    _, runs, groups = _runs()
    claim = {"method": LABEL, "baseline": "seq_lora", "metric": "last", "expect": "higher",
             "paper": "x"}  # fmt: skip
    c = check(claim, groups, runs)
    want = [_last(runs, "fwd_prompt_none", s) - _last(runs, "seq_lora", s) for s in (0, 1, 2)]
    assert c["seeds"] == [0, 1, 2] and c["diffs"] == pytest.approx(want)
    assert c["mean"] == pytest.approx(statistics.fmean(want))
    assert c["std"] == pytest.approx(statistics.stdev(want))


@pytest.mark.parametrize(
    ("deltas", "expect", "verdict"),
    [
        ((2.0, 3.0, 1.0), "higher", "holds"),
        ((2.0, 3.0, -1.0), "higher", "holds on average, not on every seed"),
        ((-2.0, 1.0, -1.0), "higher", "does not hold"),
        ((-2.0, -1.0, -3.0), "lower", "holds"),
        ((0.0, 0.0, 0.0), "higher", "does not hold"),
    ],
)
def test_the_verdict_follows_the_per_seed_differences(deltas, expect, verdict):
    _, runs, groups = _runs()
    runs = copy.deepcopy(runs)
    for seed, delta in enumerate(deltas):  # the method = the baseline + delta, seed by seed
        base = _last(runs, "seq_lora", seed)
        target = next(r for r in runs if r["dir"].endswith(f"/fwd_prompt_interference_s{seed}"))
        target["metrics"]["last"] = base + delta
    claim = {"method": "fwd_prompt", "baseline": "seq_lora", "expect": expect, "paper": "P"}
    # "fwd_prompt" names two rows: the label picks the default-projection one
    with pytest.raises(ReportError, match="several rows"):
        check(claim, groups, runs)
    page = Page.load(PAGE)
    groups = _groups(page, runs)
    claim["method"] = next(g["label"] for g in groups if g["method"] == "fwd_prompt"
                           and g["label"] != LABEL)  # fmt: skip
    c = check(claim, groups, runs)
    assert c["diffs"] == pytest.approx(deltas) and c["verdict"] == verdict
    text = sentence(claim, groups, runs)
    assert text.startswith("**P.**") and f"**{verdict}**" in text and "n = 3" in text


def test_one_seed_is_never_a_plain_holds():
    """One seed has no spread: the verdict says so (a one-seed page used to say "holds")."""
    page, runs, _ = _runs()
    one = [r for r in runs if r["dir"].endswith("_s0")]
    groups = _groups(page, one)
    claim = {"method": LABEL, "baseline": "seq_lora", "metric": "bwt", "expect": "higher",
             "paper": "P"}  # fmt: skip
    c = check(claim, groups, one)
    assert c["diffs"][0] > 0 and c["verdict"] == "holds on its one seed"
    assert "(one seed only): **holds on its one seed**" in sentence(claim, groups, one)


def test_a_page_shows_its_claims_as_findings(tmp_path):
    page_dir = tmp_path / "docs" / "results" / "cvit_fwd_prompt"
    shutil.copytree(PAGE, page_dir)
    spec = json.loads((page_dir / "page.json").read_text())
    spec["claims"] = [{"method": LABEL, "baseline": "seq_lora", "metric": "bwt",
                       "expect": "higher", "paper": "Fwd-Prompt forgets less"}]  # fmt: skip
    (page_dir / "page.json").write_text(json.dumps(spec))
    text = markdown(page_dir)
    findings = text.split("## Findings\n\n", 1)[1].split("\n\n", 1)[0]
    assert findings.startswith("**Fwd-Prompt forgets less.** On this twin")
    assert "on BWT is" in findings


def test_an_unknown_direction_is_refused():
    _, runs, groups = _runs()
    with pytest.raises(ReportError, match="expect='better'"):
        check({"method": LABEL, "baseline": "seq_lora", "expect": "better", "paper": "x"},
              groups, runs)  # fmt: skip


def test_a_row_not_run_yet_is_not_measured():
    _, runs, groups = _runs()
    claim = {"method": "olora", "baseline": "seq_lora", "expect": "higher", "paper": "P"}
    assert check(claim, groups, runs)["verdict"] == "not measured"
    assert "Not measured here: no seed has both `olora` and `seq_lora`" in sentence(
        claim, groups, runs
    )


def _curve(method: str, points) -> list[dict]:
    """Rows of one method across a swept setting: (BWT, Last) means."""
    return [
        {"method": method, "label": f"{method} (lam={i})",
         "metrics": {"bwt": {"mean": b}, "last": {"mean": a}}}
        for i, (b, a) in enumerate(points)
    ]  # fmt: skip


CURVE = {"kind": "curve", "method": "tir_ewc", "baseline": "ewc", "paper": "TIR trades better"}


@pytest.mark.parametrize(
    ("tir", "verdict", "mean"),
    [
        ([(-80, 22), (-60, 32), (-40, 42)], "holds", 2.0),
        ([(-80, 18), (-60, 28), (-40, 38)], "does not hold: it lies below", -2.0),
        ([(-80, 25), (-40, 35)], "does not hold on average: the curves cross", 0.0),
        ([(-80, 26), (-40, 35)], "holds on average, not everywhere: the curves cross", 0.5),
    ],
)
def test_a_curve_claim_compares_last_at_the_same_bwt(tir, verdict, mean):
    ewc = [(-90, 15), (-70, 25), (-50, 35), (-30, 45)]  # Last = 60 + BWT / 2
    groups = _curve("ewc", ewc) + _curve("tir_ewc", tir)
    c = check_curve(CURVE, groups)
    assert c["range"] == (tir[0][0], tir[-1][0]) and c["verdict"] == verdict
    assert c["mean"] == pytest.approx(mean)
    assert f"**{verdict}**" in sentence(CURVE, groups, [])


def test_a_curve_claim_without_a_common_range_is_not_measured():
    groups = _curve("ewc", [(-90, 15), (-70, 25)]) + _curve("tir_ewc", [(-50, 30), (-30, 40)])
    assert check_curve(CURVE, groups)["verdict"] == "no common range"
    assert "Not measured here: no common range of BWT" in sentence(CURVE, groups, [])
    assert check_curve(CURVE, _curve("ewc", [(-90, 15)]))["verdict"] == "not measured"
