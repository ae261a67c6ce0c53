"""TIR: task-similarity-informed regularisation (He et al. 2023), as the importance policy of
a penalty plugin (``ewc`` or ``mas`` with ``tir:``; conf/plugin/tir_ewc.yaml, tir_mas.yaml).

The penalty stays EWC/MAS's quadratic one towards the task-start parameters; what TIR changes is
how the importance is kept (docs/methods/baselines.md):

- after task c, its importance (EWC: squared LM-loss gradients; MAS: |grad of ||logits||^2|) is
  normalised to sum to 1 and merged into the stored importance by an element-wise **max**, and
  each element remembers the task that produced its max (``owner``);
- at the start of task c, the task embeddings (image / instruction / answer, frozen encoders:
  :mod:`mcl.models.task_embedding`) give sim(c, j) for every earlier task j, and each element's
  importance is multiplied by ``1 - sim(c, owner)``: what a similar earlier task cared about is
  relaxed (the new task will likely keep it useful), a dissimilar task's stays protected.

It is an option of the penalty plugin rather than a plugin of its own because it replaces the
penalty's accumulation rule; a separate plugin would have to reach into another's state.

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
from torch import nn

from mcl.models.task_embedding import FrozenFeatures, task_embedding, task_similarity


class TIR(nn.Module):
    """TIR's importance keeping, driven by its penalty plugin (``penalty``) at each hook."""

    def __init__(
        self,
        embed_samples: int = 1000,
        embed_seed: int = 0,
        divide_by_iterations: bool = False,
        rescale_in_place: bool = True,
        rescale_by_similarity: bool = True,
    ):
        super().__init__()
        self.embed_samples, self.embed_seed = embed_samples, embed_seed
        self.divide_by_iterations, self.rescale_in_place = divide_by_iterations, rescale_in_place
        self.rescale_by_similarity = rescale_by_similarity
        self.embeddings: dict[int, dict[str, torch.Tensor]] = {}
        self.similarity: torch.Tensor | None = None
        self._scale: dict[str, torch.Tensor] | None = None

    def check_model(self, penalty, method, mllm) -> None:
        name = method.method_name
        mllm.require_image_features(name if name == penalty.name else f"{name} + {penalty.name}")

    def setup(self, penalty, method) -> None:
        for n in sorted(method.expected_trainable()):
            p = method.get_parameter(n)
            owner = torch.full(p.shape, -1, dtype=torch.long, device=p.device)
            self.register_buffer("owner__" + penalty._key(n), owner)
        self._key = penalty._key
        self.features = FrozenFeatures(method.mllm)

    def owner(self, name: str) -> torch.Tensor:
        return self.get_buffer("owner__" + self._key(name))

    def embed(self, task: int, dm) -> dict[str, torch.Tensor]:
        if task not in self.embeddings:  # recomputed after a resume: the draw is seeded
            samples = dm.sample_task(task, self.embed_samples, self.embed_seed)
            self.embeddings[task] = task_embedding(self.features, samples)
        return self.embeddings[task]

    def before_task(self, penalty, method, task: int, dm) -> bool:
        """Rescale the importance for task ``task``; True when it did (its mass changed)."""
        self._scale = None
        if task == 0 or dm is None:
            return False
        self.similarity = task_similarity([self.embed(j, dm) for j in range(task + 1)])
        names = getattr(getattr(dm, "bench", None), "task_names", None)
        self._names = names or [f"task{j}" for j in range(task + 1)]
        if not self.rescale_by_similarity:  # the ablation: similarities logged, never applied
            return False
        row = self.similarity[task]  # sim(c, j) for every j (j = c: 1)
        scales = {}
        for n in method.trainable_named():
            own = self.owner(n)
            factor = torch.where(own >= 0, 1 - row.to(own.device)[own.clamp(min=0)], 1.0)
            if self.rescale_in_place:
                penalty.importance(n).mul_(factor.to(penalty.importance(n).dtype))
            else:
                scales[n] = factor
        self._scale = scales or None
        return True

    def weight(self, penalty, name: str) -> torch.Tensor:
        if self._scale is None:  # rescaled in place (the default), or nothing to rescale
            return penalty.importance(name)
        return penalty.importance(name) * self._scale[name]

    def merge(self, penalty, task: int, new: dict[str, torch.Tensor], dm) -> None:
        """Keep the element-wise max of the stored and the new importance, and its owner."""
        if self.divide_by_iterations:
            new = {n: v / penalty.importance_batches for n, v in new.items()}
        for n, v in new.items():
            stored, own = penalty.importance(n), self.owner(n)
            wins = v > stored
            stored.copy_(torch.where(wins, v, stored))
            own.copy_(torch.where(wins, torch.full_like(own, task), own))
        if dm is not None:
            self.embed(task, dm)

    def task_info(self, penalty, method, task: int) -> dict:
        info = {"task_similarity": None if self.similarity is None else self.similarity.tolist()}
        if self.similarity is not None and task > 0:  # logged as method/similarity_to/<task>
            row = self.similarity[task]
            info["similarity_to"] = {self._names[j]: float(row[j]) for j in range(task)}
        # counted where the owners live; only the task + 1 totals come to the host
        owners = [self.owner(n) for n in method.trainable_named()]
        dev = owners[0].device if owners else torch.device("cpu")
        counts = torch.zeros(task + 1, dtype=torch.long, device=dev)
        for own in owners:  # shifted by one: bin 0 holds the elements no task owns (-1)
            own = own.to(dev).flatten() + 1
            counts += torch.bincount(own, minlength=task + 2)[1 : task + 2]
        info["importance_owner_share"] = (counts / counts.sum().clamp(min=1)).cpu().tolist()
        return info
