"""InternVL-style JSONL, as D-MoLE (built on InternVL's training code) ships its tasks.

Two record shapes, one per line:

- training (``data/<task>/train.jsonl``, read by InternVL's ``LazySupervisedDataset``):
  ``{"id", "image", "conversations", "width"?, "height"?}``; the ``<image>`` placeholder may be
  absent (InternVL adds it), a record without ``image`` is text-only, a one-item image list is
  one image, several images or a ``video`` are reported as unsupported.
- evaluation (``eval/vqa/evaluate_vqa.py``): ``{"question_id", "image", "question", "answer":
  str | [str, ...]}``. InternVL appends its prompt (``"Answer the question using a single word
  or phrase."``) to the question; pass it as ``prompt`` to get the same text, on its own last
  line so the converter recognises it as the task's instruction.
"""

from __future__ import annotations

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
from mcl.data.readers.record import Problem, Record


def read(path: str | Path, *, prompt: str | None = None) -> Iterator[Record | Problem]:
    """Every record of an InternVL JSONL file, training or evaluation shape."""
    for index, rec in records(path):
        if not isinstance(rec, dict):
            yield not_a_record(path, index)
            continue
        if "conversations" in rec:
            yield from_conversations(rec, record_id(rec, index, "id", "question_id"), path)
            continue
        rid = record_id(rec, index, "question_id", "id")
        question = text(rec.get("question"))
        if question is None:
            yield missing(rid, "question", path)
            continue
        image = text(rec.get("image"))
        if image is None:
            yield missing(rid, "image", path)
            continue
        refs = answer_list(rec.get("answer"))
        if refs is None:
            yield missing(rid, "answer", path)
            continue
        question = clean_question(question)
        yield Record(
            id=rid,
            image=image,
            question=f"{question}\n{prompt}" if prompt else question,
            answers=refs,
            instruction=prompt or None,
        )
