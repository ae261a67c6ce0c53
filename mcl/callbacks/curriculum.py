"""Curriculum update rescaling: each step's update of a parameter group scaled by a ratio
(the paper's reading of D-MoLE's inter-modal curriculum; reusable).

After every optimizer step a parameter in group g moves by ``ratio[g]`` times the step the
optimizer took: ``p = p_old + ratio[g] * (p - p_old)``. The *update* is rescaled, not the
gradient, because Adam normalises a rescaled gradient away.

The callback knows no method. It asks its source, an object with the two methods of
:class:`RescaledUpdates`, for the groups and their ratios at the start of every batch, so the
source may change either between tasks (new experts, new shares). :func:`share_ratios` is the
ratio rule D-MoLE uses: a group's ratio is its share times the number of groups, so the ratios
average 1 and equal shares leave the updates as they are.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import lightning as L
import torch
from torch import nn


@runtime_checkable
class RescaledUpdates(Protocol):
    """What :class:`UpdateRatioCallback` needs from the object that owns the parameters."""

    def update_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters whose updates are rescaled, by group (empty: nothing this batch)."""
        ...

    def update_ratios(self) -> dict[str, float]:
        """The update scale of every group :meth:`update_groups` names."""
        ...


def share_ratios(shares: dict[str, float]) -> dict[str, float]:
    """Ratios from shares that sum to 1: ``len(shares) * share`` per group (mean ratio 1)."""
    return {g: len(shares) * s for g, s in shares.items()}


class UpdateRatioCallback(L.Callback):
    """Scale each step's update of the source's parameter groups by the source's ratios."""

    def __init__(self, source: RescaledUpdates):
        if not isinstance(source, RescaledUpdates):
            raise TypeError(f"{type(source).__name__} has no update_groups / update_ratios")
        self.source = source
        self._before: list[tuple[nn.Parameter, torch.Tensor, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        groups = self.source.update_groups()
        ratios = self.source.update_ratios() if groups else {}
        self._before = [(p, p.detach().clone(), ratios[g]) for g, ps in groups.items() for p in ps]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with torch.no_grad():
            for p, old, w in self._before:
                p.copy_(old + w * (p - old))
        self._before = []
