"""A mixture of LoRA experts on one frozen ``nn.Linear`` with a token-level softmax router, as in
CoIN's MoELoRA: the rank ``r`` is split into ``experts`` blocks of ``r / experts``, a router
``Linear(in, experts)`` weights them per token (dense: every expert contributes), and

    y = W x + (alpha / r) * sum_e w_e(x) * B_e A_e dropout(x),    sum_e w_e(x) = 1.

Computed as one rank-r LoRA whose rank blocks are gated per token, so the cost is that of LoRA.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MoELoRALinear(nn.Module):
    def __init__(
        self, base: nn.Linear, r: int, experts: int, alpha: float, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if experts < 1 or r % experts:
            raise ValueError(f"rank {r} must split evenly over {experts} experts")
        self.base, self.experts, self.rank = base, experts, r // experts
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        dtype, device = base.weight.dtype, base.weight.device
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=dtype, device=device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=dtype, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's LoRA init; B = 0
        self.lora_router = nn.Linear(base.in_features, experts, bias=False, dtype=dtype)
        self.lora_router.to(device)
        self.last_weights: torch.Tensor | None = None  # the latest routing, for inspection

    def saved_bytes(self, tokens: int, mask_bytes: int = 1) -> int:
        """Bytes autograd keeps for one sample of ``tokens`` tokens under bf16 autocast
        (``mcl.plan``): bf16 copies of the input for the router and for A (each cast
        separately), the dropout mask if any (``mask_bytes`` per element), the routing weights,
        and three rank-wide tensors (A's product, the gate, their product for B)."""
        d_in, r = self.base.in_features, self.rank * self.experts
        mask = mask_bytes * d_in if isinstance(self.dropout, nn.Dropout) else 0
        return tokens * (2 * d_in + 2 * d_in + mask + 2 * self.experts + 3 * 2 * r)

    def route(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token expert weights, shape ``x.shape[:-1] + (experts,)``, summing to 1."""
        return torch.softmax(self.lora_router(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xa = x.to(self.lora_A.dtype)  # the experts compute in their own (fp32) dtype
        w = self.route(xa)
        self.last_weights = w.detach()
        h = self.dropout(xa) @ self.lora_A.T  # (..., r): every expert's rank block side by side
        gate = w.repeat_interleave(self.rank, dim=-1)  # expert e's weight on its r/E columns
        delta = self.scaling * ((h * gate) @ self.lora_B.T)
        return self.base(x) + delta.to(x.dtype)
