"""Per-sample rules of the anchors' own evaluation scripts, which the compatibility modes
reproduce quirks included (see `modes` for which scorer each mode changes). Pure functions of
prediction and references, 0..1."""

from __future__ import annotations

from collections.abc import Sequence

from mcl.eval.base import as_refs
from mcl.eval.scorers.normalize import loose
from mcl.eval.scorers.rules import IOU_THRESHOLD, box_iou, parse_box


def coin_vqa_exact_score(pred: str, refs: str | Sequence[str]) -> float:
    """CoIN's VQAv2 / VizWiz rule: `pred.upper() == answer.upper()` against the single
    `answer` field, i.e. case-insensitive exact match with the first reference and no other
    normalisation ("2" vs "two" or a final period fails). Both sides are stripped of surrounding
    whitespace (CoIN's generation script strips outputs; mcl's predictions may not be)."""
    return float(pred.strip().upper() == as_refs(refs)[0].strip().upper())


UNANSWERABLE = "Unanswerable"


def mcitlib_contains_score(pred: str, refs: str | Sequence[str]) -> float:
    """MCITlib's answer rule: 1.0 when a (loosely normalised, non-empty) reference is a plain
    substring of the loosely normalised prediction ("cat" counts inside "a black cat", and also
    inside "concatenate"). A prediction containing "Unanswerable" (case-sensitive, as in the
    source) is skipped before comparison: it scores 0 even when the reference is "unanswerable",
    yet is still counted in the denominator.

    The benchmark's notes only say skipped "Unanswerable" answers are counted; in the
    CoIN-derived scripts we could read (e.g. the OCR-VQA one: `if 'Unanswerable' in
    result['text']: continue` with `total = len(results)`) the test is on the prediction, so
    that is what is reproduced.
    """
    if UNANSWERABLE in pred:
        return 0.0
    norm = loose(pred)
    return float(any(ref and ref in norm for ref in map(loose, as_refs(refs))))


def coin_parse_box(text: str) -> tuple[float, float, float, float] | None:
    """CoIN's grounding parser, step by step (ETrain/Eval/LLaVA/CoIN/eval_grounding.py): drop
    one leading space, delete every "[" and "]", then cut the first and the last character
    (`[1:-1]`, evidently meant for the brackets that were already deleted), split on ",", and
    `float()` each part; anything but exactly 4 numbers is unparsable (None).

    So "[0.12, 0.30, 0.56, 0.78]" parses as (0.12, 0.30, 0.56, 0.7): the first cut only eats the
    leading "0" of "0.12", but the last coordinate loses its final digit. A leading "1.0"
    becomes ".0" = 0, and any text around the box makes it unparsable. Corners are not
    reordered. This reproduces the quirk exactly rather than approximating it.
    """
    text = text[1:] if text.startswith(" ") else text
    text = text.replace("[", "").replace("]", "")
    try:
        numbers = [float(x) for x in text[1:-1].split(",")]
    except ValueError:
        return None
    return tuple(numbers) if len(numbers) == 4 else None  # type: ignore[return-value]


def coin_iou_score(pred: str, refs: str | Sequence[str]) -> float:
    """1.0 when CoIN's parse of the prediction has IoU strictly above 0.5 (CoIN uses `>`) with a
    reference box; references are parsed normally (CoIN does not cut them)."""
    boxes = [b for b in map(parse_box, as_refs(refs)) if b is not None]
    if not boxes:
        raise ValueError(f"reference {refs!r} contains no box [x1, y1, x2, y2]")
    box = coin_parse_box(pred)
    if box is None:
        return 0.0
    return float(max(box_iou(box, b) for b in boxes) > IOU_THRESHOLD)


def two_way_contains_score(pred: str, refs: str | Sequence[str]) -> float:
    """CVIT's reference ImageNet / Places365 rule: correct when the stripped, lower-cased prediction
    contains a reference or is contained in one ("tabby" matches "tabby cat" and vice versa).
    An empty prediction is wrong (it would be a substring of everything)."""
    p = pred.strip().lower()
    return float(
        bool(p)
        and any(
            r.strip().lower() in p or p in r.strip().lower() for r in as_refs(refs) if r.strip()
        )
    )


def lower_exact_score(pred: str, refs: str | Sequence[str]) -> float:
    """CVIT's reference OCR-VQA rule: lower-case exact match of the stripped strings; a prediction
    containing "Unanswerable" is wrong."""
    if UNANSWERABLE in pred:
        return 0.0
    return float(any(pred.strip().lower() == r.strip().lower() for r in as_refs(refs)))
