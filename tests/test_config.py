"""Every config composes; unknown options fail with one line naming the valid choices."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.utils import get_object
from omegaconf import OmegaConf

from mcl.config import CONF_DIR, GROUPS, ConfigError, check_overrides, choices
from tests.conftest import compose_cfg

ALL = [(g, o) for g in GROUPS for o in choices(g)]


@pytest.mark.parametrize(("group", "option"), ALL, ids=[f"{g}={o}" for g, o in ALL])
def test_every_option_composes_and_targets_resolve(tmp_path, group, option):
    cfg = compose_cfg(tmp_path, [f"{group}={option}"])
    OmegaConf.resolve(cfg)  # every interpolation resolves
    for node in (cfg.model, cfg.method):
        assert get_object(node._target_) is not None
    for lg in (cfg.logger or {}).values():
        assert get_object(lg._target_) is not None
    assert cfg.train.steps or cfg.train.epochs


def test_defaults_are_the_documented_ones(tmp_path):
    cfg = compose_cfg(tmp_path)
    assert (cfg.model.name, cfg.bench.name, cfg.method.name) == ("tiny", "synth", "seq_lora")
    assert cfg.hardware.accelerator == "cpu" and "csv" in cfg.logger
    assert list(cfg.bench.tasks) == ["color", "count", "position", "ocr", "ground"]


def test_overrides_compose(tmp_path):
    cfg = compose_cfg(tmp_path, ["method=seq_lora", "bench=synth", "seed=3", "method.r=4"])
    assert cfg.seed == 3 and cfg.method.r == 4


def test_unknown_option_is_one_clear_line():
    with pytest.raises(ConfigError) as e:
        check_overrides(["method=smolorra"])
    msg = str(e.value)
    assert "\n" not in msg and "smolorra" in msg and "seq_lora" in msg
    with pytest.raises(ConfigError, match="unknown bench 'nope'"):
        check_overrides(["bench=synth,nope"])  # sweep values are checked one by one
    check_overrides(["method=seq_lora", "seed=2", "method.r=4", "bench=glob(*)"])


def test_cli_unknown_option_exits_nonzero_with_one_line(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "mcl.train", "hardware=tpu9000"],
        capture_output=True,
        text=True,
        cwd=CONF_DIR.parent,
        timeout=120,
    )
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: unknown hardware 'tpu9000'")
    assert "cpu" in lines[0]


LORA_STYLE = ["zero_shot", "seq_lora", "seq_ft", "replay", "ewc", "mas", "lwf", "olora", "joint"]


@pytest.mark.parametrize("method", LORA_STYLE)
def test_mcitlib_preset_sets_the_anchor_budget(tmp_path, method):
    from hydra.utils import instantiate

    from mcl.train import trainer_kwargs

    cfg = compose_cfg(tmp_path, [f"method={method}", "experiment=mcitlib"])
    m = instantiate(cfg.method)  # every LoRA-style method accepts the preset's keys
    assert cfg.train.epochs == 1 and cfg.train.steps is None
    assert trainer_kwargs(cfg)["accumulate_grad_batches"] * cfg.train.batch_size == 64
    if method != "zero_shot":
        assert (m.lr, m.r, m.alpha, m.parts, m.parts_lr) == (2e-4, 16, 32, ["projector"], 2e-5)


def test_mcitlib_moe_preset_and_bad_method_values_are_one_line(tmp_path):
    from mcl.train import _instantiate_method, trainer_kwargs

    cfg = compose_cfg(tmp_path, ["method=moelora", "experiment=mcitlib_moe"])
    m = _instantiate_method(cfg.method)
    assert (m.r, m.experts, m.lr) == (96, 6, 2e-4)
    bad = compose_cfg(tmp_path, ["method=moelora", "experiment=mcitlib"])  # r 16 over 6 experts
    with pytest.raises(ConfigError, match="multiple of experts") as e:
        _instantiate_method(bad.method)
    assert "\n" not in str(e.value)
    uneven = compose_cfg(tmp_path, ["train.global_batch=64", "train.batch_size=24"])
    with pytest.raises(ConfigError, match="global_batch=64 is not a multiple"):
        trainer_kwargs(uneven)


def test_cvit_smolora_scoring_preset_resolves_for_every_task(tmp_path):
    from omegaconf import OmegaConf

    from mcl.eval.scorers import task_modes

    cfg = compose_cfg(tmp_path, ["bench=cvit", "bench.scorer_mode=smolora"])
    info = OmegaConf.to_container(cfg.bench.task_info)
    scorers = {t: info[t]["scorer"] for t in list(cfg.bench.tasks) + list(cfg.bench.unseen)}
    modes = task_modes(
        cfg.bench.scorer_mode, scorers, OmegaConf.to_container(cfg.bench.scorer_presets)
    )
    assert modes["flickr30k"] == modes["textcaps"] == "best_ref_cider"
    assert modes["vqav2"] == "coin_vqa_exact" and modes["imagenet"] == "two_way_contains"
    assert modes["textvqa"] == modes["scienceqa"] == modes["gqa"] == "strict"


def test_cvit_starts_from_an_instruction_tuned_base_unless_a_model_is_named(tmp_path):
    assert compose_cfg(tmp_path, ["bench=cvit"]).model.name == "tiny_it_cvit"
    assert compose_cfg(tmp_path, ["bench=cvit", "model=tiny"]).model.name == "tiny"
    assert compose_cfg(tmp_path, ["model=micro", "bench=cvit"]).model.name == "micro"
    assert compose_cfg(tmp_path, ["bench=synth"]).model.name == "tiny"  # other benches: unchanged


def test_smolora_defaults_are_the_papers_official_configuration(tmp_path):
    method = compose_cfg(tmp_path, ["method=smolora"]).method
    assert method.if_route == "oracle_type"  # the evaluated task's instruction type (told)
    assert method.encoder == "minilm"  # all-MiniLM-L6-v2, as the official code
