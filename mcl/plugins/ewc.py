"""ewc: a quadratic penalty towards the task-start parameters, weighted by each parameter's
importance to earlier tasks (Kirkpatrick et al. 2017; online form), on any method's trainable
tensors.

After each task the importance of every trainable element is estimated on that task's training
data, rescaled to sum to 1 (``normalize``, as TIR does: the raw Fisher of a task the model
already predicts confidently is ~40x smaller than the next one's on synth, so raw sums let the
newest task dominate and make ``lam`` mean different things for ewc and mas), and accumulated,
``Omega <- gamma * Omega + Omega_task`` (gamma = 1: plain sum; < 1: online EWC's decay). During
task t the loss gains

    lam * c * sum Omega * (theta - theta*)^2,   theta* = the parameters at the start of task t,

with c = 1/2 (``half: true``, the usual form) or 1. EWC's importance is the empirical Fisher: the
squared gradient of the LM loss, per batch, averaged over ``importance_batches`` batches;
:mod:`mcl.plugins.mas` swaps in its own importance, and ``tir`` (:mod:`mcl.plugins.tir`) keeps
the importance TIR's way (element-wise max, rescaled by task similarity).

The tensors are those the method trains when the plugin is set up (after ``setup_model``).
"""

from __future__ import annotations

import torch

from mcl.plugins.base import Plugin


class EWCPlugin(Plugin):
    name = "ewc"

    def __init__(
        self,
        lam: float = 1.0e5,
        gamma: float = 1.0,
        half: bool = True,
        normalize: bool = True,
        importance_batches: int = 16,
        tir=None,
    ):
        super().__init__()
        self.lam, self.gamma, self.half = lam, gamma, half
        self.normalize, self.importance_batches = normalize, importance_batches
        self.tir = tir  # TIR's importance policy (an nn.Module: its owners are saved too)
        if tir is not None:
            self.name = "tir_" + type(self).name
            self.normalize = True  # TIR's importance always sums to 1 per task
        self._active = False  # any importance yet? (no penalty during the first task)

    # buffers are registered on the plugin: saved in task checkpoints, moved with .to()
    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    def check_model(self, method, mllm) -> None:
        if self.tir is not None:
            self.tir.check_model(self, method, mllm)

    def setup(self, method) -> None:
        for n in sorted(method.expected_trainable()):
            p = method.get_parameter(n)
            self.register_buffer("importance__" + self._key(n), torch.zeros_like(p))
            self.register_buffer("anchor__" + self._key(n), p.detach().clone())
        if self.tir is not None:
            self.tir.setup(self, method)

    def importance(self, name: str) -> torch.Tensor:
        return self.get_buffer("importance__" + self._key(name))

    def anchor(self, name: str) -> torch.Tensor:
        return self.get_buffer("anchor__" + self._key(name))

    def before_task(self, method, task: int, dm) -> None:
        for n, p in method.trainable_named().items():
            self.anchor(n).copy_(p.detach())
        self._active = self.has_importance(method)
        if self.tir is not None and self.tir.before_task(self, method, task, dm):
            self._active = self.has_importance(method)

    def has_importance(self, method) -> bool:
        """Whether any trainable element has importance yet (one read from the device)."""
        flags = [self.importance(n).any() for n in method.trainable_named()]
        return bool(torch.stack([f.to(flags[0].device) for f in flags]).any()) if flags else False

    def weight(self, name: str) -> torch.Tensor:
        """Each element's penalty weight: its importance (TIR may rescale it)."""
        if self.tir is not None:
            return self.tir.weight(self, name)
        return self.importance(name)

    def penalty(self, method) -> torch.Tensor:
        terms = [
            (self.weight(n) * (p - self.anchor(n)) ** 2).sum()
            for n, p in method.trainable_named().items()
        ]
        return self.lam * (0.5 if self.half else 1.0) * torch.stack(terms).sum()

    def loss_terms(self, method, batch: dict, out) -> dict[str, torch.Tensor]:
        return {"penalty": self.penalty(method)} if self._active else {}

    # ------------------------------------------------------------------ importance
    def importance_loss(self, method, batch: dict) -> torch.Tensor:
        """The scalar whose gradient measures importance (EWC: the LM loss)."""
        return method.mllm(**batch).loss

    def importance_of(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.pow(2)  # empirical Fisher

    def estimate_importance(self, method, batches) -> dict[str, torch.Tensor]:
        """Mean per-batch importance of every trainable element over ``batches``."""
        named = method.trainable_named()
        total = {n: torch.zeros_like(p) for n, p in named.items()}
        count = 0
        was_training = method.training
        method.eval()  # no dropout: importance of the model as it is
        with torch.enable_grad():
            for batch in batches:
                method.zero_grad(set_to_none=True)
                self.importance_loss(method, batch).backward()
                for n, p in named.items():
                    if p.grad is not None:
                        total[n] += self.importance_of(p.grad.detach())
                count += 1
        method.zero_grad(set_to_none=True)
        method.train(was_training)
        imp = {n: t / max(1, count) for n, t in total.items()}
        if self.normalize:  # one read of every tensor's sum from the device, not one per tensor
            sums = [t.sum() for t in imp.values()]
            s = sum(torch.stack([v.to(sums[0].device) for v in sums]).tolist()) if sums else 0.0
            s = s or 1.0
            imp = {n: t / s for n, t in imp.items()}
        return imp

    def task_batches(self, method, dm):
        """Up to ``importance_batches`` training batches of the current task, on the model's
        device (where its parameters are, whatever Lightning last recorded as ours)."""
        dev = next(method.mllm.model.parameters()).device
        # the whole stream on every rank (not this rank's shards): same importance everywhere
        for i, batch in enumerate(dm.train_dataloader(split=False)):
            if i >= self.importance_batches:
                break
            if "input_ids" in batch:  # an all-corrupt batch has nothing to measure
                yield {k: v.to(dev) for k, v in method.model_inputs(batch).items()}

    def after_task(self, method, task: int, dm) -> None:
        new = self.estimate_importance(method, self.task_batches(method, dm))
        if self.tir is not None:
            self.tir.merge(self, task, new, dm)
            return
        for n, v in new.items():
            self.importance(n).mul_(self.gamma).add_(v)

    def task_info(self, method, task: int) -> dict:
        return {} if self.tir is None else self.tir.task_info(self, method, task)
