"""seq_ft: sequential full fine-tuning of a chosen part of the model (default: the projector,
as in the EProj codebase's baselines), task after task, no protection against forgetting.

It is ``seq_lora`` without LoRA: ``parts`` picks what trains in full (``projector``, ``lm``,
``vision``), everything else stays frozen.
"""

from __future__ import annotations

from mcl.methods.seq_lora import SeqLoRA


class SeqFT(SeqLoRA):
    def __init__(self, name: str = "seq_ft", parts: tuple[str, ...] = ("projector",), **kw):
        kw.setdefault("r", 0)
        super().__init__(name=name, parts=parts, **kw)
