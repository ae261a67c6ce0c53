"""The CLMM twin (EProj / TIR, specs/eproj_tir.md): Flickr30k, TextCaps, VQAv2, OCR-VQA, GQA,
OK-VQA, A-OKVQA, VizWiz, TextVQA, built so that task similarity is real:

- similar pairs share their instruction family, answer kind and much of their images:
  ``flickr30k`` ~ ``textcaps`` (one-sentence captions, the same caption instructions),
  ``vqav2`` ~ ``gqa`` (short answers about shapes, colours and yes/no),
  ``ocrvqa`` ~ ``textvqa`` (read a word by its row), ``okvqa`` ~ ``aokvqa`` (the same knowledge
  questions; A-OKVQA asks them as multiple choice);
- dissimilar tasks differ in format (a sentence, a word, a letter, "unanswerable").

Seven recipes are the CVIT twin's; ``okvqa`` and ``aokvqa`` are new: outside knowledge about the
colour of the shape in the image (a thing in nature of that colour, what a traffic light of that
colour means), which the image alone does not give.
"""

from __future__ import annotations

import numpy as np

from mcl.data import world as W
from mcl.data.tasks import Recipe
from mcl.data.twins import _common as C
from mcl.data.twins import cvit

_TRAFFIC = {"red": "stop", "yellow": "wait", "green": "go"}


def _knowledge_question(rng: np.random.Generator):
    """One large shape (its colour must show as a whole for a letter to be learnt), a knowledge
    question about its colour: (image, question, answer, all
    acceptable answers, the answer options of that question kind in a fixed order)."""
    if rng.random() < 0.6:
        o = C.big_object(rng)
        o.colour = C.MC_COLOURS[rng.integers(len(C.MC_COLOURS))]
        main, alt = C.NATURE[o.colour]
        q = "what thing in nature has the colour of this shape?"
        refs = [main] * 6 + [alt] * 4
        options = [C.NATURE[c][0] for c in C.MC_COLOURS]
    else:
        o = C.big_object(rng)
        o.colour = list(_TRAFFIC)[rng.integers(len(_TRAFFIC))]
        q = "if a traffic light had the colour of this shape, what would it tell you?"
        main = _TRAFFIC[o.colour]
        refs, options = [main] * 10, list(_TRAFFIC.values())
    return W.draw_objects([o]), q, main, refs, options


def _make_okvqa(rng: np.random.Generator):
    img, q, answer, refs, _ = _knowledge_question(rng)
    return img, {"q": q, "_refs": refs}, answer


def _make_aokvqa(rng: np.random.Generator):
    img, q, answer, _, options = _knowledge_question(rng)
    text, letter, opts = C.fixed_choice(answer, options)
    return img, {"q": q, "options": text, "_meta": {"options": opts}}, letter


_KNOWLEDGE_WORDS = C.words(
    *(f"{m} {a}" for m, a in C.NATURE.values()),
    *_TRAFFIC.values(),
    "what thing in nature has the colour of this shape",
    "if a traffic light had the colour of this shape what would it tell you",
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        cvit.RECIPES["flickr30k"],
        cvit.RECIPES["textcaps"],
        cvit.RECIPES["vqav2"],
        cvit.RECIPES["ocrvqa"],
        cvit.RECIPES["gqa"],
        Recipe(
            "okvqa", "vqa", "short", C.VQA_TRAIN, C.VQA_HELDOUT, _make_okvqa, max_new_tokens=4,
            # a uniform guess among the four things in nature or the three traffic signals
            chance=0.6 * 100 / 4 + 0.4 * 100 / 3,
            vocab=_KNOWLEDGE_WORDS,
        ),
        Recipe(
            "aokvqa", "mc", "letter", C.MC_TRAIN, C.MC_HELDOUT, _make_aokvqa, max_new_tokens=3,
            chance=0.6 * 100 / 4 + 0.4 * 100 / 3,
            vocab=_KNOWLEDGE_WORDS,
        ),
        cvit.RECIPES["vizwiz"],
        cvit.RECIPES["textvqa"],
    ]
}  # fmt: skip
