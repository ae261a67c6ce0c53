"""Plugins (mcl/plugins): each one's mechanism, their composition with methods other than
seq_lora, the conflicts refused at build time, and their state through checkpoints."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from safetensors.torch import load_file

from mcl.data.bench import Benchmark
from mcl.data.datamodule import ContinualDataModule, Share
from mcl.methods.joint import Joint
from mcl.methods.moelora import MoELoRA
from mcl.methods.seq_lora import SeqLoRA
from mcl.models.task_embedding import task_similarity
from mcl.models.tiny import build_tiny
from mcl.plugins.base import Plugin
from mcl.plugins.ewc import EWCPlugin
from mcl.plugins.lwf import LwFPlugin
from mcl.plugins.mas import MASPlugin
from mcl.plugins.registry import plugin_names
from mcl.plugins.replay import ReplayPlugin
from mcl.plugins.tir import TIR
from mcl.train import run
from tests.conftest import MICRO, compose_cfg
from tests.test_collate import TEXT, VISION
from tests.test_data import _gen


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return Benchmark(_gen(tmp_path_factory.mktemp("plugins") / "t", train=40))


def _method(plugin: Plugin, cls=SeqLoRA, **kw):
    """``cls`` with ``plugin`` attached, on a random tiny MLLM; returns (method, plugin)."""
    torch.manual_seed(0)
    m = cls(plugins=[plugin], **kw)
    m.setup_model(build_tiny(TEXT, VISION))
    return m, plugin


def _batch(m, bench, task="color", n=4):
    dm = ContinualDataModule(bench, m.mllm.collator, batch_size=n)
    dm.set_task(bench.task_names.index(task))
    batch = next(iter(dm.train_dataloader()))
    return dm, m.model_inputs(batch)


def _shift(m, p, delta: float) -> None:
    with torch.no_grad():
        for n, t in m.trainable_named().items():
            t.copy_(p.anchor(n) + delta)


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float), dim=-1)


# ---------------------------------------------------------------- the config group
def test_every_plugin_config_instantiates_and_every_plugin_class_has_one():
    made = {name: instantiate(compose_cfg_plugin(name)) for name in plugin_names()}
    assert set(made) == {"ewc", "mas", "lwf", "replay", "tir_ewc", "tir_mas"}
    assert all(isinstance(p, Plugin) for p in made.values())
    classes = {type(p) for p in made.values()}
    assert classes == {EWCPlugin, MASPlugin, LwFPlugin, ReplayPlugin}
    assert isinstance(made["tir_mas"], MASPlugin) and isinstance(made["tir_mas"].tir, TIR)
    assert made["tir_ewc"].name == "tir_ewc" and made["ewc"].name == "ewc"


def compose_cfg_plugin(name: str):
    from omegaconf import OmegaConf

    from mcl.plugins.registry import PLUGIN_DIR

    return OmegaConf.load(PLUGIN_DIR / f"{name}.yaml")


def test_a_method_list_resolves_names_and_options_from_the_command_line(tmp_path):
    cfg = compose_cfg(tmp_path, [*MICRO, "method=moelora", "method.plugins=[ewc,replay]"])
    m = instantiate(cfg.method)
    assert isinstance(m, MoELoRA) and list(m.plugins) == ["ewc", "replay"]
    assert m.plugins["ewc"].lam == 1e5 and m.plugins["replay"].share == 0.01
    # a baseline: seq_lora + its plugin, options under method.plugins.<name>
    cfg = compose_cfg(tmp_path, [*MICRO, "method=tir_ewc", "method.plugins.tir_ewc.lam=3e5"])
    m = instantiate(cfg.method)
    assert type(m) is SeqLoRA and m.method_name == "tir_ewc"
    assert m.plugins["tir_ewc"].lam == 3e5 and m.plugins["tir_ewc"].tir.rescale_in_place
    # one more plugin with its options on any method, or one given inline with a _target_
    over = ["+plugin@method.plugins.lwf=lwf", "method.plugins.lwf.temperature=1"]
    m = instantiate(compose_cfg(tmp_path, [*MICRO, "method=replay", *over]).method)
    assert list(m.plugins) == ["replay", "lwf"] and m.plugins["lwf"].temperature == 1
    inline = "method.plugins=[{_target_:mcl.plugins.mas.MASPlugin,lam:7}]"
    m = instantiate(compose_cfg(tmp_path, [*MICRO, "method=smolora", inline]).method)
    assert m.plugins["mas"].lam == 7


# ---------------------------------------------------------------- conflicts
class _OtherMixture(Plugin):
    name = "other_mixture"
    writes = frozenset({"train_mixture"})


def test_conflicts_are_refused_when_the_method_is_built():
    with pytest.raises(ValueError, match="both replace the training mixture"):
        SeqLoRA(plugins=[ReplayPlugin(), _OtherMixture()])
    with pytest.raises(ValueError, match="method joint sets the training mixture itself"):
        Joint(plugins=["replay"])
    with pytest.raises(ValueError, match="listed twice"):
        SeqLoRA(plugins=["ewc", "ewc"])
    with pytest.raises(ValueError, match="unknown plugin 'ewcc'; choose one of: ewc, lwf"):
        SeqLoRA(plugins=["ewcc"])
    Joint(plugins=["ewc"])  # a penalty next to joint's own mixture is fine


def test_a_conflict_is_one_config_error_line_from_the_entry_point(tmp_path):
    from mcl.config import ConfigError

    cfg = compose_cfg(tmp_path, [*MICRO, "method=joint", "method.plugins=[replay]"])
    with pytest.raises(ConfigError) as e:
        run(cfg, tmp_path / "out")
    assert "\n" not in str(e.value) and "plugin replay cannot replace it" in str(e.value)


# ---------------------------------------------------------------- EWC / MAS
def test_ewc_penalty_is_zero_at_the_anchor_and_grows_quadratically():
    m, p = _method(EWCPlugin(lam=3.0, half=True))
    m.on_task_start(0, None)
    names = sorted(m.trainable_named())
    for i, n in enumerate(names):
        p.importance(n).fill_(0.1 * (i + 1))
    assert float(p.penalty(m).detach()) == 0.0
    _shift(m, p, 0.01)
    p1 = float(p.penalty(m).detach())
    _shift(m, p, 0.02)
    p2 = float(p.penalty(m).detach())
    assert p1 > 0 and p2 == pytest.approx(4 * p1, rel=1e-4)
    n_el = {n: m.trainable_named()[n].numel() for n in names}
    expected = 3.0 * 0.5 * sum(0.1 * (i + 1) * n_el[n] * 0.02**2 for i, n in enumerate(names))
    assert p2 == pytest.approx(expected, rel=1e-4)
    # the penalty's gradient pulls back towards the anchor: lam * Omega * (theta - theta*)
    p.penalty(m).backward()
    g = m.trainable_named()[names[0]].grad
    assert torch.allclose(g, torch.full_like(g, 3.0 * 0.1 * 0.02), rtol=1e-4)


def test_ewc_importance_is_the_mean_squared_gradient_and_accumulates(bench):
    m, p = _method(EWCPlugin(importance_batches=2, normalize=False))
    dm = ContinualDataModule(bench, m.mllm.collator, batch_size=4)
    dm.set_task(0)
    m.on_task_start(0, dm)
    with torch.no_grad():  # LoRA B starts at 0: give every LoRA tensor a gradient
        for t in m.trainable_named().values():
            t.normal_(0, 0.05)
    batches = list(p.task_batches(m, dm))
    assert len(batches) == 2
    manual = {n: torch.zeros_like(t) for n, t in m.trainable_named().items()}
    for b in batches:
        m.zero_grad()
        m.mllm(**b).loss.backward()
        for n, t in m.trainable_named().items():
            manual[n] += t.grad.pow(2) / 2
    m.on_task_end(0, dm)
    for n in manual:
        assert torch.allclose(p.importance(n), manual[n], rtol=1e-4, atol=1e-12)
    assert any(bool(p.importance(n).any()) for n in manual)
    # a second task adds its importance to the first (gamma = 1)
    before = {n: p.importance(n).clone() for n in manual}
    m.on_task_end(0, dm)
    for n in manual:
        assert torch.allclose(p.importance(n), 2 * before[n], rtol=1e-4, atol=1e-12)
    # normalized (the default), each task's importance sums to 1, proportions unchanged
    p.normalize = True
    norm = p.estimate_importance(m, batches)
    assert sum(float(v.sum()) for v in norm.values()) == pytest.approx(1.0, rel=1e-5)
    total = sum(float(v.sum()) for v in manual.values())
    assert all(torch.allclose(norm[n], manual[n] / total, rtol=1e-3, atol=1e-12) for n in manual)
    # no penalty in the first task, a penalty once there is importance
    m.on_task_start(1, dm)
    assert p._active and set(p.loss_terms(m, {}, None)) == {"penalty"}


def test_mas_importance_is_label_free_and_differs_from_ewc(bench):
    m, p = _method(MASPlugin(importance_batches=1, normalize=False))
    _, batch = _batch(m, bench)
    with torch.no_grad():
        for t in m.trainable_named().values():
            t.normal_(0, 0.05)
    imp = p.estimate_importance(m, [batch])
    scrambled = dict(batch, labels=torch.where(batch["labels"] >= 0, 3, batch["labels"]))
    imp2 = p.estimate_importance(m, [scrambled])
    assert all(torch.equal(imp[n], imp2[n]) for n in imp)  # labels play no part
    assert all(bool((v >= 0).all()) for v in imp.values())
    # |d mean_token ||logits||^2 / d theta|, not EWC's squared LM-loss gradient
    m.zero_grad()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = m.mllm(**inputs).logits
    logits.pow(2).sum(-1)[batch["attention_mask"].bool()].mean().backward()
    for n, t in m.trainable_named().items():
        assert torch.allclose(imp[n], t.grad.abs(), rtol=1e-4, atol=1e-10)
    m.zero_grad()
    m.mllm(**batch).loss.backward()
    assert any(not torch.allclose(imp[n], t.grad.pow(2)) for n, t in m.trainable_named().items())


# ---------------------------------------------------------------- composition with other cores
def test_ewc_on_moelora_penalises_after_the_first_task_and_its_gradient_reaches_the_experts(
    bench,
):
    m, p = _method(EWCPlugin(importance_batches=2), cls=MoELoRA, r=4, experts=2)
    dm, batch = _batch(m, bench)
    m.on_task_start(0, dm)
    assert not p.loss_terms(m, batch, None)  # nothing to protect during the first task
    assert set(p.anchor(n).shape == t.shape for n, t in m.trainable_named().items()) == {True}
    with torch.no_grad():  # MoE-LoRA's B starts at 0: give every tensor a gradient
        for t in m.trainable_named().values():
            t.normal_(0, 0.05)
    m.on_task_end(0, dm)
    m.on_task_start(1, dm)
    with torch.no_grad():
        for t in m.trainable_named().values():
            t.add_(0.01)
    penalty = p.loss_terms(m, batch, None)["penalty"]
    assert float(penalty.detach()) > 0
    m.zero_grad()
    penalty.backward()
    grads = {n: t.grad for n, t in m.trainable_named().items()}
    assert all(g is not None for g in grads.values())
    assert any(float(g.abs().sum()) > 0 for n, g in grads.items() if ".lora_" in n)
    # the training step adds it to the LM loss (summed, not replaced)
    m.zero_grad()
    loss = m.training_step(dict(batch, n_skipped=torch.tensor(0)), 0)
    lm = m.mllm(**batch).loss
    assert float(loss.detach()) == pytest.approx(float((lm + penalty).detach()), rel=1e-5)


def test_replay_on_moelora_mixes_old_samples_in(bench):
    m, _ = _method(ReplayPlugin(share=0.25), cls=MoELoRA, r=4, experts=2)
    mix = m.train_mixture(1, bench)
    assert mix == {0: Share(0.25, 0), 1: Share(1.0)}
    assert m.train_mixture(0, bench) is None
    dm = ContinualDataModule(bench, m.mllm.collator, batch_size=8, seed=0)
    dm.set_task(1, mix=mix)
    samples = list(dm.train_dataloader().dataset)
    old = [s["key"] for s in samples if s["task"] == bench.task_names[0]]
    assert len(samples) == 50 and old  # 40 of the task + a buffer of 10, shuffled together
    assert set(old) <= {s["key"] for s in dm.buffer(0, mix[0])}


def test_two_plugins_add_two_named_terms(bench):
    torch.manual_seed(0)
    m = SeqLoRA(plugins=[EWCPlugin(lam=1.0), LwFPlugin()])
    m.setup_model(build_tiny(TEXT, VISION))
    dm, batch = _batch(m, bench)
    m.on_task_start(0, dm)
    with torch.no_grad():
        for t in m.trainable_named().values():
            t.normal_(0, 0.05)
    m.on_task_end(0, dm)
    m.on_task_start(1, dm)
    with torch.no_grad():
        for t in m.trainable_named().values():
            t.add_(0.05)
    out = m.mllm(**batch)
    terms = {
        f"{name}/{k}": v
        for name, p in m.plugins.items()
        for k, v in p.loss_terms(m, batch, out).items()
    }
    assert set(terms) == {"ewc/penalty", "lwf/distillation"}
    step = m.training_step(dict(batch, n_skipped=torch.tensor(0)), 0)
    want = out.loss + terms["ewc/penalty"] + terms["lwf/distillation"]
    assert float(step.detach()) == pytest.approx(float(want.detach()), rel=1e-5)


# ---------------------------------------------------------------- replay / LwF
def test_replay_buffer_holds_the_asked_share_of_each_old_task(bench):
    m, _ = _method(ReplayPlugin(share=0.25))
    dm = ContinualDataModule(bench, m.mllm.collator, batch_size=8, seed=0)
    mix = m.train_mixture(2, bench)
    assert mix == {0: Share(0.25, 0), 1: Share(0.25, 0), 2: Share(1.0)}
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
    assert ReplayPlugin().share == 0.01
    assert Share(0.01).size(4000) == 40 and Share(0.01).size(40) == 1  # at least one sample
    with pytest.raises(ValueError, match="share"):
        ReplayPlugin(share=0)


def test_lwf_distillation_is_zero_against_itself_and_grows_when_the_student_moves(bench):
    m, p = _method(LwFPlugin())
    m.on_task_start(0, None)
    _, batch = _batch(m, bench)
    assert p.loss_terms(m, batch, m.mllm(**batch)) == {}  # no teacher in the first task
    with torch.no_grad():
        for t in m.trainable_named().values():
            t.normal_(0, 0.05)
    m.on_task_start(1, None)
    teacher = {n: t.clone() for n, t in p._teacher.items()}
    same = p.loss_terms(m, batch, m.mllm(**batch))["distillation"]
    assert float(same.detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for t in m.trainable_named().values():
            t.add_(torch.randn_like(t) * 0.2)
    loss = p.loss_terms(m, batch, m.mllm(**batch))["distillation"]
    assert float(loss.detach()) > 1e-4
    loss.backward()  # the gradient reaches the student, the teacher's copies stay as they were
    assert all(t.grad is not None for t in m.trainable_named().values())
    assert all(torch.equal(teacher[n], p._teacher[n]) for n in teacher)


# ---------------------------------------------------------------- TIR
def _tir(**kw):
    return _method(EWCPlugin(tir=TIR(**kw)))


def test_tir_keeps_the_elementwise_max_and_its_owner(monkeypatch):
    m, p = _tir()
    names = sorted(m.trainable_named())
    first = {n: torch.rand_like(p.importance(n)) for n in names}
    s = sum(float(v.sum()) for v in first.values())
    first = {n: v / s for n, v in first.items()}  # what estimate_importance returns: sums to 1
    monkeypatch.setattr(p, "estimate_importance", lambda method, batches: first)
    monkeypatch.setattr(p, "task_batches", lambda method, dm: [])
    m.on_task_end(0, None)
    assert sum(float(p.importance(n).sum()) for n in names) == pytest.approx(1.0, rel=1e-5)
    assert all(bool((p.tir.owner(n) == 0).all()) for n in names)
    second = {n: torch.rand_like(v) / s for n, v in first.items()}
    monkeypatch.setattr(p, "estimate_importance", lambda method, batches: second)
    m.on_task_end(1, None)
    for n in names:
        assert torch.equal(p.importance(n), torch.maximum(first[n], second[n]))
        assert torch.equal(p.tir.owner(n), (second[n] > first[n]).long())


def test_tir_importance_pass_sums_to_one(bench):
    m, p = _method(EWCPlugin(importance_batches=2, normalize=False, tir=TIR()))
    assert p.normalize  # TIR's importance always sums to 1
    dm = ContinualDataModule(bench, m.mllm.collator, batch_size=4)
    dm.set_task(0)
    with torch.no_grad():
        for t in m.trainable_named().values():
            t.normal_(0, 0.05)
    imp = p.estimate_importance(m, p.task_batches(m, dm))
    assert sum(float(v.sum()) for v in imp.values()) == pytest.approx(1.0, rel=1e-5)


def test_tir_rescales_each_element_by_one_minus_the_similarity_to_its_owner():
    m, p = _tir()
    names = sorted(m.trainable_named())
    for n in names:
        p.importance(n).fill_(1.0)
        own = p.tir.owner(n)
        own.copy_(torch.arange(own.numel()).reshape(own.shape) % 2)  # owners 0 and 1 alternate
    a, b, c = _unit([1, 0, 0], [0.6, 0.8, 0], [0.8, 0.6, 0])
    kinds = ("image", "instruction", "answer")
    p.tir.embeddings = {j: {k: v for k in kinds} for j, v in enumerate((a, b, c))}
    m.on_task_start(2, dm=object())  # the embeddings are cached: no data needed
    sim = task_similarity([p.tir.embeddings[j] for j in range(3)])
    assert p.tir.similarity is not None and torch.allclose(p.tir.similarity, sim)
    for n in names:
        own = p.tir.owner(n)
        expected = torch.where(own == 0, 1 - sim[2, 0], 1 - sim[2, 1])
        assert torch.allclose(p.importance(n), expected.expand_as(own))
    info = m.task_info(2)  # the plugin's report is the method's
    assert info["task_similarity"] == sim.tolist()
    expected_to = {"task0": float(sim[2, 0]), "task1": float(sim[2, 1])}
    assert info["similarity_to"] == pytest.approx(expected_to)
    from mcl.runner.results import numbers  # what the loggers receive: the flat numbers

    logged = numbers(info, "method/")
    assert logged["method/similarity_to/task1"] == pytest.approx(float(sim[2, 1]))
    assert sum(info["importance_owner_share"]) == pytest.approx(1.0)


@pytest.mark.parametrize("in_place", [True, False])
def test_tir_without_similarity_rescaling_keeps_the_max_merged_importance(in_place):
    m, p = _tir(rescale_by_similarity=False, rescale_in_place=in_place)
    names = sorted(m.trainable_named())
    before = {}
    for n in names:
        p.importance(n).uniform_()
        own = p.tir.owner(n)
        own.copy_((torch.arange(own.numel()) % 2).reshape(own.shape))
        before[n] = p.importance(n).clone()
    a, b, c = _unit([1, 0, 0], [0.6, 0.8, 0], [0.8, 0.6, 0])
    p.tir.embeddings = {
        j: {k: v for k in ("image", "instruction", "answer")} for j, v in enumerate((a, b, c))
    }
    m.on_task_start(2, dm=object())
    assert p.tir.similarity is not None and float(p.tir.similarity[2, 0]) > 0.1  # still logged
    for n in names:
        assert torch.equal(p.weight(n), before[n])


def test_tir_owner_share_reads_only_the_totals_from_the_device():
    """The share of importance each task owns is counted where the owners live: what comes to
    the host is task + 1 numbers, not a copy of every element's owner."""
    m, p = _tir()
    names = sorted(m.trainable_named())
    for i, n in enumerate(names):
        own = p.tir.owner(n)
        own.copy_((torch.arange(own.numel()).reshape(own.shape) + i) % 4 - 1)  # -1, 0, 1, 2
    flat = torch.cat([p.tir.owner(n).flatten() for n in names])
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


# ---------------------------------------------------------------- state
def test_plugin_state_round_trips_through_a_task_checkpoint(bench):
    """A plugin's tensors are the method's: in ``adapter_state`` (so in every task checkpoint)
    under ``plugins.<name>.``, and loaded back into a fresh method by ``load_adapter_state``."""

    def build():
        return _method(EWCPlugin(importance_batches=1, tir=TIR()), cls=MoELoRA, r=4, experts=2)

    m, p = build()
    dm, _ = _batch(m, bench)
    m.on_task_start(0, dm)
    with torch.no_grad():
        for t in m.trainable_named().values():
            t.normal_(0, 0.05)
    m.on_task_end(0, dm)
    state = m.adapter_state()
    kinds = Counter(k.split(".")[-1].split("__")[0] for k in state if k.startswith("plugins."))
    n = len(m.trainable_named())
    assert kinds == {"importance": n, "anchor": n, "owner": n}
    assert any(k.startswith("plugins.tir_ewc.tir.owner__") for k in state)
    fresh, q = build()
    fresh.load_adapter_state(state)
    for name in m.trainable_named():
        assert torch.equal(q.importance(name), p.importance(name))
        assert torch.equal(q.tir.owner(name), p.tir.owner(name))
        assert bool(q.importance(name).any())
    # a checkpoint of the method without its plugin is refused (another run's)
    bare = {k: v for k, v in state.items() if not k.startswith("plugins.")}
    with pytest.raises(Exception, match="lacks"):
        build()[0].load_adapter_state(bare)


def _adapters(out: Path, t: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"task{t:02d}" / "adapters.safetensors"))


@pytest.mark.slow
def test_moelora_with_ewc_and_lwf_resumes_bit_identically(tmp_path, monkeypatch):
    """``method=moelora method.plugins=[ewc,lwf]`` end to end; cut during task 2 and resumed
    from task 1's checkpoint, it ends with the uninterrupted run's tensors: the importance and
    anchors came back from the checkpoint (without them task 2's penalty would differ)."""
    from mcl.methods.base import ContinualMethod

    over = [*MICRO, "method=moelora", "method.r=4", "method.experts=2"]
    over += ["method.plugins=[ewc,lwf]"]
    ref = run(compose_cfg(tmp_path / "ref", over), tmp_path / "ref" / "out")
    assert ref["method"] == "moelora" and ref["complete"]
    state = _adapters(tmp_path / "ref" / "out", 0)
    assert any(k.startswith("plugins.ewc.importance__") and v.any() for k, v in state.items())

    real = ContinualMethod.training_step

    def dies(self, batch, i):
        if self.current_task == 1 and self.trainer.global_step == 3:
            raise RuntimeError("power cut")
        return real(self, batch, i)

    monkeypatch.setattr(ContinualMethod, "training_step", dies)
    out = tmp_path / "cut" / "out"
    with pytest.raises(RuntimeError, match="power cut"):
        run(compose_cfg(tmp_path / "cut", over), out)
    monkeypatch.undo()
    resumed = run(compose_cfg(tmp_path / "cut", [*over, "resume=true"]), out)
    for t in (0, 1):
        a, b = _adapters(tmp_path / "ref" / "out", t), _adapters(out, t)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), t
    assert resumed["matrix"] == json.loads(json.dumps(ref["matrix"]))


@pytest.mark.slow
def test_smolora_with_replay_runs_end_to_end(tmp_path):
    over = [*MICRO, "method=smolora", "method.encoder=lm", "method.plugins=[replay]"]
    res = run(compose_cfg(tmp_path, over), tmp_path / "out")
    assert res["complete"] and res["method"] == "smolora"
    assert res["config"]["method"]["plugins"] == ["replay"]
