"""InternVL-style JSONL, as D-MoLE (built on InternVL's training code) ships its tasks.

Four record shapes, one per line, told apart by their fields:

- training (``data/<task>/train.jsonl``, read by InternVL's ``LazySupervisedDataset``):
  ``{"id", "image", "conversations", "width"?, "height"?}``; the ``<image>`` placeholder may be
  absent (InternVL adds it), a record without ``image`` is text-only, a one-item image list is
  one image, several images or a ``video`` are reported as unsupported.
- VQA evaluation (``eval/vqa/evaluate_vqa.py``): ``{"question_id", "image", "question", "answer":
  str | [str, ...]}``. InternVL appends its prompt (``"Answer the question using a single word
  or phrase."``) to the question; pass it as ``prompt`` to get the same text, on its own last
  line so the converter recognises it as the task's instruction.
- multiple choice (``eval/vqa/evaluate_multi_choice.py``: IconQA, PMC-VQA): ``{"image",
  "question", "choices": [...], "answer": <index into choices>}``. The question is asked as D-MoLE
  asks it (question, ``"A. <choice>"`` lines, :data:`MC_PROMPT`), the reference is the option
  letter and the choices are kept as ``options``.
- grounding (``eval/refcoco/evaluate_grounding.py``: SK-VG, RefCOCO): ``{"image", "sent",
  "bbox": [x1, y1, x2, y2] in pixels, "width", "height", "knowledge"?}``. The question is D-MoLE's
  (``"Based on the knowledge <knowledge>.\\n"`` when the record has knowledge, then
  :data:`GROUNDING_PROMPT` ``<ref>sent</ref>``). InternVL answers with a box on a 0-1000 scale
  per axis and D-MoLE scales it back to pixels; the reference text is the file's box on that
  same scale (IoU does not change when both axes are rescaled), while ``bbox`` keeps the pixel
  box and ``image_size`` ``[width, height]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mcl.data.readers.coin import parse_bbox
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
from mcl.data.readers.record import MALFORMED, Problem, Record

MC_PROMPT = "Answer with the option's letter from the given choices directly."
GROUNDING_PROMPT = (
    "Please provide the bounding box coordinate of the region this sentence describes:"
)
LETTERS = "ABCDEFGH"  # the letters mcl's multiple-choice scorer reads
SCALE = 1000  # InternVL's box coordinates: 0-1000 per axis


def _number(value: float) -> str:
    return f"{round(value, 3):g}"


def _multiple_choice(rec: dict, rid: str, path, prompt: str | None) -> Record | Problem:
    choices = rec["choices"]
    if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS):
        detail = f"expected a list of 2 to {len(LETTERS)} options"
        return Problem(rid, "choices", str(path), MALFORMED, detail)
    options = [text(c) or "" for c in choices]
    answer = rec.get("answer")
    if answer is None:
        return missing(rid, "answer", path)
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(options):
        detail = f"expected the index of the right choice, 0 to {len(options) - 1}"
        return Problem(rid, "answer", str(path), MALFORMED, detail)
    lines = [f"{LETTERS[i]}. {c}" for i, c in enumerate(options)]
    instruction = prompt or MC_PROMPT
    question = clean_question(rec["question"])
    return Record(
        id=rid,
        image=rec["image"],
        question="\n".join([question, *lines, instruction]),
        answers=[LETTERS[answer]],
        options=options,
        instruction=instruction,
    )


def _grounding(rec: dict, rid: str, path, prompt: str | None) -> Record | Problem:
    sent = text(rec.get("sent"))
    if sent is None:
        return missing(rid, "sent", path)
    if "bbox" not in rec:
        return missing(rid, "bbox", path)
    bbox = parse_bbox(rec["bbox"])
    if bbox is None:
        return Problem(rid, "bbox", str(path), MALFORMED, "expected [x1, y1, x2, y2] in pixels")
    size = []
    for key in ("width", "height"):
        value = rec.get(key)
        if value is None:
            return missing(rid, key, path, "a grounding box needs its image size")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            return Problem(rid, key, str(path), MALFORMED, "expected a positive number of pixels")
        if value != int(value):
            return Problem(rid, key, str(path), MALFORMED, "expected a whole number of pixels")
        size.append(int(value))
    width, height = size
    scaled = [v * SCALE / (width if k % 2 == 0 else height) for k, v in enumerate(bbox)]
    instruction = prompt or GROUNDING_PROMPT
    question = f"{instruction} <ref>{sent}</ref>"
    knowledge = text(rec.get("knowledge"))
    if knowledge is not None:
        question = f"Based on the knowledge {knowledge}.\n{question}"
    return Record(
        id=rid,
        image=rec["image"],
        question=question,
        answers=["[[" + ", ".join(map(_number, scaled)) + "]]"],
        bbox=bbox,
        image_size=size,
        instruction=instruction,
        extra={"knowledge": knowledge} if knowledge is not None else {},
    )


def _vqa(rec: dict, rid: str, path, prompt: str | None) -> Record | Problem:
    refs = answer_list(rec.get("answer"))
    if refs is None:
        return missing(rid, "answer", path)
    question = clean_question(rec["question"])
    return Record(
        id=rid,
        image=rec["image"],
        question=f"{question}\n{prompt}" if prompt else question,
        answers=refs,
        instruction=prompt or None,
    )


def _evaluation(rec: dict, rid: str, path, prompt: str | None) -> Record | Problem:
    grounding = "sent" in rec or "bbox" in rec
    if not grounding:
        question = text(rec.get("question"))
        if question is None:
            return missing(rid, "question", path)
        rec = rec | {"question": question}
    image = text(rec.get("image"))
    if image is None:
        return missing(rid, "image", path)
    rec = rec | {"image": image}
    if grounding:
        return _grounding(rec, rid, path, prompt)
    if "choices" in rec:
        return _multiple_choice(rec, rid, path, prompt)
    return _vqa(rec, rid, path, prompt)


def read(path: str | Path, *, prompt: str | None = None) -> Iterator[Record | Problem]:
    """Every record of an InternVL JSONL file: training, VQA, multiple-choice or grounding shape.

    ``prompt`` is the instruction line: appended to VQA questions when given, replacing
    :data:`MC_PROMPT` or :data:`GROUNDING_PROMPT` for the other evaluation shapes.
    """
    for index, rec in records(path):
        if not isinstance(rec, dict):
            yield not_a_record(path, index)
        elif "conversations" in rec:
            yield from_conversations(rec, record_id(rec, index, "id", "question_id"), path)
        else:
            yield _evaluation(rec, record_id(rec, index, "question_id", "id"), path, prompt)
