"""Gradient projection against stored input subspaces (GPM / PGP / Fwd-Prompt; reusable).

Pieces, each usable alone:

- :func:`energy_rank` / :func:`extend_basis`: bases of the input space a parameter sees, with an
  energy threshold (GPM's criterion: keep adding directions of the *residual* until the stored
  basis captures ``eps`` of the new activations' energy), kept orthonormal by QR;
- :class:`Gram`: the d x d matrix X^T X of activation rows X, accumulated batch by batch on the
  rows' device. :func:`extend_basis` works from it: the right singular vectors of X are the
  eigenvectors of X^T X and the squared singular values its eigenvalues, so the residual's
  "SVD" is the eigendecomposition of ``(I - B B^T) X^T X (I - B B^T)`` -- cost and memory set
  by the width d, not by the number of rows, and no N x d matrix is ever kept;
- :func:`interference_basis`: old-task directions not shared with pre-training,
  ``C = (I - B_pre B_pre^T) B_old``, columns with norm > ``tau``, orthonormalised;
- :func:`collect_inputs`: a forward hook that gathers a module's inputs (or outputs) as rows,
  left on the module's device;
- :class:`SubspaceProjection`: a Lightning callback that applies one of three linear maps to the
  rows (in R^d, the parameter's last dimension is the input width d) of chosen parameters'
  changes:

  - ``interference`` (Fwd-Prompt's default): ``g <- g - g B_S B_S^T``;
  - ``gpm`` (plain GPM / PGP): ``g <- g - g B_old B_old^T``;
  - ``additive``: ``g <- g (I - B_old B_old^T) + alpha g B_pre B_pre^T``.

  What the map is applied to (``on``):

  - ``update`` (default): the step the optimizer actually applied. The parameters are copied in
    ``on_before_optimizer_step`` (after accumulation and AMP unscaling, right before the step)
    and, once the step is taken (``on_train_batch_end``), ``p <- p_before + map(p - p_before)``.
    Any optimizer then moves the parameters only in the allowed space. For plain SGD this is
    the projected gradient exactly (the update is ``-lr g`` and the map is linear); for Adam(W)
    it is the only form in which the projection holds: Adam's per-coordinate scaling turns a
    projected gradient into an update with as large a share in the protected directions as a
    random one (measured on the micro model: 0.43 of the update's energy, as for a random
    direction), and decoupled weight decay moves them too;
  - ``gradient``: ``p.grad`` in ``on_before_optimizer_step`` (engineering_notes.md section 3.3;
    GPM's literal form), which protects the subspace under plain SGD only.

Bases are computed in float32 (float64 only where the caller's tensors already are), on the
device the activations are on, with float32 matmuls at full precision (no TF32). The callback
applies its map in float32 on the parameters' device, with bases re-orthonormalised once in
float64 and cached per device: the protected component left in an update is ~3e-7 of its norm
at d = 4096 with 1500 protected directions (float32 rounding; float64 would cost far more on a
GPU for no use: the parameters themselves are float32).

Needs the full gradient and parameters on each rank: single device or DDP (``p.grad`` is the
all-reduced gradient there, every rank takes the same step); DeepSpeed ZeRO >= 2 leaves
``p.grad`` empty and steps its own fp32 partitions, so :meth:`setup` refuses it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import lightning as L
import torch

MODES = ("interference", "gpm", "additive")
TARGETS = ("update", "gradient")  # what SubspaceProjection maps (see the module doc)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32, or float64 where the caller's tensors already are (never an upcast to it)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@contextlib.contextmanager
def _full_precision() -> Iterator[None]:
    """float32 matmuls at full precision while a basis is computed, whatever TF32 setting the
    run chose (TF32 keeps 10 mantissa bits: ~1e-3 relative error in X^T X)."""
    matmul = getattr(getattr(torch.backends, "cuda", None), "matmul", None)
    before = getattr(matmul, "fp32_precision", None)
    if before is None:
        yield
        return
    matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = before


def _rank_of_energy(energy: torch.Tensor, eps: float) -> int:
    """The smallest k with sum_{i<=k} e_i >= eps * sum e (e sorted descending); on the host,
    in float64 (a vector of at most d values, read once per basis)."""
    if not 0 < eps <= 1:
        raise ValueError(f"energy threshold eps={eps} must be in (0, 1]")
    energy = energy.detach().cpu().double()
    if energy.sum() == 0:
        return 0
    cum = torch.cumsum(energy, 0) / energy.sum()
    return int((cum < eps - 1e-12).sum()) + 1


def energy_rank(singular_values: torch.Tensor, eps: float) -> int:
    """The smallest k with sum_{i<=k} s_i^2 >= eps * sum s_i^2 (s sorted descending)."""
    return _rank_of_energy(singular_values.detach().cpu().double() ** 2, eps)


def orthonormal(columns: torch.Tensor, tol: float | None = None) -> torch.Tensor:
    """An orthonormal basis (d x k) of the span of ``columns`` (QR on their device; drops
    dependent columns: |R_ii| <= ``tol`` x the largest, default 1e-6 in float64 and 1e-5 in
    float32, about a hundred units of its rounding)."""
    if columns.shape[1] == 0:
        return columns
    wd = _work_dtype(columns.dtype)
    tol = tol if tol is not None else (1e-6 if wd == torch.float64 else 1e-5)
    q, r = torch.linalg.qr(columns.to(wd))
    diag = r.diagonal().abs()
    keep = diag > tol * max(1.0, float(diag.max()))
    return q[:, keep].to(columns.dtype)


class Gram:
    """The running d x d matrix X^T X of activation rows X, added batch by batch (no N x d
    matrix is kept), on the rows' device, in float32 (float64 if the rows are)."""

    def __init__(self) -> None:
        self.matrix: torch.Tensor | None = None
        self.rows = 0

    @classmethod
    def of(cls, rows: torch.Tensor) -> Gram:
        return cls().add(rows)

    def add(self, rows: torch.Tensor) -> Gram:
        """Add (..., d) rows; rows of zeros (masked-out positions) add nothing."""
        x = rows.detach().reshape(-1, rows.shape[-1])
        x = x.to(self.matrix.dtype if self.matrix is not None else _work_dtype(x.dtype))
        with _full_precision():
            if self.matrix is None:
                self.matrix = x.T @ x
            else:
                self.matrix.addmm_(x.T, x)
        self.rows += x.shape[0]
        return self


def extend_basis(
    basis: torch.Tensor | None, activations: torch.Tensor | Gram, eps: float
) -> tuple[torch.Tensor, int]:
    """Add to ``basis`` (d x m, orthonormal, or None) the fewest directions of the residual of
    ``activations`` (N x d rows, or their :class:`Gram`) such that the result captures ``eps``
    of their energy. Returns (new basis d x (m + k), k): in the rows' dtype, or for a Gram the
    basis's (its own if None), on the Gram's device.

    The residual R = X (I - B B^T) is never formed: R^T R = (I - B B^T) X^T X (I - B B^T), whose
    eigenvectors (by decreasing eigenvalue) are R's right singular vectors and whose eigenvalues
    are its squared singular values -- the same directions and the same energy rule as an SVD
    of R, in O(d^2 m + d^3) whatever the number of rows."""
    if isinstance(activations, Gram):
        gram = activations
        if gram.matrix is None:
            raise ValueError("extend_basis: no activation rows were collected")
        out = basis.dtype if basis is not None else gram.matrix.dtype
    else:
        gram, out = Gram.of(activations), activations.dtype
    c = gram.matrix
    d = c.shape[0]
    with _full_precision():
        c = (c + c.T) / 2  # exactly symmetric
        b = basis.to(c) if basis is not None else c.new_zeros(d, 0)
        total = float(c.trace())
        if total == 0:
            return b.to(out), 0
        cb = c @ b  # (d, m)
        captured = float((b * cb).sum())  # trace(B^T C B): the energy B already holds
        k, directions = 0, c.new_zeros(d, 0)
        if captured / total < eps:
            # (I - BB^T) C (I - BB^T), expanded so that it costs d^2 m, not d^3
            residual = c - b @ cb.T - cb @ b.T + b @ (b.T @ cb) @ b.T
            energy, vectors = torch.linalg.eigh((residual + residual.T) / 2)  # ascending
            energy, vectors = energy.flip(0).clamp(min=0), vectors.flip(1)
            left = energy.detach().cpu().double()  # squared singular values of the residual
            need = (eps * total - captured) / max(float(left.sum()), 1e-30)
            k = _rank_of_energy(left, min(1.0, need))
            directions = vectors[:, :k]
        new = orthonormal(torch.cat([b, directions], 1))
    return new.to(out), new.shape[1] - b.shape[1]


def interference_basis(b_old: torch.Tensor, b_pre: torch.Tensor | None, tau: float = 1e-3):
    """Orthonormal basis of the old-task directions outside the pre-trained subspace."""
    if b_old is None or b_old.shape[1] == 0:
        return b_old
    c = b_old.to(_work_dtype(b_old.dtype))
    if b_pre is not None and b_pre.shape[1]:
        p = b_pre.to(c)
        with _full_precision():
            c = c - p @ (p.T @ c)
    c = c[:, c.norm(dim=0) > tau]
    return orthonormal(c).to(b_old.dtype)


@contextlib.contextmanager
def collect_inputs(module: torch.nn.Module, outputs: bool = False) -> Iterator[list]:
    """Gather a module's first input (or its output) as (N, d) float32 rows while the block
    runs, left on the module's device: ``with collect_inputs(layer) as rows: model(...)``; then
    ``torch.cat(rows)`` (or ``Gram.add`` each, so the rows need not outlive the batch). A
    ``mask_fn`` is not needed: callers pick rows afterwards if they must."""
    rows: list[torch.Tensor] = []

    def hook(mod, args, out):
        x = out if outputs else args[0]
        x = x[0] if isinstance(x, tuple) else x
        rows.append(x.detach().reshape(-1, x.shape[-1]).float())

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
    """The mode's map applied to ``grad`` (a gradient or an update; rows in R^d along its last
    dimension; see the module doc): computed in float32 (float64 if ``grad`` is), at full
    precision, on ``grad``'s device; returned in ``grad``'s dtype. Bases already in that
    dtype and on that device are used as they are (:meth:`SubspaceProjection.bases` prepares
    them once)."""
    if mode not in MODES:
        raise ValueError(f"projection mode must be one of {', '.join(MODES)}, not {mode!r}")
    g = grad.reshape(-1, grad.shape[-1]).to(_work_dtype(grad.dtype))

    def along(b):
        if b is None or b.shape[1] == 0:
            return None
        b = b.to(g.device, g.dtype)
        return (g @ b) @ b.T

    with _full_precision():
        if mode == "interference":
            parts = [(-1.0, along(b_s))]
        elif mode == "gpm":
            parts = [(-1.0, along(b_old))]
        else:
            parts = [(-1.0, along(b_old)), (alpha, along(b_pre))]
        out = g
        for w, part in parts:
            if part is not None:
                out = out + w * part
    return out.reshape(grad.shape).to(grad.dtype)


def _reorthonormal(b: torch.Tensor | None, device: torch.device, dtype: torch.dtype):
    """``b`` (d x k, orthonormal up to its dtype's rounding) re-orthonormalised in float64 by
    QR, then in ``dtype`` on ``device``: float32 columns orthonormal to ~1e-7, so a float32
    projection leaves ~1e-7, not ~1e-6, of a vector in the removed span."""
    if b is None or b.shape[1] == 0:
        return b
    with _full_precision():
        q, _ = torch.linalg.qr(b.detach().to(device, torch.float64))
    return q.to(dtype)


class SubspaceProjection(L.Callback):
    """Projects the updates (or gradients) of ``params()`` against stored bases once per
    optimizer step.

    ``params`` is a callable returning the parameters to edit (evaluated every step, so a method
    can add parameters between tasks). Bases are plain tensors set by the owner: ``b_pre`` (the
    pre-trained subspace), ``b_old`` (the old tasks' span); ``b_s`` is derived from them by
    :meth:`refresh` (call it after setting them). ``on`` = ``update`` (default) or ``gradient``
    (module doc). ``enabled=False`` keeps the bases but leaves training alone (ablation)."""

    def __init__(
        self,
        params: Callable[[], list[torch.nn.Parameter]],
        mode: str = "interference",
        alpha: float = 1.0,
        tau: float = 1e-3,
        enabled: bool = True,
        on: str = "update",
    ):
        if mode not in MODES:
            raise ValueError(f"projection mode must be one of {', '.join(MODES)}, not {mode!r}")
        if on not in TARGETS:
            raise ValueError(f"projection target must be one of {', '.join(TARGETS)}, not {on!r}")
        self.params, self.mode, self.alpha, self.tau, self.enabled = (
            params,
            mode,
            alpha,
            tau,
            enabled,
        )
        self.on = on
        self.b_pre: torch.Tensor | None = None
        self.b_old: torch.Tensor | None = None
        self.b_s: torch.Tensor | None = None
        self._ready: dict[tuple, dict] = {}  # (device, dtype) -> bases prepared for the map
        self._before: list[tuple[torch.nn.Parameter, torch.Tensor]] | None = None

    def refresh(self) -> None:
        """Recompute the interference basis after ``b_old`` or ``b_pre`` changed."""
        self.b_s = interference_basis(self.b_old, self.b_pre, self.tau)
        self._ready = {}

    def bases(self, device: torch.device, dtype: torch.dtype) -> dict:
        """The bases the map reads, prepared once per device and dtype: ``b_old`` and ``b_pre``
        re-orthonormalised in float64 (QR), ``b_s`` derived from those in float64 (the float32
        ``b_s`` of :meth:`refresh` is off the exact interference space by ~1e-6), all then
        kept in the work dtype of ``dtype`` on ``device``: nothing is copied or cast at a step."""
        wd = _work_dtype(dtype)
        key = (torch.device(device), wd)
        if key not in self._ready:
            exact = {
                name: _reorthonormal(b, device, torch.float64)
                for name, b in (("b_old", self.b_old), ("b_pre", self.b_pre))
            }
            exact["b_s"] = interference_basis(exact["b_old"], exact["b_pre"], self.tau)
            self._ready[key] = {n: b if b is None else b.to(wd) for n, b in exact.items()}
        return self._ready[key]

    def apply(self, change: torch.Tensor) -> torch.Tensor:
        """The mode's map of one parameter's gradient or update."""
        return project(
            change, self.mode, alpha=self.alpha, **self.bases(change.device, change.dtype)
        )

    def add_task(self, activations: torch.Tensor | Gram, eps: float) -> int:
        """Extend the old-task basis with a finished task's activations (rows or their
        :class:`Gram`); returns the number of new directions."""
        self.b_old, k = extend_basis(self.b_old, activations, eps)
        self.refresh()
        return k

    def setup(self, trainer, pl_module, stage: str) -> None:
        name = type(trainer.strategy).__name__.lower()
        if "deepspeed" in name:
            raise RuntimeError(
                "SubspaceProjection edits p.grad and the parameters after each step, which "
                "DeepSpeed ZeRO>=2 partitions; use hardware strategy ddp or a single device"
            )

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self.enabled:
            return
        if self.on == "update":  # the step is projected once it is taken (on_train_batch_end)
            self._before = [(p, p.detach().clone()) for p in self.params() if p.requires_grad]
            return
        for p in self.params():
            if p.grad is not None:
                p.grad.copy_(self.apply(p.grad))

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """After an optimizer step (a batch that only accumulated took none): the applied
        update of each parameter replaced by its image under the map."""
        if self._before is None:
            return
        before, self._before = self._before, None
        for p, old in before:
            p.copy_(old + self.apply(p.detach() - old))

    def state_dict(self) -> dict:
        return {"b_pre": self.b_pre, "b_old": self.b_old}

    def load_state_dict(self, state: dict) -> None:
        self.b_pre, self.b_old = state.get("b_pre"), state.get("b_old")
        self.refresh()
