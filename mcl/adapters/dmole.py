"""D-MoLE's pieces that peft lacks (shared/specs/dmole.md): a linear layer holding one LoRA
expert per task that chose it, and the per-task autoencoder its router votes with.

:class:`DMoLELinear` wraps a pretrained ``nn.Linear`` as ``base``. Experts are keyed by task id
(``experts["t3"]``), so a checkpoint maps to tasks by name, not by position (the code keeps an
ascending id list and loads with ``strict=False``; spec pitfall 8). A uses nn.Linear's
Kaiming-uniform(a=sqrt 5) init, B is zero, ``scaling = alpha / r`` is shared by all experts.
There is no gate: the selected experts' outputs are **summed** with weight 1.

Which experts run is set from outside before a forward (the method routes once per batch):
``mask`` is None (no expert: the pretrained layer) or a ``(B, n_tasks)`` 0/1 tensor, row b the
tasks whose experts sample b uses; a layer without an expert of a selected task adds nothing
for it (no fallback, as in the code).
"""

from __future__ import annotations

import torch
from torch import nn


def _key(task: int) -> str:
    return f"t{task}"


class DMoLELinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.05):
        super().__init__()
        self.base = base
        self.r, self.scaling = r, alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.experts = nn.ModuleDict()
        self.mask: torch.Tensor | None = None

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
        self.experts[_key(task)] = nn.Sequential(a, b).to(device=w.device, dtype=w.dtype)

    def expert_params(self, task: int) -> list[nn.Parameter]:
        if _key(task) not in self.experts:
            return []
        return list(self.experts[_key(task)].parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.mask is None or not len(self.experts):
            return out
        mask = self.mask.to(device=x.device, dtype=x.dtype)
        if mask.shape[0] != x.shape[0]:
            raise ValueError(f"expert mask has {mask.shape[0]} rows for a batch of {x.shape[0]}")
        h = self.dropout(x)
        for task in self.tasks:
            if task >= mask.shape[1]:
                continue
            on = mask[:, task]
            if not bool(on.any()):
                continue  # nobody uses this expert: skip its matmuls
            y = self.experts[_key(task)](h) * self.scaling
            out = out + y * on.view(-1, *([1] * (y.dim() - 1)))
        return out


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
                total = 0.0
                for i in range(0, len(z), batch_size):
                    batch = z[order[i : i + batch_size]]
                    loss = self.error(batch).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(batch)
                sched.step()
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
