"""A task evaluated on several eval sets, each with its own scorer: the matrix gets a column per
set, ``stage_matrix`` the per-task means the continual metrics are computed on, ``per_set`` each
set's numbers; the console table, the report, re-scoring and a resumed run all keep them. A run
whose tasks have one set each records columns equal to its tasks and its matrix as stage matrix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcl.eval.metrics import continual_metrics, stage_means
from mcl.eval.state import RunState
from mcl.train import run
from tests.conftest import MICRO, compose_cfg

# color: a vqa-scored set and a BLEU-scored one with a longer answer; the unseen task two too
SETS = (
    "+bench.eval_sets={color:[{name:qa},{name:cap,scorer:bleu4,max_new_tokens:6}],"
    "compose:[{name:a},{name:b,scorer:exact}]}"
)
COLUMNS = ["color/qa", "color/cap", "position"]
UNSEEN = ["compose/a", "compose/b"]


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sets")
    cfg = compose_cfg(tmp, [*MICRO, SETS])
    out = Path(cfg.paths.output_dir)
    return out, run(cfg, out)


def test_a_column_per_eval_set_and_a_stage_summary(two_sets):
    out, res = two_sets
    assert [c["name"] for c in res["columns"]] == COLUMNS
    assert [c["task"] for c in res["columns"]] == ["color", "color", "position"]
    assert [c["name"] for c in res["unseen_columns"]] == UNSEEN
    assert res["scorers"]["color/cap"]["scorer"] == "bleu4"
    assert res["scorers"]["color/qa"]["scorer"] == "vqa"
    assert len(res["matrix"]) == 3 and all(len(r) == 3 for r in res["matrix"])
    assert all(len(r) == 2 for r in res["unseen_matrix"])
    stage = res["stage_matrix"]
    assert len(stage) == 3 and all(len(r) == 2 for r in stage)
    for row, srow in zip(res["matrix"], stage):
        if row[0] is not None:
            assert srow[0] == pytest.approx((row[0] + row[1]) / 2)
        assert srow[1] == row[2]
    metrics = res["metrics"]
    expected = continual_metrics(stage, unseen=res["unseen_stage_matrix"])
    for key in ("last", "bwt", "maa", "fwt", "plasticity", "unseen"):
        assert metrics[key] == pytest.approx(expected[key]), key
    assert set(metrics["per_set"]) == set(COLUMNS)
    assert metrics["per_set"]["color/cap"]["last"] == res["matrix"][-1][1]
    assert metrics["per_set"]["color/qa"]["bwt"] == pytest.approx(
        res["matrix"][2][0] - res["matrix"][1][0]
    )
    assert metrics["per_set"]["position"]["bwt"] is None  # the last task
    assert [s["task"] for s in res["per_stage"]] == ["color", "position"]
    # each set answered from its own shards, saved under its own name
    for name in COLUMNS + UNSEEN:
        assert (out / "predictions" / "row2" / f"{name}.jsonl").exists(), name
    a = (out / "predictions" / "row0" / "compose/a.jsonl").read_text().splitlines()
    b = (out / "predictions" / "row0" / "compose/b.jsonl").read_text().splitlines()
    assert len(a) == len(b) == 24
    assert {json.loads(x)["key"] for x in a}.isdisjoint(json.loads(x)["key"] for x in b)
    assert "color/cap" in (out / "matrix.csv").read_text().splitlines()[0]


def test_the_console_table_shows_sets_and_stages(two_sets):
    from mcl.runner.results import summary

    _, res = two_sets
    text = summary(res)
    assert "color/cap" in text and "*compose/b" in text
    assert "per stage" in text and "2 after position" in text


def test_rescoring_keeps_the_columns(two_sets):
    from mcl.eval.rescore import rescore_run

    out, res = two_sets
    again = rescore_run(out, "strict")
    assert again["columns"] == res["columns"]
    assert again["matrix"] == res["matrix"] and again["stage_matrix"] == res["stage_matrix"]
    assert again["metrics"]["per_set"] == res["metrics"]["per_set"]


def test_the_report_has_per_set_columns(two_sets, tmp_path):
    from mcl.report.cli import main

    out, _ = two_sets
    assert main([str(out), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Per eval set" in md and "color/cap" in md


def test_a_resumed_run_keeps_the_sets(two_sets, tmp_path, monkeypatch):
    from mcl.methods.base import ContinualMethod

    _, ref = two_sets
    real, calls = ContinualMethod.training_step, []

    def dies(self, batch, i):
        if self.current_task == 1 and self.trainer.global_step == 3 and not calls:
            calls.append("cut")
            raise RuntimeError("power cut")
        return real(self, batch, i)

    monkeypatch.setattr(ContinualMethod, "training_step", dies)
    cfg = compose_cfg(tmp_path, [*MICRO, SETS])
    out = Path(cfg.paths.output_dir)
    with pytest.raises(RuntimeError, match="power cut"):
        run(cfg, out)
    monkeypatch.undo()
    resumed = run(compose_cfg(tmp_path, [*MICRO, SETS, "resume=true"]), out)
    assert resumed["columns"] == ref["columns"]
    assert resumed["matrix"] == ref["matrix"]
    assert resumed["stage_matrix"] == ref["stage_matrix"]
    assert resumed["metrics"]["last"] == ref["metrics"]["last"]


def test_one_set_per_task_is_the_matrix_itself():
    """Without eval sets, columns are the tasks and the stage matrix is the matrix: the same
    metrics as before, no per_set; a results.json without ``columns`` reads the same way."""
    matrix = [[10.0, 20.0], [50.0, None], [40.0, 60.0]]
    state = RunState.fresh(["a", "b"], [])
    state.matrix = matrix
    assert state.one_set_each and state.stage_matrix == matrix
    assert "per_set" not in state.metrics()
    assert "eval_sets" not in state.metrics()["conventions"]
    old = RunState.from_results({"tasks": ["a", "b"], "matrix": matrix})
    assert old.column_names == ["a", "b"] and old.metrics() == state.metrics()
    cols = [{"name": "a/x", "task": "a"}, {"name": "a/y", "task": "a"}, {"name": "b", "task": "b"}]
    means = stage_means([[1.0, 3.0, 5.0], [None, 3.0, 6.0]], cols, ["a", "b"])
    assert means == [[2.0, 5.0], [None, 6.0]]


def test_a_bench_json_with_eval_sets_reads_each_set_as_a_column(tmp_path):
    """bench.json's ``eval_sets``: each set a column named ``<task>/<set>``, read like a task
    whose test split is the set's shards, with the set's scorer and generation length."""
    from mcl.data.bench import Benchmark

    shards = {"shards": ["video/eval-qa-000000.tar"], "samples": 3, "sha256": {"x": "y"}}
    spec = {
        "name": "b",
        "tasks": [
            {"name": "image", "scorer": "cider", "max_new_tokens": 32, "test": {"shards": []}},
            {
                "name": "video",
                "scorer": "cider",
                "max_new_tokens": 32,
                "eval_sets": {
                    "cap": {"shards": [], "samples": 2, "scorer": "cider"},
                    "qa": {**shards, "scorer": "vqa", "answer_type": "word", "max_new_tokens": 4},
                },
            },
        ],
    }
    (tmp_path / "bench.json").write_text(json.dumps(spec))
    bench = Benchmark(tmp_path)
    assert [c["name"] for c in bench.columns] == ["image", "video/cap", "video/qa"]
    qa = bench.task("video/qa")
    assert (qa["scorer"], qa["max_new_tokens"], qa["answer_type"]) == ("vqa", 4, "word")
    assert qa["test"] == shards and qa["task"] == "video" and "eval_sets" not in qa
    assert bench.task_names == ["image", "video"]


def test_scorer_modes_per_set():
    """A {task: mode} map reaches the task's sets whose scorer the mode concerns; a
    {"task/set": mode} entry that set alone; one mode, every set it concerns."""
    from mcl.eval.scorers import column_modes

    cols = {"v/cap": ("v", "cider"), "v/qa": ("v", "vqa"), "i": ("i", "vqa")}
    assert column_modes({"v": "best_ref_cider"}, cols) == {
        "v/cap": "best_ref_cider",
        "v/qa": "strict",
        "i": "strict",
    }
    assert column_modes({"v/qa": "coin_vqa_exact"}, cols)["v/qa"] == "coin_vqa_exact"
    assert column_modes("coin_vqa_exact", cols)["v/cap"] == "strict"
    with pytest.raises(ValueError, match="nope"):
        column_modes({"nope": "strict"}, cols)
