"""The baselines' mechanisms, each on a random tiny MLLM: penalties, buffers, routers, subspaces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mcl.adapters.moe_lora import MoELoRALinear
from mcl.data.bench import Benchmark
from mcl.data.datamodule import ContinualDataModule
from mcl.methods.moelora import MoELoRA
from mcl.methods.olora import OLoRA
from mcl.methods.seq_ft import SeqFT
from mcl.models.tiny import build_tiny
from tests.test_collate import TEXT, VISION
from tests.test_data import _gen


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return Benchmark(_gen(tmp_path_factory.mktemp("methods") / "t", train=40))


def _method(cls, **kw):
    torch.manual_seed(0)
    m = cls(**kw)
    m.setup_model(build_tiny(TEXT, VISION))
    return m


def _batch(m, bench, task="color", n=4):
    dm = ContinualDataModule(bench, m.mllm.collator, batch_size=n)
    dm.set_task(bench.task_names.index(task))
    batch = next(iter(dm.train_dataloader()))
    return dm, m.model_inputs(batch)


def _shift(m, delta: float) -> None:
    with torch.no_grad():
        for n, p in m.trainable_named().items():
            p.copy_(m.anchor(n) + delta)


# ---------------------------------------------------------------- MoELoRA
def test_moe_router_weights_sum_to_one_and_the_mixture_is_the_weighted_expert_sum():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    moe = MoELoRALinear(lin, r=6, experts=3, alpha=12)
    x = torch.randn(2, 5, 16)
    w = moe.route(x)
    assert w.shape == (2, 5, 3) and bool((w > 0).all())
    assert torch.allclose(w.sum(-1), torch.ones(2, 5), atol=1e-6)
    assert torch.allclose(moe(x), lin(x))  # B = 0: starts as the base layer
    with torch.no_grad():
        moe.lora_B.normal_()
    expected = lin(x)
    for e in range(3):
        a, b = moe.lora_A[2 * e : 2 * e + 2], moe.lora_B[:, 2 * e : 2 * e + 2]
        expected = expected + (12 / 6) * w[..., e : e + 1] * (x @ a.T @ b.T)
    assert torch.allclose(moe(x), expected, atol=1e-5)
    moe(x).sum().backward()
    assert moe.lora_router.weight.grad.abs().sum() > 0  # the router learns
    with pytest.raises(ValueError, match="split evenly"):
        MoELoRALinear(lin, r=5, experts=3, alpha=1)


def test_moelora_wraps_every_lm_projection_and_trains_experts_and_routers():
    m = _method(MoELoRA, r=4, experts=2, alpha=8)
    m.on_task_start(0, None)
    layers = m.moe_layers()
    assert len(layers) == 4 * TEXT["num_hidden_layers"]
    assert all("language_model" in n for n in m.wrapped)
    trainable = set(m.trainable_named())
    assert trainable == m.expected_trainable()
    assert any("lora_router" in n for n in trainable) and all(".lora_" in n for n in trainable)
    state = m.adapter_state()  # checkpoints hold experts and routers, never the base weights
    assert state and all(".lora_" in k for k in state)


# ---------------------------------------------------------------- O-LoRA
def test_olora_orthogonality_loss_is_zero_for_orthogonal_subspaces():
    m = _method(OLoRA, r=2)
    m.on_task_start(0, None)
    assert m.extra_loss({}, None) is None  # nothing to be orthogonal to yet
    m.on_task_start(1, None)
    layers = m.lora_layers()
    assert all(layer.active_adapters == ["task0", "task1"] for layer in layers)
    assert all(".task1." in n for n in m.trainable_named())  # earlier adapters frozen
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in layers:
            d = layer.lora_A["task0"].weight.shape[1]
            q, _ = torch.linalg.qr(torch.randn(d, d))
            layer.lora_A["task0"].weight.copy_(q[:, :2].T)
            layer.lora_A["task1"].weight.copy_(q[:, 2:4].T)
    assert float(m.orthogonality_loss().detach()) < 1e-4
    with torch.no_grad():
        for layer in layers:  # now sharing one direction with task 0
            layer.lora_A["task1"].weight[0] = layer.lora_A["task0"].weight[0]
    loss = m.extra_loss({}, None)
    assert float(loss.detach()) > 0.4 * len(layers)
    loss.backward()
    assert all(layer.lora_A["task0"].weight.grad is None for layer in layers)


def test_olora_sums_the_frozen_earlier_adapters_at_test_time(bench):
    m = _method(OLoRA, r=2)
    m.on_task_start(0, None)
    _, batch = _batch(m, bench)
    with torch.no_grad():
        for layer in m.lora_layers():
            layer.lora_B["task0"].weight.normal_(0, 0.5)
    before = m.mllm(**batch).logits
    m.on_task_start(1, None)  # task1's B starts at 0: the output is still task0's
    assert torch.allclose(m.mllm(**batch).logits, before, atol=1e-5)
    with torch.no_grad():
        for layer in m.lora_layers():
            layer.lora_B["task1"].weight.normal_(0, 0.5)
    assert not torch.allclose(m.mllm(**batch).logits, before, atol=1e-3)


# ---------------------------------------------------------------- full fine-tuning of a part
def test_seq_ft_trains_the_projector_in_full_and_checkpoints_it():
    m = _method(SeqFT, lr=1e-3, parts_lr=1e-4)
    m.on_task_start(0, None)
    trainable = set(m.trainable_named())
    projector = {n for n, _ in m.named_parameters() if "multi_modal_projector" in n}
    assert trainable == projector
    assert set(m.adapter_state()) == projector  # a fine-tuned part is no longer "base"
    groups = [g for g in m.param_groups() if g["params"]]
    assert len(groups) == 1 and groups[0]["lr"] == 1e-4
    with pytest.raises(ValueError, match="unknown model part"):
        _method(SeqFT, parts=["projecter"])
    with pytest.raises(ValueError, match="nothing to train"):
        SeqFT(parts=[])


def test_olora_fused_test_time_adapters_equal_peft_sum_and_restore_training(bench):
    m = _method(OLoRA, r=2)
    for t in range(3):
        m.on_task_start(t, None)
    with torch.no_grad():
        for layer in m.lora_layers():
            for n in ("task0", "task1", "task2"):
                layer.lora_B[n].weight.normal_(0, 0.5)
    _, batch = _batch(m, bench)
    m.eval()
    looped = m.mllm(**batch).logits  # peft: one matmul pair per adapter
    with m.fused_adapters():
        assert all(layer.disable_adapters for layer in m.lora_layers())  # peft's path is off
        fused = m.mllm(**batch).logits
    assert torch.allclose(fused, looped, atol=1e-5)
    for layer in m.lora_layers():  # the base alone differs: the hook adds the adapters' sum
        layer._disable_adapters = True
    assert not torch.allclose(m.mllm(**batch).logits, looped, atol=1e-3)
    for layer in m.lora_layers():
        layer._disable_adapters = False
    # afterwards peft's adapters run again, and training sees no hook
    assert not any(layer.disable_adapters for layer in m.lora_layers())
    assert torch.equal(m.mllm(**batch).logits, looped)
    prompts = m.mllm.collator.prompt_batch(_batch_samples(bench))
    with_fused = m.generate(prompts, max_new_tokens=4)
    m.n_adapters, n = 1, m.n_adapters  # below 2 adapters generate takes peft's loop
    looped_answers = m.generate(prompts, max_new_tokens=4)
    m.n_adapters = n
    assert with_fused == looped_answers


def _batch_samples(bench, task="color", n=4):
    from mcl.data.shards import read_shards

    return read_shards(bench.shard_paths(bench.task(task), "test"))[:n]
