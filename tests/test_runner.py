"""The runner's pieces: one run state shared by checkpoints, results.json and re-scoring; test
batches on the run's device; the package's import structure."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mcl.eval.state import RunState, declared_extras
from mcl.train import build
from tests.conftest import MICRO, compose_cfg


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runner")
    return build(compose_cfg(tmp, MICRO), tmp / "run")


def test_test_batches_reach_generate_on_the_runs_device(runner, monkeypatch):
    """The collator builds test batches on the CPU; generate() must get them on the device the
    model is on (else transformers warns and generates across devices). The meta device stands
    in for a GPU: every tensor the method receives must be on it."""
    seen: list[set[str]] = []

    def spy(batch, max_new_tokens):
        seen.append({str(v.device) for v in batch.values() if isinstance(v, torch.Tensor)})
        return ["x"] * len(batch["input_ids"])

    monkeypatch.setattr(runner.method, "generate", spy)
    monkeypatch.setattr(runner, "_device", torch.device("meta"))
    scores = runner.evaluate_task("color", 0)
    assert seen and all(devices == {"meta"} for devices in seen)
    assert scores["score"] == 0.0 and runner.state.matrix[0][0] == 0.0


def _filled() -> RunState:
    s = RunState.fresh(["a", "b"], ["u"])
    s.record(0, "a", {"score": 10.0, "held": None, "extras": {}}, 50.0)
    s.record(1, "a", {"score": 40.0, "held": 30.0, "extras": {"mif": 90.0}}, 100.0)
    s.record(1, "b", {"score": 20.0, "held": None, "extras": {"mif": None}})
    s.record(1, "u", {"score": 5.0, "held": 1.0, "extras": {"mif": 70.0}}, 25.0)
    s.params.append({"task": "a", "trainable": 3, "total": 9})
    s.timings["train_s"].append(1.5)
    s.global_step, s.devices, s.skipped = 6, {"eval": ["cpu"]}, {"a": {"train": 1}}
    return s


def test_record_places_each_score_in_its_cell():
    s = _filled()
    assert s.matrix == [[10.0, None], [40.0, 20.0], [None, None]]
    assert s.unseen_matrix == [[None], [5.0], [None]]
    assert s.if_scores[1] == {"a": 30.0, "u": 1.0} and s.if_scores[0] == {}
    assert s.extra_scores[0] == {} and s.extra_scores[1]["a"] == {"mif": 90.0}
    assert s.format_scores[1] == {"a": 100.0, "u": 25.0}  # none given for b: none recorded


def test_a_checkpointed_state_loads_back_equal_through_json():
    s = _filled()
    back = RunState.fresh(["a", "b"], ["u"])
    back.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert back == s


def test_results_json_rebuilds_the_state_and_its_metrics():
    s = _filled()
    s.extra_scores[2] = {"a": {"mif": 80.0}, "b": {"mif": 60.0}, "u": {"mif": 50.0}}
    head = {"tasks": ["a", "b"], "unseen_tasks": ["u"]}
    res = json.loads(json.dumps({**head, **s.results()}))
    back = RunState.from_results(res)
    assert {**head, **back.results()} == res
    assert back.matrix == s.matrix and back.extra_scores == s.extra_scores
    # every declared extra score gets a metric over the trained and the unseen tasks
    assert res["metrics"]["MIF"] == 70.0 and res["metrics"]["MIF_unseen"] == 50.0
    back.clear_scores()  # re-scoring refills what score_records gives, keeps the rest
    assert back.matrix == [[None, None]] * 3 and back.extra_scores == [{}, {}, {}]
    assert back.format_scores == s.format_scores and back.params == s.params


def test_the_benchmark_declares_the_extra_scores():
    assert declared_extras(None) == () and declared_extras({"bench": {"name": "x"}}) == ()
    assert declared_extras({"bench": {"extra_scores": ["mif"]}}) == ("mif",)


def test_re_scoring_imports_the_run_state_but_not_the_loop():
    """``mcl.eval.rescore`` shares the state object, not the training loop or Lightning."""
    code = (
        "import sys, mcl.eval.rescore\n"
        "bad = [m for m in sys.modules if m == 'lightning' or m.startswith('lightning.')"
        " or m in ('mcl.runner.loop', 'mcl.runner.evaluate', 'mcl.runner.checkpoint')]\n"
        "assert not bad, bad\n"
        "from mcl.runner import ContinualRunner, RunState, find_resumable\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_runner_names_no_method_and_no_paper():
    """The loop knows the ContinualMethod hooks, never a method, a paper or its scores."""
    import re
    from pathlib import Path

    import mcl
    import mcl.runner

    root = Path(mcl.__file__).parent
    names = {p.stem for d in ("methods", "plugins") for p in (root / d).glob("*.py")}
    names = (names - {"__init__", "base"}) | {"smolora", "mif"}
    for path in Path(mcl.runner.__file__).parent.glob("*.py"):
        text = path.read_text().lower()
        assert not [n for n in names if re.search(rf"\b{n}\b", text)], path
