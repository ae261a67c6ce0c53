"""The instruction-tuned tiny base (``model.instruct``, conf/model/tiny_it.yaml): a second,
cached stage that tunes the whole base jointly on twin tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from mcl.data.synthetic import twins
from mcl.models import tiny
from tests.conftest import compose_cfg

INSTRUCT = "{twin:clmm,tasks:[vqav2,okvqa],steps:30,batch_size:8,lr:2e-3,warmup:3,seed:0}"


def _model(tmp_path, *overrides):
    cfg = compose_cfg(tmp_path, ["model=micro", *overrides])
    return instantiate(cfg.model)


@torch.no_grad()
def _loss(mllm, task: str) -> float:
    rng = np.random.default_rng(123)  # fresh samples, not the tuning stream
    samples = [vars(twins.recipes("clmm")[task].sample(rng)) for _ in range(32)]
    return float(mllm.model(**mllm.collator.train_batch(samples)).loss)


@pytest.mark.slow
def test_instruction_tuning_teaches_the_tasks_and_is_cached(tmp_path, monkeypatch):
    base = _model(tmp_path)
    tuned = _model(tmp_path, f"model.instruct={INSTRUCT}")
    assert tuned.info["base_key"] == base.info["key"] != tuned.info["key"]
    assert tuned.info["instruct"]["tasks"] == ["vqav2", "okvqa"]
    # the tuned tasks' loss falls well below the stage-one base's (it never saw their words)
    for task in ("vqav2", "okvqa"):
        assert _loss(tuned, task) < 0.8 * _loss(base, task)
    changed = [
        k
        for k, v in tuned.model.state_dict().items()
        if not torch.equal(v, base.model.state_dict()[k])
    ]
    assert any("language_model" in k for k in changed) and any("projector" in k for k in changed)

    # second use: loaded from the cache, bit-identical, no tuning
    def boom(*a, **k):
        raise AssertionError("instruct_tune ran again instead of loading the cache")

    monkeypatch.setattr(tiny, "instruct_tune", boom)
    again = _model(tmp_path, f"model.instruct={INSTRUCT}")
    for k, v in tuned.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k
    # another recipe is another cache entry
    with pytest.raises(Exception, match="ran again"):  # Hydra wraps it
        _model(tmp_path, f"model.instruct={INSTRUCT.replace('steps:30', 'steps:31')}")


def test_bad_instruct_config_is_one_line(tmp_path):
    mllm = _model(tmp_path)
    with pytest.raises(ValueError, match="'vqa2' is not a task of twin 'clmm'; choose from"):
        tiny.instruct_tune(mllm, "clmm", ["vqa2"], 1, 2, 1e-3, 1, 0, progress=False)
    with pytest.raises(ValueError, match="is video"):
        tiny.instruct_tune(mllm, "clmm", ["mcl/video"], 1, 2, 1e-3, 1, 0, progress=False)
    with pytest.raises(ValueError, match="empty"):
        tiny.instruct_tune(mllm, "clmm", [], 1, 2, 1e-3, 1, 0, progress=False)
    bad = "{twin:clmm,tasks:[vqav2],steps:1,batch_size:2,lr:1e-3,warmup:1,seed:0}"
    with pytest.raises(Exception, match="benchmark_words=true"):
        _model(tmp_path, f"model.instruct={bad}", "+model.benchmark_words=false")


def test_tasks_may_come_from_other_twins(tmp_path):
    mllm = _model(tmp_path)
    before = {k: v.clone() for k, v in mllm.model.state_dict().items()}
    stats = tiny.instruct_tune(
        mllm, "clmm", ["okvqa", "dmole/iconqa"], 2, 4, 1e-3, 1, 0, progress=False
    )
    assert np.isfinite(stats["final_loss"])
    assert any(not torch.equal(v, before[k]) for k, v in mllm.model.state_dict().items())
