"""The tiny bases a first run needs ship with mcl (``scripts/ship_bases.py``): the default run and
``bench=cvit`` load them, building nothing, from an empty cache."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

import mcl.models.tiny as tiny
from tests.conftest import compose_cfg


@pytest.mark.parametrize("model", ["tiny", "tiny_it_cvit"])
def test_a_first_run_loads_the_shipped_base_and_builds_nothing(tmp_path, monkeypatch, model):
    def refuse(*a, **k):
        raise AssertionError(
            f"model={model} was built, not loaded: its shipped copy is stale; "
            "rerun python scripts/ship_bases.py"
        )

    monkeypatch.setattr(tiny, "pretrain", refuse)
    monkeypatch.setattr(tiny, "instruct_tune", refuse)
    cfg = compose_cfg(tmp_path, [f"model={model}"])  # an empty cache under tmp_path
    mllm = instantiate(cfg.model)
    assert (tiny.SHIPPED / mllm.info["key"] / "model.safetensors").exists()
    assert not (tmp_path / "cache" / "tiny").exists()  # nothing written to the user's cache
    if model == "tiny_it_cvit":
        assert mllm.info["instruct"]["tasks"]  # stage two's weights, not stage one's
