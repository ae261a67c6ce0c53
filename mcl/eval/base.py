"""What every answer scorer shares: reference lists, the length check and the sum/count metric.

Both the short-answer scorers (`mcl.eval.scorers`) and the caption scorers (`mcl.eval.caption`)
build on this module, so neither imports the other for its plumbing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


def as_refs(refs: str | Sequence[str]) -> list[str]:
    """A sample's references as a non-empty list (one string counts as one reference)."""
    refs = [refs] if isinstance(refs, str) else list(refs)
    if not refs:
        raise ValueError("a sample has no reference answers")
    return refs


def check_lengths(preds: Sequence, refs: Sequence) -> None:
    """One reference list per prediction, and predictions given as a list, not one string."""
    if isinstance(preds, str):
        raise TypeError("preds must be a list of strings, not one string")
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} reference lists")


class MeanScore(Metric):
    """Mean of `score_one` over samples, x100; `sum`/`count` states reduce by summation, so DDP
    reduction is exact. NaN when nothing was scored (a missing cell, never 0)."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("sum", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("count", default=zero.clone(), dist_reduce_fx="sum")

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        raise NotImplementedError

    def update(self, preds: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
        check_lengths(preds, refs)
        self._add([self.score_one(p, r) for p, r in zip(preds, refs)])

    def _add(self, scores: list[float]) -> None:
        self.sum += sum(scores)
        self.count += len(scores)

    def compute(self) -> torch.Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"))
        return (self.sum / self.count * 100).float()
