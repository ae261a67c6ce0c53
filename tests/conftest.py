"""Shared fixtures: composing the real config tree with every output redirected to tmp."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from mcl.config import CONF_DIR


def compose_cfg(tmp_path, overrides: list[str] = ()):
    """The composed train config, with logs, data, cache and outputs under ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(
            config_name="train",
            overrides=[
                f"paths.output_dir={tmp_path}/run",
                f"paths.log_dir={tmp_path}/logs",
                f"paths.data_dir={tmp_path}/data",
                f"paths.cache_dir={tmp_path}/cache",
                "progress=false",
                *overrides,
            ],
        )


def method_cfg(name: str):
    """``conf/method/<name>.yaml`` as Hydra composes it: its defaults list applied (a baseline
    such as ``ewc`` is seq_lora's file plus a plugin's, not a file to load on its own)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name="train", overrides=[f"method={name}"]).method


MICRO = [
    "model=micro",
    "logger=csv",
    "bench.tasks=[color,position]",
    "bench.unseen=[compose]",
    "bench.synthetic.train=128",
    "bench.synthetic.test=24",
    "bench.synthetic.shard_size=64",
    "train.steps=6",
    "train.batch_size=8",
    "eval.batch_size=16",
]


@pytest.fixture
def micro_overrides():
    """A 2-task sequence on the micro model: the whole loop in seconds."""
    return list(MICRO)
