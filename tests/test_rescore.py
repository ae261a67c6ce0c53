"""`python -m mcl.eval.rescore` on a hand-made run (no training): the matrix and the benchmark's
extra scores come back from the saved answers, in results.json's schema."""

import json

import pytest

from mcl.eval.rescore import RescoreError, main, rescore_run

TASKS, UNSEEN = ["a", "b"], ["u"]
SCORERS = {"a": "exact", "b": "vqa", "u": "exact"}
# per task: (answer given, reference); "Red." passes exact match, fails lower_exact
ANSWERS = {"a": ("Red.", "red"), "b": ("a long answer here", "blue"), "u": ("red", "red")}


def make_run(root, extra_scores=("mif",)):
    run = root / "run"
    for row in range(len(TASKS) + 1):
        folder = run / "predictions" / f"row{row}"
        folder.mkdir(parents=True)
        for name in TASKS[:row] + UNSEEN if row else TASKS + UNSEEN:
            pred, ref = ANSWERS[name]
            lines = [{"pred": pred, "answers": [ref], "heldout": False}] * 2
            lines.append({"pred": ref, "answers": [ref], "heldout": True})
            (folder / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    results = {
        "bench": "hand",
        "method": "seq_lora",
        "reference": False,
        "seed": 0,
        "complete": True,
        "tasks": TASKS,
        "unseen_tasks": UNSEEN,
        "format_scores": [{}, {}, {}],
        "scorers": {t: {"scorer": s, "mode": "strict"} for t, s in SCORERS.items()},
        "config": {"bench": {"extra_scores": list(extra_scores)}},
    }
    (run / "results.json").write_text(json.dumps(results))
    return run


def test_rescoring_fills_the_matrix_and_the_declared_extra_scores(tmp_path):
    out = rescore_run(make_run(tmp_path), "strict")
    assert out["matrix"] == [[100.0, 0.0], [100.0, None], [100.0, 0.0]]
    assert out["unseen_matrix"] == [[100.0], [100.0], [100.0]]
    assert out["if_scores"][2] == {"a": 100.0, "b": 100.0, "u": 100.0}
    # mif per task: "Red." is one word (passes), "a long answer here" fails except its held-out
    assert out["extra_scores"][2] == {
        "a": {"mif": 100.0},
        "b": {"mif": pytest.approx(100 / 3)},
        "u": {"mif": 100.0},
    }
    assert out["metrics"]["MIF"] == pytest.approx((100 + 100 / 3) / 2)
    assert out["metrics"]["MIF_unseen"] == 100.0
    low = rescore_run(tmp_path / "run", "lower_exact")
    assert low["matrix"][2] == [0.0, 0.0] and low["scorer_mode"] == "lower_exact"


def test_a_bench_without_extra_scores_gets_none(tmp_path):
    out = rescore_run(make_run(tmp_path, extra_scores=()), "strict")
    assert out["extra_scores"] == [{}, {}, {}]
    assert "MIF" not in out["metrics"] and out["metrics"]["if_score"] == 100.0


def test_an_unknown_extra_score_is_one_error_line(tmp_path, capsys):
    run = make_run(tmp_path, extra_scores=("nope",))
    with pytest.raises(RescoreError, match="unknown extra score 'nope'; registered: mif"):
        rescore_run(run, "strict")
    assert main([str(run), "--scorer-mode", "strict"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
