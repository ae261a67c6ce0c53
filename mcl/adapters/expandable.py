"""An expandable linear layer: one expert (a full copy of a pretrained ``nn.Linear``) per task,
and a per-sample choice of expert (EProj's expandable connector projection).

``route`` is either None (every sample goes through ``active``, the expert being trained) or a
``(B,)`` tensor of expert indices, one per sample of the batch, set by the method before the
forward that consumes image features (the prefill of generation). Index -1 (and ``active`` -1,
the state before any task) is the pretrained projection itself.
"""

from __future__ import annotations

import torch
from torch import nn


class ExpandableLinear(nn.Module):
    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        # the pretrained projection every new expert starts from (frozen, never trained)
        self.register_buffer("init_weight", base.weight.detach().clone())
        self.register_buffer("init_bias", None if base.bias is None else base.bias.detach().clone())
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.active = -1
        self.route: torch.Tensor | None = None

    @property
    def n_experts(self) -> int:
        return len(self.weights)

    def add_expert(self) -> int:
        """A new expert initialised as a copy of the pretrained projection; returns its index."""
        self.weights.append(nn.Parameter(self.init_weight.clone()))
        if self.init_bias is not None:
            self.biases.append(nn.Parameter(self.init_bias.clone()))
        return self.n_experts - 1

    def _linear(self, x: torch.Tensor, e: int) -> torch.Tensor:
        if e < 0:
            w, bias = self.init_weight, self.init_bias
        else:
            w, bias = self.weights[e], self.biases[e] if self.init_bias is not None else None
        # fp32 over a half-precision base: compute in the expert's dtype, hand back x's
        return nn.functional.linear(x.to(w.dtype), w, bias).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.route is None:
            return self._linear(x, self.active)
        route = self.route.to(x.device)
        if route.shape[0] != x.shape[0]:
            raise ValueError(f"route has {route.shape[0]} entries for a batch of {x.shape[0]}")
        out = None
        for e in route.unique().tolist():  # one matmul per chosen expert, not per sample
            rows = route == e
            y = self._linear(x[rows], e)
            if out is None:
                out = x.new_zeros((*x.shape[:-1], y.shape[-1]))
            out[rows] = y
        return out
