"""seq_lora: one LoRA adapter on the LM, trained on every task in turn (the lower bound).

LoRA is injected with peft into the language model's attention projections only (the vision
tower's layers share names, so the target regex is rooted at ``language_model``).
"""

from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model

from mcl.methods.base import ContinualMethod


class SeqLoRA(ContinualMethod):
    def __init__(
        self,
        name: str = "seq_lora",
        r: int = 8,
        alpha: int = 16,
        dropout: float = 0.0,
        targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
        **kw,
    ):
        super().__init__(name=name, **kw)
        self.r, self.alpha, self.dropout, self.targets = r, alpha, dropout, list(targets)

    def setup_model(self, mllm) -> None:
        super().setup_model(mllm)
        cfg = LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=mllm.lm_targets(self.targets),
        )
        inject_adapter_in_model(cfg, mllm.model, adapter_name="default")

    def on_task_start(self, task: int, dm) -> None:
        super().on_task_start(task, dm)
        # the same adapter keeps training: set requires_grad explicitly every task
        for n, p in self.named_parameters():
            p.requires_grad = "lora_" in n

    def expected_trainable(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if "lora_" in n}
