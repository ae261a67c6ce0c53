"""The short-answer scorers as torchmetrics `Metric`s: each sums one per-sample rule (`rules`,
`compat`) over samples, so DDP reduction is exact and free. The caption scorers live in
`mcl.eval.caption`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mcl.eval.base import MeanScore, check_lengths
from mcl.eval.scorers.compat import (
    UNANSWERABLE,
    coin_iou_score,
    coin_parse_box,
    coin_vqa_exact_score,
    lower_exact_score,
    mcitlib_contains_score,
    two_way_contains_score,
)
from mcl.eval.scorers.rules import (
    choice_score,
    exact_match_score,
    iou_score,
    parse_box,
    vqa_score,
)


class VQAAccuracy(MeanScore):
    """VQA soft accuracy (see `vqa_score` for the rule with fewer than 10 references)."""

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return vqa_score(pred, refs)


class ExactMatch(MeanScore):
    """Normalised exact match against any reference (classification, single-answer VQA)."""

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return exact_match_score(pred, refs)


class MultipleChoice(MeanScore):
    """Accuracy of the chosen option; `update(..., options=[[text A, text B, ...], ...])` lets
    answers given as option text count."""

    def score_one(self, pred: str, refs: str | Sequence[str], options=None) -> float:
        return choice_score(pred, refs, options)

    def update(self, preds: Sequence[str], refs: Sequence[Sequence[str]], options=None) -> None:
        check_lengths(preds, refs)
        options = [None] * len(preds) if options is None else options
        check_lengths(preds, options)
        self._add([self.score_one(p, r, o) for p, r, o in zip(preds, refs, options)])


class GroundingIoU(MeanScore):
    """Share of predicted boxes with IoU >= 0.5; unparsable answers score 0 and are counted in
    the `unparsable` state, so a format failure can be told apart from a localisation failure."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("unparsable", default=zero, dist_reduce_fx="sum")

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return iou_score(pred, refs)

    def parse(self, pred: str) -> tuple[float, ...] | None:
        return parse_box(pred)

    def update(self, preds: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
        super().update(preds, refs)
        self.unparsable += sum(self.parse(p) is None for p in preds)


class CoinVQAExact(MeanScore):
    """`coin_vqa_exact` mode of `vqa`: see `coin_vqa_exact_score`."""

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return coin_vqa_exact_score(pred, refs)


class MCITlibContains(MeanScore):
    """`mcitlib_contains` mode of `vqa` and `exact`: see `mcitlib_contains_score`. The `skipped`
    state counts predictions scored 0 because they contain "Unanswerable"."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("skipped", default=zero, dist_reduce_fx="sum")

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return mcitlib_contains_score(pred, refs)

    def update(self, preds: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
        super().update(preds, refs)
        self.skipped += sum(UNANSWERABLE in p for p in preds)


class CoinGroundingIoU(GroundingIoU):
    """`coin_grounding` mode of `iou`: CoIN's parser and strict threshold (`coin_iou_score`);
    `unparsable` counts answers CoIN's parser rejects."""

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return coin_iou_score(pred, refs)

    def parse(self, pred: str) -> tuple[float, ...] | None:
        return coin_parse_box(pred)


class TwoWayContains(MeanScore):
    """`two_way_contains` mode of `exact` and `vqa`: see `two_way_contains_score`."""

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return two_way_contains_score(pred, refs)


class LowerExact(MeanScore):
    """`lower_exact` mode of `exact` and `vqa`: see `lower_exact_score`."""

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return lower_exact_score(pred, refs)
