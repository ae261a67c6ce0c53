"""The official per-sample rules (pure functions of prediction and references, 0..1): VQA soft
accuracy, normalised exact match, multiple-choice letter extraction, box parsing and IoU.
Predictions files can log them per sample; `meters` sums them into torchmetrics states."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from mcl.eval.base import as_refs
from mcl.eval.scorers.normalize import normalize_vqa


def vqa_score(pred: str, refs: str | Sequence[str]) -> float:
    """VQA accuracy of one answer, in 0..1.

    With >= 10 references: the official rule, min(#matches/3, 1) averaged over the leave-one-out
    subsets (10-choose-9 for the usual 10 answers). With 3..9 references: min(#matches/3, 1) on
    all of them. With 1-2 references the /3 rule cannot reach 1, so it is exact match after
    normalisation. References are normalised like the prediction (the official script only strips
    their punctuation, which gives the same result on VQAv2's already-normalised answers but
    would wrongly fail raw references such as "Two").
    """
    refs = [normalize_vqa(r) for r in as_refs(refs)]
    pred = normalize_vqa(pred)
    n, m = len(refs), sum(r == pred for r in refs)
    if n >= 10:
        # leaving out a matching ref leaves m-1 matches; leaving out another leaves m
        return (m * min((m - 1) / 3, 1.0) + (n - m) * min(m / 3, 1.0)) / n
    if n >= 3:
        return min(m / 3, 1.0)
    return 1.0 if m else 0.0


def exact_match_score(pred: str, refs: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference."""
    pred = normalize_vqa(pred)
    return float(any(normalize_vqa(r) == pred for r in as_refs(refs)))


_LETTERS = "ABCDEFGH"
_CHOICE_PATTERNS = (  # tried in order; group 1 is the letter
    re.compile(r"^\s*[(\[]?([A-Ha-h])[)\]]?\s*[.:)]?\s*$"),  # "B", "b", "(B)", "B.", "b)"
    re.compile(r"^\s*[(\[]?([A-H])(?:[)\]]|[.:])"),  # "B. red car", "(C) dog"
    re.compile(r"(?i:answer|option|choice)\s*(?:is|:)?\s*[(\[]?([A-H])\b"),  # "the answer is B"
    # lower-case only at the end, so "the answer is a cat" is not read as option A
    re.compile(r"(?i:answer|option|choice)\s*(?:is|:)?\s*[(\[]?([a-h])[)\]]?\s*[.!]?\s*$"),
    re.compile(r"[(\[]([A-H])[)\]]"),  # "I think (B)"
)


def _option_texts(options: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """Letter -> normalised option text; options are given in A, B, ... order or as a mapping."""
    if not options:
        return {}
    pairs = options.items() if isinstance(options, Mapping) else zip(_LETTERS, options)
    return {str(k).strip().upper(): normalize_vqa(str(v)) for k, v in pairs}


def extract_choice(
    text: str, options: Sequence[str] | Mapping[str, str] | None = None
) -> str | None:
    """Option letter (A-H) named by `text`, or None.

    Order: the whole text equals an option's text; an explicit letter ("B", "(b)", "B.",
    "the answer is B"); exactly one option's text appears as whole words in the answer.
    """
    texts = _option_texts(options)
    norm = normalize_vqa(text)
    for letter, option in texts.items():
        if option and norm == option:
            return letter
    for pattern in _CHOICE_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1).upper()
    hits = [
        letter
        for letter, option in texts.items()
        if option and re.search(rf"(?<!\S){re.escape(option)}(?!\S)", norm)
    ]
    return hits[0] if len(hits) == 1 else None


def choice_score(
    pred: str, refs: str | Sequence[str], options: Sequence[str] | Mapping[str, str] | None = None
) -> float:
    """1.0 when the option chosen by the prediction is the key (a letter, or the option text)."""
    keys = {extract_choice(r, options) for r in as_refs(refs)} - {None}
    if not keys:
        raise ValueError(f"reference {refs!r} names no option letter; pass `options` for texts")
    return float(extract_choice(pred, options) in keys)


# a number not glued to a word, so "x1: 0.1" yields 0.1 and not 1
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_BRACKETED = re.compile(r"[\[(]([^\[\]()]*)[\])]")
IOU_THRESHOLD = 0.5


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """First box [x1, y1, x2, y2] in `text`, or None when fewer than 4 numbers can be found.

    A bracketed group with 4 numbers is preferred over loose numbers ("region 2: [...]"). Corners
    are reordered so x1 <= x2 and y1 <= y2. Units are not checked: IoU only needs the prediction
    and the reference in the same units (normally 0-1).
    """
    for chunk in [m.group(1) for m in _BRACKETED.finditer(text)] + [text]:
        numbers = [float(n) for n in _NUMBER.findall(chunk)[:4]]
        if len(numbers) == 4 and all(math.isfinite(v) for v in numbers):
            x1, y1, x2, y2 = numbers
            return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)
    return None


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when the union is empty."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def iou_score(pred: str, refs: str | Sequence[str]) -> float:
    """1.0 when the predicted box overlaps a reference box with IoU >= 0.5; 0 if unparsable.

    A reference without a box is a data error and raises (the loader should have caught it).
    """
    boxes = [b for b in map(parse_box, as_refs(refs)) if b is not None]
    if not boxes:
        raise ValueError(f"reference {refs!r} contains no box [x1, y1, x2, y2]")
    box = parse_box(pred)
    if box is None:
        return 0.0
    # tolerance: an IoU of exactly 0.5 in exact arithmetic may come out as 0.4999999999
    return float(max(box_iou(box, b) for b in boxes) >= IOU_THRESHOLD - 1e-9)
