"""Readers of the files benchmarks publish, each in the layout its own repository's loader reads.

Every reader is ``read(paths..., **opts) -> Iterator[Record | Problem]``: a :class:`Record` keeps
all references of a question (10 VQA answers, every caption, grounding box with image size,
multiple-choice options); a :class:`Problem` names the record, the field and the file in one line.
:func:`to_llava` turns a record into the LLaVA-conversations dict ``mcl.data.convert`` accepts.
Readers only parse JSON: images are the converter's business. ``docs/data_formats.md`` lists the
fields read per format and the loader each follows.
"""

from __future__ import annotations

from mcl.data.readers import coco_captions, coin, internvl, lavis, llava, question_answers
from mcl.data.readers.files import ReadError
from mcl.data.readers.record import REASONS, Problem, Record, split_items, to_llava

READERS = {
    "llava": llava.read,
    "question_answers": question_answers.read,
    "coco_captions": coco_captions.read,
    "internvl": internvl.read,
    "lavis": lavis.read,
    "coin": coin.read,
}

__all__ = ["READERS", "REASONS", "Problem", "ReadError", "Record", "split_items", "to_llava"]
