"""moelora: CoIN's mixture of LoRA experts. Every targeted LM projection gets ``experts`` LoRA
experts of rank ``r / experts`` and a token-level softmax router; the output is the dense,
router-weighted sum of all experts. Experts and routers all keep training on every task (CoIN
freezes nothing between tasks), so any protection comes from the routing alone.

The module is :class:`mcl.adapters.moe_lora.MoELoRALinear` (peft has no MoE-LoRA tuner).
"""

from __future__ import annotations

from mcl.adapters import wrap_linears
from mcl.adapters.moe_lora import MoELoRALinear
from mcl.methods.base import ContinualMethod


class MoELoRA(ContinualMethod):
    def __init__(
        self,
        name: str = "moelora",
        r: int = 48,
        experts: int = 6,
        alpha: float = 96,
        dropout: float = 0.0,
        targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
        **kw,
    ):
        super().__init__(name=name, **kw)
        if experts < 1 or r % experts:
            raise ValueError(f"moelora: r={r} must be a multiple of experts={experts}")
        self.r, self.experts, self.alpha, self.dropout = r, experts, alpha, dropout
        self.targets = list(targets)

    def setup_model(self, mllm) -> None:
        super().setup_model(mllm)
        self.wrapped = wrap_linears(
            mllm.model,
            mllm.lm_targets(self.targets),
            lambda lin: MoELoRALinear(lin, self.r, self.experts, self.alpha, self.dropout),
        )
        self.keep_wrapped_base()

    def moe_layers(self) -> list[MoELoRALinear]:
        return [m for m in self.modules() if isinstance(m, MoELoRALinear)]

    def on_task_start(self, task: int, dm) -> None:
        super().on_task_start(task, dm)
        self.set_trainable()

    def expected_trainable(self) -> set[str]:
        own = {n for n, _ in self.named_parameters() if ".lora_" in n}
        return super().expected_trainable() | own
