"""seq_lora: one LoRA adapter on the LM, trained on every task in turn (the lower bound).

LoRA is injected with peft into the language model's attention projections only (the vision
tower's layers share names, so the target regex is rooted at ``language_model``).

This class is also the trainable part of the regularisation and replay baselines (``ewc``,
``mas``, ``lwf``, ``replay``, ``tir_ewc``, ``tir_mas``: seq_lora plus one plugin, mcl/plugins):
``r`` sets the LoRA (0 = none) and ``parts`` (see ContinualMethod) lists model parts fine-tuned in
full. The EProj codebase's baselines train only the connector: ``r: 0, parts: [projector]``.
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
        if not self.r and not self.parts:
            raise ValueError(f"{name}: nothing to train; set r > 0 or list parts (e.g. projector)")

    def setup_model(self, mllm) -> None:
        super().setup_model(mllm)
        if self.r:
            cfg = LoraConfig(
                r=self.r,
                lora_alpha=self.alpha,
                lora_dropout=self.dropout,
                target_modules=mllm.lm_targets(self.targets),
            )
            inject_adapter_in_model(cfg, mllm.model, adapter_name="default")

    def on_task_start(self, task: int, dm) -> None:
        super().on_task_start(task, dm)
        self.set_trainable()  # the same parameters keep training, every task

    def expected_trainable(self) -> set[str]:
        lora = {n for n, _ in self.named_parameters() if "lora_" in n}
        return super().expected_trainable() | lora
