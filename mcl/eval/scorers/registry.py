"""What can be asked for by name: the scorers (`build_scorer`: a task's `scorer:` under a
compatibility mode) and the extra scores a benchmark declares (`bench.extra_scores: [mif]`).

An extra score is a function of one task's prediction records and its scorer name, returning a
percentage (or None when there are no records); `score_records` computes the ones a run asks for
next to the task's score. `EXTRA_LABELS` gives each a display label for tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torchmetrics import Metric

from mcl.eval import caption
from mcl.eval.scorers.compliance import mif_ok
from mcl.eval.scorers.meters import (
    CoinGroundingIoU,
    CoinVQAExact,
    ExactMatch,
    GroundingIoU,
    LowerExact,
    MCITlibContains,
    MultipleChoice,
    TwoWayContains,
    VQAAccuracy,
)
from mcl.eval.scorers.modes import effective_scorer_mode

ExtraScore = Callable[[Sequence[Mapping], str], "float | None"]


def _scorer_class(name: str, mode: str) -> type[Metric]:
    mode = effective_scorer_mode(name, mode)
    variants: dict[tuple[str, str], type[Metric]] = {
        ("vqa", "coin_vqa_exact"): CoinVQAExact,
        ("vqa", "mcitlib_contains"): MCITlibContains,
        ("exact", "mcitlib_contains"): MCITlibContains,
        ("iou", "coin_grounding"): CoinGroundingIoU,
        ("cider", "mcitlib_caption_avg7"): caption.CaptionAvg7,
        ("cider", "best_ref_cider"): caption.CIDErBestRef,
        ("exact", "two_way_contains"): TwoWayContains,
        ("vqa", "two_way_contains"): TwoWayContains,
        ("exact", "lower_exact"): LowerExact,
        ("vqa", "lower_exact"): LowerExact,
    }
    strict: dict[str, type[Metric]] = {
        "vqa": VQAAccuracy,
        "exact": ExactMatch,
        "mc": MultipleChoice,
        "iou": GroundingIoU,
        "cider": caption.CIDErD,
        "bleu4": caption.BLEU4,
        "rougeL": caption.RougeL,
    }
    return variants.get((name, mode)) or strict[name]


def build_scorer(name: str, mode: str = "strict", **kwargs) -> Metric:
    """A fresh scorer for a task's `scorer:` name under a compatibility mode (one instance per
    task and stage). A mode that does not concern `name` gives the strict scorer; unknown names
    or modes raise ValueError listing the valid ones."""
    return _scorer_class(name, mode)(**kwargs)


def mif(records: Sequence[Mapping], scorer: str) -> float | None:
    """% of all answers (held-out templates included) that pass the MIF compliance rule
    (`mif_ok`); None for a task without records."""
    if not records:
        return None
    return 100.0 * sum(mif_ok(scorer, r["pred"], r["answers"]) for r in records) / len(records)


EXTRA_SCORES: dict[str, ExtraScore] = {"mif": mif}
EXTRA_LABELS: dict[str, str] = {"mif": "MIF"}


def extra_label(name: str) -> str:
    """An extra score's display label; its metric key (`name.upper()`) when none is registered."""
    return EXTRA_LABELS.get(name, name.upper())


def check_extras(names: Sequence[str]) -> tuple[str, ...]:
    """`names` as a tuple, after checking each is a registered extra score."""
    unknown = [n for n in names if n not in EXTRA_SCORES]
    if unknown:
        raise ValueError(
            f"unknown extra score {', '.join(map(repr, unknown))}; "
            f"registered: {', '.join(EXTRA_SCORES)}"
        )
    return tuple(names)
