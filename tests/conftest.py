"""Shared fixtures: composing the real config tree with every output redirected to tmp."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from mcl.config import CONF_DIR


def pytest_configure(config):
    """Under pytest-xdist each worker, and every process it starts, computes on one thread: two
    workers with torch's default threads each would oversubscribe a 2-core machine, which runs
    several times slower under load."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# The files that take longest, first: a worker starts on the longest (a third of the suite) while
# the other works through the rest, and short files fill the end, so neither worker finishes
# long before the other. (Under -n 0 the order only changes what runs first.)
LONGEST_FILES = (
    "test_real_width.py",
    "test_same_results.py",
    "test_prepare.py",
    "test_resume.py",
    "test_fsdp.py",
    "test_real_path.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest in order


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
