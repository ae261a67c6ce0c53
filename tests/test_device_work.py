"""Forward passes that scale on a GPU (issue 25, points 4 and 5), checked on the CPU.

A host sync (``.item()``, ``bool(t)``, ``.tolist()``, ``.cpu()``, ...) waits for the device to
drain its queue; one per wrapped layer at every decode step serialises generation. These tests
count those calls around a real ``generate``, run layers on the ``meta`` device (where any host
read raises), and follow encoders through a device move (to ``meta``: the one device besides the
CPU every machine has)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from mcl.adapters.dmole import DMoLELinear, TaskAutoencoder
from mcl.methods.smolora import SMoLoRA
from mcl.models.tiny import build_tiny
from mcl.train import build
from tests.conftest import MICRO, compose_cfg
from tests.test_collate import TEXT, VISION
from tests.test_data import _gen

READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy")
READS += ("nonzero",)


@contextlib.contextmanager
def count_reads(inside: type[nn.Module]):
    """Count the tensor methods that read a value on the host, in all and while a forward of
    ``inside`` runs; ``counts["forwards"]``: how many such forwards ran, ``counts["active"]``
    the ``active`` attribute of those that had a ``mask``."""
    counts = {"total": 0, "inside": 0, "forwards": 0, "active": set()}
    depth = [0]
    saved = {name: torch.Tensor.__dict__.get(name) for name in READS}

    def counted(orig):
        def read(self, *args, **kwargs):
            counts["total"] += 1
            counts["inside"] += depth[0] > 0
            return orig(self, *args, **kwargs)

        return read

    for name in READS:
        setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name)))
    forward = inside.forward

    def tracked(self, *args, **kwargs):
        depth[0] += 1
        counts["forwards"] += 1
        if getattr(self, "mask", None) is not None:
            counts["active"].add(getattr(self, "active", None))
        try:
            return forward(self, *args, **kwargs)
        finally:
            depth[0] -= 1

    inside.forward = tracked
    try:
        yield counts
    finally:
        inside.forward = forward
        for name, orig in saved.items():
            if orig is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, orig)


# ---------------------------------------------------------------- D-MoLE
def _dmole_reads(tmp_path, targets: str) -> dict:
    over = [*MICRO, "method=dmole", f"method.vision_targets={targets}"]
    runner = build(compose_cfg(tmp_path, [*over, f"method.lm_targets={targets}"]), tmp_path / "r")
    m, dm = runner.method, runner.dm
    torch.manual_seed(0)
    for layer in m.layers().values():  # every candidate holds an expert of both tasks
        layer.add_expert(0)
        layer.add_expert(1)
    for t in range(2):  # every sample passes every threshold: each votes for a task
        m.aes[f"t{t}"] = TaskAutoencoder(m.rep_dim, 8)
    m.n_trained = 2
    m.eval()
    batch = next(m.device_batches(dm.test_samples("color")[:4], 4, prompts=True))
    with count_reads(DMoLELinear) as counts:
        m.generate(batch, max_new_tokens=4)
    counts["layers"] = len(m.layers())
    return counts


def test_dmole_layers_read_nothing_from_the_device_at_any_decode_step(tmp_path):
    few = _dmole_reads(tmp_path / "few", "[q_proj]")
    many = _dmole_reads(tmp_path / "many", "[q_proj,k_proj,v_proj,out_proj,o_proj]")
    assert many["layers"] == 4 * few["layers"]
    # every wrapped layer ran at every decode step, and none of those forwards read a value on
    # the host; the method's reads are per batch, so four times the layers cost not one more
    assert many["forwards"] > 4 * few["layers"] and few["forwards"] > 0
    assert few["inside"] == many["inside"] == 0
    assert many["total"] == few["total"]
    seen = few["active"] | many["active"]  # the method's per-batch list of the tasks in use
    assert seen and None not in seen and all(seen)


def test_dmole_layer_forward_runs_on_a_device_it_cannot_read():
    """On ``meta`` every host read raises: the layer's forward does none, with the method's
    per-batch list of tasks in use or with a mask alone (every expert, masked)."""
    layer = DMoLELinear(nn.Linear(6, 5), r=2, alpha=4, dropout=0.0)
    layer.add_expert(0)
    layer.add_expert(2)
    layer.to("meta")
    x, mask = torch.empty(3, 4, 6, device="meta"), torch.empty(3, 3, device="meta")
    layer.set_route(mask, [2])
    assert layer(x).shape == (3, 4, 5) and layer.active == {2}
    layer.mask = mask
    assert layer.active is None and layer(x).device.type == "meta"


def test_dmole_fp32_experts_over_a_bf16_base_compute_in_fp32():
    torch.manual_seed(0)
    base = nn.Linear(8, 6).to(torch.bfloat16)
    layer = DMoLELinear(base, r=2, alpha=4, dropout=0.0)
    layer.add_expert(0)
    layer.add_expert(1)
    assert all(p.dtype == torch.float32 for p in layer.experts.parameters())  # peft's convention
    for e in layer.experts.values():
        nn.init.normal_(e[1].weight)
    x = torch.randn(2, 3, 8).to(torch.bfloat16)
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    layer.set_route(mask, [0, 1])
    y = layer(x)
    assert y.dtype == torch.bfloat16
    h = x.float()
    delta = 2.0 * (layer.experts["t0"](h) + mask[:, 1, None, None] * layer.experts["t1"](h))
    want = (base(x).float() + delta).to(torch.bfloat16)  # summed in fp32, cast once
    assert torch.equal(y, want)
    y.float().sum().backward()
    assert layer.experts["t1"][1].weight.grad.dtype == torch.float32
    # a step the size of a 1e-5 learning rate moves an fp32 weight, where bf16 would round it off
    w = layer.experts["t0"][1].weight
    assert not torch.equal(w.detach() + 1e-5 * torch.sign(w.detach()), w.detach())


# ---------------------------------------------------------------- SMoLoRA
class _Encoder:
    """A sentence encoder with weights that can move (``device``, ``to``): counts its calls."""

    def __init__(self, dim: int = 6):
        torch.manual_seed(1)
        self.table, self.calls = nn.Embedding(128, dim), 0

    @property
    def device(self) -> torch.device:
        return self.table.weight.device

    def to(self, device) -> _Encoder:
        self.table.to(device)
        return self

    def text(self, texts: list[str]) -> torch.Tensor:
        self.calls += 1
        ids = [[ord(c) % 128 for c in t[-12:].rjust(12)] for t in texts]
        return self.table(torch.tensor(ids, device=self.device)).mean(1)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from mcl.data.bench import Benchmark

    return Benchmark(_gen(tmp_path_factory.mktemp("devwork") / "t", train=16, test=8))


def test_smolora_embeds_once_per_batch_on_the_models_device_and_follows_it(bench):
    from mcl.data.datamodule import ContinualDataModule

    torch.manual_seed(0)
    mllm = build_tiny(TEXT, VISION)
    enc = _Encoder()
    m = SMoLoRA(r=8, experts=4, n_vu=2, alpha=16, encoder=enc)
    m.setup_model(mllm)
    dm = ContinualDataModule(bench, mllm.collator, batch_size=4)
    dm.set_task(0)
    m.on_task_start(0, dm)
    m.eval()
    m.layers()[0].lora_if_gate.double()  # a router in another dtype gets its own copy
    batch = next(m.device_batches(dm.test_samples(bench.task_names[0])[:4], 4, prompts=True))
    enc.calls = 0
    m.generate(batch, max_new_tokens=3)
    assert enc.calls == 1  # one embedding per batch, not per layer or per decode step
    inputs = {id(layer.if_input) for layer in m.layers()}
    assert len(inputs) == 2  # one tensor per router dtype, shared by the layers
    dev = next(mllm.model.parameters()).device
    for layer in m.layers():
        w = layer.lora_if_gate.weight
        assert layer.if_input.device == dev == enc.device
        assert layer.if_input.dtype == w.dtype  # the layer's own .to() is a no-op
    # the model moves: the encoder follows before it embeds, the layers get the new device's
    m.to("meta")
    meta = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in batch.items()}
    m._set_context(meta, None, training=False)
    assert enc.device.type == "meta" and enc.calls == 2
    assert all(layer.if_input.device.type == "meta" for layer in m.layers())
