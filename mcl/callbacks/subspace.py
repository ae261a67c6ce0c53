"""Gradient projection against stored input subspaces (GPM / PGP / Fwd-Prompt; reusable).

Pieces, each usable alone:

- :func:`energy_rank` / :func:`extend_basis`: bases of the input space a parameter sees, by SVD
  with an energy threshold (GPM's criterion: keep adding directions of the *residual* until the
  stored basis captures ``eps`` of the new activations' energy), kept orthonormal by QR;
- :func:`interference_basis`: old-task directions not shared with pre-training,
  ``C = (I - B_pre B_pre^T) B_old``, columns with norm > ``tau``, orthonormalised;
- :func:`collect_inputs`: a forward hook that gathers a module's inputs (or outputs) as rows;
- :class:`SubspaceProjection`: a Lightning callback that edits the gradients of chosen
  parameters in ``on_before_optimizer_step`` -- after gradient accumulation and AMP unscaling,
  before clipping (engineering_notes.md section 3.3) -- so it sees the true accumulated gradient.
  A gradient's last dimension must be the input width d (rows g in R^d):

  - ``interference`` (Fwd-Prompt's default): ``g <- g - g B_S B_S^T``;
  - ``gpm`` (plain GPM / PGP): ``g <- g - g B_old B_old^T``;
  - ``additive``: ``g <- g (I - B_old B_old^T) + alpha g B_pre B_pre^T``.

Needs the full gradient on each rank: single device or DDP (``p.grad`` is the all-reduced
gradient there); DeepSpeed ZeRO >= 2 leaves ``p.grad`` empty, so :meth:`setup` refuses it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import lightning as L
import torch

MODES = ("interference", "gpm", "additive")


def energy_rank(singular_values: torch.Tensor, eps: float) -> int:
    """The smallest k with sum_{i<=k} s_i^2 >= eps * sum s_i^2 (s sorted descending)."""
    if not 0 < eps <= 1:
        raise ValueError(f"energy threshold eps={eps} must be in (0, 1]")
    energy = singular_values.double() ** 2
    if energy.sum() == 0:
        return 0
    cum = torch.cumsum(energy, 0) / energy.sum()
    return int((cum < eps - 1e-12).sum()) + 1


def orthonormal(columns: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """An orthonormal basis (d x k) of the span of ``columns`` (QR; drops dependent columns)."""
    if columns.shape[1] == 0:
        return columns
    q, r = torch.linalg.qr(columns.double())
    keep = r.diagonal().abs() > tol * max(1.0, float(r.diagonal().abs().max()))
    return q[:, keep].to(columns.dtype)


def extend_basis(
    basis: torch.Tensor | None, activations: torch.Tensor, eps: float
) -> tuple[torch.Tensor, int]:
    """Add to ``basis`` (d x m, orthonormal, or None) the fewest directions of the residual of
    ``activations`` (N x d rows) such that the result captures ``eps`` of their energy.
    Returns (new basis d x (m + k), k)."""
    h = activations.double()
    d = h.shape[1]
    b = basis.double() if basis is not None else h.new_zeros(d, 0)
    total = float((h**2).sum())
    if total == 0:
        return b.to(activations.dtype), 0
    captured = float(((h @ b) ** 2).sum())
    residual = h - (h @ b) @ b.T
    _, s, vh = torch.linalg.svd(residual, full_matrices=False)
    k = 0
    if captured / total < eps:
        need = (eps * total - captured) / max(float((s**2).sum()), 1e-30)
        k = energy_rank(s, min(1.0, need))
    new = orthonormal(torch.cat([b, vh[:k].T], 1))
    return new.to(activations.dtype), new.shape[1] - b.shape[1]


def interference_basis(b_old: torch.Tensor, b_pre: torch.Tensor | None, tau: float = 1e-3):
    """Orthonormal basis of the old-task directions outside the pre-trained subspace."""
    if b_old is None or b_old.shape[1] == 0:
        return b_old
    c = b_old.double()
    if b_pre is not None and b_pre.shape[1]:
        p = b_pre.double()
        c = c - p @ (p.T @ c)
    c = c[:, c.norm(dim=0) > tau]
    return orthonormal(c).to(b_old.dtype)


@contextlib.contextmanager
def collect_inputs(module: torch.nn.Module, outputs: bool = False) -> Iterator[list]:
    """Gather a module's first input (or its output) as (N, d) rows while the block runs:
    ``with collect_inputs(layer) as rows: model(...)``; then ``torch.cat(rows)``. A
    ``mask_fn`` is not needed: callers pick rows afterwards if they must."""
    rows: list[torch.Tensor] = []

    def hook(mod, args, out):
        x = out if outputs else args[0]
        x = x[0] if isinstance(x, tuple) else x
        rows.append(x.detach().reshape(-1, x.shape[-1]).float().cpu())

    handle = module.register_forward_hook(hook)
    try:
        yield rows
    finally:
        handle.remove()


def project(
    grad: torch.Tensor,
    mode: str,
    b_old: torch.Tensor | None = None,
    b_pre: torch.Tensor | None = None,
    b_s: torch.Tensor | None = None,
    alpha: float = 1.0,
) -> torch.Tensor:
    """The projected gradient (rows in R^d along its last dimension); see the module doc."""
    g = grad.reshape(-1, grad.shape[-1]).double()

    def along(b):
        if b is None or b.shape[1] == 0:
            return torch.zeros_like(g)
        b = b.to(g.device, g.dtype)
        return (g @ b) @ b.T

    if mode == "interference":
        out = g - along(b_s)
    elif mode == "gpm":
        out = g - along(b_old)
    elif mode == "additive":
        out = g - along(b_old) + alpha * along(b_pre)
    else:
        raise ValueError(f"projection mode must be one of {', '.join(MODES)}, not {mode!r}")
    return out.reshape(grad.shape).to(grad.dtype)


class SubspaceProjection(L.Callback):
    """Projects the gradients of ``params()`` against stored bases once per optimizer step.

    ``params`` is a callable returning the parameters to edit (evaluated every step, so a method
    can add parameters between tasks). Bases are plain tensors set by the owner: ``b_pre`` (the
    pre-trained subspace), ``b_old`` (the old tasks' span); ``b_s`` is derived from them by
    :meth:`refresh`. ``enabled=False`` keeps the bases but leaves gradients alone (ablation)."""

    def __init__(
        self,
        params: Callable[[], list[torch.nn.Parameter]],
        mode: str = "interference",
        alpha: float = 1.0,
        tau: float = 1e-3,
        enabled: bool = True,
    ):
        if mode not in MODES:
            raise ValueError(f"projection mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.params, self.mode, self.alpha, self.tau, self.enabled = (
            params,
            mode,
            alpha,
            tau,
            enabled,
        )
        self.b_pre: torch.Tensor | None = None
        self.b_old: torch.Tensor | None = None
        self.b_s: torch.Tensor | None = None

    def refresh(self) -> None:
        """Recompute the interference basis after ``b_old`` or ``b_pre`` changed."""
        self.b_s = interference_basis(self.b_old, self.b_pre, self.tau)

    def add_task(self, activations: torch.Tensor, eps: float) -> int:
        """Extend the old-task basis with a finished task's activations; returns the number of
        new directions."""
        self.b_old, k = extend_basis(self.b_old, activations, eps)
        self.refresh()
        return k

    def setup(self, trainer, pl_module, stage: str) -> None:
        name = type(trainer.strategy).__name__.lower()
        if "deepspeed" in name:
            raise RuntimeError(
                "SubspaceProjection edits p.grad, which DeepSpeed ZeRO>=2 leaves empty; "
                "use hardware strategy ddp or a single device"
            )

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self.enabled:
            return
        for p in self.params():
            if p.grad is not None:
                p.grad.copy_(
                    project(p.grad, self.mode, self.b_old, self.b_pre, self.b_s, self.alpha)
                )

    def state_dict(self) -> dict:
        return {"b_pre": self.b_pre, "b_old": self.b_old}

    def load_state_dict(self, state: dict) -> None:
        self.b_pre, self.b_old = state.get("b_pre"), state.get("b_old")
        self.refresh()
