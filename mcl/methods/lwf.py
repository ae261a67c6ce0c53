"""lwf: Learning without Forgetting (Li & Hoiem 2016) for an MLLM. At the start of each task after
the first, the model as it is becomes a frozen teacher; while training the new task, the loss
gains ``lam * T^2 * KL(teacher || student)`` of the temperature-``T`` softened next-token
distributions at the answer positions of the *current* task's data (λ = 1 as in the EProj
codebase).

The teacher is not a second model: only the trainable tensors differ from the student, so they
are copied at task start and the teacher's forward runs the same modules with those copies
(``torch.func.functional_call``) — memory of one adapter, not of one MLLM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from mcl.methods.seq_lora import SeqLoRA
from mcl.models.mllm import IGNORE_INDEX


class LwF(SeqLoRA):
    def __init__(self, name: str = "lwf", lam: float = 1.0, temperature: float = 2.0, **kw):
        super().__init__(name=name, **kw)
        self.lam, self.temperature = lam, temperature
        self._teacher: dict[str, torch.Tensor] | None = None

    def on_task_start(self, task: int, dm) -> None:
        super().on_task_start(task, dm)
        prefix = "mllm."
        self._teacher = (
            None
            if task == 0
            else {n[len(prefix) :]: p.detach().clone() for n, p in self.trainable_named().items()}
        )

    def distillation(self, student_logits, teacher_logits, labels) -> torch.Tensor:
        """T^2 * KL(teacher || student) per answer token (logits at t predict token t+1)."""
        mask = labels[:, 1:] != IGNORE_INDEX
        T = self.temperature
        s = F.log_softmax(student_logits[:, :-1][mask].float() / T, dim=-1)
        t = F.log_softmax(teacher_logits[:, :-1][mask].float() / T, dim=-1)
        return T * T * F.kl_div(s, t, log_target=True, reduction="batchmean")

    def extra_loss(self, batch: dict, out) -> torch.Tensor | None:
        if self._teacher is None:
            return None
        inputs = {k: v for k, v in self.model_inputs(batch).items() if k != "labels"}
        device = out.logits.device
        if next(iter(self._teacher.values())).device != device:
            # copied at task start, before the Trainer moved the model to its device
            self._teacher = {n: t.to(device) for n, t in self._teacher.items()}
        with torch.no_grad():
            teacher = functional_call(self.mllm, self._teacher, args=(), kwargs=inputs)
        return self.lam * self.distillation(out.logits, teacher.logits, batch["labels"])
