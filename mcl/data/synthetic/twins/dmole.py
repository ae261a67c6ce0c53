"""The D-MoLE twin: VizWiz-Caption -> SK-VG -> TextCaps -> IconQA -> OCR-VQA -> Flickr30k ->
VizWiz-VQA -> KVQA -> PMC-VQA (docs/benchmarks/dmole.md), in the tiny base's world.

Modality imbalance is built in: ``skvg`` (a box), ``ocrvqa`` and ``textcaps`` (reading) are
vision-heavy, while ``kvqa`` is language-heavy: its answer comes from a fixed story table keyed by
the entity and relation named in the question, and the image (unrelated objects) carries nothing
the answer depends on.

- ``vizwiz_cap``: one object, often blurred, caption "a blurry photo of a red circle at the top
  left ." (``cider``).
- ``skvg``: knowledge-based grounding: "based on the knowledge: the sky is blue. ... this sentence
  describes: the shape with the colour of the sky" -> its box (``iou``).
- ``textcaps``, ``ocrvqa``, ``flickr30k``: as in the CVIT twin.
- ``iconqa``: icons (one shape, one colour, repeated), multiple choice on how many there are.
- ``vizwiz_vqa``: CVIT twin's VizWiz (answer or "unanswerable").
- ``kvqa``: "in the story, what colour is the dog?" -> the story table's answer (``exact``).
- ``pmcvqa``: a different image domain (grey "scans"), multiple choice on how many lesions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mcl.data.synthetic import world as W
from mcl.data.synthetic.tasks import Recipe
from mcl.data.synthetic.twins import _common as C
from mcl.data.synthetic.twins import cvit


# ---------------------------------------------------------------- VizWiz-Caption
def _make_vizwiz_cap(rng: np.random.Generator):
    (o,) = W.random_objects(rng, 1)
    img = W.draw_objects([o])
    blurry = rng.random() < 0.4
    if blurry:
        img = C.blurred(img)
    b = "blurry " if blurry else ""
    refs = [
        f"a {b}photo of a {o.colour} {o.shape} at {C.where(o)} .",
        f"a {o.colour} {o.shape} at {C.where(o)} in a {b}photo .",
        f"a {b}picture showing a {o.colour} {o.shape} .",
        f"a {o.colour} {o.shape} on a white background .",
        f"a {b}photo of a {o.shape} .",
    ]
    return img, {"_refs": refs}, refs[0]


# ---------------------------------------------------------------- SK-VG
def _make_skvg(rng: np.random.Generator):
    objs = C.distinct_colours(rng, int(rng.integers(2, 4)))
    t = objs[rng.integers(len(objs))]
    thing = C.NATURE[t.colour][0]
    fill = {
        "k": f"the {thing} is {t.colour}",
        "s": f"the shape with the colour of the {thing}",
        "_meta": {"box": list(t.box)},
    }
    return W.draw_objects(objs), fill, W.fmt_box(t.box)


# ---------------------------------------------------------------- IconQA
_ICON_COUNTS = ["1", "2", "3"]
_PLURAL = {"cross": "crosses"}


def _make_iconqa(rng: np.random.Generator):
    """Counting icons (one shape, one colour, repeated); one option list for every question."""
    objs = W.random_objects(rng, int(rng.integers(1, 4)))
    for o in objs:
        o.shape, o.colour = objs[0].shape, objs[0].colour
    name = _PLURAL.get(objs[0].shape, objs[0].shape + "s")
    qs = ["how many icons are there?", f"how many {name} are there?", "count the icons."]
    text, letter, opts = C.fixed_choice(str(len(objs)), _ICON_COUNTS)
    fill = {"q": qs[rng.integers(len(qs))], "options": text, "_meta": {"options": opts}}
    return W.draw_objects(objs), fill, letter


# ---------------------------------------------------------------- KVQA (language-heavy)
# The story's fixed facts: entity -> (colour, home position, number of friends). Balanced (no
# answer is given by more than two entities) and unrelated to the world (the sun is purple), so
# the answer comes from the knowledge in the question, never from the picture or from priors.
STORY = {
    "cat": ("green", "top left", "2"),
    "dog": ("orange", "bottom", "4"),
    "sun": ("purple", "centre", "1"),
    "car": ("yellow", "top right", "5"),
    "tree": ("blue", "left", "3"),
    "fish": ("red", "bottom right", "2"),
    "book": ("green", "top", "4"),
    "moon": ("orange", "bottom left", "1"),
}
_ENTITIES = list(STORY)
# (the fact the question quotes from the story's table, the question)
_KVQA = [
    ("the {e} is {v}", "in the story, what colour is the {e}?"),
    ("the {e} lives at the {v}", "in the story, where does the {e} live?"),
    ("the {e} has {v} friends", "in the story, how many friends does the {e} have?"),
]


def kvqa_question(entity: str, relation: int) -> tuple[str, str]:
    """(question, answer) for one fact of the story."""
    fact, question = _KVQA[relation]
    value = STORY[entity][relation]
    return f"knowledge: {fact.format(e=entity, v=value)} . {question.format(e=entity)}", value


def _make_kvqa(rng: np.random.Generator):
    e = _ENTITIES[rng.integers(len(_ENTITIES))]
    q, answer = kvqa_question(e, int(rng.integers(len(_KVQA))))
    # the picture is unrelated to the answer (its colours even contradict the story's)
    img = W.draw_objects(W.random_objects(rng, int(rng.integers(1, 4))))
    return img, {"q": q}, answer


# ---------------------------------------------------------------- PMC-VQA (domain shift)
_LESION_COUNTS = ["1", "2", "3"]
_PMC_QUESTIONS = [
    "how many lesions are visible in this scan?",
    "how many nodules does the scan show?",
    "what is the number of lesions in this image?",
]


def _make_pmcvqa(rng: np.random.Generator):
    objs = W.random_objects(rng, int(rng.integers(1, 4)))
    text, letter, opts = C.fixed_choice(str(len(objs)), _LESION_COUNTS)
    fill = {"q": _PMC_QUESTIONS[rng.integers(len(_PMC_QUESTIONS))], "options": text}
    fill["_meta"] = {"options": opts}
    return C.scan_image(W.draw_objects(objs)), fill, letter


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "vizwiz_cap", "cider", "caption",
            [
                "provide a one-sentence caption for the provided image.",
                "give a one-sentence caption for this image.",
                "write a caption of one sentence for the provided image.",
                "caption the provided image in one sentence.",
                "provide a caption, one sentence long, for the image.",
                "a blind user took this photo. caption it.",
                "one-sentence caption:",
                "what is in this photo? one sentence.",
            ],
            [
                "please write a short caption for the photo.",
                "describe this photo for a blind user.",
                "caption for this photo, please.",
                "give the photo a one line caption.",
            ],
            _make_vizwiz_cap, max_new_tokens=16, chance=73.0,
            vocab=C.words("a blurry photo of at picture showing on white background"),
        ),
        Recipe(
            "skvg", "iou", "box",
            [
                "based on the knowledge: {k}. please provide the bounding box coordinate of the "
                "region this sentence describes: {s}",
                "knowledge: {k}. give the bounding box of the region described by: {s}",
                "using the fact that {k}, output the box of {s}.",
                "{k}. where is {s}? answer with a box.",
                "given the knowledge {k}, locate {s} with a bounding box.",
                "based on the knowledge: {k}. find {s} and give its box.",
                "fact: {k}. box {s}.",
                "{k}. which box holds {s}?",
            ],
            [
                "remember that {k}. mark {s} with a box.",
                "since {k}, draw a box around {s}.",
                "knowing that {k}, what is the box of {s}?",
                "{k}. point out {s} as a box.",
            ],
            # a uniform guess among the nine cells (picking one of the 2-3 objects at random
            # would score about 40)
            _make_skvg, max_new_tokens=12, chance=100 / 9,
            vocab=C.words(*(m for m, _ in C.NATURE.values()), "the is shape with colour of"),
        ),
        cvit.RECIPES["textcaps"],
        Recipe(
            "iconqa", "mc", "letter", C.MC_TRAIN, C.MC_HELDOUT, _make_iconqa, max_new_tokens=3,
            chance=C.mc_chance(3),
            vocab=C.words(
                "how many icons are there count the", *_ICON_COUNTS,
                *(_PLURAL.get(s, s + "s") for s in W.SHAPES),
            ),
        ),
        cvit.RECIPES["ocrvqa"],
        cvit.RECIPES["flickr30k"],
        dataclasses.replace(cvit.RECIPES["vizwiz"], name="vizwiz_vqa"),
        Recipe(
            "kvqa", "exact", "word",
            [
                "{q} answer from the knowledge of the story.",
                "{q} use what the story says to answer.",
                "{q} answer with the fact from the story.",
                "{q} reply with what the story tells.",
                "{q} give the answer the story gives.",
                "knowledge question: {q}",
                "{q} short answer:",
                "recall the story. {q}",
            ],
            [
                "{q} the story says:",
                "think of the story and answer: {q}",
                "{q} what does the story tell?",
                "from the story: {q}",
            ],
            _make_kvqa, max_new_tokens=4,
            # per relation, a guess among colours, positions, 1-5 friends that ignores the text
            chance=(100 / 6 + 100 / 9 + 100 / 5) / 3,
            vocab=C.words(
                *(f + " " + q for f, q in _KVQA), *_ENTITIES, *W.COLOUR_NAMES, *W.POSITIONS,
                "knowledge 1 2 3 4 5",
            ),
        ),
        Recipe(
            "pmcvqa", "mc", "letter", C.MC_TRAIN, C.MC_HELDOUT, _make_pmcvqa, max_new_tokens=3,
            chance=C.mc_chance(3),
            vocab=C.words(*_PMC_QUESTIONS, *_LESION_COUNTS),
        ),
    ]
}  # fmt: skip
