"""The baselines' mechanisms, each on a random tiny MLLM: penalties, buffers, routers, subspaces."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from mcl.adapters.moe_lora import MoELoRALinear
from mcl.data.bench import Benchmark
from mcl.data.datamodule import ContinualDataModule, Share
from mcl.methods.ewc import EWC
from mcl.methods.lwf import LwF
from mcl.methods.mas import MAS
from mcl.methods.moelora import MoELoRA
from mcl.methods.olora import OLoRA
from mcl.methods.replay import Replay
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


# ---------------------------------------------------------------- EWC / MAS
def test_ewc_penalty_is_zero_at_the_anchor_and_grows_quadratically():
    m = _method(EWC, lam=3.0, half=True)
    m.on_task_start(0, None)
    names = sorted(m.trainable_named())
    for i, n in enumerate(names):
        m.importance(n).fill_(0.1 * (i + 1))
    assert float(m.penalty().detach()) == 0.0
    _shift(m, 0.01)
    p1 = float(m.penalty().detach())
    _shift(m, 0.02)
    p2 = float(m.penalty().detach())
    assert p1 > 0 and p2 == pytest.approx(4 * p1, rel=1e-4)
    n_el = {n: m.trainable_named()[n].numel() for n in names}
    expected = 3.0 * 0.5 * sum(0.1 * (i + 1) * n_el[n] * 0.02**2 for i, n in enumerate(names))
    assert p2 == pytest.approx(expected, rel=1e-4)
    # the penalty's gradient pulls back towards the anchor: lam * Omega * (theta - theta*)
    m.penalty().backward()
    n0 = names[0]
    g = m.trainable_named()[n0].grad
    assert torch.allclose(g, torch.full_like(g, 3.0 * 0.1 * 0.02), rtol=1e-4)


def test_ewc_importance_is_the_mean_squared_gradient_and_accumulates(bench):
    m = _method(EWC, importance_batches=2, normalize=False)
    dm = ContinualDataModule(bench, m.mllm.collator, batch_size=4)
    dm.set_task(0)
    m.on_task_start(0, dm)
    with torch.no_grad():  # LoRA B starts at 0: give every LoRA tensor a gradient
        for p in m.trainable_named().values():
            p.normal_(0, 0.05)
    batches = list(m.task_batches(dm))
    assert len(batches) == 2
    manual = {n: torch.zeros_like(p) for n, p in m.trainable_named().items()}
    for b in batches:
        m.zero_grad()
        m.mllm(**b).loss.backward()
        for n, p in m.trainable_named().items():
            manual[n] += p.grad.pow(2) / 2
    m.on_task_end(0, dm)
    for n in manual:
        assert torch.allclose(m.importance(n), manual[n], rtol=1e-4, atol=1e-12)
    assert any(bool(m.importance(n).any()) for n in manual)
    # a second task adds its importance to the first (gamma = 1)
    before = {n: m.importance(n).clone() for n in manual}
    m.on_task_end(0, dm)
    for n in manual:
        assert torch.allclose(m.importance(n), 2 * before[n], rtol=1e-4, atol=1e-12)
    # normalized (the default), each task's importance sums to 1, proportions unchanged
    m.normalize = True
    norm = m.estimate_importance(batches)
    assert sum(float(v.sum()) for v in norm.values()) == pytest.approx(1.0, rel=1e-5)
    total = sum(float(v.sum()) for v in manual.values())
    assert all(torch.allclose(norm[n], manual[n] / total, rtol=1e-3, atol=1e-12) for n in manual)
    # no penalty in the first task, a penalty once there is importance
    m.on_task_start(1, dm)
    assert m._active and m.extra_loss({}, None) is not None


def test_mas_importance_is_label_free_and_differs_from_ewc(bench):
    m = _method(MAS, importance_batches=1, normalize=False)
    _, batch = _batch(m, bench)
    with torch.no_grad():
        for p in m.trainable_named().values():
            p.normal_(0, 0.05)
    imp = m.estimate_importance([batch])
    scrambled = dict(batch, labels=torch.where(batch["labels"] >= 0, 3, batch["labels"]))
    imp2 = m.estimate_importance([scrambled])
    assert all(torch.equal(imp[n], imp2[n]) for n in imp)  # labels play no part
    assert all(bool((v >= 0).all()) for v in imp.values())
    # |d mean_token ||logits||^2 / d theta|, not EWC's squared LM-loss gradient
    m.zero_grad()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = m.mllm(**inputs).logits
    logits.pow(2).sum(-1)[batch["attention_mask"].bool()].mean().backward()
    for n, p in m.trainable_named().items():
        assert torch.allclose(imp[n], p.grad.abs(), rtol=1e-4, atol=1e-10)
    m.zero_grad()
    m.mllm(**batch).loss.backward()
    assert any(not torch.allclose(imp[n], p.grad.pow(2)) for n, p in m.trainable_named().items())


# ---------------------------------------------------------------- replay
def test_replay_buffer_holds_the_asked_share_of_each_old_task(bench):
    m = _method(Replay, share=0.25)
    dm = ContinualDataModule(bench, m.mllm.collator, batch_size=8, seed=0)
    mix = m.train_mixture(2, bench)
    assert mix == {0: Share(0.25, 0), 1: Share(0.25, 0), 2: Share(1.0)}
    assert m.train_mixture(0, bench) is None  # nothing to replay before the second task
    dm.set_task(2, mix=mix)
    for j in (0, 1):
        buf = dm.buffer(j, mix[j])
        assert len(buf) == 10  # 25% of 40
        assert {s["task"] for s in buf} == {bench.task_names[j]}
    # the epoch is the concatenation: 40 current + 2 x 10 buffered samples
    samples = list(dm.train_dataloader().dataset)
    assert len(samples) == 60
    c = Counter(s["task"] for s in samples)
    assert 0.2 < (c["color"] + c["count"]) / 60 < 0.47  # expected 1/3
    # replayed samples come only from the buffers
    keys = {s["key"] for j in (0, 1) for s in dm.buffer(j, mix[j])}
    assert {s["key"] for s in samples if s["task"] != "ocr"} <= keys
    # the same buffer at every later task; another seed draws other samples
    dm.set_task(1, mix=m.train_mixture(1, bench))
    assert [s["key"] for s in dm.buffer(0, Share(0.25, 0))] == [
        s["key"] for s in dm.buffer(0, mix[0])
    ]
    other = {s["key"] for s in dm.buffer(0, Share(0.25, 1))}
    assert other != {s["key"] for s in dm.buffer(0, mix[0])}


def test_replay_default_share_is_one_percent_and_bad_shares_are_refused():
    assert Replay().share == 0.01
    assert Share(0.01).size(4000) == 40 and Share(0.01).size(40) == 1  # at least one sample
    with pytest.raises(ValueError, match="share"):
        Replay(share=0)


# ---------------------------------------------------------------- LwF
def test_lwf_distillation_is_zero_against_itself_and_grows_when_the_student_moves(bench):
    m = _method(LwF)
    m.on_task_start(0, None)
    _, batch = _batch(m, bench)
    assert m.extra_loss(batch, m.mllm(**batch)) is None  # no teacher in the first task
    with torch.no_grad():
        for p in m.trainable_named().values():
            p.normal_(0, 0.05)
    m.on_task_start(1, None)
    teacher = {n: t.clone() for n, t in m._teacher.items()}
    assert float(m.extra_loss(batch, m.mllm(**batch)).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for p in m.trainable_named().values():
            p.add_(torch.randn_like(p) * 0.2)
    loss = m.extra_loss(batch, m.mllm(**batch))
    assert float(loss.detach()) > 1e-4
    loss.backward()  # the gradient reaches the student, the teacher's copies stay as they were
    assert all(p.grad is not None for p in m.trainable_named().values())
    assert all(torch.equal(teacher[n], m._teacher[n]) for n in teacher)


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
