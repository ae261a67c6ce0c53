"""Per-task answer scorers, their compatibility modes and the extra scores a benchmark declares.

One module per seam, so each can be read (and imported) on its own:

- `normalize`: answer normalisation (official VQA processing; the looser MCIT-family one);
- `rules`: the official per-sample rules (VQA soft accuracy, exact match, choice letter, IoU);
- `compat`: the anchors' own rules that the compatibility modes reproduce;
- `modes`: which scorers each mode changes, and `task_modes` (a mode, a map or a preset);
- `meters`: the rules as torchmetrics `Metric`s with summed states (exact DDP reduction);
- `compliance`: answer-form rules (`format_ok`, and `mif_ok` behind the `mif` extra score);
- `registry`: `build_scorer` by name and mode, and `EXTRA_SCORES` (with display labels);
- `records`: `score_records`, one task's scores from its saved prediction records.

Scores are x100; a scorer that saw nothing computes NaN (a missing cell, never 0). The caption
scorers (`cider`, `bleu4`, `rougeL`) live in `mcl.eval.caption`; what both families share is in
`mcl.eval.base`.
"""

from mcl.eval.scorers.compat import (
    UNANSWERABLE,
    coin_iou_score,
    coin_parse_box,
    coin_vqa_exact_score,
    lower_exact_score,
    mcitlib_contains_score,
    two_way_contains_score,
)
from mcl.eval.scorers.compliance import format_ok, mif_ok
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
from mcl.eval.scorers.modes import (
    MODE_SCORERS,
    SCORER_MODES,
    SCORER_NAMES,
    column_modes,
    effective_scorer_mode,
    scorer_mode_applies,
    task_modes,
)
from mcl.eval.scorers.normalize import normalize_vqa
from mcl.eval.scorers.records import score_records
from mcl.eval.scorers.registry import EXTRA_LABELS, EXTRA_SCORES, build_scorer, extra_label
from mcl.eval.scorers.rules import (
    IOU_THRESHOLD,
    box_iou,
    choice_score,
    exact_match_score,
    extract_choice,
    iou_score,
    parse_box,
    vqa_score,
)

__all__ = [
    "EXTRA_LABELS",
    "EXTRA_SCORES",
    "IOU_THRESHOLD",
    "MODE_SCORERS",
    "SCORER_MODES",
    "SCORER_NAMES",
    "UNANSWERABLE",
    "CoinGroundingIoU",
    "CoinVQAExact",
    "ExactMatch",
    "GroundingIoU",
    "LowerExact",
    "MCITlibContains",
    "MultipleChoice",
    "TwoWayContains",
    "VQAAccuracy",
    "box_iou",
    "build_scorer",
    "choice_score",
    "coin_iou_score",
    "coin_parse_box",
    "coin_vqa_exact_score",
    "effective_scorer_mode",
    "exact_match_score",
    "extra_label",
    "extract_choice",
    "format_ok",
    "iou_score",
    "lower_exact_score",
    "mcitlib_contains_score",
    "mif_ok",
    "normalize_vqa",
    "parse_box",
    "score_records",
    "scorer_mode_applies",
    "column_modes",
    "task_modes",
    "two_way_contains_score",
    "vqa_score",
]
