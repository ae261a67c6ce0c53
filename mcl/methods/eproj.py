"""eproj: task-similarity-informed model expansion (He et al. 2023, EProj).

The connector's output projection becomes an :class:`~mcl.adapters.expandable.ExpandableLinear`:
one expert per task, each a copy of the pretrained projection, plus an image key and an
instruction key per expert (uniform [0, 1) init). Everything else is frozen. For task t:

1. **key phase** (``key_steps``, default 2,000, before the Trainer): only task t's keys learn,
   loss = key_lambda * 0.1 * sum over the batch of (1 - cos(q_img, K_img[t])) +
   (1 - cos(q_inst, K_inst[t])), queries detached. The queries come from frozen encoders
   (:class:`~mcl.models.task_embedding.FrozenFeatures`): the vision tower's pooled output and the
   mean input embedding of the instruction. They are computed once for ``key_samples`` training
   samples and the steps draw mini-batches from them (same objective, no LM forward);
2. **main phase**: the LM loss through expert t only; every other expert and all keys frozen.

At test time each sample picks the expert whose keys it matches best, cos(q_img, K_img[e]) +
cos(q_inst, K_inst[e]), **per sample** (the original assumed batch size 1) — the task id is never
given. ``mask_untrained_experts`` (default true; the original did not mask) excludes experts whose
task has not been trained; before any task the pretrained projection answers. Task-id retrieval
accuracy is reported per evaluated task (``method_eval`` in results.json).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from mcl.adapters.expandable import ExpandableLinear
from mcl.methods.base import ContinualMethod
from mcl.models.task_embedding import FrozenFeatures


class EProj(ContinualMethod):
    image_only = True  # routes by pixel_values: no video/audio/... input modules

    def __init__(
        self,
        name: str = "eproj",
        key_steps: int = 2000,
        key_lr: float = 1e-2,
        key_batch_size: int = 32,
        key_samples: int = 1000,
        key_lambda: float = 1.0,
        key_scale: float = 0.1,
        mask_untrained_experts: bool = True,
        sample_seed: int = 0,
        **kw,
    ):
        super().__init__(name=name, **kw)
        self.key_steps, self.key_lr, self.key_batch_size = key_steps, key_lr, key_batch_size
        self.key_samples, self.key_lambda, self.key_scale = key_samples, key_lambda, key_scale
        self.mask_untrained_experts, self.sample_seed = mask_untrained_experts, sample_seed
        self.n_trained = 0  # experts whose task has been trained
        self._routes: list[torch.Tensor] = []
        self.key_losses: dict[int, float] = {}

    # ------------------------------------------------------------------ structure
    def setup_model(self, mllm) -> None:
        mllm.require_image_features("eproj")  # image keys from the tower
        super().setup_model(mllm)
        projector = mllm.part_modules("projector")[0]
        linears = [(n, m) for n, m in projector.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("eproj: the projector has no nn.Linear to expand")
        name, last = linears[-1]  # the connector's output projection
        parent = projector.get_submodule(name.rpartition(".")[0]) if "." in name else projector
        setattr(parent, name.rpartition(".")[2], ExpandableLinear(last))
        # reached through the model (a second registration would save every expert twice)
        self._expand_path = next(
            n for n, m in mllm.model.named_modules() if isinstance(m, ExpandableLinear)
        )
        # the pretrained copy is base, not something a task checkpoint must hold
        self._base_names |= {n for n in self.state_dict() if ".init_" in n}
        self.features = FrozenFeatures(mllm)
        d_txt = mllm.model.get_input_embeddings().weight.shape[1]
        self.dims = (self.features.image_dim, d_txt)
        self.keys_img, self.keys_inst = nn.ParameterList(), nn.ParameterList()

    @property
    def expand(self) -> ExpandableLinear:
        return self.mllm.model.get_submodule(self._expand_path)

    def add_expert(self) -> None:
        self.expand.add_expert()
        dev = self.expand.init_weight.device
        for keys, d in ((self.keys_img, self.dims[0]), (self.keys_inst, self.dims[1])):
            keys.append(nn.Parameter(torch.rand(d, device=dev), requires_grad=False))

    def on_resume(self, finished_task: int) -> None:
        while self.expand.n_experts <= finished_task:
            self.add_expert()
        self.n_trained = finished_task + 1

    # ------------------------------------------------------------------ training
    def on_task_start(self, task: int, dm) -> None:
        super().on_task_start(task, dm)
        while self.expand.n_experts <= task:
            self.add_expert()
        self.expand.active, self.expand.route = task, None
        if dm is not None and self.key_steps > 0:
            self.key_phase(task, dm)
        self.set_trainable()

    def expected_trainable(self) -> set[str]:
        own = set()
        if self.current_task is not None:
            t = self.current_task
            wanted = {id(self.expand.weights[t])}
            if len(self.expand.biases) > t:
                wanted.add(id(self.expand.biases[t]))
            own = {n for n, p in self.named_parameters() if id(p) in wanted}
        return super().expected_trainable() | own

    def queries(self, samples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features.samples(samples, kinds=("image", "instruction"))
        return feats["image"], feats["instruction"]

    def key_loss(self, q_img, q_inst, t: int) -> torch.Tensor:
        k_img, k_inst = self.keys_img[t], self.keys_inst[t]
        miss = (1 - F.cosine_similarity(q_img, k_img[None], dim=-1)) + (
            1 - F.cosine_similarity(q_inst, k_inst[None], dim=-1)
        )
        return self.key_lambda * self.key_scale * miss.sum()

    def key_phase(self, t: int, dm) -> None:
        """Fit task t's keys to its queries (detached); nothing else moves."""
        q_img, q_inst = self.queries(dm.sample_task(t, self.key_samples, self.sample_seed))
        keys = [self.keys_img[t], self.keys_inst[t]]
        for k in keys:
            k.requires_grad_(True)
        opt = torch.optim.Adam(keys, lr=self.key_lr, fused=True)  # 2 small tensors: one kernel
        gen = torch.Generator().manual_seed(self.sample_seed * 1000 + t)
        dev = keys[0].device
        loss = torch.zeros((), device=dev)
        q_img, q_inst = q_img.to(dev), q_inst.to(dev)
        size = min(self.key_batch_size, len(q_img))
        # every step's mini-batch drawn at once (the same draws as one per step) and copied to
        # the device once: an index from the host at each step would be a copy and a wait each
        order = torch.randint(len(q_img), (self.key_steps, size), generator=gen).to(dev)
        with torch.enable_grad():
            for idx in order:
                loss = self.key_loss(q_img[idx], q_inst[idx], t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        for k in keys:
            k.requires_grad_(False)
        self.key_losses[t] = float(loss.detach()) / max(1, size)

    def on_task_end(self, task: int, dm) -> None:
        self.n_trained = max(self.n_trained, task + 1)

    # ------------------------------------------------------------------ test time
    def select(self, q_img: torch.Tensor, q_inst: torch.Tensor) -> torch.Tensor:
        """Per-sample expert: argmax_e cos(q_img, K_img[e]) + cos(q_inst, K_inst[e])."""
        n = self.expand.n_experts
        if n == 0 or (self.mask_untrained_experts and self.n_trained == 0):
            return torch.full((len(q_img),), -1, dtype=torch.long)  # the pretrained projection
        k_img = torch.stack(list(self.keys_img)).to(q_img.device)
        k_inst = torch.stack(list(self.keys_inst)).to(q_inst.device)
        scores = F.cosine_similarity(q_img[:, None], k_img[None], dim=-1) + F.cosine_similarity(
            q_inst[:, None], k_inst[None], dim=-1
        )
        if self.mask_untrained_experts:
            scores[:, self.n_trained :] = float("-inf")
        return scores.argmax(-1)

    @contextlib.contextmanager
    def eval_context(self, batch: dict):
        q_img = self.features.image(batch["pixel_values"])
        q_inst = self.features.text(batch["questions"])
        route = self.select(q_img, q_inst)
        self._routes.append(route.cpu())
        self.expand.route = route
        try:
            yield
        finally:
            self.expand.route = None

    def eval_metrics(self, task: int | None) -> dict[str, float]:
        routes = torch.cat(self._routes) if self._routes else torch.zeros(0, dtype=torch.long)
        self._routes = []
        if task is None or not len(routes) or bool((routes < 0).all()):
            return {}  # unseen task, or no trained expert yet (the pretrained projection ran)
        return {"task_id_acc": 100.0 * float((routes == task).float().mean())}

    def task_info(self, task: int) -> dict:
        return {"key_loss": self.key_losses.get(task), "experts": self.expand.n_experts}
