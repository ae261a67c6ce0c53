"""The CLMM twin (EProj / TIR, docs/benchmarks/clmm.md): Flickr30k, TextCaps, VQAv2, OCR-VQA, GQA,
OK-VQA, A-OKVQA, VizWiz, TextVQA, built so that task similarity is real:

- similar pairs share their instruction family, answer kind and much of their images:
  ``flickr30k`` ~ ``textcaps`` (one-sentence captions, the same caption instructions),
  ``vqav2`` ~ ``gqa`` (short answers about shapes, colours and yes/no),
  ``ocrvqa`` ~ ``textvqa`` (read a word by its row), ``okvqa`` ~ ``aokvqa`` (the same knowledge
  questions; A-OKVQA asks them as multiple choice);
- dissimilar tasks differ in format (a sentence, a word, a letter, "unanswerable").

Seven recipes are the CVIT twin's; ``okvqa`` and ``aokvqa`` are new: outside knowledge about the
colour of the shape in the image (a thing in nature of that colour), which the image alone does
not give; A-OKVQA asks the same questions (three of the colours) with three options.
"""

from __future__ import annotations

import numpy as np

from mcl.data.synthetic import world as W
from mcl.data.synthetic.tasks import Recipe
from mcl.data.synthetic.twins import _common as C
from mcl.data.synthetic.twins import cvit

_OK_QUESTIONS = [
    "what thing in nature has the colour of this shape?",
    "name something in nature with the colour of this shape.",
    "which fruit or plant shares the colour of this shape?",
]


def _knowledge_question(rng: np.random.Generator, colours: list[str]):
    """One large shape of one of ``colours`` (a letter is learnt only for what shows as a whole)
    and a question about a thing in nature of its colour: (image, question, answer, all
    acceptable answers, the things of ``colours`` as options in a fixed order)."""
    o = C.big_object(rng)
    o.colour = colours[rng.integers(len(colours))]
    main, alt = C.NATURE[o.colour]
    q = _OK_QUESTIONS[rng.integers(len(_OK_QUESTIONS))]
    options = [C.NATURE[c][0] for c in colours]
    return W.draw_objects([o]), q, main, [main] * 6 + [alt] * 4, options


def _make_okvqa(rng: np.random.Generator):
    img, q, answer, refs, _ = _knowledge_question(rng, W.COLOUR_NAMES)
    return img, {"q": q, "_refs": refs}, answer


def _make_aokvqa(rng: np.random.Generator):
    img, q, answer, _, options = _knowledge_question(rng, C.MC_COLOURS)
    text, letter, opts = C.fixed_choice(answer, options)
    return img, {"q": q, "options": text, "_meta": {"options": opts}}, letter


_KNOWLEDGE_WORDS = C.words(*(f"{m} {a}" for m, a in C.NATURE.values()), *_OK_QUESTIONS)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        cvit.RECIPES["flickr30k"],
        cvit.RECIPES["textcaps"],
        cvit.RECIPES["vqav2"],
        cvit.RECIPES["ocrvqa"],
        cvit.RECIPES["gqa"],
        Recipe(
            "okvqa", "vqa", "word", C.VQA_TRAIN, C.VQA_HELDOUT, _make_okvqa, max_new_tokens=4,
            # a uniform guess among the six things in nature
            chance=100 / 6,
            vocab=_KNOWLEDGE_WORDS,
        ),
        Recipe(
            "aokvqa", "mc", "letter", C.MC_TRAIN, C.MC_HELDOUT, _make_aokvqa, max_new_tokens=3,
            chance=C.mc_chance(3),
            vocab=_KNOWLEDGE_WORDS,
        ),
        cvit.RECIPES["vizwiz"],
        cvit.RECIPES["textvqa"],
    ]
}  # fmt: skip
