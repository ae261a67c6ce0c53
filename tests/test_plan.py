"""Real architectures without checkpoints (``mcl.models.arch``) and ``python -m mcl.plan``.

Each model preset's shipped ``config.json`` builds its transformers class on the ``meta``
device at the published size; its offline processor puts the family's special tokens at the
config's ids; the plan is made for every preset x every method, with numbers that could be
wrong (the LoRA formula, D-MoLE's budget, memory against batch size, checkpointing and the
device budget), the activation formula against what autograd saves on a small LLaVA, and
``docs/plan.md`` against a fresh run of the command it shows. Nothing is downloaded.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.nn.attention import SDPBackend, sdpa_kernel

from mcl import plan as P
from mcl.config import CONF_DIR
from mcl.data.synthetic import tasks as T
from mcl.models import arch
from mcl.models.hf import FAMILIES
from mcl.models.mllm import model_inputs
from tests.conftest import compose_cfg, method_cfg

pytestmark = pytest.mark.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "plan.md"
METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
# the published checkpoints: parameters, LM (layers, hidden, heads, KV heads, MLP, vocab),
# vision (layers, hidden), image token id
PUBLISHED = {
    "llava15_7b": (7.06e9, (32, 4096, 32, 32, 11008, 32064), (24, 1024), 32000),
    "llava15_13b": (13.35e9, (40, 5120, 40, 40, 13824, 32064), (24, 1024), 32000),
    "llava_next_7b": (7.57e9, (32, 4096, 32, 8, 14336, 32064), (24, 1024), 32000),
    "qwen2_vl_7b": (8.29e9, (28, 3584, 28, 4, 18944, 152064), (32, 1280), 151655),
    "qwen2_5_vl_7b": (8.29e9, (28, 3584, 28, 4, 18944, 152064), (32, 1280), 151655),
    "internvl3_8b": (7.94e9, (28, 3584, 28, 4, 18944, 151674), (24, 1024), 151667),
}
# methods that run the vision tower on pixel_values (or route the projector per sample), so
# refuse every family but LLaVA-1.5; PathWeave needs a multi-modality bench
LLAVA_ONLY = {"dmole", "eproj", "fwd_prompt", "tir_ewc", "tir_mas", "smolora"}
TWO_TASKS = ["bench.tasks=[color,count]"]


def _plan(preset: str, method: str, *over: str, **kw) -> P.Plan:
    cfg, choices = P.compose([f"model={preset}", f"method={method}", *over])
    return P.make_plan(cfg, preset, hardware=choices["hardware"], **kw)


def _row(plan: P.Plan, hw: str) -> dict:
    return next(r for r in plan.memory if r["hardware"] == hw)


# ---------------------------------------------------------------- shipped architectures


def test_every_real_model_preset_ships_its_architecture():
    real = {p.stem for p in (CONF_DIR / "model").glob("*.yaml")} - {
        "tiny",
        "tiny_it",
        "tiny_it_cvit",
        "micro",
    }
    assert real == set(arch.PRESETS) == set(PUBLISHED)
    for preset, (family, name, _) in arch.PRESETS.items():
        spec = OmegaConf.load(CONF_DIR / "model" / f"{preset}.yaml")
        assert spec.name == name and spec.get("family", "llava") == family
        assert arch.config_path(preset).stat().st_size < 8_000  # a few KB each


@pytest.mark.parametrize("preset", list(PUBLISHED))
def test_shipped_config_builds_the_family_class_on_meta_at_the_published_size(preset):
    n, text, vision, image_id = PUBLISHED[preset]
    config = arch.load_config(preset)
    model = arch.build_arch(preset)  # meta, bf16
    assert type(model).__name__ == FAMILIES[arch.family_of(preset)][0]
    params = list(model.parameters())
    assert all(p.is_meta and p.dtype == torch.bfloat16 for p in params)
    assert sum(p.numel() for p in params) == pytest.approx(n, rel=0.005)
    t, v = config.text_config, config.vision_config
    got = (t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.num_key_value_heads)
    assert got + (t.intermediate_size, t.vocab_size) == text
    v_hidden = getattr(v, "embed_dim", None) or v.hidden_size
    assert (arch._vision_depth(config), v_hidden) == vision
    assert config.image_token_id == image_id
    assert len(model.model.language_model.layers) == text[0]


@pytest.mark.parametrize("preset", list(PUBLISHED))
def test_reduced_depth_keeps_every_layers_shape(preset):
    full = arch.build_arch(preset)
    small = arch.build_arch(preset, lm_layers=2, vision_layers=1)
    config = arch.load_config(preset, lm_layers=2, vision_layers=1)
    assert config.text_config.num_hidden_layers == 2 and arch._vision_depth(config) == 1

    def shapes(layer):
        return {n: p.shape for n, p in layer.named_parameters()}

    lm_full, lm_small = full.model.language_model.layers, small.model.language_model.layers
    assert len(lm_small) == 2 and shapes(lm_small[1]) == shapes(lm_full[1])
    stack = P._layer_lists(arch.load_random(preset, device="meta", lm_layers=2, vision_layers=1))
    assert stack["lm"][1] == 2 and stack["vision"][1] == 1
    if preset == "qwen2_5_vl_7b":  # one full-attention block survives the cut
        assert config.vision_config.fullatt_block_indexes == [0]


@pytest.mark.parametrize("preset", list(PUBLISHED))
def test_the_offline_processor_uses_the_configs_token_ids(preset):
    for vocab in (None, 3000):
        config = arch.load_config(preset, vocab_size=vocab)
        proc = arch.build_processor(preset, config)
        tok = proc.tokenizer
        assert len(tok) == config.text_config.vocab_size == (vocab or PUBLISHED[preset][1][5])
        assert tok.convert_tokens_to_ids(proc.image_token) == config.image_token_id
        assert tok.eos_token_id == config.text_config.eos_token_id
        if vocab is None:
            assert config.image_token_id == PUBLISHED[preset][3]  # the real id, kept
        ids = tok("what does the picture show?", add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids and max(ids) < len(tok)
        assert tok.decode([len(tok) - 1, 0]).strip()  # every id decodes


@pytest.mark.parametrize("preset", list(PUBLISHED))
def test_load_random_collates_the_familys_image_tokens(preset):
    """The MLLM on meta: the collator's batches hold as many image tokens as the model takes."""
    mllm = arch.load_random(preset, device="meta", processor_kwargs=_small_images(preset))
    assert mllm.family == arch.family_of(preset) and mllm.name == arch.PRESETS[preset][1]
    assert mllm.info["random_weights"] and mllm.info["lm_layers"] == 2
    rng = np.random.default_rng(0)
    samples = [vars(T.pretrain_sample(rng)) for _ in range(2)]
    batch = mllm.collator.train_batch(samples)
    n = int((batch["input_ids"] == mllm.model.config.image_token_id).sum())
    want = {"llava": 2 * 576, "llava_next": None, "qwen2_vl": 2 * 4, "qwen2_5_vl": 2 * 4}
    want["internvl"] = 2 * 256
    if want[mllm.family] is not None:
        assert n == want[mllm.family]
    assert n > 0 and (batch["labels"] != -100).any()


def _small_images(preset: str) -> dict | None:
    family = arch.family_of(preset)
    if family in ("qwen2_vl", "qwen2_5_vl"):
        return {"size": {"shortest_edge": 56 * 56, "longest_edge": 56 * 56}}  # 2x2 tokens
    if family == "internvl":
        return {"crop_to_patches": False}  # one 448 px tile
    return None


@pytest.mark.slow
def test_mcl_train_runs_a_real_width_two_layer_llava_on_cpu(tmp_path):
    """``model._target_=mcl.models.arch.load_random`` turns the preset into a random-weight,
    real-width model that ``mcl.train`` trains and evaluates (two steps, one task)."""
    from mcl.train import run

    cfg = compose_cfg(
        tmp_path,
        [
            "model=llava15_7b",
            "model._target_=mcl.models.arch.load_random",
            "+model.vocab_size=3000",
            "+model.lm_layers=1",
            "+model.vision_layers=1",
            "bench.tasks=[color]",
            "bench.unseen=[]",
            "bench.synthetic.train=8",
            "bench.synthetic.test=4",
            "bench.synthetic.shard_size=8",
            "train.steps=2",
            "train.batch_size=2",
            "eval.batch_size=4",
            "logger=none",
        ],
    )
    results = run(cfg, tmp_path / "run")
    info = results["model_info"]
    assert info["random_weights"] and info["config_of"] == "llava-hf/llava-1.5-7b-hf"
    assert len(results["matrix"]) == 2


# ---------------------------------------------------------------- plans


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PUBLISHED))
def test_every_method_plans_or_says_why_not(preset):
    family = arch.family_of(preset)
    for method in METHODS:
        plan = _plan(preset, method, *TWO_TASKS)
        text = P.render(plan)
        assert plan.total_base == pytest.approx(PUBLISHED[preset][0], rel=0.005)
        refused = method == "pathweave" or (family != "llava" and method in LLAVA_ONLY)
        if refused:
            assert plan.reason and "\n" not in plan.reason, (method, plan.reason)
            assert f"not applicable: {plan.reason}" in text and not plan.memory
            continue
        assert plan.reason is None, (method, plan.reason)
        assert [r.name for r in plan.tasks] == ["color", "count"]
        last = plan.tasks[-1]
        assert last.total >= plan.total_base
        assert (last.trainable > 0) == (method != "zero_shot")
        assert {r["hardware"] for r in plan.memory} == set(P.HARDWARE)
        for r in plan.memory:
            assert r["total"] > r["weights"] > 0
            if method != "zero_shot":  # checkpointing lowers activations on every hardware
                assert 0 < r["activations_ckpt"] < r["activations"]
        assert text.splitlines()[-1] == plan.verdict
        assert re.match(r"(fits|fits only with|cannot fit)", plan.verdict)


def _lora_params(config, targets, r):
    """r x (in + out) per targeted linear of every LM layer, from the config alone."""
    t = config.text_config
    head = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    dims = {
        "q_proj": (t.hidden_size, t.num_attention_heads * head),
        "k_proj": (t.hidden_size, t.num_key_value_heads * head),
        "v_proj": (t.hidden_size, t.num_key_value_heads * head),
        "o_proj": (t.num_attention_heads * head, t.hidden_size),
        "gate_proj": (t.hidden_size, t.intermediate_size),
        "up_proj": (t.hidden_size, t.intermediate_size),
        "down_proj": (t.intermediate_size, t.hidden_size),
    }
    return t.num_hidden_layers * sum(r * sum(dims[x]) for x in targets)


@pytest.mark.parametrize("preset", ["llava15_7b", "qwen2_vl_7b", "llava_next_7b"])
def test_seq_lora_trains_the_lora_formula_and_wraps_the_lm_attention(preset):
    plan = _plan(preset, "seq_lora", "method.r=16")
    want = _lora_params(arch.load_config(preset), ["q_proj", "k_proj", "v_proj", "o_proj"], 16)
    assert [r.trainable for r in plan.tasks] == [want] * 5
    assert plan.tasks[0].new == want and plan.tasks[1].new == 0
    assert plan.tasks[0].total == plan.total_base + want
    layers = PUBLISHED[preset][1][0]
    assert plan.wraps == [
        (
            "model.language_model.layers.*.self_attn.(q_proj|k_proj|v_proj|o_proj)",
            "peft lora.Linear",
            4 * layers,
        )
    ]
    if preset == "llava15_7b":
        assert want == 2 * 8_388_608  # twice the 8.39M of r = 8


def test_olora_adds_one_lora_per_task_and_trains_only_the_newest():
    plan = _plan("llava15_7b", "olora")
    lora = _lora_params(arch.load_config("llava15_7b"), ["q_proj", "k_proj", "v_proj", "o_proj"], 8)
    assert [r.new for r in plan.tasks] == [lora] * 5
    assert [r.trainable for r in plan.tasks] == [lora] * 5
    assert plan.tasks[-1].total == plan.total_base + 5 * lora
    # frozen old adapters are fp32 weights too: the last task holds the most
    assert plan.peak_task == 4


def test_dmole_places_its_budget_by_its_own_rule_and_says_it_is_an_estimate():
    plan = _plan("llava15_7b", "dmole")
    # 24 x 4 vision + 32 x 4 LM candidates; budget round(0.5 x 224) = 112 modules, split by
    # their share of units (96 / 224 -> 48 vision), at least a quarter for vision
    r, ae = 8, 2 * (1024 + 4096) * 128 + 128 + (1024 + 4096)
    experts = 48 * r * (1024 + 1024) + 64 * r * (4096 + 4096)
    assert [t.trainable for t in plan.tasks] == [experts] * 5
    assert [t.new for t in plan.tasks] == [experts + ae] * 5
    assert plan.tasks[0].notes == {"experts": "48 vision + 64 LM modules (estimate)"}
    text = P.render(plan)
    assert "estimate: D-MoLE's allocation depends on zero-cost gradient scores" in text
    counts = {pattern: n for pattern, _, n in plan.wraps}
    assert counts == {
        "model.vision_tower.encoder.layers.*.self_attn.(k_proj|v_proj|q_proj|out_proj)": 96,
        "model.language_model.layers.*.self_attn.(q_proj|k_proj|v_proj|o_proj)": 128,
    }
    # experts in the tower: its activations count (seq_lora's tower keeps nothing)
    lora = _plan("llava15_7b", "seq_lora")
    assert plan.tasks[0].act["vision_first"] == 0 and lora.tasks[0].act["vision_first"] is None


def test_memory_grows_with_batch_size_and_sequence_and_shards_with_devices():
    small = _plan("llava15_7b", "seq_lora", "train.batch_size=8")
    big = _plan("llava15_7b", "seq_lora", "train.batch_size=32")
    for a, b in zip(small.memory, big.memory):
        assert b["activations"] == 4 * a["activations"] and b["total"] > a["total"]
        assert b["weights"] == a["weights"]  # weights do not depend on the batch
    longer = _plan("llava15_7b", "seq_lora", "train.batch_size=8", seq_len=2 * 704)
    assert _row(longer, "gpu")["activations"] == pytest.approx(
        2 * _row(small, "gpu")["activations"], rel=0.01
    )
    four = _plan("llava15_7b", "seq_lora", "hardware=ddp", "hardware.devices=4")
    gpu, ddp = _row(four, "gpu"), _row(four, "ddp")
    fsdp, ds = _row(four, "fsdp"), _row(four, "deepspeed")
    assert (gpu["devices"], ddp["devices"], fsdp["devices"], ds["devices"]) == (1, 4, 4, 4)
    pt = four.tasks[0].trainable
    assert ddp["optimizer"] == gpu["optimizer"] + 4 * pt  # DDP's gradient buckets
    assert ds["optimizer"] == pytest.approx(gpu["optimizer"] / 4)  # ZeRO-2 shards them
    assert fsdp["weights"] < gpu["weights"] / 2  # FULL_SHARD shards the weights too
    assert "ddp*" in P.render(four, "ddp") and "ddp (4 devices)" in four.verdict


def test_llava_7b_numbers_match_the_formula():
    """One row by hand: bf16 base + fp32 LoRA, its optimizer, and S x (L a + adapters + head)."""
    plan = _plan("llava15_7b", "seq_lora", "train.batch_size=1")
    r = _row(plan, "gpu")
    pt, base = plan.tasks[0].trainable, plan.total_base
    assert r["optimizer"] == 12 * pt
    buffers = r["weights"] - 2 * base - 4 * pt
    assert 0 <= buffers < 1e6  # rotary tables and position ids
    h, i, v, s = 4096, 11008, 32064, 576 + 128
    per_token = 32 * (16 * h + 6 * i + 4 * 2 * h) + 4 * h + 14 * v
    assert r["activations"] == s * per_token
    assert r["activations_ckpt"] == s * (32 * 2 * h + 16 * h + 6 * i + 8 * h + 4 * h + 14 * v)
    assert r["total"] == pytest.approx(
        r["weights"] + r["optimizer"] + r["activations"] + P.OVERHEAD
    )


def test_a_small_device_says_in_one_line_that_the_plan_cannot_fit(capsys):
    plan = _plan("llava15_7b", "seq_lora", device_memory=4)
    assert plan.verdict.startswith("cannot fit: gpu (1 device) needs ")
    assert "4 GB available" in plan.verdict and "\n" not in plan.verdict
    assert {r["hardware"] for r in plan.memory}
    assert all(P.render(plan).splitlines()[-6:-1])  # the table, then the verdict
    roomy = _plan("llava15_7b", "seq_lora", "train.batch_size=1")
    assert roomy.verdict.startswith("fits: gpu (1 device) needs ")
    tight = _plan("llava15_7b", "seq_lora")  # batch 32 x 704 tokens: checkpointing needed
    assert tight.verdict.startswith("fits only with model.gradient_checkpointing=true")
    on = _plan("llava15_7b", "seq_lora", "model.gradient_checkpointing=true")
    assert on.verdict.startswith("fits: ") and "with gradient checkpointing" not in on.verdict
    assert P.main(["model=llava15_7b", "method=seq_lora", "--device-memory", "4"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("cannot fit")


def test_pathweave_plans_a_path_per_modality_on_a_multimodal_bench():
    plan = _plan("llava15_7b", "pathweave", "bench=mcl")
    assert plan.reason is None and [t.modality for t in plan.tasks][:2] == ["image", "video"]
    assert all(t.new > 0 for t in plan.tasks)  # a new path (and its in-adapters) per stage
    assert plan.tasks[1].seq > plan.tasks[0].seq  # video: four frames' tokens
    refused = _plan("llava15_7b", "dmole", "bench=mcl")
    assert refused.reason.startswith("dmole reads images only")


def test_fwd_prompt_plans_its_pool_and_slots():
    plan = _plan("llava15_7b", "fwd_prompt")
    d, d_img = 4096, 1024
    assert plan.own == {"values": 10 * 5 * d, "keys_img": 10 * d_img, "keys_txt": 10 * d}
    assert plan.tasks[0].trainable == 10 * 5 * d + 10 * d_img + 10 * d
    assert plan.tasks[0].seq == 576 + 128 + 25  # top_n x prompt_length slots
    assert not plan.wraps


def test_the_cli_refuses_a_model_without_a_shipped_architecture(capsys):
    assert P.main(["model=tiny"]) == 2
    assert "no shipped architecture" in capsys.readouterr().err
    assert P.main(["model=llava15_7b", "method=nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------- the activation formula


@pytest.mark.parametrize("method", ["seq_ft", "seq_lora", "moelora", "smolora", "dmole"])
def test_the_activation_formula_matches_what_autograd_saves(method):
    """A small LLaVA in bf16 under bf16 autocast with fused attention: the bytes autograd keeps
    for backward (parameters excluded) are the formula's, within 10%. SMoLoRA's experts keep
    three times what a LoRA keeps here (full-width outputs for the fusion), MoELoRA's half as
    much again, D-MoLE's a dropout mask besides the input copy: counted at a LoRA's
    2 x in_features, the plan fell short (D-MoLE's by a fifth)."""
    from mcl.models.tiny import build_tiny

    text = {
        "hidden_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 344,
    }
    vision = {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "image_size": 48,
        "patch_size": 16,
    }
    torch.manual_seed(0)
    mllm = build_tiny(text, vision)
    mllm.model.to(torch.bfloat16)
    m = instantiate(method_cfg(method))
    m.setup_model(mllm)
    if method == "dmole":  # its budget rule without the zero-cost scores (they read data)
        P._dmole_task(m, 0, None)
    else:
        m.on_task_start(0, None)
    for p in m.parameters():  # trainable tensors are fp32 over the bf16 base
        if p.requires_grad:
            p.data = p.data.float()
    rng = np.random.default_rng(0)
    batch = mllm.collator.train_batch([vars(T.pretrain_sample(rng)) for _ in range(4)])
    if method == "dmole":  # a training batch of task 0: its experts run
        m.set_masks(torch.ones(4, 1))
    for layer in getattr(m, "layers", lambda: [])() if method == "smolora" else []:
        layer.if_input = torch.zeros(4, layer.lora_if_gate.in_features)  # its router's input
    params = {p.untyped_storage().data_ptr() for p in m.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            saved[st.data_ptr()] = st.nbytes()
        return t

    with (
        sdpa_kernel(SDPBackend.FLASH_ATTENTION),
        torch.autocast("cpu", dtype=torch.bfloat16),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
    ):
        m.mllm(**model_inputs(batch))
    n, s = batch["input_ids"].shape
    train = [k for k, p in m.named_parameters() if p.requires_grad]
    act = P._activation_layout(train, P._where(mllm), mask_bytes=4)  # the CPU's float masks
    assert act["lm_first"] == 0
    assert (act["vision_first"] is None) == (method != "dmole")  # D-MoLE adapts the tower too
    shape = P.shape_of("llava", mllm.model.config)
    want = P.activation_bytes(shape, act, s, peak=False)
    assert sum(saved.values()) / n == pytest.approx(want, rel=0.1)


# ---------------------------------------------------------------- the generated document


def test_docs_plan_md_is_the_output_of_the_command_it_shows():
    text = DOC.read_text()
    cmd = re.search(r"```bash\n(python -m mcl.plan .*)\n```", text)[1]
    argv = shlex.split(cmd)[3:]
    assert argv[:2] == ["model=llava15_7b", "method=seq_lora,dmole,smolora"]
    fresh = P.markdown(argv)
    assert fresh == text, "docs/plan.md is stale: rerun the command it shows with --markdown"
    for method in ("seq_lora", "dmole", "smolora"):
        assert f"## llava15_7b x {method}" in text
    assert not re.search(r"20\d\d-\d\d-\d\d|\b[0-9a-f]{40}\b", text)  # no dates, no hashes
