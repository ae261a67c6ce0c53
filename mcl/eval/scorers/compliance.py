"""Answer-form rules: whether an answer has the form its task asks for, right or wrong.

`format_ok` is mcl's own rule (results.json `format_scores`); `mif_ok` is the instruction-
following compliance rule of CVIT's reference evaluation (its Eval_IF `eval_*_instruction.py`
scripts), registered as the `mif` extra score in `registry`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mcl.eval.base import as_refs
from mcl.eval.scorers.rules import extract_choice, parse_box

CAPTION_SCORERS = ("cider", "bleu4", "rougeL")


def format_ok(scorer: str, answer_type: str | None, pred: str) -> bool:
    """Whether an answer has the *form* the task asks for, right or wrong (an instruction-
    following view): an option letter for multiple choice, a parsable box for grounding, digits
    for numbers, a sentence for captions, a short phrase otherwise."""
    words = pred.split()
    if scorer == "mc":
        return extract_choice(pred) is not None
    if scorer == "iou":
        return parse_box(pred) is not None
    if scorer in CAPTION_SCORERS:
        return len(words) >= 2
    if answer_type == "number":
        return re.fullmatch(r"\d+", pred.strip()) is not None
    return 1 <= len(words) <= 3


def mif_ok(scorer: str, pred: str, refs: str | Sequence[str]) -> bool:
    """The MIF compliance rule, by the task's scorer kind:

    - multiple choice: exactly one letter A-Z after strip / upper-case;
    - captions: ends with "." and (more than 4 words, or is a substring of a reference);
    - everything else (VQA-type): at most 2 words, or equals a reference (case-insensitive).
    """
    text = pred.strip()
    if scorer == "mc":
        return len(text) == 1 and "A" <= text.upper() <= "Z"
    if scorer in CAPTION_SCORERS:
        return text.endswith(".") and (
            len(text.split()) > 4 or any(text in r for r in as_refs(refs))
        )
    return len(text.split()) <= 2 or any(text.lower() == r.strip().lower() for r in as_refs(refs))
