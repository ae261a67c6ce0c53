"""A question file plus the separate file that holds its answers, joined the way the benchmark's
own evaluation script joins them.

Question files (LLaVA-1.5 ``playground/data/eval``, CoIN/MCITlib test files): JSONL or a JSON list
of ``{"question_id", "image", "text"}`` (``"question"`` and LLaVA ``conversations`` are read too).
Answer files, by ``kind`` (found from the file's shape when not given):

- ``textvqa``: ``TextVQA_0.5.1_val.json`` -- ``{"data": [{"question_id", "image_id", "question",
  "answers": [10 strings]}]}``. Joined on ``question_id``, else, like LLaVA-1.5's
  ``eval_textvqa.py``, on (the question file's ``question_id`` as the image id, a line of the
  prompt lower-cased).
- ``vqa``: the official VQA annotation layout -- ``{"annotations": [{"question_id", "answers":
  [{"answer"}, ...]}]}`` (VQAv2, OK-VQA, VizWiz-style files).
- ``gqa``: ``testdev_balanced_questions.json`` -- ``{question_id: {"question", "answer",
  "fullAnswer", "imageId"}}``.
- ``scienceqa``: ``problems.json`` -- ``{pid: {"question", "choices", "answer": index, "hint",
  "image"}}``; the reference is the option letter and ``options`` the choice texts. With no
  question file the split's problems (``pid_splits.json`` beside it) are read directly; a problem
  without a picture is text-only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

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

KINDS = ("textvqa", "vqa", "gqa", "scienceqa")
LETTERS = "ABCDEFGHIJ"
SQA_INSTRUCTION = "Answer with the option's letter from the given choices directly."

# (question_id, image, question text) -> (answers, options, extra) or None
Lookup = Callable[[str, str | None, str], tuple[list[str], list[str] | None, dict] | None]


def detect_kind(data: object, path: str | Path) -> str:
    """Which answer layout ``data`` is, from its shape."""
    if isinstance(data, dict):
        if isinstance(data.get("data"), list):
            return "textvqa"
        if isinstance(data.get("annotations"), list):
            return "vqa"
        sample = next(iter(data.values()), None)
        if isinstance(sample, dict) and "choices" in sample:
            return "scienceqa"
        if isinstance(sample, dict) and "answer" in sample:
            return "gqa"
    raise ReadError(
        f"{path}: not a known answer file (TextVQA 'data', VQA 'annotations', GQA or "
        "ScienceQA questions keyed by id); pass kind="
    )


def _textvqa(data: dict) -> Lookup:
    by_qid, by_image_question = {}, {}
    for ann in data["data"]:
        if not isinstance(ann, dict):
            continue
        by_qid[str(ann.get("question_id"))] = ann
        question = text(ann.get("question"))
        if question is not None:
            by_image_question[(str(ann.get("image_id")), question.lower())] = ann

    def lookup(qid, image, question):
        ann = by_qid.get(qid)
        if ann is None:  # LLaVA-1.5's question file: question_id is the TextVQA image id
            images = {qid} | ({Path(image).stem} if image else set())
            lines = [line.strip().lower() for line in question.split("\n") if line.strip()]
            keys = [(i, q) for i in images for q in lines if (i, q) in by_image_question]
            ann = by_image_question[keys[0]] if keys else None
        if ann is None:
            return None
        refs = answer_list(ann.get("answers"))
        return (refs, None, {"image_id": ann.get("image_id")}) if refs else None

    return lookup


def _vqa(data: dict) -> Lookup:
    table = {}
    for ann in data["annotations"]:
        if isinstance(ann, dict):
            answers = ann.get("answers")
            if isinstance(answers, list):
                answers = [a.get("answer") if isinstance(a, dict) else a for a in answers]
            table[str(ann.get("question_id"))] = answer_list(answers)

    def lookup(qid, image, question):
        refs = table.get(qid)
        return (refs, None, {}) if refs else None

    return lookup


def _gqa(data: dict) -> Lookup:
    def lookup(qid, image, question):
        entry = data.get(qid)
        refs = answer_list(entry.get("answer")) if isinstance(entry, dict) else None
        if not refs:
            return None
        extra = {k: entry[k] for k in ("fullAnswer", "imageId") if k in entry}
        return refs, None, extra

    return lookup


def _choices(problem: dict) -> tuple[list[str], list[str]] | None:
    choices, answer = problem.get("choices"), problem.get("answer")
    if not isinstance(choices, list) or not isinstance(answer, int):
        return None
    if not 0 <= answer < min(len(choices), len(LETTERS)):
        return None
    return [LETTERS[answer]], [str(c) for c in choices]


def _scienceqa(data: dict) -> Lookup:
    def lookup(qid, image, question):
        problem = data.get(qid)
        found = _choices(problem) if isinstance(problem, dict) else None
        if found is None:
            return None
        return found[0], found[1], {"choice_text": found[1][LETTERS.index(found[0][0])]}

    return lookup


LOOKUPS = {"textvqa": _textvqa, "vqa": _vqa, "gqa": _gqa, "scienceqa": _scienceqa}


def _question_text(rec: dict) -> str | None:
    for key in ("text", "question"):
        value = text(rec.get(key))
        if value is not None:
            return clean_question(value)
    conv = rec.get("conversations")
    if isinstance(conv, list) and conv and isinstance(conv[0], dict):
        value = text(conv[0].get("value"))
        return clean_question(value) if value else None
    return None


def scienceqa_prompt(problem: dict) -> str:
    """A ScienceQA problem as one multiple-choice prompt: question, context (the hint), lettered
    choices, and the instruction LLaVA-1.5 asks ScienceQA with."""
    lines = [str(problem.get("question", "")).strip()]
    hint = text(problem.get("hint"))
    if hint:
        lines.append(f"Context: {hint}")
    lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(problem.get("choices") or [])]
    lines.append(SQA_INSTRUCTION)
    return "\n".join(line for line in lines if line)


def _scienceqa_split(answers: Path, data: dict, split: str, splits: Path | None):
    splits = splits or answers.with_name("pid_splits.json")
    pid_splits = load(splits)
    if not isinstance(pid_splits, dict) or not isinstance(pid_splits.get(split), list):
        raise ReadError(f"{splits}: has no list of problem ids for split '{split}'")
    for pid in map(str, pid_splits[split]):
        problem = data.get(pid)
        if not isinstance(problem, dict):
            yield Problem(pid, "problem", str(answers), UNMATCHED, f"listed in {splits.name}")
            continue
        if text(problem.get("question")) is None:
            yield missing(pid, "question", answers)
            continue
        found = _choices(problem)
        if found is None:
            yield missing(pid, "choices/answer", answers)
            continue
        picture = text(problem.get("image"))
        yield Record(
            id=pid,
            image=f"{split}/{pid}/{picture}" if picture else None,
            question=scienceqa_prompt(problem),
            answers=found[0],
            options=found[1],
            instruction=SQA_INSTRUCTION,
            extra={k: problem[k] for k in ("subject", "grade", "task") if k in problem},
        )


def _answer_data(path: Path, kind: str | None) -> tuple[dict, str]:
    data = load(path)
    kind = kind or detect_kind(data, path)
    if kind not in LOOKUPS:
        raise ReadError(f"unknown answer kind {kind!r}; one of {', '.join(KINDS)}")
    if not isinstance(data, dict):
        raise ReadError(f"{path}: a {kind} answer file holds one JSON object")
    return data, kind


def _lookup(data: dict, kind: str, path: Path) -> Lookup:
    try:
        return LOOKUPS[kind](data)
    except (KeyError, TypeError, AttributeError):
        raise ReadError(f"{path}: not laid out as a {kind} answer file") from None


def answer_lookup(path: str | Path, kind: str | None = None) -> Lookup:
    """The join of one answer file: ``lookup(question_id, image, question)`` gives ``(answers,
    options, extra)`` or ``None``; other readers use it for test files scored from official
    answer files (CoIN's TextVQA, GQA and ScienceQA tasks)."""
    data, kind = _answer_data(Path(path), kind)
    return _lookup(data, kind, Path(path))


def read(
    questions: str | Path | None,
    answers: str | Path,
    *,
    kind: str | None = None,
    split: str = "test",
    splits: str | Path | None = None,
) -> Iterator[Record | Problem]:
    """Every question of ``questions`` with its references from ``answers``.

    ``questions=None`` is allowed for ScienceQA only: the problems of ``split`` listed in
    ``splits`` (default ``pid_splits.json`` next to ``problems.json``).
    """
    answers = Path(answers)
    data, kind = _answer_data(answers, kind)
    if questions is None:
        if kind != "scienceqa":
            raise ReadError(f"a {kind} answer file needs its question file")
        yield from _scienceqa_split(answers, data, split, Path(splits) if splits else None)
        return
    lookup = _lookup(data, kind, answers)
    for index, rec in records(questions):
        if not isinstance(rec, dict):
            yield not_a_record(questions, index)
            continue
        rid = record_id(rec, index, "question_id", "id")
        if rid.startswith("#"):
            yield missing(rid, "question_id", questions, "needed to find its answers")
            continue
        question = _question_text(rec)
        if question is None:
            yield missing(rid, "text", questions)
            continue
        image = text(rec.get("image"))
        found = lookup(rid, image, question)
        if found is None:
            yield Problem(rid, "answers", str(answers), UNMATCHED, f"question in {questions}")
            continue
        refs, options, extra = found
        if "category" in rec:
            extra = {**extra, "category": rec["category"]}
        yield Record(
            id=rid,
            image=image,
            question=question,
            answers=refs,
            options=options,
            instruction=text(rec.get("instruction")),
            extra=extra,
        )
