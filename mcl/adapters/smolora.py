"""SMoLoRA's separable mixture of LoRA experts on one frozen ``nn.Linear`` (Wang et al. 2024;
docs/methods/smolora.md, from the official code).

A rank-``r`` LoRA split into ``experts`` blocks; the first ``n_vu`` are the visual-understanding
(VU) group, the rest the instruction-following (IF) group. Per sample, hard top-1:

- the VU router (``Linear(d_in, n_vu)``) reads the mean of this layer's input over positions
  (all of them, padding included — the code's behaviour — or only those in ``vu_mask``);
- the IF router (``Linear(d_emb, n_if)``) reads an instruction embedding supplied per sample
  (``if_input``, set by the method before the forward).

The two chosen experts' outputs are fused per token by a 2-way softmax over learned scores
(``lora_fuse_vu``, ``lora_fuse_if``: ``Linear(d_out, 1)``): y = W x + a * y_vu + b * y_if. The
one-hot routing is constant, so the routers get no gradient: they stay at their (seeded) random
initialisation, frozen but saved. ``scaling = alpha / r`` with the *total* rank, A ~ N(0, 0.01^2),
B = 0, as in the code. Dropout (``dropout``) is drawn afresh for each expert's input, as the
code's every expert calls ``lora_dropout(x)`` itself: the VU and the IF expert see different
masks.
"""

from __future__ import annotations

import torch
from torch import nn


class SMoLoRALinear(nn.Module):
    def __init__(
        self,
        base: nn.Linear,
        r: int = 128,
        experts: int = 8,
        n_vu: int = 4,
        alpha: float = 256,
        dropout: float = 0.05,
        d_emb: int = 384,
    ) -> None:
        super().__init__()
        if r % experts or not 0 < n_vu < experts:
            raise ValueError(f"r={r} must split over experts={experts}, with 0 < n_vu < experts")
        self.base, self.experts, self.n_vu, self.rank = base, experts, n_vu, r // experts
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        d_in, d_out = base.in_features, base.out_features
        dev, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.randn(r, d_in, device=dev, dtype=dtype) * 0.01)
        self.lora_B = nn.Parameter(torch.zeros(d_out, r, device=dev, dtype=dtype))
        self.lora_vu_gate = nn.Linear(d_in, n_vu, bias=False).to(dev, dtype).requires_grad_(False)
        self.lora_if_gate = nn.Linear(d_emb, experts - n_vu, bias=False).to(dev, dtype)
        self.lora_if_gate.requires_grad_(False)
        self.lora_fuse_vu = nn.Linear(d_out, 1, bias=False).to(dev, dtype)
        self.lora_fuse_if = nn.Linear(d_out, 1, bias=False).to(dev, dtype)
        # set by the method per batch: (B, d_emb) instruction embeddings, optional (B, n) mask
        self.if_input: torch.Tensor | None = None
        self.vu_mask: torch.Tensor | None = None
        self.keep_route = False  # generation: keep the prefill's VU choice for decode steps
        self._vu_route: torch.Tensor | None = None
        self.last_route: tuple[torch.Tensor, torch.Tensor] | None = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(VU expert in 0..n_vu-1, IF expert in n_vu..experts-1) per sample."""
        reuse = self.keep_route and self._vu_route is not None and x.shape[1] == 1
        if reuse:
            vu = self._vu_route
        else:
            mask = self.vu_mask
            if mask is not None and mask.shape[:2] == x.shape[:2]:
                m = mask.to(x.dtype)[..., None]
                z = (x * m).sum(1) / m.sum(1).clamp(min=1)
            else:
                z = x.mean(1)
            vu = self.lora_vu_gate(z.detach().to(self.lora_vu_gate.weight.dtype)).argmax(-1)
            self._vu_route = vu
        if self.if_input is None:
            raise RuntimeError("SMoLoRALinear needs if_input (instruction embeddings) per batch")
        emb = self.if_input.to(x.device, self.lora_if_gate.weight.dtype)
        return vu, self.n_vu + self.lora_if_gate(emb).argmax(-1)

    def _branch(self, x: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
        """scaling * B_e A_e x for each sample's expert e. Only that expert's rank block is
        gathered and multiplied: the same sum as masking the other experts' columns of the
        full rank-r product (what the original computes), at 1/experts of its cost."""
        rows = expert[:, None] * self.rank + torch.arange(self.rank, device=x.device)
        a = self.lora_A[rows]  # (B, rank, d_in)
        b = self.lora_B.T[rows]  # (B, rank, d_out)
        return self.scaling * torch.bmm(torch.bmm(x, a.transpose(1, 2)), b)

    def saved_bytes(self, tokens: int, mask_bytes: int = 1) -> int:
        """Bytes autograd keeps for one sample of ``tokens`` tokens under bf16 autocast
        (``mcl.plan``). Each of the two experts that run keeps a bf16 copy of its (dropped-out)
        input for A, the dropout mask (``mask_bytes`` per element: 1 on CUDA, a float on the
        CPU), its rank-wide product for B, and its full-width output, which the fusion weighs;
        per sample, each expert's gathered A and B blocks. The full-width outputs are why
        SMoLoRA holds several times the activations of a LoRA of the same rank."""
        d_in, d_out = self.base.in_features, self.base.out_features
        mask = mask_bytes * d_in if isinstance(self.dropout, nn.Dropout) else 0
        per_expert = tokens * (2 * d_in + mask + 2 * self.rank + 2 * d_out)
        blocks = 2 * self.rank * (d_in + d_out)
        return 2 * (per_expert + blocks) + tokens * 2 * 2  # + the two fusion weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeeze = x.dim() == 2
        if squeeze:
            x = x[None]
        xa = x.to(self.lora_A.dtype)  # the experts compute in their own (fp32) dtype
        vu, if_ = self.route(xa)
        self.last_route = (vu.detach(), if_.detach())
        # one dropout mask per expert, as the original (each expert's A reads its own
        # lora_dropout(x)): the two experts that run draw one each
        y_vu, y_if = self._branch(self.dropout(xa), vu), self._branch(self.dropout(xa), if_)
        w = torch.softmax(torch.cat([self.lora_fuse_vu(y_vu), self.lora_fuse_if(y_if)], -1), -1)
        out = self.base(x) + (w[..., :1] * y_vu + w[..., 1:] * y_if).to(x.dtype)
        return out[0] if squeeze else out
