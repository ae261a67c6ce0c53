"""SMoLoRA's mechanisms (docs/methods/smolora.md): top-1 per group, inert routers, zero start."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mcl.adapters.smolora import SMoLoRALinear
from mcl.data.bench import Benchmark
from mcl.data.datamodule import ContinualDataModule
from mcl.data.schema import instruction_text
from mcl.data.synthetic import twins
from mcl.methods.smolora import SMoLoRA, instruction_of, route_text
from mcl.models.mllm import model_inputs
from mcl.models.tiny import build_tiny
from mcl.train import build, run
from tests.conftest import MICRO, compose_cfg
from tests.test_collate import TEXT, VISION
from tests.test_data import _gen


def _layer(seed=0, **kw):
    torch.manual_seed(seed)
    base = nn.Linear(12, 10)
    layer = SMoLoRALinear(base, r=8, experts=4, n_vu=2, alpha=16, dropout=0.0, d_emb=6, **kw)
    return base, layer


def test_exactly_one_expert_per_group_is_active_per_sample():
    base, layer = _layer()
    with torch.no_grad():
        layer.lora_B.normal_()
    x, emb = torch.randn(5, 7, 12), torch.randn(5, 6)
    layer.if_input = emb
    out = layer(x)
    vu, if_ = layer.last_route
    assert bool(((vu >= 0) & (vu < 2)).all()) and bool(((if_ >= 2) & (if_ < 4)).all())
    # the output uses exactly those two rank blocks, fused per token by the softmax
    for i in range(5):
        blocks = []
        for e in (int(vu[i]), int(if_[i])):
            a, b = layer.lora_A[2 * e : 2 * e + 2], layer.lora_B[:, 2 * e : 2 * e + 2]
            blocks.append(layer.scaling * (x[i] @ a.T @ b.T))
        w = torch.softmax(
            torch.cat([layer.lora_fuse_vu(blocks[0]), layer.lora_fuse_if(blocks[1])], -1), -1
        )
        expected = base(x[i]) + w[:, :1] * blocks[0] + w[:, 1:] * blocks[1]
        assert torch.allclose(out[i], expected, atol=1e-5)
    # VU routing reads the mean of the input: a sample's route follows its own tokens
    assert torch.equal(vu, layer.lora_vu_gate(x.mean(1)).argmax(-1))


def test_routers_get_no_gradient_and_zero_b_leaves_the_layer_unchanged():
    base, layer = _layer()
    x = torch.randn(3, 4, 12)
    layer.if_input = torch.randn(3, 6)
    assert torch.allclose(layer(x), base(x))  # B = 0: the base layer at the start
    with torch.no_grad():
        layer.lora_B.normal_()
    layer(x).sum().backward()
    assert layer.lora_vu_gate.weight.grad is None and layer.lora_if_gate.weight.grad is None
    assert layer.lora_A.grad is not None and layer.lora_fuse_vu.weight.grad is not None
    assert float(layer.lora_A.detach().std()) == pytest.approx(0.01, rel=0.2)  # A ~ N(0, 0.01^2)
    assert layer.scaling == 16 / 8  # alpha over the *total* rank


def test_each_expert_draws_its_own_dropout_mask():
    """Issue 26.6: the code's every expert applies ``lora_dropout(x)`` itself, so the VU and the
    IF expert see independent masks (mcl shared one). Expert 0 copies its input to outputs
    0..63 and expert 1 to 64..127, so the output shows each expert's mask."""
    torch.manual_seed(0)
    base = nn.Linear(64, 128)
    layer = SMoLoRALinear(base, r=128, experts=2, n_vu=1, alpha=128, dropout=0.5, d_emb=4)
    with torch.no_grad():
        layer.lora_A.copy_(torch.cat([torch.eye(64), torch.eye(64)]))
        layer.lora_B.copy_(torch.eye(128))
        layer.lora_fuse_vu.weight.zero_()  # a 0.5 / 0.5 fusion
        layer.lora_fuse_if.weight.zero_()
    x = torch.ones(3, 5, 64)
    layer.if_input = torch.randn(3, 4)
    layer.train()
    with torch.no_grad():
        y = layer(x) - base(x)
    kept_vu, kept_if = y[..., :64] != 0, y[..., 64:] != 0
    assert 0.3 < float(kept_vu.float().mean()) < 0.7 and 0.3 < float(kept_if.float().mean()) < 0.7
    assert not torch.equal(kept_vu, kept_if)  # two masks, not one
    assert float((kept_vu == kept_if).float().mean()) < 0.7  # independent: ~half agree
    layer.eval()  # no dropout: both experts see x
    with torch.no_grad():
        y = layer(x) - base(x)
    assert torch.allclose(y[..., :64], y[..., 64:], atol=1e-6)


def test_prompt_only_keeps_the_prefill_route_for_decode_steps():
    _, layer = _layer()
    layer.if_input = torch.randn(64, 6)
    prefill = torch.randn(64, 5, 12)
    layer.keep_route = True
    layer(prefill)
    first = layer.last_route[0].clone()
    step = torch.randn(64, 1, 12) * 10
    layer(step)
    assert torch.equal(layer.last_route[0], first)  # kept
    layer.keep_route = False  # faithful: each decode step routes from its own token
    layer(step)
    assert not torch.equal(layer.last_route[0], first)


def test_instruction_is_the_last_sentence():
    q = "what colour is the cube? answer the question using a single word or phrase."
    assert instruction_of(q) == "answer the question using a single word or phrase."
    assert instruction_of("describe it in one sentence.") == "describe it in one sentence."


def test_route_text_uses_the_recorded_instruction_whole_or_its_last_sentence():
    q = "how many shapes? A. 1 B. 2 C. 3 answer with the option letter."
    assert route_text(q, None, whole=True) == "3 answer with the option letter."  # fallback
    full = "what is the object? answer using one word."
    assert route_text("what is the object? answer using one word.", full, whole=True) == full
    assert route_text(full, full, whole=False) == "answer using one word."
    assert route_text(q, "answer with the option letter.", False) == (
        "answer with the option letter."
    )


def test_cvit_twin_records_the_instruction_the_papers_type_table_embeds():
    """ScienceQA's options end without a full stop, so the question's last sentence swallows
    the last option ("3 answer with ..."): one instruction became two routes. The recorded
    instruction is the template's own text. ImageNet's whole instruction is its own row in the
    paper's single-type table, distinct from the VQA tasks', while its last sentence is theirs."""
    recipes = twins.recipes("cvit")

    def samples(task, n=40):
        return [recipes[task].sample(np.random.default_rng(i), n_templates=1) for i in range(n)]

    sqa = samples("scienceqa")
    assert len({instruction_of(s.question) for s in sqa}) > 1  # what the question alone gives
    assert {s.meta["instruction"] for s in sqa} == {
        "answer with the option letter from the given choices directly."
    }
    whole = {t: {s.meta["instruction"] for s in samples(t)} for t in ("imagenet", "textvqa", "gqa")}
    assert all(len(v) == 1 for v in whole.values())
    assert whole["textvqa"] == whole["gqa"] != whole["imagenet"]
    (inet,) = whole["imagenet"]
    assert route_text("", inet, whole=False) == next(iter(whole["textvqa"]))
    assert instruction_text("{q} {options} pick one.") == "pick one."
    assert instruction_text("{q}") == ""


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return Benchmark(_gen(tmp_path_factory.mktemp("smolora") / "t", train=32, test=12))


def test_smolora_targets_the_mlp_and_projector_and_starts_as_the_base(bench):
    torch.manual_seed(0)
    mllm = build_tiny(TEXT, VISION)
    dm = ContinualDataModule(bench, mllm.collator, batch_size=4)
    dm.set_task(0)
    batch = next(iter(dm.train_dataloader()))
    inputs = model_inputs(batch)
    with torch.no_grad():
        before = mllm.model(**inputs).logits
    m = SMoLoRA(r=8, experts=4, n_vu=2, alpha=16)
    m.setup_model(mllm)
    m.on_task_start(0, dm)
    assert all(("mlp" in n) or ("multi_modal_projector" in n) for n in m.wrapped)
    assert not any("self_attn" in n or "vision_tower" in n for n in m.wrapped)
    m._set_context(batch, "color", training=True)
    with torch.no_grad():
        after = m.mllm(**inputs).logits
    assert torch.allclose(before, after, atol=1e-6)
    trainable = set(m.trainable_named())
    assert trainable == m.expected_trainable() and not any("gate.weight" in n for n in trainable)
    groups = [g for g in m.param_groups() if g["params"]]
    assert any(g.get("lr") == m.projector_lr for g in groups)
    # per sample: same instruction -> same IF expert (text_embedding routing)
    m.mllm(**inputs)
    layer = m.layers()[0]
    if_routes = layer.last_route[1]
    instr = [route_text(q, i, False) for q, i in zip(batch["questions"], batch["instructions"])]
    assert all(i is not None for i in batch["instructions"])  # the twin records them
    for i in range(len(instr)):
        for j in range(len(instr)):
            if instr[i] == instr[j]:
                assert if_routes[i] == if_routes[j]


@pytest.mark.parametrize("if_route", ["text_embedding", "oracle_type"])
def test_smolora_end_to_end_routers_bit_identical_across_tasks(tmp_path, if_route):
    over = [*MICRO, "method=smolora", "method.r=8", "method.experts=4", "method.n_vu=2"]
    cfg = compose_cfg(tmp_path, [*over, f"method.if_route={if_route}"])
    res = run(cfg, Path(cfg.paths.output_dir))
    a = load_file(str(tmp_path / "run" / "checkpoints" / "task00" / "adapters.safetensors"))
    b = load_file(str(tmp_path / "run" / "checkpoints" / "task01" / "adapters.safetensors"))
    gates = [k for k in a if "_gate." in k]
    assert gates and all(torch.equal(a[k], b[k]) for k in gates)  # saved, never re-initialised
    experts = [k for k in a if k.endswith("lora_B")]
    assert any(not torch.equal(a[k], b[k]) for k in experts)  # the experts did train
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["task_id_at_test"] is (if_route == "oracle_type")
    assert res["unseen_matrix"][-1][0] is not None  # the unseen task is scored


def test_oracle_routing_at_evaluation_uses_the_evaluated_tasks_row(tmp_path):
    """Issue 26.7: under ``oracle_type`` the runner tells the method the task it evaluates and
    every layer's IF router reads that task's row of the type table -- at every forward of
    its evaluation, prefill and decode steps, seen and unseen tasks alike."""
    over = [*MICRO, "method=smolora", "method.r=8", "method.experts=4", "method.n_vu=2"]
    over += ["method.if_route=oracle_type", "method.encoder=lm", "method.type_samples=16"]
    runner = build(compose_cfg(tmp_path, over), tmp_path / "run")
    m = runner.method
    assert m.task_id_at_test
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(layer, args, out):
        seen.append((layer.if_input.detach().clone(), layer.last_route[1].clone()))

    hooks = [layer.register_forward_hook(record) for layer in m.layers()]
    rows = {}
    try:
        for name in [*runner.bench.task_names, *runner.bench.unseen_names]:
            seen.clear()
            runner.evaluate_task(name, 0)
            rows[name] = m.type_embedding(name)
            # the row, computed here: the task's recorded instructions, whole, embedded, averaged
            # (its training samples; an unseen task's test samples)
            trained = runner.bench.task_names
            samples = (
                runner.dm.sample_task(trained.index(name), m.type_samples)
                if name in trained
                else runner.dm.test_samples(name)[: m.type_samples]
            )
            texts = [route_text(x["question"], x["meta"]["instruction"], True) for x in samples]
            assert torch.allclose(rows[name], m.encoder.text(texts).mean(0).to(rows[name]))
            assert len(seen) > len(m.layers())  # prefill and decode steps, every layer
            for emb, if_route in seen:
                assert torch.allclose(emb, rows[name].expand_as(emb).to(emb))
                assert (if_route >= m.n_vu).all()
    finally:
        for h in hooks:
            h.remove()
    names = list(rows)
    assert all(
        not torch.allclose(rows[a], rows[b]) for i, a in enumerate(names) for b in names[i + 1 :]
    )  # one row per task: the evaluated task decides which


def test_if_experts_match_the_forward_routes_and_overlap_is_reported(bench):
    torch.manual_seed(0)
    mllm = build_tiny(TEXT, VISION)
    dm = ContinualDataModule(bench, mllm.collator, batch_size=4)
    m = SMoLoRA(r=8, experts=4, n_vu=2, alpha=16, type_samples=16)
    m.setup_model(mllm)
    dm.set_task(0)
    m.on_task_start(0, dm)
    samples = dm.sample_task(1, 16)
    batch = mllm.collator.train_batch(samples)
    m._set_context(batch, dm.bench.task_names[1], training=False)
    with torch.no_grad():
        m.mllm(**model_inputs(batch))
    forward = torch.stack([layer.last_route[1] for layer in m.layers()]).mode(1).values
    assert torch.equal(m.if_experts(1), forward.cpu())  # same samples, same majority per layer
    info = m.task_info(1)
    share = info["if_layers_shared"][dm.bench.task_names[0]]
    expected = float((m.if_experts(0) == m.if_experts(1)).float().mean())
    assert share == expected and 0.0 <= share <= 1.0
    assert m.task_info(0)["if_layers_shared"] == {}
