"""Adapter-in-Adapter (AnA, PathWeave, Yu et al. 2024): modality paths on a frozen linear.

- :class:`UniAdapter` A^m: ``s * (W_up (M(W_down x + b_down)) + b_up)``, bottleneck 8, W_down
  kaiming-uniform, W_up and both biases zero, ``s`` a learnable scalar starting at 1, no
  nonlinearity, no norm. ``M`` is the identity for the modality's own adapter, or an in-adapter.
- In-adapter F_i^m = ``Linear(8, 8)`` (default init) between an earlier adapter A^i's down and
  up projections, when modality m reuses it: ``Â_i^m(x) = s_i W_up^i F_i^m(W_down^i x)`` (the
  specs' formula; A^i's biases as in A^i).
- :class:`NoisyGate` G^m: per-token dense softmax over the path's experts (zero-init clean and
  noise weights: uniform at init; Gaussian noise ``(softplus(x W_n) + 0.01)`` in training only).
- :class:`AnALinear`: ``W x + path_m(x)`` for each row's modality m (read from the shared
  :class:`~mcl.models.xmodal.Route`). Path m = experts [Â_i^m for earlier modalities i] + [A^m],
  mixed by G^m when there is more than one (a ``gated=False`` site sums them, as PathWeave's
  LLM projection does). Rows of a modality with no path (the image base) get ``W x``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mcl.data.schema import MODALITIES


class UniAdapter(nn.Module):
    def __init__(self, d_in: int, d_out: int, bottleneck: int = 8):
        super().__init__()
        self.down = nn.Linear(d_in, bottleneck)
        self.up = nn.Linear(bottleneck, d_out)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, inner: nn.Module | None = None) -> torch.Tensor:
        h = self.down(x)
        if inner is not None:
            h = inner(h)
        return self.scale * self.up(h)


class NoisyGate(nn.Module):
    def __init__(self, d_in: int, experts: int):
        super().__init__()
        self.w_gate = nn.Parameter(torch.zeros(d_in, experts))
        self.w_noise = nn.Parameter(torch.zeros(d_in, experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., E]`` mixing weights (k = E: dense; no load-balancing loss)."""
        logits = x @ self.w_gate
        if self.training:
            std = F.softplus(x @ self.w_noise) + 0.01
            logits = logits + torch.randn_like(logits) * std
        return logits.softmax(-1)


class AnALinear(nn.Module):
    """A frozen ``nn.Linear`` plus per-modality AnA paths, routed by ``route``."""

    def __init__(self, base: nn.Linear, route, bottleneck: int = 8, gated: bool = True):
        super().__init__()
        self.base, self.route = base, route
        self.bottleneck, self.gated = bottleneck, gated
        self.uni = nn.ModuleDict()  # A^m per modality
        self.inner = nn.ModuleDict()  # F_i^m, keyed "i__m"
        self.gate = nn.ModuleDict()  # G^m (gated sites, paths with 2+ experts)
        self.earlier: dict[str, list[str]] = {}  # path m's reused adapters, in order
        # modalities whose path adds nothing here (the faithful_to_code quirks), and when
        self.skip: dict[str, str] = {}  # modality -> "always" | "train"

    def add_path(self, m: str, earlier: list[str]) -> None:
        """Create modality ``m``'s path: its own adapter, an in-adapter per earlier adapter,
        and (gated sites, 2+ experts) its gate."""
        d_in, d_out = self.base.in_features, self.base.out_features
        p = self.base.weight
        self.uni[m] = UniAdapter(d_in, d_out, self.bottleneck).to(p.device, p.dtype)
        for i in earlier:
            self.inner[f"{i}__{m}"] = nn.Linear(self.bottleneck, self.bottleneck).to(
                p.device, p.dtype
            )
        if self.gated and earlier:
            self.gate[m] = NoisyGate(d_in, len(earlier) + 1).to(p.device, p.dtype)
        self.earlier[m] = list(earlier)

    def path_params(self, m: str) -> list[tuple[str, nn.Parameter]]:
        """Path ``m``'s own parameters (what stage m trains): A^m, F_·^m, G^m."""
        out = [(f"uni.{m}.{n}", p) for n, p in self.uni[m].named_parameters()]
        for i in self.earlier[m]:
            out += [
                (f"inner.{i}__{m}.{n}", p) for n, p in self.inner[f"{i}__{m}"].named_parameters()
            ]
        if m in self.gate:
            out += [(f"gate.{m}.{n}", p) for n, p in self.gate[m].named_parameters()]
        return out

    def path(self, m: str, x: torch.Tensor) -> torch.Tensor:
        experts = [self.uni[i](x, self.inner[f"{i}__{m}"]) for i in self.earlier[m]]
        experts.append(self.uni[m](x))
        if len(experts) == 1:
            return experts[0]
        if m not in self.gate:  # an ungated site: the experts are summed
            return torch.stack(experts).sum(0)
        g = self.gate[m](x)
        return (torch.stack(experts, -1) * g.unsqueeze(-2)).sum(-1)

    def _active(self, m: str) -> bool:
        skip = self.skip.get(m)
        return m in self.uni and not (skip == "always" or (skip == "train" and self.training))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        rows = self.route.rows(x.shape[0]) if self.uni else None
        if rows is None:
            return out
        xa = x.to(next(self.uni.parameters()).dtype)  # paths compute in their own (fp32) dtype
        if isinstance(rows, int):  # one modality for every row
            m = MODALITIES[rows]
            return out + self.path(m, xa).to(out.dtype) if self._active(m) else out
        out = out.clone()
        for idx in rows.unique().tolist():
            m = MODALITIES[idx]
            if self._active(m):
                sel = (rows == idx).nonzero().flatten()
                out[sel] = out[sel] + self.path(m, xa[sel]).to(out.dtype)
        return out
