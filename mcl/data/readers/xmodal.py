"""PathWeave's LAVIS-style annotation files for video, audio, depth and 3D stages.

One reader for the four layouts, told by ``kind`` what holds the answer and by ``media`` where
the sample's file is (a ``str.format`` template over the record's fields):

- ``qa``: ``question`` + ``answer`` (string or list), e.g. MSRVTT's ``qa_train.json``
  (``video``/``question``/``answer``/``question_id``; media ``"{video}"``), AudioCaps'
  ``audio_qa_train.json`` (``youtube_id``/``audio``/``question``/``answer``; media
  ``"{youtube_id}.wav"``), Cap3D QA (``sample_id``; media ``"{sample_id}_8192.npz"``);
- ``caption``: ``caption`` or ``captions`` (string or list: every reference kept), asked with
  ``prompt``, e.g. MSRVTT's ``cap_test.json``, AudioCaps captions, Cap3D captions;
- ``label``: a class name under ``label``, asked with ``prompt`` (ModelNet40, ESC-50);
- ``conversations``: LLaVA conversations (``image`` + ``conversations``), as PathWeave's depth
  records; each human/gpt pair becomes its own record (``-01``, ``-02`` ids when several).

Files are JSON lists, JSONL, or CSV with a header row (Cap3D's QA files). The record's
``image`` holds the media path relative to the stage's media root; loading the file is
:mod:`mcl.data.prepare_xmodal`'s business.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from mcl.data.readers.files import (
    ReadError,
    answer_list,
    clean_question,
    missing,
    not_a_record,
    record_id,
    records,
    text,
)
from mcl.data.readers.record import MALFORMED, Problem, Record

KINDS = ("qa", "caption", "label", "conversations")
ID_KEYS = ("question_id", "instance_id", "id", "sample_id", "youtube_id", "video_id", "image")


def _rows(path: Path) -> Iterator[tuple[int, object]]:
    if path.suffix.lower() != ".csv":
        yield from records(path)
        return
    try:
        with open(path, newline="", encoding="utf-8") as f:
            yield from enumerate(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ReadError(f"{path}: not a readable CSV ({type(e).__name__}: {e})") from None


def media_path(rec: dict, media: str) -> str | None:
    """The template filled from the record, or None when a field it names is missing."""
    try:
        out = media.format(**{k: v for k, v in rec.items() if isinstance(k, str)})
    except (KeyError, IndexError, ValueError):
        return None
    return out.strip() or None


def _pairs(conversations: object) -> list[tuple[str, str]] | None:
    if not isinstance(conversations, list):
        return None
    out, question = [], None
    for turn in conversations:
        if not isinstance(turn, dict):
            return None
        who, value = turn.get("from"), text(turn.get("value"))
        if who == "human":
            question = value
        elif who == "gpt" and question is not None and value is not None:
            out.append((clean_question(question), value))
            question = None
    return out or None


def read(
    path: str | Path,
    *,
    media: str,
    kind: str = "qa",
    prompt: str | None = None,
    rename: dict[str, str] | None = None,
    merge: bool = False,
) -> Iterator[Record | Problem]:
    """Every usable question of an annotation file, each naming its media file.

    ``rename`` maps a file's own field names to the ones read here (ClothoAQA's
    ``QuestionText`` -> ``question``, ESC-50's ``category`` -> ``label``). ``merge`` (for
    caption test sets, one row per caption as AudioCaps' CSVs) joins the records of one media
    file into one with every caption as a reference, in file order.
    """
    items = _read(Path(path), media, kind, prompt, rename or {})
    if not merge:
        yield from items
        return
    merged: dict[str, Record] = {}
    for item in items:
        if isinstance(item, Problem):
            yield item
        elif item.image in merged:
            first = merged[item.image]
            first.answers.extend(a for a in item.answers)
        else:
            merged[item.image] = item
    yield from merged.values()


def _read(path: Path, media: str, kind: str, prompt: str | None, rename: dict[str, str]):
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind in ("caption", "label") and not prompt:
        raise ValueError(f"kind {kind!r} needs a prompt (the question asked)")
    for index, rec in _rows(path):
        if not isinstance(rec, dict):
            yield not_a_record(path, index)
            continue
        rec = {rename.get(k, k): v for k, v in rec.items()}
        rid = record_id(rec, index, *ID_KEYS)
        rel = media_path(rec, media)
        if rel is None:
            yield missing(rid, media, path, "the media template's field")
            continue
        if kind == "conversations":
            pairs = _pairs(rec.get("conversations"))
            if pairs is None:
                yield missing(rid, "conversations", path)
                continue
            for i, (q, a) in enumerate(pairs, 1):
                key = rid if len(pairs) == 1 else f"{rid}-{i:02d}"
                yield Record(id=key, image=rel, question=q, answers=[a])
            continue
        if kind == "qa":
            question = text(rec.get("question"))
            if question is None:
                yield missing(rid, "question", path)
                continue
            question, field = clean_question(question), "answer"
        else:
            question = prompt
            field = (
                "label"
                if kind == "label"
                else next((k for k in ("caption", "captions") if k in rec), "caption")
            )
        refs = answer_list(rec.get(field))
        if refs is None:
            yield missing(rid, field, path)
            continue
        if not question:
            yield Problem(rid, "question", str(path), MALFORMED, "empty after cleaning")
            continue
        if kind == "qa" and prompt:
            question = f"{question}\n{prompt}"
        yield Record(id=rid, image=rel, question=question, answers=refs, instruction=prompt)
