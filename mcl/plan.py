"""``python -m mcl.plan``: what a run of a real model would train and hold in GPU memory, worked
out on the ``meta`` device (no weights, no ``model.path``, no GPU, seconds).

    python -m mcl.plan model=llava15_7b method=dmole hardware=ddp hardware.devices=4
    python -m mcl.plan model=llava15_7b method=seq_lora,dmole,smolora --markdown docs/plan.md

The config is composed as ``mcl.train`` composes it (same tree, same overrides; ``model=`` and
``method=`` take comma-separated lists: one plan each). The preset's shipped architecture
(:mod:`mcl.models.arch`) is built on ``meta``, the method's ``setup_model`` runs on it, then per
task what ``on_task_start`` adds (new adapters, experts, paths) with its data-dependent work
skipped: D-MoLE's allocation is its own budget rule applied to equal zero-cost scores (each
modality's share of the budget is its share of candidate units, vision at least
``vit_min_share``), said in the output as an estimate. A method that refuses the model or the
benchmark (``setup_model``/``check_bench`` raise ValueError) is "not applicable: <reason>".

It prints the modules the method wraps (pattern and count), trainable and total parameters per
task, and GPU memory per device for ``gpu``, ``ddp``, ``fsdp`` and ``deepspeed`` (ZeRO-2) at
the task that needs the most, with and without gradient checkpointing, against
``--device-memory`` (default 80 GB; GB = 1e9 bytes), and one verdict line.

Memory model (bytes; N devices; Pt trainable parameters)
--------------------------------------------------------
- weights W: frozen base parameters and buffers at the base dtype (``model.dtype``: 2 bytes
  for bf16); every tensor a method adds, and every trainable one, fp32 (4 bytes: trainable
  parameters are fp32 over a bf16 base); LwF's teacher copy of the trainable tensors, 4 Pt.
- optimizer state O = 4 Pt (fp32 gradients) + 8 Pt (AdamW's two fp32 moments).
- gpu: W + O + A.  ddp: W + O + 4 Pt (DDP's gradient buckets, shown with O) + A.
  deepspeed (ZeRO-2): W + O / N + A (gradients and optimizer state sharded, weights not).
  fsdp (FULL_SHARD): W / N + 2 U + O / N + A, U = the largest decoder layer, gathered (bf16)
  while it runs and prefetched for the next one (shown with W). Evaluation gathers the
  whole model.
  Each adds 1.5 GB for the CUDA context, library workspaces and allocator slack.
- activations A per device = batch_size x (per-sample bytes), bf16-mixed training, fused
  (memory-efficient) attention, for a sample of S LM tokens (``--seq-len``; default the
  family's image tokens + 128 text tokens) and T vision-tower tokens:

      LM layer (hidden h, MLP width i, SwiGLU):  a = 16 h + 6 i bytes per token
          two RMSNorms keep their fp32 input (2 x 4h); attention keeps q, k, v (KV heads
          expanded) and its output (4 x 2h); the MLP keeps gate, SiLU(gate) and up (3 x 2i).
          Frozen linears keep nothing (their weight is all their backward needs).
      adapters: for every adapted linear that trains, 2 x in_features bytes per token (a
          LoRA's bf16 copy of its input, kept for its weight gradient; rank-r tensors
          ignored), or the adapter's own account (``saved_bytes``): SMoLoRA's two running
          experts each keep a copy of the input, a dropout mask and a full-width output for
          the fusion, 6 in + 4 out bytes per token; MoELoRA's router and experts read two
          copies of the input, 4 in + 6 r; D-MoLE's training-task expert keeps the input copy
          and its dropout mask, 3 in + 2 r.
      vision layer: 16 h + m i, m = 6 (SwiGLU, Qwen2.5-VL), 4 (quick-GELU: CLIP, Qwen2-VL),
          2 (GELU: InternViT); counted only when something in the tower trains.
      head (vocabulary V): 4h (final norm) + 4V (fp32 log-softmax kept by the loss) + 2V
          (bf16 logits) + 8V (the two fp32 gradients at the start of backward) = 4h + 14V.

  per sample = S (L' a + adapters_LM + 4h + 14V) + T (L'_v a_v + adapters_vision), with L'
  the layers at and above the first one that trains (all, when something upstream trains:
  the projector, a prompt, the vision tower).
  Gradient checkpointing (per layer): each layer keeps only its bf16 input (2h) and one layer
  is recomputed at a time: S (L' 2h + a + adapters of one layer + 4h + 14V) + T (L'_v 2h_v +
  a_v + ...). Embeddings, the projector, attention masks and rank-r adapter tensors are left out.

The activation terms are what autograd saves; ``tests/test_plan.py`` checks them against the
tensors a (small) LLaVA actually saves. Everything else is arithmetic, not a measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mcl.config import CONF_DIR, ConfigError, check_overrides

GB = 1e9
OVERHEAD = 1.5 * GB  # CUDA context, cuBLAS/NCCL workspaces, allocator slack
TEXT_TOKENS = 128  # text tokens per sample besides the image's (prompt + answer)
HARDWARE = ("gpu", "ddp", "fsdp", "deepspeed")
ADAPTER_MODULES = ("peft.", "mcl.adapters")  # where the classes of wrapping modules live


class NeedsData(RuntimeError):
    """A method's task start read training data, which a plan does not have."""


# ---------------------------------------------------------------- the architecture's shape


@dataclass
class Shape:
    """What the memory model needs of an architecture (from its config)."""

    layers: int
    hidden: int
    mlp: int
    heads: int
    kv_heads: int
    vocab: int
    vision_layers: int
    vision_hidden: int
    vision_mlp: int
    vision_mlp_factor: int  # bytes per MLP-width element a vision layer keeps (see docstring)
    image_tokens: int  # LM tokens one image becomes
    vision_tokens: int  # tokens the vision tower runs on for one image
    image_note: str

    @property
    def lm_layer_bytes(self) -> int:
        return 16 * self.hidden + 6 * self.mlp

    @property
    def vision_layer_bytes(self) -> int:
        return 16 * self.vision_hidden + self.vision_mlp_factor * self.vision_mlp

    @property
    def head_bytes(self) -> int:
        return 4 * self.hidden + 14 * self.vocab


def shape_of(family: str, config) -> Shape:
    t, v = config.text_config, config.vision_config
    hv = getattr(v, "embed_dim", None) or v.hidden_size  # Qwen2-VL's tower: embed_dim
    iv = getattr(v, "intermediate_size", None) or int(hv * v.mlp_ratio)
    act = getattr(v, "hidden_act", "gelu")
    factor = 6 if family == "qwen2_5_vl" else 4 if act == "quick_gelu" else 2
    if family in ("llava", "llava_next"):
        side = v.image_size // v.patch_size
        n_img, n_vis, note = side * side, side * side + 1, "one 336 px view"
        if family == "llava_next":  # AnyRes at its largest grid: base view + tiles + newlines
            ph, pw = max(config.image_grid_pinpoints, key=lambda p: p[0] * p[1])
            rows, cols = ph // v.image_size * side, pw // v.image_size * side
            tiles = (ph // v.image_size) * (pw // v.image_size)
            n_img = side * side + rows * cols + rows
            n_vis = (1 + tiles) * (side * side + 1)
            note = f"AnyRes at its largest grid ({pw}x{ph} px: base view + {tiles} tiles)"
    elif family in ("qwen2_vl", "qwen2_5_vl"):
        n_img = 1280
        n_vis = n_img * v.spatial_merge_size**2
        note = (
            "1,280 (the pixel cap conf/model suggests; the checkpoint's own budget allows 16,384)"
        )
    else:  # internvl: up to 12 tiles + a thumbnail
        tiles = 13
        side = v.image_size[0] // v.patch_size[0]
        n_img, n_vis = tiles * config.image_seq_length, tiles * (side * side + 1)
        note = "12 tiles + a thumbnail, 256 each"
    return Shape(
        layers=t.num_hidden_layers,
        hidden=t.hidden_size,
        mlp=t.intermediate_size,
        heads=t.num_attention_heads,
        kv_heads=t.num_key_value_heads,
        vocab=t.vocab_size,
        vision_layers=getattr(v, "depth", None) or v.num_hidden_layers,
        vision_hidden=hv,
        vision_mlp=iv,
        vision_mlp_factor=factor,
        image_tokens=n_img,
        vision_tokens=n_vis,
        image_note=note,
    )


# ---------------------------------------------------------------- a method on the meta model


class _Bench:
    """The benchmark as a plan sees it: task names and modalities from the config only."""

    def __init__(self, cfg: DictConfig):
        info = cfg.bench.get("task_info") or {}

        def spec(name: str) -> dict:
            return {"name": name, "modality": (info.get(name) or {}).get("modality", "image")}

        self.name = cfg.bench.name
        self.tasks = [spec(n) for n in cfg.bench.tasks]
        self.unseen = [spec(n) for n in cfg.bench.get("unseen") or []]

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.tasks]


class _NoData:
    """A DataModule with the benchmark's task list and no samples."""

    mix = None

    def __init__(self, bench: _Bench, batch_size: int):
        self.bench, self.batch_size = bench, batch_size

    def _refuse(self, *_, **__):
        raise NeedsData("the method reads training data at task start")

    sample_task = train_dataloader = test_samples = test_batches = _refuse


def _start_task(method, task: int, dm) -> dict:
    """What ``on_task_start(task)`` adds, without data; returns notes for the task's row."""
    from mcl.methods.dmole import DMoLE
    from mcl.methods.eproj import EProj
    from mcl.methods.fwd_prompt import FwdPrompt

    if isinstance(method, DMoLE):
        return _dmole_task(method, task, dm)
    if isinstance(method, FwdPrompt):  # no data: no pre-trained basis (a buffer), all else
        method.on_task_start(task, None)
        return {}
    if isinstance(method, EProj):
        method.key_steps = 0  # the key phase fits the task's keys to its data: adds nothing
    try:
        method.on_task_start(task, dm)
    except RuntimeError as e:
        # a value read on meta tensors; what a task start
        # adds comes before such reads in every method, so only its trainable set is redone
        if "meta" not in str(e):
            raise
        method.set_trainable()
    return {}


def _dmole_task(method, task: int, dm) -> dict:
    """D-MoLE's task start with equal zero-cost scores (its budget rule, no gradients)."""
    from mcl.adapters.dmole import TaskAutoencoder
    from mcl.callbacks.allocation import allocate
    from mcl.methods.base import ContinualMethod

    ContinualMethod.on_task_start(method, task, dm)
    layers = method.layers()
    units = {method.unit_of(n): method.modality[n] for n in method.modality}
    alloc = allocate(
        {u: 1.0 for u in units},
        units,
        method.budget_portion,
        method.vit_min_share,
        method.curriculum,
        method.allocator,
        method.budget_params,
        method.unit_costs(),
    )
    chosen = set(alloc["units"])
    for n in method.modality:
        if method.unit_of(n) in chosen:
            layers[n].add_expert(task)
    device = next(method.mllm.model.parameters()).device
    method.aes[f"t{task}"] = TaskAutoencoder(method.rep_dim, method.ae_hidden, method.ae_output).to(
        device
    )
    method.set_masks(None)
    method.set_trainable()
    return {"experts": f"{alloc['n_vision']} vision + {alloc['n_lm']} LM modules (estimate)"}


@dataclass
class TaskRow:
    name: str
    new: int  # parameters added at this task's start
    trainable: int
    total: int
    weight_bytes: int  # W of the docstring
    act: dict  # what the activation formula needs at this task
    notes: dict = field(default_factory=dict)
    modality: str = "image"
    input_tokens: int = 0  # LM tokens one sample's image (or other input) becomes
    seq: int = 0  # LM tokens per sample (input + text + soft-prompt slots)
    vision_tokens: int = 0  # tokens the vision tower runs on per sample


@dataclass
class Plan:
    preset: str
    family: str
    model_name: str
    model_class: str
    method: str
    bench: str
    shape: Shape
    total_base: int
    reason: str | None = None  # not applicable
    wraps: list[tuple[str, str, int]] = field(default_factory=list)
    own: dict[str, int] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)
    tasks: list[TaskRow] = field(default_factory=list)
    estimate: str | None = None
    n_tasks: int = 0
    batch_size: int = 1
    memory: list[dict] = field(default_factory=list)
    peak_task: int = 0
    verdict: str = ""
    checkpointing: bool = False
    device_memory: float = 80.0


def _layer_lists(mllm) -> dict[str, tuple[str, int]]:
    """``{"lm": (prefix, n), "vision": (prefix, n)}``: each part's layer stack (its longest
    ModuleList), by module name inside the HF model."""
    names = {id(m): n for n, m in mllm.model.named_modules()}
    out = {}
    for part in ("lm", "vision"):
        root = mllm.part_modules(part)[0]
        best = max(
            (m for m in root.modules() if isinstance(m, torch.nn.ModuleList)),
            key=len,
            default=None,
        )
        if best is not None:
            out[part] = (names[id(best)], len(best))
    return out


def _adapters(model) -> dict[str, torch.nn.Module]:
    """The top-most modules of adapter classes (peft's LoRA layers, mcl.adapters')."""
    found: dict[str, torch.nn.Module] = {}
    for n, m in model.named_modules():
        if type(m).__module__.startswith(ADAPTER_MODULES) and not any(
            n.startswith(f + ".") for f in found
        ):
            found[n] = m
    return found


def _in_features(m: torch.nn.Module) -> int | None:
    base = getattr(m, "base_layer", None) or getattr(m, "base", None)
    if isinstance(base, torch.nn.Linear):
        return base.in_features
    return getattr(m, "in_features", None)


def _pattern(name: str) -> str:
    return re.sub(r"\.\d+(?=\.|$)", ".*", name)


def _wraps(adapters: dict) -> list[tuple[str, str, int]]:
    """(pattern, class, count) of the wrapped modules; leaves of one parent pattern joined."""
    groups: dict[tuple[str, str], list[str]] = {}
    for n, m in adapters.items():
        parent, _, leaf = _pattern(n).rpartition(".")
        cls, where = type(m).__name__, type(m).__module__.split(".")
        if where[0] == "peft":  # peft.tuners.lora.layer.Linear -> peft lora.Linear
            cls = f"peft {where[2]}.{cls}"
        groups.setdefault((parent, cls), []).append(leaf)
    out = []
    for (parent, cls), leaves in groups.items():
        uniq = list(dict.fromkeys(leaves))
        leaf = uniq[0] if len(uniq) == 1 else "(" + "|".join(uniq) + ")"
        out.append((f"{parent}.{leaf}" if parent else leaf, cls, len(leaves)))
    return out


def _is_base(name: str, base: set[str]) -> bool:
    return name in base or name.replace(".base_layer", "") in base


def _task_row(method, name: str, where: dict, base_bytes: int, prev_total: int) -> TaskRow:
    base = getattr(method, "_base_names", set())
    trainable = total = weight = 0
    train_names = []
    for n, p in method.named_parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
            train_names.append(n)
            weight += 4 * p.numel()
        elif _is_base(n, base):
            weight += base_bytes * p.numel()
        else:
            weight += 4 * p.numel()
    for n, b in method.named_buffers():
        if _is_base(n, base):
            size = base_bytes if b.is_floating_point() else b.element_size()
        else:
            size = 4 if b.is_floating_point() else b.element_size()
        weight += size * b.numel()
    teacher = getattr(method, "_teacher", None)  # LwF: a copy of the trainable tensors
    if teacher:
        weight += sum(4 * t.numel() for t in teacher.values())
    return TaskRow(
        name=name,
        new=total - prev_total,
        trainable=trainable,
        total=total,
        weight_bytes=weight,
        act=_activation_layout(train_names, where),
    )


def _where(mllm) -> dict:
    """The model's layout, once per plan: layer stacks, each part's parameters registered
    before its stack (embeddings: upstream of every layer) and after it (head, merger), and
    the adapter modules."""
    layers = _layer_lists(mllm)
    out = {"layers": layers, "adapters": _adapters(mllm.model)}
    names = [n for n, _ in mllm.model.named_parameters()]
    for part in ("lm", "vision"):
        roots = _part_prefix(mllm, part)
        mine = [n for n in names if any(n.startswith(r + ".") for r in roots)]
        stack = layers[part][0] + "."
        at = next((i for i, n in enumerate(mine) if n.startswith(stack)), len(mine))
        out[f"{part}_before"] = set(mine[:at])
        out[f"{part}_after"] = {n for n in mine[at:] if not n.startswith(stack)}
    return out


def _activation_layout(train_names: list[str], where: dict, mask_bytes: int = 1) -> dict:
    """Where training starts in each stack and the adapter bytes per token (and per sample)
    per layer. ``mask_bytes``: a dropout mask's bytes per element, 1 on CUDA (a bool mask);
    the CPU's dropout keeps a float one (4)."""
    prefix = "mllm.model."
    first = {"lm": None, "vision": None}
    upstream = {"lm": False, "vision": False}
    layers = where["layers"]
    for n in train_names:
        inner = n[len(prefix) :] if n.startswith(prefix) else ""
        hit = False
        for part, (stack, _) in layers.items():
            if inner.startswith(stack + "."):
                idx = int(inner[len(stack) + 1 :].split(".")[0])
                first[part] = idx if first[part] is None else min(first[part], idx)
                hit = True
        if hit or inner in where["lm_after"]:  # (the LM's head and final norm: no layer)
            continue
        if inner in where["vision_before"]:  # the tower's embeddings: every tower layer
            upstream["vision"] = True
        else:  # the LM's embeddings, projector, tower's merger, prompts, x-modal inputs
            upstream["lm"] = True
    if upstream["vision"]:
        first["vision"] = 0
    if upstream["lm"] or first["vision"] is not None:
        first["lm"] = 0
    adapters: dict[str, dict[int, int]] = {"lm": {}, "vision": {}}
    per_sample: dict[str, dict[int, int]] = {"lm": {}, "vision": {}}
    for n, m in where["adapters"].items():
        if not any(p.requires_grad for p in m.parameters()):
            continue
        saved = _adapter_bytes(m, mask_bytes)
        for part, (stack, _) in layers.items():
            if saved and n.startswith(stack + "."):
                idx = int(n[len(stack) + 1 :].split(".")[0])
                adapters[part][idx] = adapters[part].get(idx, 0) + saved[0]
                per_sample[part][idx] = per_sample[part].get(idx, 0) + saved[1]
    return {
        "trains": bool(train_names),
        "lm_first": first["lm"],
        "vision_first": first["vision"],
        "lm_adapters": adapters["lm"],
        "vision_adapters": adapters["vision"],
        "lm_adapters_sample": per_sample["lm"],
        "vision_adapters_sample": per_sample["vision"],
    }


def _adapter_bytes(m: torch.nn.Module, mask_bytes: int) -> tuple[int, int] | None:
    """(per token, per sample) bytes autograd keeps for one adapted linear that trains: the
    adapter's own account where it gives one (``saved_bytes(tokens, mask_bytes)``: SMoLoRA's
    and MoELoRA's layers, whose experts keep more than a LoRA does), else a LoRA's bf16 copy
    of its input, 2 x in_features per token."""
    own = getattr(m, "saved_bytes", None)
    if callable(own):
        fixed = own(0, mask_bytes)
        return own(1, mask_bytes) - fixed, fixed
    width = _in_features(m)
    return (2 * width, 0) if width else None


def _part_prefix(mllm, part: str) -> list[str]:
    names = {id(m): n for n, m in mllm.model.named_modules()}
    return [names[id(m)] for m in mllm.part_modules(part)]


# ---------------------------------------------------------------- memory


def activation_bytes(
    shape: Shape,
    act: dict,
    seq: int,
    checkpointing: bool = False,
    vision_tokens: int | None = None,
    peak: bool = True,
) -> int:
    """Activation bytes of one training sample (module docstring) at ``seq`` LM tokens and
    ``vision_tokens`` tower tokens (default: one image's). ``peak=False``: only what autograd
    saves (the head's 4h + 4V, without the logits and the loss's gradients, 10V)."""
    if not act["trains"]:
        return 0
    head = shape.head_bytes if peak else 4 * shape.hidden + 4 * shape.vocab
    total = seq * head
    vis = shape.vision_tokens if vision_tokens is None else vision_tokens
    for part, n_layers, per_layer, hidden, tokens in (
        ("lm", shape.layers, shape.lm_layer_bytes, shape.hidden, seq),
        ("vision", shape.vision_layers, shape.vision_layer_bytes, shape.vision_hidden, vis),
    ):
        first = act[f"{part}_first"]
        if first is None:
            continue
        active = n_layers - first
        adapters = act[f"{part}_adapters"]
        fixed = act.get(f"{part}_adapters_sample", {})
        if checkpointing:  # one layer's adapters at a time
            one = max((tokens * adapters[i] + fixed.get(i, 0) for i in adapters), default=0)
            total += tokens * (active * 2 * hidden + per_layer) + one
        else:
            total += tokens * (active * per_layer + sum(adapters.values()))
            total += sum(fixed.values())
    return total


def _layer_bytes(mllm, layers: dict, base_bytes: int) -> int:
    """Bytes of the largest decoder layer's parameters at the base dtype (FSDP's unit)."""
    stack = mllm.model.get_submodule(layers["lm"][0])
    return max(sum(p.numel() for p in layer.parameters()) for layer in stack) * base_bytes


def memory_rows(plan: Plan, row: TaskRow, devices: dict[str, int], unit: int) -> list[dict]:
    """Per hardware: devices, weights, optimizer state, activations (without / with
    checkpointing), totals and whether each fits (module docstring)."""
    pt = row.trainable
    opt = 12 * pt
    out = []
    for hw in HARDWARE:
        n = devices[hw]
        w, o, extra = row.weight_bytes, opt, 0
        if hw == "ddp":
            extra = 4 * pt
        elif hw == "deepspeed":
            o = opt / n
        elif hw == "fsdp":
            w, o = w / n + 2 * unit, opt / n
        acts = [
            plan.batch_size * activation_bytes(plan.shape, row.act, row.seq, ck, row.vision_tokens)
            for ck in (False, True)
        ]
        totals = [w + o + extra + a + OVERHEAD for a in acts]
        out.append(
            {
                "hardware": hw,
                "devices": n,
                "weights": w,
                "optimizer": o + extra,
                "activations": acts[0],
                "total": totals[0],
                "activations_ckpt": acts[1],
                "total_ckpt": totals[1],
            }
        )
    return out


def _verdict(plan: Plan, configured: str | None) -> str:
    budget = plan.device_memory * GB
    rows = {r["hardware"]: r for r in plan.memory}
    if not plan.tasks or not plan.tasks[plan.peak_task].act["trains"]:
        need = rows["gpu"]["total"]
        ok = "fits" if need <= budget else "cannot fit"
        return f"{ok}: nothing trains; the weights take {need / GB:.1f} GB per device"
    hw = configured if configured in rows else "gpu"
    r = rows[hw]
    key = "total_ckpt" if plan.checkpointing else "total"
    where = f"{hw} ({r['devices']} device{'s' if r['devices'] > 1 else ''})"
    if r[key] <= budget:
        tail = (
            f" ({r['total_ckpt'] / GB:.1f} GB with gradient checkpointing)"
            if not plan.checkpointing
            else ""
        )
        return f"fits: {where} needs {r[key] / GB:.1f} of {plan.device_memory:g} GB{tail}"
    if not plan.checkpointing and r["total_ckpt"] <= budget:
        return (
            f"fits only with model.gradient_checkpointing=true: {where} needs "
            f"{r['total_ckpt'] / GB:.1f} of {plan.device_memory:g} GB ({r['total'] / GB:.1f} "
            "without)"
        )
    best = min(plan.memory, key=lambda x: x["total_ckpt"])
    need = f"cannot fit: {where} needs {r['total_ckpt'] / GB:.1f} GB per device even with "
    need += f"gradient checkpointing, {plan.device_memory:g} GB available"
    alt = f"{best['hardware']} ({best['devices']} devices) with checkpointing"
    if best["total_ckpt"] <= budget:
        return f"{need}; {alt} fits: {best['total_ckpt'] / GB:.1f} GB"
    return f"{need}; lower train.batch_size or the sequence length (--seq-len)"


# ---------------------------------------------------------------- building a plan


def compose(overrides: list[str]) -> tuple[DictConfig, dict]:
    """The train config for ``overrides`` and Hydra's group choices (model, method, ...)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    check_overrides(overrides)
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = hydra_compose("train", overrides=list(overrides), return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with_hydra = OmegaConf.to_container(cfg, resolve=False)
    with_hydra.pop("hydra")
    GlobalHydra.instance().clear()
    return OmegaConf.create(with_hydra), choices


def _build_mllm(preset: str, cfg: DictConfig):
    from mcl.models import arch
    from mcl.models.hf import wrap_hf

    dtype = cfg.model.get("dtype", "bfloat16")
    model = arch.build_arch(preset, device="meta", dtype=dtype)
    processor = _processor(preset)
    xmodal = OmegaConf.to_container(cfg.model.xmodal) if cfg.model.get("xmodal") else None
    return wrap_hf(
        model, processor, arch.family_of(preset), name=cfg.model.get("name"), xmodal=xmodal
    )


_PROCESSORS: dict[str, object] = {}


@functools.cache
def _count(preset: str, dtype: str) -> int:
    """The preset's parameter count (its meta model)."""
    from mcl.models import arch

    return sum(p.numel() for p in arch.build_arch(preset, device="meta", dtype=dtype).parameters())


def _processor(preset: str):
    from mcl.models import arch

    if preset not in _PROCESSORS:
        _PROCESSORS[preset] = arch.build_processor(preset)
    return _PROCESSORS[preset]


def _materialise_embeddings(mllm) -> None:
    """A zero input-embedding table on the CPU (for setup work that reads its values, e.g.
    Fwd-Prompt's prompt scale); the rest of the model stays on meta."""
    emb = mllm.model.get_input_embeddings()
    emb.weight = torch.nn.Parameter(
        torch.zeros(emb.weight.shape, dtype=emb.weight.dtype), requires_grad=False
    )


def _setup(cfg: DictConfig, preset: str, bench: _Bench):
    """The MLLM with the method set up on it, as ``mcl.train.build`` does (x-modal inputs for
    the benchmark's modalities, the image-only check, ``check_bench``, ``setup_model``)."""
    from hydra.utils import instantiate

    from mcl.train import attach_modalities

    for retry in (False, True):
        mllm = _build_mllm(preset, cfg)
        if retry:
            _materialise_embeddings(mllm)
        attach_modalities(mllm, bench)
        base = sum(p.numel() for p in mllm.parameters())
        method = instantiate(cfg.method)
        if mllm.xmodal is not None and getattr(method, "image_only", False):
            raise ValueError(
                f"{cfg.method.name} reads images only, but bench {bench.name} has "
                f"{', '.join(sorted(mllm.xmodal.inputs))} inputs"
            )
        method.check_bench(bench)
        try:
            method.setup_model(mllm)
        except (RuntimeError, NotImplementedError) as e:
            if retry or "meta" not in str(e):
                raise
            continue
        return mllm, method, base
    raise AssertionError("unreachable")


def make_plan(
    cfg: DictConfig,
    preset: str,
    seq_len: int | None = None,
    device_memory: float = 80.0,
    hardware: str | None = None,
) -> Plan:
    """The plan for a composed config whose model is ``preset`` (see the module docstring);
    ``hardware`` is the configured hardware group (marked, and the one the verdict is about)."""
    from mcl.models import arch

    family = arch.family_of(preset)
    config = arch.load_config(preset)
    shape = shape_of(family, config)
    bench = _Bench(cfg)
    plan = Plan(
        preset=preset,
        family=family,
        model_name=cfg.model.get("name") or preset,
        model_class=arch.model_class(family).__name__,
        method=cfg.method.name,
        bench=bench.name,
        shape=shape,
        total_base=0,
        n_tasks=len(bench.tasks),
        batch_size=int(cfg.train.batch_size),
        checkpointing=bool(cfg.model.get("gradient_checkpointing", False)),
        device_memory=device_memory,
    )
    base_bytes = 4 if cfg.model.get("dtype", "bfloat16") == "float32" else 2
    plan.total_base = _count(preset, cfg.model.get("dtype", "bfloat16"))
    with _quiet():
        try:
            mllm, method, prev = _setup(cfg, preset, bench)
        except ValueError as e:
            plan.reason = str(e)
            return plan
        where = _where(mllm)
        modal = mllm.collator.modal  # x-modal inputs: placeholder tokens per modality
        dm = _NoData(bench, plan.batch_size)
        method.bind_data(dm)
        for t, spec in enumerate(bench.tasks):
            try:
                with method.plugins_paused():  # they read data and add no parameters
                    notes = _start_task(method, t, dm)
            except NeedsData as e:
                plan.reason = f"cannot plan without data: {e}"
                return plan
            row = _task_row(method, spec["name"], where, base_bytes, prev)
            row.notes, row.modality = notes, spec["modality"]
            row.input_tokens = modal["tokens"][row.modality] if modal else shape.image_tokens
            row.seq = (seq_len or row.input_tokens + TEXT_TOKENS) + mllm.collator.virtual_tokens
            row.vision_tokens = shape.vision_tokens * row.input_tokens // shape.image_tokens
            prev = row.total
            plan.tasks.append(row)
        if any(r.notes for r in plan.tasks):
            plan.estimate = (
                "D-MoLE's allocation depends on zero-cost gradient scores of each task's data; "
                "estimated with equal scores (each modality's share of the budget = its share of "
                f"candidate units, vision at least {getattr(method, 'vit_min_share', 0):g})"
            )
        plan.wraps = _wraps(where["adapters"])
        for n, p in method.named_parameters():  # grouped by the method's attribute
            if not n.startswith("mllm."):
                plan.own[n.split(".")[0]] = plan.own.get(n.split(".")[0], 0) + p.numel()
        plan.parts = list(getattr(method, "parts", []))
        unit = _layer_bytes(mllm, where["layers"], base_bytes)
    devices = _devices(cfg, hardware)
    peaks = [memory_rows(plan, r, devices, unit) for r in plan.tasks]
    plan.peak_task = max(range(len(peaks)), key=lambda i: peaks[i][0]["total"]) if peaks else 0
    plan.memory = peaks[plan.peak_task] if peaks else []
    plan.verdict = _verdict(plan, hardware)
    return plan


def _devices(cfg: DictConfig, configured: str | None) -> dict[str, int]:
    """Devices per hardware row: the configured count for the configured multi-GPU group (and
    the other multi-GPU rows), each group's own default otherwise."""
    out = {"gpu": 1}
    own = None
    if configured in ("ddp", "fsdp", "deepspeed"):
        own = int(cfg.hardware.get("devices", 2)) * int(cfg.hardware.get("num_nodes", 1))
    for hw in ("ddp", "fsdp", "deepspeed"):
        if own is not None:
            out[hw] = own
        else:
            out[hw] = int(OmegaConf.load(CONF_DIR / "hardware" / f"{hw}.yaml").get("devices", 2))
    return out


@contextlib.contextmanager
def _quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------- output


def _n(x: float) -> str:
    """A parameter count: 7.06B, 4.19M, 12.3K, 0."""
    for div, suf in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.2f}{suf}"
    return str(int(x))


def render(plan: Plan, configured: str | None = None) -> str:
    s = plan.shape
    lines = [
        f"plan: {plan.preset} ({plan.model_name}, {plan.model_class}) x {plan.method}, "
        f"bench {plan.bench} ({plan.n_tasks} tasks)",
        f"architecture (shipped config, built on meta): {_n(plan.total_base)} parameters; LM "
        f"{s.layers} layers, hidden {s.hidden}, {s.heads} heads / {s.kv_heads} KV, MLP {s.mlp}, "
        f"vocab {s.vocab}; vision {s.vision_layers} layers, hidden {s.vision_hidden}",
    ]
    if plan.reason is not None:
        lines.append(f"not applicable: {plan.reason}")
        return "\n".join(lines)
    for pattern, cls, count in plan.wraps:
        lines.append(f"wraps: {pattern}: {count} x {cls}")
    if not plan.wraps:
        lines.append("wraps: nothing")
    if plan.parts:
        lines.append(f"trained in full: {', '.join(plan.parts)}")
    if plan.own:
        own = ", ".join(f"{n} ({_n(k)})" for n, k in plan.own.items())
        lines.append(f"method tensors outside the model: {own}")
    lines.append("")
    lines.append(f"{'task':<4}  {'name':<12}  {'new':>8}  {'trainable':>9}  {'total':>7}")
    for i, r in enumerate(plan.tasks, 1):
        note = "  " + "; ".join(f"{k}: {v}" for k, v in r.notes.items()) if r.notes else ""
        lines.append(
            f"{i:<4}  {r.name[:12]:<12}  {_n(r.new):>8}  {_n(r.trainable):>9}  "
            f"{_n(r.total):>7}{note}"
        )
    if plan.estimate:
        lines.append(f"estimate: {plan.estimate}")
    peak = plan.tasks[plan.peak_task]
    what = s.image_note if peak.modality == "image" else "x-modal input"
    lines += [
        "",
        f"GPU memory per device, GB, at task {plan.peak_task + 1} ({peak.name}): bf16 base, fp32 "
        f"trainable + grads + AdamW; batch {plan.batch_size} x {peak.seq} tokens "
        f"({peak.input_tokens} {peak.modality}: {what}); device {plan.device_memory:g} GB",
        f"{'hardware':<11} {'devices':>7} {'weights':>8} {'optim':>7} {'activ':>7} {'total':>7}"
        f"  {'activ(ckpt)':>11} {'total(ckpt)':>11}  fits",
    ]
    budget = plan.device_memory * GB
    for r in plan.memory:
        fits = "yes" if r["total"] <= budget else "ckpt" if r["total_ckpt"] <= budget else "no"
        mark = "*" if r["hardware"] == configured else " "
        lines.append(
            f"{r['hardware'] + mark:<11} {r['devices']:>7} {r['weights'] / GB:>8.1f} "
            f"{r['optimizer'] / GB:>7.2f} {r['activations'] / GB:>7.1f} {r['total'] / GB:>7.1f}"
            f"  {r['activations_ckpt'] / GB:>11.1f} {r['total_ckpt'] / GB:>11.1f}  {fits}"
        )
    lines.append(plan.verdict)
    return "\n".join(lines)


def _expand(overrides: list[str]) -> list[list[str]]:
    """One override list per combination of comma-separated ``model=`` / ``method=`` values."""
    axes = []
    for o in overrides:
        m = re.fullmatch(r"(model|method)=(.+)", o)
        axes.append([f"{m[1]}={v}" for v in m[2].split(",")] if m else [o])
    return [list(c) for c in itertools.product(*axes)]


def plans(
    overrides: list[str], seq_len: int | None = None, device_memory: float = 80.0
) -> list[tuple[Plan, str | None]]:
    """The plan of every combination the overrides name, with the configured hardware."""
    from mcl.models import arch

    out = []
    for combo in _expand(overrides):
        cfg, choices = compose(combo)
        preset = choices.get("model")
        if preset not in arch.PRESETS:
            raise ConfigError(
                f"model={preset} has no shipped architecture; plan one of {', '.join(arch.PRESETS)}"
            )
        hw = choices.get("hardware")
        out.append((make_plan(cfg, preset, seq_len, device_memory, hw), hw))
    return out


def command(argv: list[str]) -> str:
    """The command line that reproduces a plan (for generated docs)."""
    return "python -m mcl.plan " + " ".join(argv)


def _doc_argv(argv: list[str]) -> list[str]:
    """``argv`` without ``--markdown FILE`` (the command a document shows)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--markdown":
            skip = True
        elif not a.startswith("--markdown="):
            out.append(a)
    return out


def markdown(argv: list[str], results: list[tuple[Plan, str | None]] | None = None) -> str:
    """The markdown document ``--markdown`` writes: the command and each plan's output
    (``results``: the plans already made for ``argv``)."""
    if results is None:
        args = _parser().parse_args(argv)
        results = plans(args.overrides, args.seq_len, args.device_memory)
    out = [
        "# Plans for real models",
        "",
        "Generated by the command below (`tests/test_plan.py` regenerates it and fails if this",
        "file differs): the preset's shipped architecture is built on the `meta` device, the",
        "method is set up on it, and GPU memory per device is estimated from the formula in",
        "`mcl/plan.py`'s docstring (arithmetic, not a measurement).",
        "",
        "```bash",
        command(_doc_argv(argv)),
        "```",
        "",
    ]
    for plan, hw in results:
        out += [f"## {plan.preset} x {plan.method}", "", "```text", render(plan, hw), "```", ""]
    return "\n".join(out).rstrip() + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mcl.plan",
        description="Trainable parameters and GPU memory of a method on a real model preset.",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for mcl.train")
    p.add_argument("--seq-len", type=int, default=None, help="LM tokens per sample")
    p.add_argument("--device-memory", type=float, default=80.0, help="GB per device")
    p.add_argument("--markdown", default=None, help="also write the plans to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        results = plans(args.overrides, args.seq_len, args.device_memory)
        for i, (plan, hw) in enumerate(results):
            print(("\n" if i else "") + render(plan, hw))
        if args.markdown:
            Path(args.markdown).write_text(markdown(argv, results))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
