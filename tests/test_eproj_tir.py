"""EProj and TIR (shared/specs/eproj_tir.md, "What tests must show")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from mcl.adapters.expandable import ExpandableLinear
from mcl.data.bench import Benchmark
from mcl.data.datamodule import ContinualDataModule
from mcl.methods.eproj import EProj
from mcl.methods.tir import TIREWC
from mcl.models.task_embedding import (
    FrozenFeatures,
    task_embedding,
    task_similarity,
    zscore_similarity,
)
from mcl.models.tiny import build_tiny
from mcl.train import run
from tests.conftest import MICRO, compose_cfg
from tests.test_collate import TEXT, VISION
from tests.test_data import _gen


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return Benchmark(_gen(tmp_path_factory.mktemp("eproj") / "t", train=64, test=24))


def _method(cls, **kw):
    torch.manual_seed(0)
    m = cls(**kw)
    m.setup_model(build_tiny(TEXT, VISION))
    return m


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float), dim=-1)


# ---------------------------------------------------------------- task similarity
def test_identical_tasks_are_the_most_similar():
    e = _unit([1, 0, 0, 0], [0, 1, 0, 0], [0.7, 0.7, 0.1, 0], [0, 1, 0, 0])  # task 3 == task 1
    sim = zscore_similarity(e)
    assert torch.allclose(sim, sim.T) and bool((sim.diagonal() == 1).all())
    assert int(sim[3, :3].argmax()) == 1
    off = sim[~torch.eye(4, dtype=torch.bool)]
    assert bool(((off > 0) & (off < 1)).all())  # z-scored through a sigmoid
    # with a single pair: the raw cosine, no standardisation
    two = zscore_similarity(_unit([1, 0], [0.6, 0.8]))
    assert float(two[0, 1]) == pytest.approx(0.6)
    # the three kinds multiply
    embs = [{k: v for k, v in zip(("image", "instruction", "answer"), (r, r, r))} for r in e]
    assert torch.allclose(task_similarity(embs), sim**3)


def test_task_embedding_is_a_normalised_mean_and_tells_tasks_apart(bench):
    mllm = build_tiny(TEXT, VISION)
    dm = ContinualDataModule(bench, mllm.collator)
    feats = FrozenFeatures(mllm)
    embs = [task_embedding(feats, dm.sample_task(j, 32)) for j in range(3)]
    for e in embs:
        assert all(abs(float(v.norm()) - 1) < 1e-5 for v in e.values())
    again = task_embedding(feats, dm.sample_task(0, 32, seed=1))  # other samples, same task
    sim = task_similarity([*embs, again])
    assert int(sim[3, :3].argmax()) == 0  # a task is most similar to itself


# ---------------------------------------------------------------- TIR importance
def test_tir_keeps_the_elementwise_max_and_its_owner(monkeypatch):
    m = _method(TIREWC)
    names = sorted(m.trainable_named())
    first = {n: torch.rand_like(m.importance(n)) for n in names}
    s = sum(float(v.sum()) for v in first.values())
    first = {n: v / s for n, v in first.items()}  # what estimate_importance returns: sums to 1
    monkeypatch.setattr(m, "estimate_importance", lambda batches: first)
    monkeypatch.setattr(m, "task_batches", lambda dm: [])
    m.on_task_end(0, None)
    assert sum(float(m.importance(n).sum()) for n in names) == pytest.approx(1.0, rel=1e-5)
    assert all(bool((m.owner(n) == 0).all()) for n in names)
    second = {n: torch.rand_like(v) / s for n, v in first.items()}
    monkeypatch.setattr(m, "estimate_importance", lambda batches: second)
    m.on_task_end(1, None)
    for n in names:
        assert torch.equal(m.importance(n), torch.maximum(first[n], second[n]))
        assert torch.equal(m.owner(n), (second[n] > first[n]).long())


def test_tir_importance_pass_sums_to_one(bench):
    m = _method(TIREWC, importance_batches=2)
    dm = ContinualDataModule(bench, m.mllm.collator, batch_size=4)
    dm.set_task(0)
    with torch.no_grad():
        for p in m.trainable_named().values():
            p.normal_(0, 0.05)
    imp = m.estimate_importance(m.task_batches(dm))
    assert sum(float(v.sum()) for v in imp.values()) == pytest.approx(1.0, rel=1e-5)


def test_tir_rescales_each_element_by_one_minus_the_similarity_to_its_owner():
    m = _method(TIREWC)
    names = sorted(m.trainable_named())
    for n in names:
        m.importance(n).fill_(1.0)
        own = m.owner(n)
        own.copy_(torch.arange(own.numel()).reshape(own.shape) % 2)  # owners 0 and 1 alternate
    a, b, c = _unit([1, 0, 0], [0.6, 0.8, 0], [0.8, 0.6, 0])
    kinds = ("image", "instruction", "answer")
    m.embeddings = {j: {k: v for k in kinds} for j, v in enumerate((a, b, c))}
    m.on_task_start(2, dm=object())  # the embeddings are cached: no data needed
    sim = task_similarity([m.embeddings[j] for j in range(3)])
    assert m.similarity is not None and torch.allclose(m.similarity, sim)
    for n in names:
        own = m.owner(n)
        expected = torch.where(own == 0, 1 - sim[2, 0], 1 - sim[2, 1])
        assert torch.allclose(m.importance(n), expected.expand_as(own))
    info = m.task_info(2)
    assert info["task_similarity"] == sim.tolist()
    expected_to = {"task0": float(sim[2, 0]), "task1": float(sim[2, 1])}
    assert info["similarity_to"] == pytest.approx(expected_to)
    from mcl.runner.results import numbers  # what the loggers receive: the flat numbers

    logged = numbers(info, "method/")
    assert logged["method/similarity_to/task1"] == pytest.approx(float(sim[2, 1]))
    assert sum(info["importance_owner_share"]) == pytest.approx(1.0)


@pytest.mark.parametrize("in_place", [True, False])
def test_tir_without_similarity_rescaling_keeps_the_max_merged_importance(in_place):
    m = _method(TIREWC, rescale_by_similarity=False, rescale_in_place=in_place)
    names = sorted(m.trainable_named())
    before = {}
    for n in names:
        m.importance(n).uniform_()
        m.owner(n).copy_((torch.arange(m.owner(n).numel()) % 2).reshape(m.owner(n).shape))
        before[n] = m.importance(n).clone()
    a, b, c = _unit([1, 0, 0], [0.6, 0.8, 0], [0.8, 0.6, 0])
    m.embeddings = {
        j: {k: v for k in ("image", "instruction", "answer")} for j, v in enumerate((a, b, c))
    }
    m.on_task_start(2, dm=object())
    assert m.similarity is not None and float(m.similarity[2, 0]) > 0.1  # still computed, logged
    for n in names:
        assert torch.equal(m.weight(n), before[n])


# ---------------------------------------------------------------- EProj
def test_expandable_linear_routes_each_sample_to_its_expert():
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    lin = ExpandableLinear(base)
    x = torch.randn(3, 5, 6)
    assert torch.allclose(lin(x), base(x))  # before any task: the pretrained projection
    for _ in range(2):
        lin.add_expert()
    assert torch.equal(lin.weights[1], base.weight)  # experts start as copies
    with torch.no_grad():
        lin.weights[1].mul_(-2)
    lin.route = torch.tensor([0, 1, 0])
    out = lin(x)
    assert torch.allclose(out[0], base(x[0])) and torch.allclose(out[2], base(x[2]))
    w1 = lin.weights[1]
    assert torch.allclose(out[1], x[1] @ w1.T + lin.biases[1])


def _queries_of(m, dm, task, n=24):
    return m.queries(dm.sample_task(task, n, seed=5))


def test_eproj_key_phase_retrieves_the_task_well_above_chance(bench):
    m = _method(EProj, key_steps=300, key_samples=64)
    dm = ContinualDataModule(bench, m.mllm.collator)
    for t in range(3):
        m.on_task_start(t, dm)
        assert set(m.trainable_named()) == m.expected_trainable()
        assert all(f"weights.{t}" in n or f"biases.{t}" in n for n in m.trainable_named())
        m.on_task_end(t, dm)
    hits = total = 0
    for t in range(3):
        route = m.select(*_queries_of(m, dm, t))
        hits += int((route == t).sum())
        total += len(route)
    assert hits / total > 0.8  # chance: 1/3


def test_eproj_never_chooses_an_untrained_expert_when_masking(bench):
    m = _method(EProj, key_steps=0)
    dm = ContinualDataModule(bench, m.mllm.collator)
    for _ in range(3):
        m.add_expert()
    m.n_trained = 1
    q_img, q_inst = _queries_of(m, dm, 2)
    with torch.no_grad():  # expert 2's keys match these queries exactly
        m.keys_img[2].copy_(q_img.mean(0))
        m.keys_inst[2].copy_(q_inst.mean(0))
    assert bool((m.select(q_img, q_inst) == 0).all())  # expert 0: the only trained one
    m.mask_untrained_experts = False  # the original: expert 2 wins
    assert bool((m.select(q_img, q_inst) == 2).any())


def test_eproj_routes_a_mixed_batch_per_sample(bench):
    m = _method(EProj, key_steps=300, key_samples=64)
    dm = ContinualDataModule(bench, m.mllm.collator)
    for t in range(3):
        m.on_task_start(t, dm)
        m.on_task_end(t, dm)
    samples = [s for j in (0, 2, 1) for s in dm.sample_task(j, 2, seed=9)]
    batch = m.mllm.collator.prompt_batch(samples)
    answers = m.generate(batch, max_new_tokens=3)
    assert len(answers) == 6
    route = m._routes[-1]
    assert len(set(route.tolist())) > 1  # one batch, several experts
    truth = torch.tensor([0, 0, 2, 2, 1, 1])
    assert float((route == truth).float().mean()) > 0.6
    assert m.eval_metrics(None) == {}  # consumed; an unseen task gets no retrieval score


def test_eproj_end_to_end_freezes_earlier_experts_and_reports_retrieval(tmp_path):
    over = [*MICRO, "method=eproj", "method.key_steps=100", "++method.lr=1e-2"]
    cfg = compose_cfg(tmp_path, over)
    res = run(cfg, Path(cfg.paths.output_dir))
    a = load_file(str(tmp_path / "run" / "checkpoints" / "task00" / "adapters.safetensors"))
    b = load_file(str(tmp_path / "run" / "checkpoints" / "task01" / "adapters.safetensors"))
    expert0 = [k for k in a if ".weights.0" in k]
    assert expert0 and all(torch.equal(a[k], b[k]) for k in expert0)
    assert any(".weights.1" in k for k in b) and not any(".init_" in k for k in b)
    last = res["method_eval"][-1]
    assert set(last) == {"color", "position"} and all("task_id_acc" in v for v in last.values())
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["method_info"][1]["experts"] == 2


def test_tir_owner_share_reads_only_the_totals_from_the_device():
    """The share of importance each task owns is counted where the owners live: what comes to
    the host is task + 1 numbers, not a copy of every element's owner."""
    m = _method(TIREWC)
    names = sorted(m.trainable_named())
    for i, n in enumerate(names):
        own = m.owner(n)
        own.copy_((torch.arange(own.numel()).reshape(own.shape) + i) % 4 - 1)  # -1, 0, 1, 2
    flat = torch.cat([m.owner(n).flatten() for n in names])
    want = torch.stack([(flat == t).sum() for t in range(3)]).float()
    copied = []
    cpu = torch.Tensor.cpu

    def spy(self, *args, **kwargs):
        copied.append(self.numel())
        return cpu(self, *args, **kwargs)

    torch.Tensor.cpu = spy
    try:
        info = m.task_info(2)
    finally:
        torch.Tensor.cpu = cpu
    assert info["importance_owner_share"] == pytest.approx((want / want.sum()).tolist())
    assert copied and max(copied) <= 3


def test_eproj_key_phase_draws_its_batches_once_and_as_before(bench):
    """The key phase takes every step's mini-batch indices in one draw, copied to the device
    once: the same draws, so the same keys as drawing one batch per step."""
    m = _method(EProj, key_steps=30, key_batch_size=8, key_samples=24)
    dm = ContinualDataModule(bench, m.mllm.collator, batch_size=4)
    m.add_expert()
    start = [k.detach().clone() for k in (m.keys_img[0], m.keys_inst[0])]
    m.key_phase(0, dm)
    after = [k.detach().clone() for k in (m.keys_img[0], m.keys_inst[0])]
    q_img, q_inst = m.queries(dm.sample_task(0, 24, m.sample_seed))
    keys = [nn.Parameter(k.clone()) for k in start]  # the per-step loop it replaced
    m.keys_img[0], m.keys_inst[0] = keys
    opt = torch.optim.Adam(keys, lr=m.key_lr, fused=True)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        idx = torch.randint(len(q_img), (8,), generator=gen)
        loss = m.key_loss(q_img[idx], q_inst[idx], 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert m.key_losses[0] == pytest.approx(float(loss.detach()) / 8)
    assert all(torch.allclose(k, a, atol=1e-6) for k, a in zip(keys, after, strict=True))
    assert not torch.equal(after[0], start[0])  # the keys did learn
