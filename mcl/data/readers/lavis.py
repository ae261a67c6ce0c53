"""LAVIS-style VQA annotation files (``lavis/datasets/datasets/coco_vqa_datasets.py`` and the
A-OKVQA loader): a JSON list of ``{"question_id", "question", "answer": [...], "image"}``.

``answer`` is the list of human answers with repeats (VQAv2, OK-VQA: 10), kept as it is because
the VQA accuracy counts agreeing answers. A-OKVQA's ``direct_answers`` stand in for ``answer``
and its ``choices`` become the options.
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
from mcl.data.readers.record import Problem, Record


def read(path: str | Path, *, prompt: str | None = None) -> Iterator[Record | Problem]:
    """Every question of a LAVIS VQA file; ``prompt`` is appended as the question's last line."""
    for index, rec in records(path):
        if not isinstance(rec, dict):
            yield not_a_record(path, index)
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
        field = "answer" if "answer" in rec or "direct_answers" not in rec else "direct_answers"
        refs = answer_list(rec.get(field))
        if refs is None:
            yield missing(rid, field, path)
            continue
        choices = rec.get("choices")
        options = [str(c) for c in choices] if isinstance(choices, list) and choices else None
        question = clean_question(question)
        yield Record(
            id=rid,
            image=image,
            question=f"{question}\n{prompt}" if prompt else question,
            answers=refs,
            options=options,
            instruction=prompt or None,
        )
