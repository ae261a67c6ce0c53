"""Caption references in the layouts caption evaluations load, every caption of an image kept.

References (``pycocotools``' ``COCO(file)`` reads the first):

- COCO style: ``{"images": [{"id", "file_name" | "image"}], "annotations": [{"image_id",
  "caption"}]}`` -- D-MoLE's ``flickr30k_test_karpathy.json``, MCITlib/UCIT's ``anno_path``.
- Karpathy/LAVIS list (JSON or JSONL): ``[{"image", "caption": [...] | "..."}]`` --
  ``coco_karpathy_test.json``; records naming the same image are merged.

Without a question file each image is one record asked ``prompt``. With one (UCIT's
``test.json``: ``question_id``, ``image``, ``text``), each question gets the references of its
image, joined by ``join``: ``image`` (same path or file name), ``id`` (``question_id`` equals the
reference's image id), ``position`` (the k-th question is image id k, counted from 1, as
MCITlib's ``eval_caption.py`` numbers its predictions), or ``auto``: the first of these that
matches every question.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from mcl.data.readers.files import (
    ReadError,
    answer_list,
    clean_question,
    load,
    missing,
    not_a_record,
    record_id,
    records,
    text,
)
from mcl.data.readers.record import UNMATCHED, Problem, Record

PROMPT = "Provide a one-sentence caption for the provided image."  # D-MoLE's caption prompt
JOINS = ("auto", "image", "id", "position")


def references(path: str | Path) -> list[tuple[str, str | None, list[str]]]:
    """``(image id, image path, captions)`` per image in file order; captions may be empty."""
    data = load(path)
    out: dict[str, tuple[str, str | None, list[str]]] = {}
    if isinstance(data, dict):
        images, annotations = data.get("images"), data.get("annotations")
        if not isinstance(images, list) or not isinstance(annotations, list):
            raise ReadError(f"{path}: a COCO-style file needs 'images' and 'annotations' lists")
        for img in images:
            if isinstance(img, dict) and img.get("id") is not None:
                file = text(img.get("file_name")) or text(img.get("image"))
                out[str(img["id"])] = (str(img["id"]), file, [])
        for ann in annotations:
            if not isinstance(ann, dict):
                continue
            key, caption = str(ann.get("image_id")), text(ann.get("caption"))
            if caption is None:
                continue
            if key not in out:  # a caption whose image is not listed still counts for its id
                out[key] = (key, None, [])
            out[key][2].append(caption)
        return list(out.values())
    if not isinstance(data, list):
        raise ReadError(f"{path}: expected a COCO-style object or a list of image records")
    for rec in data:
        if not isinstance(rec, dict) or text(rec.get("image")) is None:
            continue
        image = text(rec["image"])
        key = str(rec.get("image_id", image))
        entry = out.setdefault(image, (key, image, []))
        entry[2].extend(answer_list(rec.get("caption")) or [])
    return list(out.values())


def _join_table(refs, questions: list[tuple[str, dict]], join: str):
    """Map question id -> reference entry for ``join``; ``None`` when that join misses any."""
    if join == "position":
        by_id = {r[0]: r for r in refs}
        table = {rid: by_id.get(str(k)) for k, (rid, _) in enumerate(questions, start=1)}
    elif join == "id":
        by_id = {r[0]: r for r in refs}
        table = {rid: by_id.get(rid) for rid, _ in questions}
    else:  # image: the same relative path, else the same file name
        by_path = {r[1]: r for r in refs if r[1]}
        by_name = {PurePosixPath(r[1]).name: r for r in refs if r[1]}
        table = {}
        for rid, rec in questions:
            image = text(rec.get("image")) or ""
            table[rid] = by_path.get(image) or by_name.get(PurePosixPath(image).name)
    return table


def read(
    refs_path: str | Path,
    questions: str | Path | None = None,
    *,
    prompt: str = PROMPT,
    join: str = "auto",
) -> Iterator[Record | Problem]:
    """One record per image (or per question of ``questions``) with all its captions."""
    if join not in JOINS:
        raise ReadError(f"unknown caption join {join!r}; one of {', '.join(JOINS)}")
    refs = references(refs_path)
    if questions is None:
        for key, image, captions in refs:
            if image is None:
                yield missing(key, "images[].file_name", refs_path)
            elif not captions:
                yield missing(key, "caption", refs_path, "no caption for this image")
            else:
                yield Record(id=key, image=image, question=prompt, answers=list(captions))
        return
    rows: list[tuple[str, dict]] = []
    for index, rec in records(questions):
        if not isinstance(rec, dict):
            yield not_a_record(questions, index)
            continue
        rows.append((record_id(rec, index, "question_id", "id"), rec))
    tried = ("image", "id", "position") if join == "auto" else (join,)
    table = {}
    for how in tried:
        table = _join_table(refs, rows, how)
        if all(table.values()) or how == tried[-1]:
            break
    for rid, rec in rows:
        image = text(rec.get("image"))
        if image is None:
            yield missing(rid, "image", questions)
            continue
        entry = table.get(rid)
        if entry is None or not entry[2]:
            yield Problem(rid, "caption", str(refs_path), UNMATCHED, f"join by {how}")
            continue
        question = text(rec.get("text")) or text(rec.get("question"))
        yield Record(
            id=rid,
            image=image,
            question=clean_question(question) if question else prompt,
            answers=list(entry[2]),
            instruction=text(rec.get("instruction")),
            extra={"join": how, "image_id": entry[0]},
        )
