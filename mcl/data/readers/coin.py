"""CoIN's ``Instructions_Original/<Task>/{train,test}.json`` and the files MCITlib ships for UCIT
and MLLM-DCL (``<Task>/{train,test}.json``), which share CoIN's layout.

- ``train.json`` records are LLaVA conversations (read as :mod:`mcl.data.readers.llava` does).
- ``test.json`` records are ``{"question_id", "image", "text", "answer"}``: CoIN's and MCITlib's
  ``model_vqa.py`` ask ``text`` about ``image``, and their ``eval_*.py`` score against the record
  whose ``question_id`` matches, reading ``answer``.
- Grounding (CoIN's ``Grounding/test.json``, scored by ``eval_grounding.py``): ``answer_bbox``, a
  string ``"[x1, y1, x2, y2]"`` normalised to the longer image side, and ``size``, ``[width,
  height]``; both are required, and the box string is also the reference text.

CoIN scores some tasks from the official files rather than the test file (TextVQA from
``TextVQA_0.5.1_val.json``, GQA and ScienceQA from their question files): pass that file as
``answers`` and the references come from it, joined on ``question_id``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

from mcl.data.readers.files import (
    answer_list,
    clean_question,
    missing,
    not_a_record,
    record_id,
    records,
    text,
)
from mcl.data.readers.llava import from_conversations
from mcl.data.readers.question_answers import answer_lookup
from mcl.data.readers.record import MALFORMED, UNMATCHED, Problem, Record


def parse_bbox(value: object) -> list[float] | None:
    """Four finite numbers from ``"[x1, y1, x2, y2]"`` or a list, else ``None``."""
    if isinstance(value, str):
        try:
            value = json.loads(value if value.strip().startswith("[") else f"[{value}]")
        except json.JSONDecodeError:
            return None
    if not isinstance(value, list) or len(value) != 4:
        return None
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return box if all(math.isfinite(v) for v in box) else None


def parse_size(value: object) -> list[int] | None:
    """``[width, height]`` as two positive integers, else ``None``."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    try:
        size = [int(v) for v in value]
    except (TypeError, ValueError):
        return None
    return size if all(v > 0 for v in size) and list(value) == size else None


def _options(rec: dict) -> list[str] | None:
    for key in ("options", "choices"):
        value = rec.get(key)
        if isinstance(value, list) and value:
            return [str(v) for v in value]
    return None


def _test_record(rec: dict, rid: str, path, lookup, answers_path) -> Record | Problem:
    question = text(rec.get("text")) or text(rec.get("question"))
    if question is None:
        return missing(rid, "text", path)
    image = text(rec.get("image"))
    if image is None:
        return missing(rid, "image", path)
    question = clean_question(question)
    common = {"id": rid, "image": image, "question": question}
    common["instruction"] = text(rec.get("instruction"))
    if "answer_bbox" in rec:
        bbox = parse_bbox(rec["answer_bbox"])
        if bbox is None:
            return Problem(rid, "answer_bbox", str(path), MALFORMED, "expected [x1, y1, x2, y2]")
        if "size" not in rec:
            return missing(rid, "size", path, "a grounding box needs its image size")
        size = parse_size(rec["size"])
        if size is None:
            return Problem(rid, "size", str(path), MALFORMED, "expected [width, height]")
        ref = rec["answer_bbox"] if isinstance(rec["answer_bbox"], str) else str(bbox)
        return Record(**common, answers=[ref.strip()], bbox=bbox, image_size=size)
    if lookup is not None:
        found = lookup(rid, image, question)
        if found is None:
            return Problem(rid, "answers", str(answers_path), UNMATCHED, f"question in {path}")
        refs, options, extra = found
        return Record(**common, answers=refs, options=options or _options(rec), extra=extra)
    refs = answer_list(rec.get("answer"))
    if refs is None:
        return missing(rid, "answer", path)
    return Record(**common, answers=refs, options=_options(rec))


def read(
    path: str | Path, *, answers: str | Path | None = None, kind: str | None = None
) -> Iterator[Record | Problem]:
    """Every record of a CoIN / UCIT / MLLM-DCL ``train.json`` or ``test.json``."""
    lookup = answer_lookup(answers, kind) if answers is not None else None
    for index, rec in records(path):
        if not isinstance(rec, dict):
            yield not_a_record(path, index)
        elif "conversations" in rec:
            yield from_conversations(rec, record_id(rec, index, "id", "question_id"), path)
        else:
            rid = record_id(rec, index, "question_id", "id")
            if rid.startswith("#"):
                yield missing(rid, "question_id", path, "the evaluation matches on it")
            else:
                yield _test_record(rec, rid, path, lookup, answers)
