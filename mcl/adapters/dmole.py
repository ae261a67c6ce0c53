"""D-MoLE's pieces that peft lacks (docs/methods/dmole.md): a linear layer holding one LoRA
expert per task that chose it, and the per-task autoencoder its router votes with.

:class:`DMoLELinear` wraps a pretrained ``nn.Linear`` as ``base``. Experts are keyed by task id
(``experts["t3"]``), so a checkpoint maps to tasks by name, not by position (the code keeps an
ascending id list and loads with ``strict=False``; spec pitfall 8). A uses nn.Linear's
Kaiming-uniform(a=sqrt 5) init, B is zero, ``scaling = alpha / r`` is shared by all experts.
There is no gate: the selected experts' outputs are **summed** with weight 1. Dropout is drawn
per expert (each expert's input gets its own mask), as the code's loop over experts does.

Which experts run is set from outside before a forward (the method routes once per batch):
``mask`` is None (no expert: the pretrained layer) or a ``(B, n_tasks)`` 0/1 tensor, row b the
tasks whose experts sample b uses; a layer without an expert of a selected task adds nothing
for it (no fallback, as in the code). ``active`` is the set of tasks any sample uses, decided
once per batch by the method (:meth:`set_route`): the forward reads no value of the mask on the
host, so a layer costs no device-to-host sync at any decode step; experts outside ``active``
skip their matmuls. The method builds the mask on the model's device.

Precision (peft's convention for adapters): experts are created in fp32 over a bf16/fp16 base
(an AdamW update of 1e-5 on a bf16 weight rounds to nothing); the expert branch computes in the
experts' dtype and the layer returns the base output's dtype.
"""

from __future__ import annotations

import torch
from torch import nn


def _key(task: int) -> str:
    return f"t{task}"


def expert_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype new experts take: fp32 over a half-precision base, the base's dtype otherwise."""
    return torch.float32 if weight.dtype in (torch.bfloat16, torch.float16) else weight.dtype


class DMoLELinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.05):
        super().__init__()
        self.base = base
        self.r, self.scaling = r, alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.experts = nn.ModuleDict()
        self._mask: torch.Tensor | None = None
        # tasks any sample of the batch uses; None: every expert runs, masked (no skipping)
        self.active: frozenset[int] | None = None

    @property
    def tasks(self) -> list[int]:
        """Task ids holding an expert here, ascending."""
        return sorted(int(k[1:]) for k in self.experts)

    def add_expert(self, task: int) -> None:
        if _key(task) in self.experts:
            raise ValueError(f"an expert for task {task} exists already")
        w = self.base.weight
        a = nn.Linear(self.base.in_features, self.r, bias=False)  # Kaiming-uniform(a=sqrt 5)
        b = nn.Linear(self.r, self.base.out_features, bias=False)
        nn.init.zeros_(b.weight)
        self.experts[_key(task)] = nn.Sequential(a, b).to(device=w.device, dtype=expert_dtype(w))

    def expert_params(self, task: int) -> list[nn.Parameter]:
        if _key(task) not in self.experts:
            return []
        return list(self.experts[_key(task)].parameters())

    @property
    def mask(self) -> torch.Tensor | None:
        return self._mask

    @mask.setter
    def mask(self, mask: torch.Tensor | None) -> None:
        """A mask alone: every expert it covers runs, masked (no host read to skip any)."""
        self._mask, self.active = mask, None

    def set_route(self, mask: torch.Tensor | None, active=None) -> None:
        """The batch's expert mask (None: no expert) and the tasks any of its samples uses
        (an iterable of task ids, read once per batch by the method; None: all of them)."""
        self._mask, self.active = mask, None if active is None else frozenset(active)

    def saved_bytes(self, tokens: int, mask_bytes: int = 1) -> int:
        """Bytes autograd keeps for one sample of ``tokens`` tokens under bf16 autocast
        (``mcl.plan``), with the training task's expert running: that expert keeps a bf16 copy
        of its (dropped-out) input for A, the dropout mask (``mask_bytes`` per element: 1 on
        CUDA, a float on the CPU) and its rank-wide product for B. Frozen experts keep
        nothing for their weights."""
        trains = sum(any(p.requires_grad for p in e.parameters()) for e in self.experts.values())
        d_in = self.base.in_features
        mask = mask_bytes * d_in if isinstance(self.dropout, nn.Dropout) else 0
        return trains * tokens * (2 * d_in + mask + 2 * self.r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.mask is None or not len(self.experts):
            return out
        if self.mask.shape[0] != x.shape[0]:
            raise ValueError(
                f"expert mask has {self.mask.shape[0]} rows for a batch of {x.shape[0]}"
            )
        active, width = self.active, self.mask.shape[1]
        run = [t for t in self.tasks if t < width and (active is None or t in active)]
        if not run:
            return out
        result_dtype = out.dtype
        # the experts compute in their own dtype (fp32 over a bf16 base): the input and the mask
        # are cast once per expert dtype; each expert draws its own dropout mask, as the code's
        # loop calls lora_dropout(x) once per selected expert
        cast: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}
        for task in run:
            expert = self.experts[_key(task)]
            dt = expert[0].weight.dtype
            if dt not in cast:
                cast[dt] = (x.to(dt), self.mask.to(device=x.device, dtype=dt))
            h, mask = cast[dt]
            y = expert(self.dropout(h)) * self.scaling
            out = out + y * mask[:, task].view(-1, *([1] * (y.dim() - 1)))
        return out.to(result_dtype)  # summed in the experts' dtype, handed back in x's


class TaskAutoencoder(nn.Module):
    """One task's AE: Linear(d, hidden) + ReLU -> Linear(hidden, d) + Sigmoid, fit with MSE on
    the task's L2-normalised sequence representations; ``tau`` (a buffer, saved) is the error
    threshold below which an input counts as possibly this task's."""

    def __init__(self, dim: int, hidden: int = 128, output: str = "sigmoid"):
        super().__init__()
        if output not in ("sigmoid", "linear"):
            raise ValueError(f"autoencoder output must be sigmoid or linear, not {output!r}")
        last = nn.Sigmoid() if output == "sigmoid" else nn.Identity()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim), last)
        self.register_buffer("tau", torch.tensor(float("inf")))

    def error(self, z: torch.Tensor) -> torch.Tensor:
        """Per-sample reconstruction MSE of (already normalised) representations."""
        return ((self.net(z) - z) ** 2).mean(-1)

    def fit(
        self,
        z: torch.Tensor,
        epochs: int = 1000,
        lr: float = 5e-3,
        min_lr: float = 1e-3,
        batch_size: int = 1024,
        patience: int = 10,
        quantile: float = 0.95,
        seed: int = 0,
    ) -> dict:
        """The code's recipe: Adam, cosine from lr to min_lr over ``epochs``, early stop after
        ``patience`` epochs without a lower training loss; then ``tau`` = the ``quantile`` of
        the task's own reconstruction errors (the release has no rule; spec section 1.4)."""
        gen = torch.Generator().manual_seed(seed)
        # fused: one kernel for the four tensors; a quarter of this tiny step's time on CPU
        opt = torch.optim.Adam(self.parameters(), lr=lr, fused=True)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=min_lr)
        best, stale, ran = float("inf"), 0, 0
        with torch.enable_grad():
            for ran in range(1, epochs + 1):  # noqa: B007 (reported below)
                order = torch.randperm(len(z), generator=gen).to(z.device)
                losses, sizes = [], []
                for i in range(0, len(z), batch_size):
                    batch = z[order[i : i + batch_size]]
                    loss = self.error(batch).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses.append(loss.detach())
                    sizes.append(len(batch))
                sched.step()
                # one read of the epoch's losses from the device (not one per step)
                total = 0.0
                for value, n in zip(torch.stack(losses).tolist(), sizes, strict=True):
                    total += value * n
                total /= len(z)
                if total < best - 1e-12:
                    best, stale = total, 0
                else:
                    stale += 1
                    if stale >= patience:
                        break
        with torch.no_grad():
            errors = self.error(z)
            self.tau.fill_(float(torch.quantile(errors.float(), quantile)))
        return {"ae_epochs": ran, "ae_loss": best, "tau": float(self.tau)}
