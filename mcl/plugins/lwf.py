"""lwf: Learning without Forgetting (Li & Hoiem 2016) for an MLLM. At the start of each task after
the first, the model as it is becomes a frozen teacher; while training the new task, the loss
gains ``lam * T^2 * KL(teacher || student)`` of the temperature-``T`` softened next-token
distributions at the answer positions of the *current* task's data (λ = 1 as in the EProj
codebase).

The teacher is not a second model: only the trainable tensors differ from the student, so they
are copied at task start and the teacher's forward runs the same modules with those copies
(``torch.func.functional_call``): memory of one adapter, not of one MLLM. Only tensors inside
the MLLM take part (a method's modules outside it are not part of that forward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from mcl.models.mllm import IGNORE_INDEX
from mcl.plugins.base import Plugin

PREFIX = "mllm."


class LwFPlugin(Plugin):
    name = "lwf"

    def __init__(self, lam: float = 1.0, temperature: float = 2.0):
        super().__init__()
        self.lam, self.temperature = lam, temperature
        self._teacher: dict[str, torch.Tensor] | None = None

    def before_task(self, method, task: int, dm) -> None:
        named = method.trainable_named().items()
        self._teacher = (
            None
            if task == 0
            else {n[len(PREFIX) :]: p.detach().clone() for n, p in named if n.startswith(PREFIX)}
        )

    def distillation(self, student_logits, teacher_logits, labels) -> torch.Tensor:
        """T^2 * KL(teacher || student) per answer token (logits at t predict token t+1)."""
        mask = labels[:, 1:] != IGNORE_INDEX
        T = self.temperature
        s = F.log_softmax(student_logits[:, :-1][mask].float() / T, dim=-1)
        t = F.log_softmax(teacher_logits[:, :-1][mask].float() / T, dim=-1)
        return T * T * F.kl_div(s, t, log_target=True, reduction="batchmean")

    def loss_terms(self, method, batch: dict, out) -> dict[str, torch.Tensor]:
        if not self._teacher:
            return {}
        inputs = {k: v for k, v in method.model_inputs(batch).items() if k != "labels"}
        device = out.logits.device
        if next(iter(self._teacher.values())).device != device:
            # copied at task start, before the Trainer moved the model to its device
            self._teacher = {n: t.to(device) for n, t in self._teacher.items()}
        with torch.no_grad():
            teacher = functional_call(method.mllm, self._teacher, args=(), kwargs=inputs)
        return {
            "distillation": self.lam
            * self.distillation(out.logits, teacher.logits, batch["labels"])
        }
