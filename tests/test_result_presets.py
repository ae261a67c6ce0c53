"""Every results preset (``experiment=results/<page>``) composes every job of its sweep: the
cartesian product of its ``hydra.sweeper.params``, each composed with Hydra's compose API (no
run), so a preset cannot name a method, option or job that does not exist."""

from __future__ import annotations

import functools
import itertools

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mcl.config import CONF_DIR, choices

PRESETS = ("synth", "cvit", "dmole", "clmm", "mcl", "lambda")
BASELINES = {
    "zero_shot", "seq_lora", "seq_ft", "joint", "replay", "ewc", "mas", "lwf", "tir_ewc",
    "tir_mas", "moelora", "olora",
}  # fmt: skip


def _jobs(preset: str) -> list[list[str]]:
    """Each job's overrides: experiment=results/<preset> and one value of every sweep axis."""
    cfg = compose("train", [f"experiment=results/{preset}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    axes = [[f"{k}={v.strip()}" for v in str(values).split(",")] for k, values in params.items()]
    return [[f"experiment=results/{preset}", *job] for job in itertools.product(*axes)]


@functools.cache
def _compose_all(preset: str) -> list:
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        return [compose("train", job) for job in _jobs(preset)]


def test_the_presets_are_experiment_options():
    assert {f"results/{p}" for p in PRESETS} <= set(choices("experiment"))


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_composes_every_job_with_three_seeds(preset):
    configs = _compose_all(preset)
    assert {c.seed for c in configs} == {0, 1, 2}
    methods = {c.method.name for c in configs}
    expected = {
        "synth": BASELINES,
        "cvit": BASELINES | {"smolora", "fwd_prompt"},
        "dmole": BASELINES | {"dmole"},
        # seq_lora: the control for replay/ewc/mas, which are seq_lora + a plugin (seq_ft trains
        # the whole connector, the study's baseline)
        "clmm": {
            "seq_ft",
            "seq_lora",
            "replay",
            "ewc",
            "mas",
            "tir_ewc",
            "tir_mas",
            "eproj",
            "joint",
        },
        "mcl": {"seq_lora", "pathweave", "joint"},
        "lambda": {"ewc", "tir_ewc", "mas", "tir_mas"},
    }[preset]
    assert methods == expected
    bench = {"lambda": "clmm"}.get(preset, preset)
    assert {c.bench.name for c in configs} == {bench}
    if preset in ("clmm", "lambda"):
        assert {c.model.name for c in configs} == {"tiny_it"}


def test_cvit_runs_smolora_in_both_routings_and_both_instruction_settings():
    configs = [c for c in _compose_all("cvit") if c.method.name == "smolora"]
    settings = {(c.method.if_route, c.bench.synthetic.instructions) for c in configs}
    assert settings == {(r, i) for r in ("oracle_type", "text_embedding") for i in (1, 5)}
    assert len(configs) == 4 * 3


def test_cvit_runs_sequential_lora_in_each_of_smolora_instruction_settings():
    """SMoLoRA's claims compare it with sequential LoRA trained on the same instructions."""
    configs = [c for c in _compose_all("cvit") if c.method.name == "seq_lora"]
    assert (
        sorted(c.bench.synthetic.instructions or 0 for c in configs) == [0] * 3 + [1] * 3 + [5] * 3
    )


def test_dmole_runs_both_ablations():
    configs = [c for c in _compose_all("dmole") if c.method.name == "dmole"]
    settings = {(c.method.allocator, c.method.curriculum) for c in configs}
    assert settings == {("zc", "split"), ("fixed", "split"), ("zc", "none")}


def test_mcl_runs_pathweave_with_both_base_modalities():
    configs = [c for c in _compose_all("mcl") if c.method.name == "pathweave"]
    assert {tuple(c.method.base_modalities) for c in configs} == {(), ("image",)}


def _lam_free(c) -> dict:
    """A job's config without its seed, its λ and the preset that named it."""
    d = OmegaConf.to_container(c, resolve=False)
    d.pop("seed")
    d.pop("experiment", None)
    d["method"]["plugins"][c.method.name].pop("lam")
    return d


def test_the_lambda_page_spans_100x_for_each_regulariser_with_the_clmm_runs():
    """The λ page's points: the lambda preset's runs plus the clmm page's runs of the same four
    methods at their default λ, which must be the same config but for λ."""
    sweep = _compose_all("lambda")
    default = [
        c for c in _compose_all("clmm") if c.method.name in ("ewc", "tir_ewc", "mas", "tir_mas")
    ]
    by_method: dict[str, set[float]] = {}
    for c in sweep + default:
        name = c.method.name
        by_method.setdefault(name, set()).add(float(c.method.plugins[name].lam))
    assert set(by_method) == {"ewc", "tir_ewc", "mas", "tir_mas"}
    for lams in by_method.values():
        assert len(lams) >= 4 and max(lams) / min(lams) >= 100
    for c in default:
        twin = next(s for s in sweep if s.method.name == c.method.name and s.seed == c.seed)
        assert _lam_free(c) == _lam_free(twin), c.method.name


def test_the_training_command_line_accepts_a_preset_and_one_of_its_jobs():
    """mcl.train's up-front check of group options knows nested ones (experiment=results/cvit)."""
    import os
    import subprocess
    import sys

    argv = ["experiment=results/cvit", "+experiment/results/job=smolora_text_i1", "--cfg", "job"]
    out = subprocess.run(
        [sys.executable, "-m", "mcl.train", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        cwd=CONF_DIR.parent,
    )
    assert out.returncode == 0, out.stderr
    cfg = OmegaConf.create(out.stdout)
    assert (cfg.method.name, cfg.method.if_route, cfg.bench.name) == (
        "smolora",
        "text_embedding",
        "cvit",
    )
