"""LLaVA ``conversations`` files: LLaVA-1.5's ``llava_v1_5_mix665k.json``, CoIN's and MCITlib's
``train.json``, LLaVA's ScienceQA question file.

A record is ``{"id", "image"?, "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": ...}, ...]}``. A record with no ``image`` key whose conversation never
mentions ``<image>`` is text-only (the mixture's ShareGPT part): it is read as such, not reported
as a missing image. A record whose conversation shows ``<image>`` but has no ``image`` key *is*
missing its image field.
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
from mcl.data.readers.record import MALFORMED, UNSUPPORTED, Problem, Record


def pairs(conversations: object) -> list[tuple[str, str | None]] | str:
    """``(question, answer or None when empty)`` per human/gpt pair, or a one-phrase reason why
    the conversation is not a list of human/gpt pairs."""
    if not isinstance(conversations, list) or len(conversations) < 2:
        return "not a list of at least one human/gpt pair"
    if len(conversations) % 2:
        return "odd number of turns"
    out = []
    for i in range(0, len(conversations), 2):
        human, gpt = conversations[i : i + 2]
        if not (isinstance(human, dict) and isinstance(gpt, dict)):
            return f"turn {i} is not an object"
        if (human.get("from"), gpt.get("from")) != ("human", "gpt"):
            return f"turns {i}, {i + 1} are not a human/gpt pair"
        question = human.get("value")
        question = clean_question(question) if isinstance(question, str) else ""
        answer = text(gpt.get("value"))
        if not question:
            return f"turn {i} has an empty question"
        out.append((question, answer))
    return out


def mentions_image(conversations: list) -> bool:
    return any(
        isinstance(t, dict) and isinstance(t.get("value"), str) and "<image>" in t["value"]
        for t in conversations
    )


def from_conversations(rec: dict, rid: str, file: str | Path) -> Record | Problem:
    """One conversations record (shared by the LLaVA and InternVL readers)."""
    if "conversations" not in rec:
        return missing(rid, "conversations", file)
    found = pairs(rec["conversations"])
    if isinstance(found, str):
        return Problem(rid, "conversations", str(file), MALFORMED, found)
    image = rec.get("image")
    if isinstance(image, list):
        if len(image) != 1:
            return Problem(rid, "image", str(file), UNSUPPORTED, f"{len(image)} images")
        image = image[0]
    if "video" in rec:
        return Problem(rid, "video", str(file), UNSUPPORTED, "video records are not read")
    if image is None:
        if mentions_image(rec["conversations"]):
            return missing(rid, "image", file, "the conversation shows <image>")
    elif text(image) is None or not isinstance(image, str):
        return Problem(rid, "image", str(file), MALFORMED, "not a path")
    (question, answer), *turns = found
    refs = answer_list(rec.get("answers")) or ([answer] if answer else None)
    if refs is None:
        return missing(rid, "conversations", file, "the first answer is empty")
    extra = {k: rec[k] for k in ("width", "height") if k in rec}
    kept = [(q, a) for q, a in turns if a]
    if len(kept) < len(turns):  # a later empty answer loses only its own turn
        extra["empty_turns"] = len(turns) - len(kept)
    return Record(
        id=rid,
        image=image.strip() if isinstance(image, str) else None,
        question=question,
        answers=refs,
        instruction=text(rec.get("instruction")),
        turns=kept,
        extra=extra,
    )


def read(path: str | Path) -> Iterator[Record | Problem]:
    """Every record of a LLaVA conversations file (JSON list or JSONL), in order."""
    for index, rec in records(path):
        if not isinstance(rec, dict):
            yield not_a_record(path, index)
            continue
        yield from_conversations(rec, record_id(rec, index, "id"), path)
