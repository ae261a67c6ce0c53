"""fwd_prompt: a multimodal prompt pool with gradient projection (Zheng et al. 2024, Fwd-Prompt).

**Reconstructed from the paper's description**: there is no public implementation, so every
unknown is an option (docs/methods/fwd_prompt.md).

Model side. The MLLM is frozen. A pool of ``pool_size`` prompts, each an image key
(``d_img``), a text key (``d_lm``) and a value of ``prompt_length`` vectors in the LM's input
space. Per sample, train and test alike (no task id), the score of prompt j is
``cos(q_img, k_img_j) + cos(q_txt, k_txt_j)`` with queries from frozen encoders (the vision
tower's pooled feature; the mean input embedding of the instruction); the ``top_n`` best
prompts' values fill ``top_n * prompt_length`` slots that the collator places right after the
image tokens, before the instruction, written through a hook on the input embeddings. Until a
first task has trained there are no slots and no prompts (the collator adds none): row 0 is the
untouched base, the same answers as ``zero_shot``'s, so FWT has every method's baseline. Loss =
LM loss + ``key_lambda`` * mean over samples of sum over the chosen prompts of (1 - s_j / 2).
``task_slices`` (option) gives each task its own ``pool_size // T`` prompts to train
(selection at test ranges over every trained slice).

Subspace side (:class:`~mcl.callbacks.subspace.SubspaceProjection`). Before task 1 the
untouched base (no prompt slots) runs on ``probe_samples`` of it and the LM's input embeddings
(at ``collect_at``, the first decoder layer's input, non-padding positions) give the pre-trained
basis (energy ``eps_pre``; ``pre_probe: vocabulary`` takes the input-embedding table's rows
instead, no data needed); after each task its embeddings, with the trained prompts in their
slots, extend the old-task basis (energy ``eps_task`` + ``eps_increment`` per task). Prompt
values and text keys (rows in the input space) are then projected every optimizer step:
``interference`` (default: remove the old-task directions that pre-training does not share),
``gpm`` or ``additive`` (``projection``); ``projection: none`` turns it off. ``project_on:
update`` (default) projects the update the optimizer applied, so that the parameters move only
in the allowed space with the method's AdamW (whose per-coordinate scaling would put a projected
gradient's step back into the protected directions); ``gradient`` projects ``p.grad`` before the
step, the spec's literal form, which holds for plain SGD only. Image keys live in another space
and are not projected.
The bases come from the d x d Gram matrix of those rows, accumulated batch by batch on the model's
device in float32 (:class:`~mcl.callbacks.subspace.Gram`), never from an N x d matrix.
"""

from __future__ import annotations

import contextlib

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from mcl.callbacks.subspace import (
    MODES,
    TARGETS,
    Gram,
    SubspaceProjection,
    collect_inputs,
    extend_basis,
)
from mcl.methods.base import ContinualMethod
from mcl.models.mllm import model_inputs
from mcl.models.task_embedding import FrozenFeatures


class FwdPrompt(ContinualMethod):
    image_only = True  # routes by pixel_values: no video/audio/... input modules

    def __init__(
        self,
        name: str = "fwd_prompt",
        pool_size: int = 10,
        top_n: int = 5,
        prompt_length: int = 5,
        key_lambda: float = 0.1,
        task_slices: bool = False,
        n_tasks: int | None = None,
        projection: str = "interference",
        project_on: str = "update",
        alpha: float = 1.0,
        eps_pre: float = 0.97,
        eps_task: float = 0.97,
        eps_increment: float = 0.003,
        tau: float = 0.1,
        probe_samples: int = 200,
        pre_probe: str = "first_task",
        collect_at: str = "layers.0",
        sample_seed: int = 0,
        **kw,
    ):
        super().__init__(name=name, **kw)
        if projection not in (*MODES, "none"):
            raise ValueError(f"projection must be one of {', '.join(MODES)} or none")
        if project_on not in TARGETS:
            raise ValueError(f"project_on must be one of {', '.join(TARGETS)}, not {project_on!r}")
        if pre_probe not in ("first_task", "vocabulary"):
            raise ValueError(f"pre_probe must be first_task or vocabulary, not {pre_probe!r}")
        if not 0 < top_n <= pool_size:
            raise ValueError(f"top_n={top_n} must be in 1..pool_size={pool_size}")
        self.pool_size, self.top_n, self.prompt_length = pool_size, top_n, prompt_length
        self.key_lambda, self.task_slices, self.n_tasks = key_lambda, task_slices, n_tasks
        self.projection, self.alpha, self.tau = projection, alpha, tau
        self.project_on = project_on
        self.slots = top_n * prompt_length  # soft-prompt slots once a task trains
        self.eps_pre, self.eps_task, self.eps_increment = eps_pre, eps_task, eps_increment
        self.probe_samples, self.collect_at, self.sample_seed = (
            probe_samples,
            collect_at,
            sample_seed,
        )
        self.pre_probe = pre_probe
        self.n_trained = 0
        self._stash: tuple[torch.Tensor, torch.Tensor] | None = None  # (mask, values)
        self._picked: list[torch.Tensor] = []
        self._scores: torch.Tensor | None = None  # this step's chosen-prompt scores (key loss)
        self.basis_info: dict[int, dict] = {}

    # ------------------------------------------------------------------ structure
    def setup_model(self, mllm) -> None:
        mllm.require_image_features("fwd_prompt")  # image queries; soft-prompt slots
        super().setup_model(mllm)
        self.features = FrozenFeatures(mllm)
        emb = mllm.model.get_input_embeddings()
        d_lm, d_img = emb.weight.shape[1], self.features.image_dim
        g = torch.Generator().manual_seed(self.sample_seed)
        scale = float(emb.weight.detach().float().std())
        self.values = nn.Parameter(
            torch.randn(self.pool_size, self.prompt_length, d_lm, generator=g) * scale
        )
        self.keys_img = nn.Parameter(torch.rand(self.pool_size, d_img, generator=g) * 2 - 1)
        self.keys_txt = nn.Parameter(torch.rand(self.pool_size, d_lm, generator=g) * 2 - 1)
        self.register_buffer("b_pre", torch.zeros(d_lm, 0))
        self.register_buffer("b_old", torch.zeros(d_lm, 0))
        mllm.collator.virtual_tokens = 0  # no slots until a task trains: row 0 is the base
        emb.register_forward_hook(self._write_prompts)

    @property
    def has_prompts(self) -> bool:
        """Whether inputs carry prompts: while a task trains and once one has."""
        return self.current_task is not None or self.n_trained > 0

    def _set_slots(self) -> None:
        """The collator adds the prompt slots exactly when inputs carry prompts."""
        self.mllm.collator.virtual_tokens = self.slots if self.has_prompts else 0

    def _write_prompts(self, module, args, output):
        """Put the chosen prompt vectors into the soft-prompt slots (only on the full prompt:
        cached decoding steps see one new token and pass through)."""
        if self._stash is None:
            return output
        mask, values = self._stash
        if output.shape[:2] != mask.shape:
            return output
        mask = mask.to(output.device)
        return output.masked_scatter(mask[..., None], values.to(output.dtype))

    def slice_of(self, task: int) -> range:
        """Prompts task ``task`` trains (all of them unless ``task_slices``)."""
        if not self.task_slices:
            return range(self.pool_size)
        T = self.n_tasks or (len(self._dm.bench.tasks) if self._dm else 1)
        per = max(1, self.pool_size // T)
        return range(min(task * per, self.pool_size - per), min((task + 1) * per, self.pool_size))

    def expected_trainable(self) -> set[str]:
        own = {"values", "keys_img", "keys_txt"} if self.current_task is not None else set()
        return super().expected_trainable() | own

    # ------------------------------------------------------------------ selection
    def queries(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features.image(batch["pixel_values"]), self.features.text(batch["questions"])

    def select(self, batch: dict, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen prompt indices (B, top_n), their scores s_j (B, top_n))."""
        q_img, q_txt = self.queries(batch)
        dev = self.values.device
        s = F.cosine_similarity(q_img.to(dev)[:, None], self.keys_img[None], dim=-1)
        s = s + F.cosine_similarity(q_txt.to(dev)[:, None], self.keys_txt[None], dim=-1)
        allowed = torch.zeros(self.pool_size, dtype=torch.bool, device=dev)
        if training and self.current_task is not None:
            allowed[list(self.slice_of(self.current_task))] = True
        else:
            for t in range(max(1, self.n_trained)):
                allowed[list(self.slice_of(t))] = True
        k = min(self.top_n, int(allowed.sum()))
        idx = s.masked_fill(~allowed, float("-inf")).topk(k, dim=1).indices
        if k < self.top_n:  # a small slice: repeat its best prompts to fill the slots
            idx = idx.repeat(1, -(-self.top_n // k))[:, : self.top_n]
        idx = idx.sort(dim=1).values  # slot order follows the pool, not the score
        return idx, s.gather(1, idx)

    def _stage(self, batch: dict, training: bool) -> torch.Tensor:
        idx, scores = self.select(batch, training)
        vals = self.values[idx].reshape(len(idx), -1, self.values.shape[-1])
        self._stash = (batch["virtual_mask"], vals)
        if not training:  # which prompts answered, for eval_metrics
            self._picked.append(idx.detach().cpu())
        return scores

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int):
        # choose and place the prompts; the base step runs the model and adds extra_loss
        self._scores = self._stage(batch, training=True) if "input_ids" in batch else None
        try:
            return super().training_step(batch, batch_idx)
        finally:
            self._stash, self._scores = None, None

    def extra_loss(self, batch: dict, out) -> torch.Tensor:
        key_loss = (1 - self._scores / 2).sum(1).mean()
        self.log("train/key_loss", key_loss.detach())
        return self.key_lambda * key_loss

    @contextlib.contextmanager
    def eval_context(self, batch: dict):
        if "virtual_mask" in batch:  # slots once a task trained; without them: the base alone
            self._stage(batch, training=False)
        try:
            yield
        finally:
            self._stash = None

    # ------------------------------------------------------------------ subspaces
    def input_gram(self, samples: list[dict], size: int = 32, prompts: bool = True) -> Gram:
        """X^T X of the LM's input rows X at ``collect_at`` (non-padding positions) for
        ``samples``: with the current prompts in their slots, or (``prompts=False``) as the
        untouched base sees them, without slots. Accumulated per batch on the model's device
        in float32; a batch's rows are dropped once added."""
        layer = self.mllm.part_modules("lm")[0].get_submodule(self.collect_at)
        gram = Gram()
        was = self.training
        self.eval()
        if not prompts:
            self.mllm.collator.virtual_tokens = 0
        try:
            for batch in self.device_batches(samples, size, prompts=True):
                with torch.no_grad(), collect_inputs(layer) as got, self.eval_context(batch):
                    self.mllm(**model_inputs(batch))
                keep = batch["attention_mask"].reshape(-1, 1)
                rows = torch.cat(got)[: len(keep)]
                gram.add(rows * keep.to(rows))  # padding rows zeroed: they add nothing
        finally:
            self._picked = []
            self.train(was)
            self._set_slots()
        return gram

    def on_task_start(self, task: int, dm) -> None:
        super().on_task_start(task, dm)
        if dm is not None and task == 0 and self.b_pre.shape[1] == 0 and self.projection != "none":
            if self.pre_probe == "vocabulary":  # every token's input embedding: no data needed
                h = Gram.of(self.mllm.model.get_input_embeddings().weight.detach().float())
            else:  # the untouched base (no slots, no prompts) on the first task's samples
                samples = dm.sample_task(0, self.probe_samples, self.sample_seed)
                h = self.input_gram(samples, prompts=False)
            b, k = extend_basis(self.b_pre.to(h.matrix), h, self.eps_pre)
            self.b_pre = b.to(self.b_pre)
            self.basis_info[-1] = {"pre_dims": k}
        self._set_slots()
        self.set_trainable()

    def on_task_end(self, task: int, dm) -> None:
        self.n_trained = max(self.n_trained, task + 1)
        if dm is None or self.projection == "none":
            return
        h = self.input_gram(dm.sample_task(task, self.probe_samples, self.sample_seed))
        eps = min(1.0, self.eps_task + self.eps_increment * task)
        b, k = extend_basis(self.b_old.to(h.matrix), h, eps)
        self.b_old = b.to(self.b_old)
        self.basis_info[task] = {"new_dims": k, "old_dims": self.b_old.shape[1]}

    def on_resume(self, finished_task: int) -> None:
        self.n_trained = finished_task + 1
        self._set_slots()

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        for name in ("b_pre", "b_old"):  # bases grow: take the checkpoint's width
            if name in state:
                setattr(self, name, torch.empty_like(state[name]).to(getattr(self, name)))
        super().load_adapter_state(state)

    def projector(self) -> SubspaceProjection:
        cb = SubspaceProjection(
            lambda: [self.values, self.keys_txt],
            mode=self.projection if self.projection != "none" else "gpm",
            alpha=self.alpha,
            tau=self.tau,
            enabled=self.projection != "none" and self.b_old.shape[1] > 0,
            on=self.project_on,
        )
        cb.b_pre, cb.b_old = self.b_pre, self.b_old
        cb.refresh()
        return cb

    def callbacks(self) -> list[L.Callback]:
        return [self.projector()]

    # ------------------------------------------------------------------ reporting
    def eval_metrics(self, task: int | None) -> dict[str, float]:
        picked = torch.cat(self._picked) if self._picked else None
        self._picked = []
        if picked is None:
            return {}
        used = torch.bincount(picked.flatten(), minlength=self.pool_size).float()
        return {"prompts_used": float((used > 0).sum())}

    def task_info(self, task: int) -> dict:
        cb = self.projector()
        info = {
            "pre_dims": int(self.b_pre.shape[1]),
            "old_dims": int(self.b_old.shape[1]),
            "interference_dims": int(cb.b_s.shape[1]) if cb.b_s is not None else 0,
        }
        return info | self.basis_info.get(task, {})
