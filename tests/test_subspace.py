"""The subspace projection callback (GPM / PGP / Fwd-Prompt): energy thresholds, orthonormal
bases, the three projection variants, and that projection protects an old task."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from mcl.callbacks.subspace import (
    Gram,
    SubspaceProjection,
    collect_inputs,
    energy_rank,
    extend_basis,
    interference_basis,
    project,
)


def _with_spectrum(s, n=50, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, len(s), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, len(s), generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v.T, v


def test_energy_threshold_picks_the_documented_number_of_directions():
    s = torch.tensor([10.0, 5.0, 1.0, 0.1])  # energies 100, 25, 1, 0.01 of 126.01
    assert energy_rank(s, 0.5) == 1
    assert energy_rank(s, 0.79) == 1 and energy_rank(s, 0.80) == 2
    assert energy_rank(s, 0.99) == 2 and energy_rank(s, 0.995) == 3
    assert energy_rank(s, 1.0) == 4
    h, v = _with_spectrum([10.0, 5.0, 1.0, 0.1])
    b, k = extend_basis(None, h, 0.95)
    assert k == 2 and b.shape == (12, 2)
    assert torch.allclose(b.T @ b, torch.eye(2, dtype=b.dtype), atol=1e-10)
    # the two kept directions span the top-2 right singular vectors
    assert torch.allclose(b @ (b.T @ v[:, :2]), v[:, :2], atol=1e-8)
    # a second task: only the residual adds directions, and the basis stays orthonormal
    h2, _ = _with_spectrum([3.0, 2.0], seed=1)
    b2, k2 = extend_basis(b, h2, 0.95)
    assert b2.shape[1] == 2 + k2 and k2 >= 1
    assert torch.allclose(b2.T @ b2, torch.eye(b2.shape[1], dtype=b2.dtype), atol=1e-10)
    assert extend_basis(b2, h2, 0.95)[1] == 0  # already captured: nothing added
    with pytest.raises(ValueError, match="eps"):
        energy_rank(s, 0.0)


def test_projection_removes_the_interference_space_and_keeps_the_rest():
    g = torch.Generator().manual_seed(0)
    d = 16
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    b_pre = q[:, :4]  # pre-trained directions
    shared = q[:, 2:4]  # old-task directions inside the pre-trained subspace
    own = q[:, 4:7]  # old-task directions outside it
    b_old = torch.cat([shared, own], 1)
    b_s = interference_basis(b_old, b_pre)
    assert b_s.shape[1] == 3  # only the old task's own directions interfere
    grad = torch.randn(5, d, generator=g, dtype=torch.float64)
    out = project(grad, "interference", b_old, b_pre, b_s)
    rel = (out @ b_s).norm() / grad.norm()
    assert rel < 1e-5  # no component left in the interference space
    # the part in U_pre (outside S) and in the residual space survives unchanged
    keep = torch.cat([b_pre, q[:, 7:]], 1)
    assert torch.allclose(out @ keep, grad @ keep, atol=1e-10)
    gpm = project(grad, "gpm", b_old, b_pre)
    assert (gpm @ b_old).norm() / grad.norm() < 1e-10  # plain GPM also drops the shared part
    add = project(grad, "additive", b_old, b_pre, alpha=0.5)
    expect = grad - (grad @ b_old) @ b_old.T + 0.5 * (grad @ b_pre) @ b_pre.T
    assert torch.allclose(add, expect, atol=1e-10)
    with pytest.raises(ValueError, match="projection mode"):
        project(grad, "orthogonal")


class _Regressor(L.LightningModule):
    def __init__(self, d: int, data, adam: bool = False):
        super().__init__()
        self.w = nn.Linear(d, 1, bias=False)
        self.data, self.adam = data, adam

    def training_step(self, batch, _):
        x, y = batch
        return ((self.w(x).squeeze(-1) - y) ** 2).mean()

    def configure_optimizers(self):
        if self.adam:  # what the prompt methods train with: per-coordinate scaling, decay
            return torch.optim.AdamW(self.parameters(), lr=0.05, weight_decay=0.01)
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.data, batch_size=32, shuffle=False)


def _task(basis: torch.Tensor, w_true: torch.Tensor, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, basis.shape[1], generator=g) @ basis.T
    return torch.utils.data.TensorDataset(x, x @ w_true)


class _Updates(L.Callback):
    """Each optimizer step's applied change of ``w`` (read after the projection's hooks)."""

    def __init__(self, model):
        self.model, self.steps, self._before = model, [], None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._before = self.model.w.weight.detach().double().clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append(self.model.w.weight.detach().double() - self._before)


def _old_loss_drift(
    enabled: bool, on: str = "update", adam: bool = False, steps: list | None = None
) -> float:
    torch.manual_seed(0)
    d = 10
    q, _ = torch.linalg.qr(torch.randn(d, d))
    a_dirs, b_dirs = q[:, :4], torch.cat([q[:, 2:4], q[:, 4:8]], 1)  # tasks share 2 directions
    w_a, w_b = torch.randn(d), torch.randn(d)
    task_a, task_b = _task(a_dirs, w_a, 256, 1), _task(b_dirs, w_b, 256, 2)
    model = _Regressor(d, task_a, adam=adam)
    if adam:  # float64: what is left in the span is the map's, not the parameter's rounding
        model.double()
        task_a, task_b = (
            torch.utils.data.TensorDataset(*(t.double() for t in task.tensors))
            for task in (task_a, task_b)
        )
        model.data = task_a
    kw = dict(max_epochs=30, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    L.Trainer(**kw, enable_model_summary=False).fit(model)
    xa, ya = task_a.tensors
    with torch.no_grad():
        before = float(((model.w(xa).squeeze(-1) - ya) ** 2).mean())
    cb = SubspaceProjection(lambda: list(model.parameters()), mode="gpm", enabled=enabled, on=on)
    with collect_inputs(model.w) as rows:
        model.w(xa)
    cb.add_task(torch.cat(rows), eps=0.99)
    assert cb.b_old.shape[1] == 4
    model.data = task_b
    rec = _Updates(model)
    L.Trainer(**kw, enable_model_summary=False, callbacks=[cb, rec]).fit(model)
    if steps is not None:
        steps += [(d, cb.b_old.double()) for d in rec.steps]
    with torch.no_grad():
        after = float(((model.w(xa).squeeze(-1) - ya) ** 2).mean())
    return after - before


@pytest.mark.parametrize("on", ["update", "gradient"])
def test_projection_keeps_the_old_task_loss_from_drifting(on):
    """Under SGD projecting the gradient and projecting the applied update are the same."""
    kept, off = _old_loss_drift(True, on), _old_loss_drift(False, on)
    assert off > 10 * max(kept, 1e-6) and kept < 1e-3


@pytest.mark.slow
def test_under_adamw_only_the_projected_update_protects_the_old_task():
    """AdamW rescales each coordinate of a projected gradient (and decays every weight), so its
    step re-enters the protected span; the applied update, projected, never does."""
    steps: list = []
    update = _old_loss_drift(True, "update", adam=True, steps=steps)
    assert len(steps) == 30 * 8  # every step of task b
    for d, b in steps:
        assert (d @ b).norm() <= 1e-12 * d.norm() and d.norm() > 0
    grads: list = []
    gradient = _old_loss_drift(True, "gradient", adam=True, steps=grads)
    share = max(float((d @ b).norm() / d.norm()) for d, b in grads)
    off = _old_loss_drift(False, adam=True)
    assert update < 1e-9 and gradient > 1e-3 and share > 0.1 and off > gradient, (
        update,
        gradient,
        share,
        off,
    )


def test_the_float32_projection_leaves_a_float32_rounding_of_the_removed_span():
    """The per-step map runs in float32 (bases re-orthonormalised once in float64): what it
    leaves in the removed span is ~1e-7 of the vector at a real width, not float64's 1e-16
    but far below any effect; a float64 vector still gets float64's."""
    g = torch.Generator().manual_seed(0)
    d, k = 1024, 300
    b, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    cb = SubspaceProjection(lambda: [], mode="gpm")
    cb.b_old = b.float()
    cb.refresh()
    b = torch.linalg.qr(b.float().double())[0]  # the span of the stored float32 basis
    grad = torch.randn(50, d, generator=g)
    out = cb.apply(grad)
    assert out.dtype == torch.float32
    assert float((out.double() @ b).norm() / grad.double().norm()) < 1e-6
    assert float((cb.apply(grad.double()) @ b).norm() / grad.double().norm()) < 1e-12
    assert cb.bases(grad.device, torch.float32)["b_old"].dtype == torch.float32


def _svd_basis(h: torch.Tensor, eps: float) -> tuple[torch.Tensor, int]:
    """The reference: the energy rule on a float64 SVD of the rows themselves."""
    _, s, vh = torch.linalg.svd(h.double(), full_matrices=False)
    k = energy_rank(s, eps)
    return vh[:k].T, k


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_gram_route_matches_an_svd_of_the_rows(dtype):
    """The eigenvectors of X^T X are X's right singular vectors (its eigenvalues the squared
    singular values): the same directions, chosen by the same energy rule, from a d x d matrix
    accumulated batch by batch -- in float32 too, to ~1e-4 in subspace terms."""
    g = torch.Generator().manual_seed(0)
    n, d = 600, 48
    mix = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    h = (torch.randn(n, d, generator=g, dtype=torch.float64) * torch.logspace(0, -2, d)) @ mix
    h = h.to(dtype)
    gram = Gram()
    for i in range(0, n, 128):  # batch by batch: only d x d is kept
        gram.add(h[i : i + 128])
    assert gram.rows == n and gram.matrix.shape == (d, d) and gram.matrix.dtype == dtype
    ref, k_ref = _svd_basis(h, 0.9)
    b, k = extend_basis(None, gram, 0.9)
    assert k == k_ref and b.dtype == dtype and 1 < k < d
    dist = (b.double() @ b.double().T - ref @ ref.T).norm()  # distance of the projectors
    assert dist < (1e-4 if dtype == torch.float32 else 1e-10), float(dist)
    assert torch.allclose(b.T @ b, torch.eye(k, dtype=dtype), atol=1e-5)
    # the rows themselves give the same basis (their Gram is formed on the way)
    assert torch.allclose(extend_basis(None, h, 0.9)[0].abs(), b.abs(), atol=1e-6)
    # a second task extends it from the residual of its rows, as an SVD of the residual does
    h2 = torch.randn(200, d, generator=g, dtype=torch.float64).to(dtype)
    b2, k2 = extend_basis(b, Gram.of(h2), 0.95)
    r = h2.double() - (h2.double() @ b.double()) @ b.double().T
    captured = float(((h2.double() @ b.double()) ** 2).sum())
    total = float((h2.double() ** 2).sum())
    _, s, vh = torch.linalg.svd(r, full_matrices=False)
    need = (0.95 * total - captured) / float((s**2).sum())
    k_want = energy_rank(s, need)
    assert k2 == k_want
    want = torch.cat([b.double(), vh[:k_want].T], 1)
    got = b2.double()
    assert (got @ got.T - want @ want.T).norm() < (1e-3 if dtype == torch.float32 else 1e-9)


def test_collected_rows_stay_on_the_modules_device():
    """No copy to the host: on ``meta`` (where a host copy cannot read anything back) the rows
    and their Gram stay where the module runs."""
    lin = nn.Linear(5, 3).to("meta")
    with collect_inputs(lin) as rows:
        lin(torch.empty(2, 4, 5, device="meta"))
    (x,) = rows
    assert x.device.type == "meta" and x.shape == (8, 5) and x.dtype == torch.float32
    gram = Gram.of(x.to(torch.bfloat16))
    assert gram.matrix.device.type == "meta" and gram.matrix.dtype == torch.float32
