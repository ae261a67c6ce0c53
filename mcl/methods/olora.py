"""olora: orthogonal subspace LoRA (Wang et al. 2023, O-LoRA). Each task gets a new peft LoRA
adapter; the earlier ones stay frozen but remain active (their outputs are summed), and the new
one is pushed into a subspace orthogonal to theirs by

    lam_orth * sum_layers sum_{i<t} sum |A_i A_t^T|        (+ lam_l2 * ||A_t, B_t||^2),

the paper's L1 form on the LoRA down-projections (λ1 = 0.5, λ2 = 0 by default). At test time the
sum of every task's adapter runs — no task id.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

from mcl.methods.base import ContinualMethod


class OLoRA(ContinualMethod):
    def __init__(
        self,
        name: str = "olora",
        r: int = 8,
        alpha: int = 16,
        dropout: float = 0.0,
        targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
        lam_orth: float = 0.5,
        lam_l2: float = 0.0,
        **kw,
    ):
        super().__init__(name=name, **kw)
        self.r, self.alpha, self.dropout, self.targets = r, alpha, dropout, list(targets)
        self.lam_orth, self.lam_l2 = lam_orth, lam_l2
        self.n_adapters = 0

    @staticmethod
    def adapter(t: int) -> str:
        return f"task{t}"

    def lora_layers(self) -> list[LoraLayer]:
        return [m for m in self.modules() if isinstance(m, LoraLayer)]

    def add_adapter(self) -> None:
        """A new adapter for the next task; all adapters active, only the new one trainable."""
        t = self.n_adapters
        cfg = LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.mllm.lm_targets(self.targets),
        )
        with warnings.catch_warnings():  # "multiple adapters": exactly what O-LoRA wants
            warnings.filterwarnings("ignore", message=".*peft_config.*")
            inject_adapter_in_model(cfg, self.mllm.model, adapter_name=self.adapter(t))
        names = [self.adapter(i) for i in range(t + 1)]
        for layer in self.lora_layers():
            layer.set_adapter(names)  # peft: every active adapter becomes trainable ...
        self.n_adapters = t + 1

    def on_resume(self, finished_task: int) -> None:
        while self.n_adapters <= finished_task:
            self.add_adapter()

    def on_task_start(self, task: int, dm) -> None:
        super().on_task_start(task, dm)
        while self.n_adapters <= task:
            self.add_adapter()
        self.set_trainable()  # ... so freeze all but the current one here

    def expected_trainable(self) -> set[str]:
        if self.current_task is None:
            return set()
        tag = f".{self.adapter(self.current_task)}."
        own = {n for n, _ in self.named_parameters() if ".lora_" in n and tag in n}
        return super().expected_trainable() | own

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int) -> list[str]:
        with self.fused_adapters():
            return super().generate(batch, max_new_tokens=max_new_tokens)

    @contextlib.contextmanager
    def fused_adapters(self):
        """At test time every adapter runs and their outputs are summed: one matmul pair of
        rank t*r (the adapters' A stacked, their B side by side with each scaling folded in)
        gives the same sum as peft's loop over t adapters, whose cost grew with the tasks.
        Dropout is off in evaluation, so nothing else differs."""
        if self.training or self.n_adapters < 2:
            yield
            return
        hooks, saved = [], []
        for layer in self.lora_layers():
            names = [n for n in layer.active_adapters if n in layer.lora_A]
            a = torch.cat([layer.lora_A[n].weight for n in names])
            b = torch.cat([layer.lora_B[n].weight * layer.scaling[n] for n in names], dim=1)

            def add(module, args, out, a=a, b=b):
                return out + (args[0].to(a.dtype) @ a.T @ b.T).to(out.dtype)

            saved.append((layer, layer._disable_adapters))
            layer._disable_adapters = True  # peft's forward: the base layer alone
            hooks.append(layer.register_forward_hook(add))
        try:
            yield
        finally:
            for h in hooks:
                h.remove()
            for layer, flag in saved:
                layer._disable_adapters = flag

    def orthogonality_loss(self) -> torch.Tensor:
        """sum over layers and earlier adapters i of sum |A_i A_t^T| (0 iff orthogonal rows)."""
        t = self.current_task
        terms = []
        for layer in self.lora_layers():
            a_new = layer.lora_A[self.adapter(t)].weight
            for i in range(t):
                terms.append((layer.lora_A[self.adapter(i)].weight @ a_new.T).abs().sum())
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def l2_loss(self) -> torch.Tensor:
        name = self.adapter(self.current_task)
        terms = [
            layer.lora_A[name].weight.pow(2).sum() + layer.lora_B[name].weight.pow(2).sum()
            for layer in self.lora_layers()
        ]
        return torch.stack(terms).sum()

    def extra_loss(self, batch: dict, out) -> torch.Tensor | None:
        loss = None
        if self.lam_orth and self.current_task:
            loss = self.lam_orth * self.orthogonality_loss()
        if self.lam_l2:
            l2 = self.lam_l2 * self.l2_loss()
            loss = l2 if loss is None else loss + l2
        return loss
