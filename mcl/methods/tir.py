"""tir_ewc / tir_mas: task-similarity-informed regularisation (He et al. 2023, TIR).

EWC/MAS's quadratic penalty towards the task-start parameters, with the importance kept the TIR
way (shared/specs/eproj_tir.md):

- after task c, its importance (EWC: squared LM-loss gradients; MAS: |grad of ||logits||^2|) is
  normalised to sum to 1 and merged into the stored importance by an element-wise **max**, and
  each element remembers the task that produced its max (``owner``);
- at the start of task c, the task embeddings (image / instruction / answer, frozen encoders:
  :mod:`mcl.models.task_embedding`) give sim(c, j) for every earlier task j, and each element's
  importance is multiplied by ``1 - sim(c, owner)``: what a similar earlier task cared about is
  relaxed (the new task will likely keep it useful), a dissimilar task's stays protected.

Options for the original code's quirks: ``divide_by_iterations`` (the code divides the normalised
importance by the number of batches of the importance pass; default off, so ``lam`` means what it
means for ``ewc``); ``rescale_in_place`` (default on, as in the code: the (1 - sim) rescaling is
applied to the stored importance, so it compounds over tasks; off = a per-task rescaled copy);
``rescale_by_similarity`` (default on; off is an ablation, not the method: the max-merged
importance with no (1 - sim) rescaling, so "max" and "similarity" can be measured apart).
The similarity matrix of every task is saved in ``results.json`` (``method_info``).
"""

from __future__ import annotations

import torch

from mcl.methods.ewc import EWC
from mcl.methods.mas import MAS
from mcl.models.task_embedding import FrozenFeatures, task_embedding, task_similarity


class _TIR:
    """The TIR parts, mixed into EWC (tir_ewc) or MAS (tir_mas)."""

    def __init__(
        self,
        name: str,
        embed_samples: int = 1000,
        embed_seed: int = 0,
        divide_by_iterations: bool = False,
        rescale_in_place: bool = True,
        rescale_by_similarity: bool = True,
        **kw,
    ):
        kw.setdefault("lam", 1.0e5)
        super().__init__(name=name, **kw)  # EWC or MAS
        self.embed_samples, self.embed_seed = embed_samples, embed_seed
        self.divide_by_iterations, self.rescale_in_place = divide_by_iterations, rescale_in_place
        self.rescale_by_similarity = rescale_by_similarity
        self.normalize = True  # TIR's importance always sums to 1 per task
        self.embeddings: dict[int, dict[str, torch.Tensor]] = {}
        self.similarity: torch.Tensor | None = None
        self._scale: dict[str, torch.Tensor] | None = None

    def setup_model(self, mllm) -> None:
        mllm.require_image_features(self.method_name)  # image task embeddings
        super().setup_model(mllm)
        for n in sorted(self.expected_trainable()):
            p = self.get_parameter(n)
            owner = torch.full(p.shape, -1, dtype=torch.long, device=p.device)
            self.reg.register_buffer("owner__" + self._key(n), owner)
        self.features = FrozenFeatures(mllm)

    def owner(self, name: str) -> torch.Tensor:
        return self.reg.get_buffer("owner__" + self._key(name))

    def embed(self, task: int, dm) -> dict[str, torch.Tensor]:
        if task not in self.embeddings:  # recomputed after a resume: the draw is seeded
            samples = dm.sample_task(task, self.embed_samples, self.embed_seed)
            self.embeddings[task] = task_embedding(self.features, samples)
        return self.embeddings[task]

    def on_task_start(self, task: int, dm) -> None:
        super().on_task_start(task, dm)
        self._scale = None
        if task == 0 or dm is None:
            return
        self.similarity = task_similarity([self.embed(j, dm) for j in range(task + 1)])
        names = getattr(getattr(dm, "bench", None), "task_names", None)
        self._names = names or [f"task{j}" for j in range(task + 1)]
        if not self.rescale_by_similarity:  # the ablation: similarities logged, never applied
            return
        row = self.similarity[task]  # sim(c, j) for every j (j = c: 1)
        scales = {}
        for n in self.trainable_named():
            own = self.owner(n)
            factor = torch.where(own >= 0, 1 - row.to(own.device)[own.clamp(min=0)], 1.0)
            if self.rescale_in_place:
                self.importance(n).mul_(factor.to(self.importance(n).dtype))
            else:
                scales[n] = factor
        self._scale = scales or None
        self._active = self.has_importance()

    def weight(self, name: str) -> torch.Tensor:
        if self._scale is None:  # rescaled in place (the default), or nothing to rescale
            return self.importance(name)
        return self.importance(name) * self._scale[name]

    def on_task_end(self, task: int, dm) -> None:
        new = self.estimate_importance(self.task_batches(dm))
        if self.divide_by_iterations:
            new = {n: v / self.importance_batches for n, v in new.items()}
        for n, v in new.items():
            stored, own = self.importance(n), self.owner(n)
            wins = v > stored
            stored.copy_(torch.where(wins, v, stored))
            own.copy_(torch.where(wins, torch.full_like(own, task), own))
        if dm is not None:
            self.embed(task, dm)

    def task_info(self, task: int) -> dict:
        info = {"task_similarity": None if self.similarity is None else self.similarity.tolist()}
        if self.similarity is not None and task > 0:  # logged as method/similarity_to/<task>
            row = self.similarity[task]
            info["similarity_to"] = {self._names[j]: float(row[j]) for j in range(task)}
        # counted where the owners live; only the task + 1 totals come to the host
        owners = [self.owner(n) for n in self.trainable_named()]
        dev = owners[0].device if owners else torch.device("cpu")
        counts = torch.zeros(task + 1, dtype=torch.long, device=dev)
        for own in owners:  # shifted by one: bin 0 holds the elements no task owns (-1)
            own = own.to(dev).flatten() + 1
            counts += torch.bincount(own, minlength=task + 2)[1 : task + 2]
        info["importance_owner_share"] = (counts / counts.sum().clamp(min=1)).cpu().tolist()
        return info


class TIREWC(_TIR, EWC):
    def __init__(self, name: str = "tir_ewc", **kw):
        super().__init__(name=name, **kw)


class TIRMAS(_TIR, MAS):
    def __init__(self, name: str = "tir_mas", **kw):
        super().__init__(name=name, **kw)
