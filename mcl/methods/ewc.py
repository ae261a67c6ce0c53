"""ewc: seq_lora's trainable part plus a quadratic penalty towards the task-start parameters,
weighted by each parameter's importance to earlier tasks (Kirkpatrick et al. 2017; online form).

After each task the importance of every trainable element is estimated on that task's training
data, rescaled to sum to 1 (``normalize``, as TIR does: the raw Fisher of a task the model
already predicts confidently is ~40x smaller than the next one's on synth, so raw sums let the
newest task dominate and make ``lam`` mean different things for ewc and mas), and accumulated,
``Omega <- gamma * Omega + Omega_task`` (gamma = 1: plain sum; < 1: online EWC's decay). During
task t the loss gains

    lam * c * sum Omega * (theta - theta*)^2,   theta* = the parameters at the start of task t,

with c = 1/2 (``half: true``, the usual form) or 1. EWC's importance is the empirical Fisher: the
squared gradient of the LM loss, per batch, averaged over ``importance_batches`` batches; ``mas``
swaps in its own importance.
"""

from __future__ import annotations

import torch
from torch import nn

from mcl.methods.seq_lora import SeqLoRA


class EWC(SeqLoRA):
    def __init__(
        self,
        name: str = "ewc",
        lam: float = 1.0e5,
        gamma: float = 1.0,
        half: bool = True,
        normalize: bool = True,
        importance_batches: int = 16,
        **kw,
    ):
        super().__init__(name=name, **kw)
        self.lam, self.gamma, self.half = lam, gamma, half
        self.normalize, self.importance_batches = normalize, importance_batches
        self._active = False  # any importance yet? (no penalty during the first task)

    # buffers live in a child module so they are saved in task checkpoints and move with .to()
    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    def setup_model(self, mllm) -> None:
        super().setup_model(mllm)
        self.reg = nn.Module()
        for n in sorted(self.expected_trainable()):
            p = self.get_parameter(n)
            self.reg.register_buffer("importance__" + self._key(n), torch.zeros_like(p))
            self.reg.register_buffer("anchor__" + self._key(n), p.detach().clone())

    def importance(self, name: str) -> torch.Tensor:
        return self.reg.get_buffer("importance__" + self._key(name))

    def anchor(self, name: str) -> torch.Tensor:
        return self.reg.get_buffer("anchor__" + self._key(name))

    def on_task_start(self, task: int, dm) -> None:
        super().on_task_start(task, dm)
        for n, p in self.trainable_named().items():
            self.anchor(n).copy_(p.detach())
        self._active = self.has_importance()

    def has_importance(self) -> bool:
        """Whether any trainable element has importance yet (one read from the device)."""
        flags = [self.importance(n).any() for n in self.trainable_named()]
        return bool(torch.stack([f.to(flags[0].device) for f in flags]).any()) if flags else False

    def weight(self, name: str) -> torch.Tensor:
        """Each element's penalty weight: its importance (TIR rescales it)."""
        return self.importance(name)

    def penalty(self) -> torch.Tensor:
        terms = [
            (self.weight(n) * (p - self.anchor(n)) ** 2).sum()
            for n, p in self.trainable_named().items()
        ]
        return self.lam * (0.5 if self.half else 1.0) * torch.stack(terms).sum()

    def extra_loss(self, batch: dict, out) -> torch.Tensor | None:
        return self.penalty() if self._active else None

    # ------------------------------------------------------------------ importance
    def importance_loss(self, batch: dict) -> torch.Tensor:
        """The scalar whose gradient measures importance (EWC: the LM loss)."""
        return self.mllm(**batch).loss

    def importance_of(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.pow(2)  # empirical Fisher

    def estimate_importance(self, batches) -> dict[str, torch.Tensor]:
        """Mean per-batch importance of every trainable element over ``batches``."""
        named = self.trainable_named()
        total = {n: torch.zeros_like(p) for n, p in named.items()}
        count = 0
        was_training = self.training
        self.eval()  # no dropout: importance of the model as it is
        with torch.enable_grad():
            for batch in batches:
                self.zero_grad(set_to_none=True)
                self.importance_loss(batch).backward()
                for n, p in named.items():
                    if p.grad is not None:
                        total[n] += self.importance_of(p.grad.detach())
                count += 1
        self.zero_grad(set_to_none=True)
        self.train(was_training)
        imp = {n: t / max(1, count) for n, t in total.items()}
        if self.normalize:  # one read of every tensor's sum from the device, not one per tensor
            sums = [t.sum() for t in imp.values()]
            s = sum(torch.stack([v.to(sums[0].device) for v in sums]).tolist()) if sums else 0.0
            s = s or 1.0
            imp = {n: t / s for n, t in imp.items()}
        return imp

    def task_batches(self, dm):
        """Up to ``importance_batches`` training batches of the current task, on the model's
        device (where its parameters are, whatever Lightning last recorded as ours)."""
        dev = next(self.mllm.model.parameters()).device
        # the whole stream on every rank (not this rank's shards): same importance everywhere
        for i, batch in enumerate(dm.train_dataloader(split=False)):
            if i >= self.importance_batches:
                break
            if "input_ids" in batch:  # an all-corrupt batch has nothing to measure
                yield {k: v.to(dev) for k, v in self.model_inputs(batch).items()}

    def on_task_end(self, task: int, dm) -> None:
        super().on_task_end(task, dm)
        for n, new in self.estimate_importance(self.task_batches(dm)).items():
            buf = self.importance(n)
            buf.mul_(self.gamma).add_(new)
