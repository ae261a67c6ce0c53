"""EProj and TIR's task similarity (docs/methods/eproj.md);
TIR's importance keeping is tested with the plugins (tests/test_plugins.py)."""

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
