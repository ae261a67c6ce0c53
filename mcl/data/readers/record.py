"""What every reader yields: a :class:`Record` per usable question, a :class:`Problem` per one that
is not.

Readers never drop data silently and never guess past a gap: a record without the field its
benchmark's own loader reads becomes a Problem naming the record, the field and the file, so the
caller can count causes (missing field, missing answer entry, unsupported layout) apart from
image problems, which only the converter can see.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# Problem.reason values
MISSING = "missing_field"  # the field is absent, null or empty
MALFORMED = "malformed"  # the field is there but of the wrong shape (bad bbox, bad JSON line)
UNMATCHED = "no_reference"  # the separate answer/reference file has no entry for the record
UNSUPPORTED = "unsupported"  # a layout mcl does not train on (several images, video)
REASONS = (MISSING, MALFORMED, UNMATCHED, UNSUPPORTED)


@dataclass(frozen=True)
class Record:
    """One question as its benchmark publishes it, with every reference kept.

    ``image`` is the path relative to the benchmark's image folder, or ``None`` for a text-only
    record (the LLaVA-1.5 mixture's ShareGPT conversations, ScienceQA questions without a
    picture). ``answers`` holds all references in file order, duplicates included (VQA accuracy
    counts how many of the 10 human answers agree). ``turns`` are the follow-up (question, answer)
    pairs of a multi-turn conversation. ``bbox`` is ``[x1, y1, x2, y2]`` as the file gives it
    (CoIN: normalised to the longer image side) and ``image_size`` ``[width, height]``.
    """

    id: str
    image: str | None
    question: str
    answers: list[str]
    options: list[str] | None = None
    bbox: list[float] | None = None
    image_size: list[int] | None = None
    instruction: str | None = None
    turns: list[tuple[str, str]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def text_only(self) -> bool:
        return self.image is None


@dataclass(frozen=True)
class Problem:
    """A record that cannot become a sample; ``str(problem)`` is one line naming all of it."""

    record: str
    field: str
    file: str
    reason: str = MISSING
    detail: str = ""

    def __str__(self) -> str:
        what = {
            MISSING: f"has no '{self.field}'",
            MALFORMED: f"has a malformed '{self.field}'",
            UNMATCHED: f"has no '{self.field}' entry in the reference file",
            UNSUPPORTED: f"has an unsupported '{self.field}'",
        }.get(self.reason, f"{self.reason} '{self.field}'")
        tail = f" ({self.detail})" if self.detail else ""
        return f"{self.file}: record {self.record} {what}{tail}"


def split_items(items: Iterable[Record | Problem]) -> tuple[list[Record], list[Problem]]:
    """Records and problems of one reader run, each in input order."""
    records, problems = [], []
    for item in items:
        (problems if isinstance(item, Problem) else records).append(item)
    return records, problems


def to_llava(record: Record) -> dict:
    """The LLaVA-conversations dict ``mcl.data.convert`` reads, with every reference kept.

    The first human turn starts with ``<image>\\n`` unless the record is text-only (then there is
    no ``image`` key either). Options, bounding box and image size go under ``meta``.
    """
    prefix = "" if record.image is None else "<image>\n"
    conversations = [
        {"from": "human", "value": prefix + record.question},
        {"from": "gpt", "value": record.answers[0]},
    ]
    for question, answer in record.turns:
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    out: dict = {"id": record.id}
    if record.image is not None:
        out["image"] = record.image
    out["conversations"] = conversations
    out["answers"] = list(record.answers)
    if record.instruction:
        out["instruction"] = record.instruction
    meta = {
        key: list(value)
        for key, value in (
            ("options", record.options),
            ("bbox", record.bbox),
            ("image_size", record.image_size),
        )
        if value is not None
    }
    if meta:
        out["meta"] = meta
    return out
