"""ContinualMethod: the only contract the runner knows (docs/extending.md).

A method is a LightningModule holding the MLLM plus its own modules, and a handful of hooks:

- ``setup_model(mllm)``    inject adapters/prompts; freeze the base.
- ``on_task_start(t, dm)`` before the task's Trainer is built (Lightning builds optimizers before
                           ``on_fit_start``, so new parameters must exist by now); sets
                           ``requires_grad`` explicitly — the runner asserts the trainable set.
- ``extra_loss(batch, out)`` regularisers added to the answer-token LM loss.
- ``on_task_end(t, dm)``   importance, bases, freezing, statistics.
- ``eval_context(batch)``  how the test-time path is chosen (no task id unless the paper uses it).
- ``generate(batch, max_new_tokens)`` test-time answers.
- ``adapter_state()``      what a task checkpoint holds (trainable/adapter tensors only).
- ``on_resume(t)``         rebuild what tasks ``0..t`` added (per-task adapters) before a resumed
                           run loads its checkpoint.
- ``task_info(t)`` / ``eval_metrics(t)``  what the method reports per task / per evaluated cell.
- ``param_groups()``       optimizer parameter groups (a part may train at its own lr).

Gradient surgery goes in callbacks (``callbacks()``), run in ``on_before_optimizer_step``.

Regularisers and rehearsal are plugins (``plugins``: :mod:`mcl.plugins`), not subclasses. Each
plugin hook runs when the method's own hook of that moment has returned: ``setup_model``,
``on_task_start``, ``on_task_end`` and ``task_info`` overrides are wrapped when a subclass is
defined (``__init_subclass__``), and the plugins run once the outermost call (the whole
``super()`` chain) is done, so they see the task's final trainable set whatever the method adds
(plugins may refuse the model before ``setup_model`` starts). Their loss terms are summed into
``training_step``'s loss, their mixture is ``train_mixture``'s; their tensors are the method's
(``plugins.<name>.*`` in ``adapter_state``). Subclasses keep writing plain hooks.
"""

from __future__ import annotations

import contextlib
import functools
import math

import lightning as L
import torch

from mcl.models.mllm import MLLM, model_inputs
from mcl.models.precision import HALF, fp32_boundary
from mcl.plugins.registry import build_plugins, check_plugins

#: method hooks followed by their plugins' hook (the name of the method that runs them)
_PLUGGED = {
    "setup_model": "_plugins_setup",
    "on_task_start": "_plugins_before_task",
    "on_task_end": "_plugins_after_task",
    "task_info": "_plugins_task_info",
}


def _then_plugins(hook, after: str):
    """``hook``, then (only when it is the outermost call of that hook on this object) the
    plugins' part: ``after(result, *args)`` whose value is returned. The outermost
    ``setup_model`` first lets the plugins refuse the model, before anything touches it."""

    @functools.wraps(hook)
    def run(self, *args, **kwargs):
        depth = self.__dict__.setdefault("_hook_depth", {})
        name = hook.__name__
        outermost = not depth.get(name) and self.__dict__.get("_plugins_on", True)
        if outermost and name == "setup_model":
            for plugin in self.plugins.values():
                plugin.check_model(self, *args, **kwargs)
        depth[name] = depth.get(name, 0) + 1
        try:
            out = hook(self, *args, **kwargs)
        finally:
            depth[name] -= 1
        if depth[name] or not self.__dict__.get("_plugins_on", True):
            return out
        return getattr(self, after)(out, *args, **kwargs)

    run._then_plugins = True
    return run


class ContinualMethod(L.LightningModule):
    #: whether the runner should train at all (``zero_shot`` sets False)
    trains = True
    #: whether the method is told, at test time, which task it is answering (an oracle; only
    #: where its paper does so). The runner then calls ``set_eval_task`` and records it.
    task_id_at_test = False
    #: a reference bound, not a contender (results.json records it; reports never mark it best)
    reference: bool = False

    def __init__(
        self,
        name: str,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.05,
        min_lr_ratio: float = 0.1,
        parts: tuple[str, ...] = (),
        parts_lr: float | None = None,
        plugins=None,
    ):
        super().__init__()
        self.method_name = name
        # regularisers / rehearsal (mcl.plugins): children, so their tensors are checkpointed
        built = build_plugins(plugins)
        if built and not self.trains:
            raise ValueError(f"{name} does not train: plugins would do nothing; drop them")
        own_mixture = type(self).train_mixture is not ContinualMethod.train_mixture
        check_plugins(built, name, {"train_mixture"} if own_mixture else set())
        self.plugins = torch.nn.ModuleDict({p.name: p for p in built})
        # model parts fine-tuned in full beside the method's own modules (``projector``, ``lm``,
        # ``vision``), at their own lr: MCITlib trains the projector at 2e-5 beside LoRA at 2e-4
        self.parts, self.parts_lr = list(parts or []), parts_lr
        self._part_ids: set[int] = set()
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_ratio, self.min_lr_ratio = warmup_ratio, min_lr_ratio
        self.mllm: MLLM | None = None
        self.current_task: int | None = None
        # mid-task Lightning checkpoints hold only what adapter_state() holds (not the base)
        self.strict_loading = False
        self._dm = None  # set by bind_data
        self._pinned: set[str] | None = None  # the task's trainable names (pin_trainable)

    # ------------------------------------------------------------------ hooks
    def setup_model(self, mllm: MLLM) -> None:
        """Attach the MLLM and freeze it; subclasses inject their modules after calling this."""
        self.mllm = mllm
        mllm.requires_grad_(False)  # the HF model and any x-modal input modules
        # remember the base's tensor names: a task checkpoint holds everything else
        self._base_names = set(self.state_dict().keys())
        self._part_ids = {
            id(p) for part in self.parts for m in mllm.part_modules(part) for p in m.parameters()
        }

    def keep_wrapped_base(self) -> None:
        """After wrapping base linears (``x`` -> ``x.base``), count their renamed weights as base
        still, so task checkpoints hold only what the method added."""
        self._base_names |= {
            n for n in self.state_dict() if n.replace(".base.", ".", 1) in self._base_names
        }

    def part_names(self) -> set[str]:
        """Names of the parameters of the fully fine-tuned parts (by identity: an adapter
        wrapping one of their layers renames it, the tensor stays the same)."""
        return {n for n, p in self.named_parameters() if id(p) in self._part_ids}

    def set_trainable(self) -> None:
        """``requires_grad`` exactly on :meth:`expected_trainable` (call at the end of
        ``on_task_start``; never rely on what an injection left behind)."""
        want = self.expected_trainable()
        for n, p in self.named_parameters():
            p.requires_grad = n in want

    def check_bench(self, bench) -> None:
        """Raise ValueError (one line: the problem and the fix) when the method cannot run on
        ``bench`` (``mcl.train`` reports it as a config error before anything trains)."""

    def bind_data(self, dm) -> None:
        """The runner hands over the DataModule before anything runs (row 0 included), for
        methods that read data outside a task's training (task embeddings, type tables)."""
        self._dm = dm

    def on_task_start(self, task: int, dm) -> None:
        self.current_task = task
        self._pinned = None  # the new task's trainable set is pinned once the runner checked it
        # the non-image input modules of the modalities this task trains on (x-modal models):
        # every method trains them, since the base has never seen those modalities
        bench = getattr(dm, "bench", None)
        tasks = getattr(dm, "mix", None) or {task: None}
        self._modalities_now = (
            {bench.tasks[j].get("modality", "image") for j in tasks} if bench else set()
        )

    def modal_input_names(self) -> set[str]:
        """Parameters of the input modules of the modalities being trained now."""
        xm = getattr(self.mllm, "xmodal", None) if self.mllm is not None else None
        if xm is None:
            return set()
        now = getattr(self, "_modalities_now", set())
        return {
            f"mllm.xmodal.inputs.{m}.{n}"
            for m in now
            if m in xm.inputs
            for n, _ in xm.inputs[m].named_parameters()
        }

    def on_task_end(self, task: int, dm) -> None:
        pass

    def on_resume(self, finished_task: int) -> None:
        """Recreate the modules tasks ``0..finished_task`` added, so their checkpoint loads."""

    def task_info(self, task: int) -> dict:
        """What the method wants recorded after a task (similarities, allocations, ...): saved
        in ``results.json`` under ``method_info``; numbers are logged too."""
        return {}

    def set_eval_task(self, name: str, index: int | None) -> None:
        """The task about to be evaluated; called only when ``task_id_at_test`` is True."""

    def eval_metrics(self, task: int | None) -> dict[str, float]:
        """Called after the runner evaluated one task, with its index (None: an unseen task) —
        only *after* the answers were given, so routing can be scored without being told the
        task (e.g. task-id retrieval accuracy). Saved under ``method_eval``, logged."""
        return {}

    def extra_loss(self, batch: dict, out) -> torch.Tensor | None:
        return None

    def eval_context(self, batch: dict):
        return contextlib.nullcontext()

    def callbacks(self) -> list[L.Callback]:
        return []

    def train_mixture(self, task: int, bench) -> dict[int, float] | None:
        """Tasks to train on during ``task`` as ``{task index: weight}``; None = ``task`` alone.
        Joint training overrides it; a rehearsal plugin (replay) gives it otherwise (at most
        one of them: checked when the method is built)."""
        for plugin in self.plugins.values():
            mix = plugin.adapt_train_data(self, task, bench)
            if mix is not None:
                return mix
        return None

    # ------------------------------------------------------------------ plugins
    def _plugins_setup(self, out, mllm):
        for plugin in self.plugins.values():
            plugin.setup(self)
        return out

    def _plugins_before_task(self, out, task: int, dm):
        for plugin in self.plugins.values():
            plugin.before_task(self, task, dm)
        return out

    def _plugins_after_task(self, out, task: int, dm):
        for plugin in self.plugins.values():
            plugin.after_task(self, task, dm)
        return out

    def _plugins_task_info(self, info: dict, task: int) -> dict:
        info = dict(info or {})
        for plugin in self.plugins.values():
            extra = plugin.task_info(self, task)
            clash = sorted(set(extra) & set(info))
            if clash:
                raise ValueError(f"plugin {plugin.name} reports {clash[0]}, already reported")
            info.update(extra)
        return info

    @contextlib.contextmanager
    def plugins_paused(self):
        """The method's own hooks only (the planner: plugins read data and values and add no
        parameters)."""
        was = self.__dict__.get("_plugins_on", True)
        self.__dict__["_plugins_on"] = False
        try:
            yield
        finally:
            self.__dict__["_plugins_on"] = was

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for hook, after in _PLUGGED.items():
            fn = cls.__dict__.get(hook)
            if fn is not None and not getattr(fn, "_then_plugins", False):
                setattr(cls, hook, _then_plugins(fn, after))

    def expected_trainable(self) -> set[str]:
        """Names of parameters that must train in the current task (the runner asserts it):
        the method's own modules (subclasses add them), the fully fine-tuned parts and the
        input modules of the modalities being trained."""
        return self.part_names() | self.modal_input_names()

    # ------------------------------------------------------------------ training
    @staticmethod
    def model_inputs(batch: dict) -> dict:
        return model_inputs(batch)

    def device_batches(self, samples: list[dict], size: int, prompts: bool = False):
        """Collate ``samples`` in chunks of ``size`` (training batches, or generation prompts)
        and yield them on the model's device; chunks with no readable sample are skipped."""
        dev = next(self.mllm.model.parameters()).device
        collate = self.mllm.collator.prompt_batch if prompts else self.mllm.collator.train_batch
        for i in range(0, len(samples), size):
            batch = collate(samples[i : i + size])
            if "input_ids" in batch:
                yield {k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()}

    def trainable_named(self) -> dict[str, torch.nn.Parameter]:
        """The parameters training in the current task: the set pinned at task start (inside
        FSDP's forward every view of a flat parameter reports ``requires_grad``, frozen base
        weights included), else those that require grad."""
        if self._pinned is None:
            return {n: p for n, p in self.named_parameters() if p.requires_grad}
        return {n: p for n, p in self.named_parameters() if n in self._pinned}

    def pin_trainable(self) -> None:
        """Fix the current task's trainable set (the runner calls it once it checked it)."""
        self._pinned = {n for n, p in self.named_parameters() if p.requires_grad}

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Tensors to the device; the bookkeeping lists (instructions, skip examples) stay.
        Lightning's default walks every list element, a few ms a step on a small model."""
        if isinstance(batch, dict):
            return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def training_step(self, batch: dict, batch_idx: int):
        if "input_ids" not in batch:  # every sample of this batch was corrupt
            return None
        out = self.mllm(**self.model_inputs(batch))
        loss = out.loss
        extra = self.extra_loss(batch, out)
        if extra is not None:
            self.log("train/extra_loss", extra.detach(), prog_bar=False)
            loss = loss + extra
        for name, plugin in self.plugins.items():  # named and additive; each one logged
            for term, value in plugin.loss_terms(self, batch, out).items():
                self.log(f"train/{name}/{term}", value.detach(), prog_bar=False)
                loss = loss + value
        self.log("train/loss", out.loss.detach(), prog_bar=True)
        self.log("train/skipped", batch["n_skipped"].float(), reduce_fx="sum")
        return loss

    def param_groups(self) -> list[dict]:
        """Optimizer groups: the method's modules at ``lr``, full-tuned parts at ``parts_lr``."""
        named = self.trainable_named()
        own = [p for p in named.values() if id(p) not in self._part_ids]
        parts = [p for p in named.values() if id(p) in self._part_ids]
        return [{"params": own}, {"params": parts, "lr": self.parts_lr or self.lr}]

    def configure_optimizers(self):
        groups = [g for g in self.param_groups() if g["params"]]
        opt = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(self.warmup_ratio * total))
        floor = self.min_lr_ratio

        def schedule(step: int) -> float:  # linear warm-up, cosine decay to floor * lr
            if step < warmup:
                return (step + 1) / warmup
            t = (step - warmup) / max(1, total - warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ evaluation
    def generate(self, batch: dict, max_new_tokens: int) -> list[str]:
        with self.eval_context(batch):
            return self.mllm.generate(batch, max_new_tokens=max_new_tokens)

    # ------------------------------------------------------------------ accounting / state
    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "total": total}

    def _owned(self, name: str, parts: set[str]) -> bool:
        """Whether a state-dict entry is the method's (or a trained part's), not the frozen base."""
        base = self._base_names
        return (
            name in parts
            or name.startswith("mllm.xmodal.")  # trained per modality, so always saved
            or name.startswith("plugins.")  # the plugins' statistics (importance, anchors)
            # peft renames a wrapped weight "x.weight" -> "x.base_layer.weight": still base
            or (name not in base and name.replace(".base_layer", "") not in base)
        )

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Tensors a task checkpoint must hold: everything that is not the frozen base."""
        parts = self.part_names()
        return {
            k: v.detach().cpu().contiguous()
            for k, v in self.state_dict().items()
            if self._owned(k, parts)
        }

    def keep_fp32_masters(self) -> int:
        """Over a bf16/fp16 base, make every trainable parameter and every parameter the method
        added fp32 (peft's convention for adapters): AdamW's update of a 1e-5 step on a bf16
        weight of 0.01 rounds to nothing. Adapters cast activations to their own dtype and back
        at their boundary; fully trained parts get that cast from hooks. In place (the
        parameters keep their identity). Returns how many tensors were cast."""
        parts = self.part_names()
        n = 0
        for name, p in self.named_parameters():
            if p.dtype in HALF and (p.requires_grad or self._owned(name, parts)):
                p.data = p.data.float()
                n += 1
        # the method's own statistics too (anchors, importances, bases, initial copies)
        for name, b in self.named_buffers():
            if b.dtype in HALF and self._owned(name, parts):
                b.data = b.data.float()
                n += 1
        if self.mllm is not None:
            for part in self.parts:
                for m in self.mllm.part_modules(part):
                    fp32_boundary(m)
        return n

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """A mid-task checkpoint: the frozen base stays out (it would be the whole model)."""
        checkpoint["state_dict"] = self.adapter_state()

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`adapter_state` saved: exactly the method's own tensors, in their
        shapes. A checkpoint that lacks one (an empty or partial file) or holds one the method
        does not have (another method's) is refused in one line, before anything is loaded;
        the frozen base is never in it (hence ``strict=False`` for the rest)."""
        from mcl.utils.io import CheckpointError

        own = self.state_dict()
        parts = self.part_names()
        want = {k for k in own if self._owned(k, parts)}
        unknown = sorted(k for k in state if k not in own)
        missing = sorted(want - set(state))
        shapes = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
        if unknown:
            raise CheckpointError(
                f"checkpoint has {len(unknown)} tensor(s) this {self.method_name} model does "
                f"not have, e.g. {unknown[0]}: it is another run's"
            )
        if missing:
            raise CheckpointError(
                f"checkpoint lacks {len(missing)} of the {len(want)} tensors {self.method_name} "
                f"keeps, e.g. {missing[0]}: it is damaged or partial"
            )
        if shapes:
            k = shapes[0]
            raise CheckpointError(
                f"checkpoint tensor {k} has shape {tuple(state[k].shape)}, the model's is "
                f"{tuple(own[k].shape)}: it is another run's"
            )
        self.load_state_dict(state, strict=False)


for _hook, _after in _PLUGGED.items():  # the base's own hooks too (a method may not override one)
    setattr(ContinualMethod, _hook, _then_plugins(getattr(ContinualMethod, _hook), _after))
