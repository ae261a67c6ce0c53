"""A user's own config groups, outside the package, join through ``hydra.searchpath``: Hydra
composes them, and mcl's up-front checks (:func:`mcl.config.check_overrides`,
:func:`mcl.validate.precheck`) know them too (docs/getting_started.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mcl.models
from mcl.config import CONF_DIR, ConfigError, check_overrides, choices, search_dirs
from mcl.validate import _compose, precheck


@pytest.fixture
def user_conf(tmp_path) -> Path:
    """A directory of the user's configs: one method built on seq_lora."""
    d = tmp_path / "my_confs"
    (d / "method").mkdir(parents=True)
    (d / "method" / "my_lora.yaml").write_text("defaults:\n  - seq_lora\n\nname: my_lora\n")
    return d


def test_search_dirs_reads_hydra_searchpath(tmp_path):
    argv = [f"hydra.searchpath=[file://{tmp_path}/a,'{tmp_path}/b',pkg://mcl.models]", "seed=1"]
    dirs = search_dirs(argv)
    assert dirs[:2] == [tmp_path / "a", tmp_path / "b"]
    assert dirs[2] == Path(mcl.models.__file__).parent
    assert search_dirs(["method=seq_lora"]) == []


def test_a_users_method_is_a_known_option_only_on_the_search_path(user_conf):
    option = f"hydra.searchpath=[file://{user_conf}]"
    with pytest.raises(ConfigError, match="unknown method 'my_lora'.*hydra.searchpath"):
        check_overrides(["method=my_lora"])
    check_overrides([option, "method=my_lora"])
    check_overrides([option, "method=my_lora,seq_lora"])  # sweeps mix both
    assert "my_lora" in choices("method", extra=[user_conf])


def test_precheck_composes_a_users_method(user_conf, tmp_path):
    argv = [f"hydra.searchpath=[file://{user_conf}]", "method=my_lora", "experiment=smoke"]
    precheck([*argv, f"hydra.run.dir={tmp_path}/run"])  # no ConfigError
    cfg, defaults = _compose(argv, CONF_DIR)
    assert cfg.method.name == "my_lora" and cfg.method._target_.endswith("SeqLoRA")
    assert defaults is not None and defaults.method.name == "my_lora"


@pytest.mark.slow
def test_cli_runs_a_users_method_from_any_directory(user_conf, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {**os.environ, "MCL_CACHE": str(tmp_path / "cache"), "MCL_LOGS": str(tmp_path / "logs")}
    cmd = [sys.executable, "-m", "mcl.train", "method=my_lora", "experiment=smoke",
           f"hydra.searchpath=[file://{user_conf}]", "progress=false"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    (result,) = (tmp_path / "logs").glob("synth/my_lora/s0/*/results.json")
    assert json.loads(result.read_text())["method"] == "my_lora"


def test_a_users_plugin_on_the_search_path_is_found_by_name(tmp_path, monkeypatch):
    from mcl.plugins.ewc import EWCPlugin
    from mcl.plugins.registry import build_plugins, plugin_names

    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "strong_ewc.yaml").write_text(
        "_target_: mcl.plugins.ewc.EWCPlugin\nlam: 1.0e7\n"
    )
    assert "strong_ewc" not in plugin_names()
    monkeypatch.setattr(sys, "argv", ["mcl.train", f"hydra.searchpath=[file://{tmp_path}]"])
    assert "strong_ewc" in plugin_names() and "ewc" in plugin_names()
    (plugin,) = build_plugins(["strong_ewc"])
    assert isinstance(plugin, EWCPlugin) and plugin.lam == 1.0e7
