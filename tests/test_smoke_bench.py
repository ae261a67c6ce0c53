"""``experiment=smoke`` runs on any benchmark: it shrinks budgets and leaves the tasks to the
benchmark, except where a benchmark names its own smoke subset (synth: two tasks, one unseen, the
sequence the recorded smoke results were made on)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from mcl.config import CONF_DIR, choices


def _compose(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose("train", overrides=list(overrides))


def test_synth_smoke_keeps_its_two_tasks_and_one_unseen():
    cfg = _compose("experiment=smoke")
    assert list(cfg.bench.tasks) == ["color", "position"]
    assert list(cfg.bench.unseen) == ["compose"]
    assert (cfg.bench.synthetic.train, cfg.bench.synthetic.test, cfg.train.steps) == (256, 48, 40)
    full = _compose()
    assert list(full.bench.tasks) == ["color", "count", "position", "ocr", "ground"]
    assert list(_compose("experiment=smoke", "bench.tasks=[ocr]").bench.tasks) == ["ocr"]


@pytest.mark.parametrize("bench", [b for b in choices("bench") if b != "synth"])
def test_smoke_leaves_every_other_benchmark_its_own_tasks(bench):
    own, smoke = _compose(f"bench={bench}").bench, _compose(f"bench={bench}", "experiment=smoke")
    assert list(smoke.bench.tasks) == list(own.tasks)
    assert list(smoke.bench.unseen or []) == list(own.unseen or [])
    assert smoke.train.steps == 40
