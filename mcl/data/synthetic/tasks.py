"""Synthetic task recipes: what a sample of each task looks like.

A recipe turns a seeded generator into one sample: an image, an instruction drawn from the task's
templates, the answer and the reference answers the scorer compares against. Training samples
use the ``train`` templates; test samples carry both kinds, tagged in ``meta.template``, so the
held-out templates measure instruction following (SMoLoRA's MIF) without touching the main score.

All recipes share one kind of image (shapes on a grid), so tasks conflict only in what they ask
and how they answer: training one task sequentially overwrites the others' answer formats, which
is the forgetting MCIT methods exist to prevent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from mcl.data.schema import instruction_text
from mcl.data.synthetic import world as W


@dataclass
class Sample:
    image: Image.Image  # the payload: a PIL image, or a numpy array for other modalities
    question: str
    answer: str
    refs: list[str]
    meta: dict = field(default_factory=dict)


@dataclass
class Recipe:
    name: str
    scorer: str  # vqa | exact | mc | iou
    answer_type: str
    train_templates: list[str]
    heldout_templates: list[str]
    make: Callable[[np.random.Generator], tuple[Image.Image, dict, str]]
    max_new_tokens: int = 8
    chance: float = 0.0  # expected score (0-100) of a uniform guess, for the README/report
    modality: str = "image"  # image | video | audio | depth | points (payload type of `make`)
    vocab: list[str] = field(default_factory=list)  # words answers may use beyond the templates

    def sample(
        self, rng: np.random.Generator, heldout: bool = False, n_templates: int | None = None
    ) -> Sample:
        """One sample; ``n_templates`` limits training instructions to the first n templates
        (CVIT's single-type = 1, multi-type = 5 paraphrases). ``make`` may put ``_refs`` (all
        reference answers, e.g. several captions) and ``_meta`` into its fill dict."""
        image, fill, answer = self.make(rng)
        pool = self.heldout_templates if heldout else self.train_templates[:n_templates]
        template = pool[rng.integers(len(pool))]
        meta = {
            "template": "heldout" if heldout else "train",
            "instruction": instruction_text(template),
            **fill.get("_meta", {}),
        }
        question = template.format(**fill)
        return Sample(image, question, answer, list(fill.get("_refs") or [answer]), meta)


def _one_object(rng):
    (o,) = W.random_objects(rng, 1)
    return W.draw_objects([o]), o


def _make_color(rng):
    img, o = _one_object(rng)
    return img, {}, o.colour


def _make_position(rng):
    img, o = _one_object(rng)
    return img, {}, o.position


def _make_count(rng):
    objs = W.random_objects(rng, int(rng.integers(1, 5)))
    return W.draw_objects(objs), {}, str(len(objs))


def _make_ocr(rng):
    word = W.WORDS[rng.integers(len(W.WORDS))]
    return W.draw_word(word, row=int(rng.integers(W.GRID))), {}, word


def _distinct_target(rng, n):
    """``n`` objects where the target's (colour, shape) pair is unique, so the question is fair."""
    while True:
        objs = W.random_objects(rng, n)
        t = objs[rng.integers(n)]
        if sum((o.colour, o.shape) == (t.colour, t.shape) for o in objs) == 1:
            return objs, t


def _make_ground(rng):
    objs, t = _distinct_target(rng, int(rng.integers(2, 4)))
    fill = {"colour": t.colour, "shape": t.shape, "_meta": {"box": list(t.box)}}
    return W.draw_objects(objs), fill, W.fmt_box(t.box)


def _make_compose(rng):
    objs = W.random_objects(rng, int(rng.integers(2, 4)))
    t = objs[rng.integers(len(objs))]
    return W.draw_objects(objs), {"pos": t.position}, t.colour


def _make_count_mcq(rng):
    objs = W.random_objects(rng, int(rng.integers(1, 5)))
    opts = "A. 1 B. 2 C. 3 D. 4"
    return W.draw_objects(objs), {"options": opts}, "ABCD"[len(objs) - 1]


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "color", "vqa", "word",
            [
                "what colour is the shape?", "what is the colour of the shape?",
                "which colour does the shape have?", "name the colour of the shape.",
                "tell me the colour of the shape.", "what colour is the object?",
                "identify the colour of the object.", "the shape is which colour?",
            ],
            [
                "which colour is the object painted?", "say the colour of the object.",
                "what colour do you see?", "give the colour of the shape.",
            ],
            _make_color, max_new_tokens=4, chance=100 / 6,
        ),
        Recipe(
            "count", "vqa", "number",
            [
                "how many shapes are there?", "count the shapes.", "how many objects are there?",
                "count the objects in the image.", "what is the number of shapes?",
                "how many shapes do you see?", "tell me how many objects there are.",
                "give the number of objects.",
            ],
            [
                "how many things are in the picture?", "what is the count of shapes?",
                "say how many shapes there are.", "number of objects?",
            ],
            _make_count, max_new_tokens=4, chance=25.0,
        ),
        Recipe(
            "position", "exact", "position",
            [
                "where is the shape?", "in which part of the image is the shape?",
                "where is the object?", "tell me where the shape is.",
                "name the position of the shape.", "which cell holds the object?",
                "where can you see the shape?", "give the position of the object.",
            ],
            [
                "where is the object placed?", "say where the shape is.",
                "what is the location of the shape?", "which position does the object have?",
            ],
            _make_position, max_new_tokens=4, chance=100 / 9,
        ),
        Recipe(
            "ocr", "vqa", "word",
            [
                "what word is written?", "read the text in the image.", "what does the text say?",
                "which word is shown?", "read the word.", "tell me the written word.",
                "what is written in the image?", "transcribe the word.",
            ],
            [
                "what text can you read?", "say the word in the picture.",
                "which word is printed?", "give the written text.",
            ],
            _make_ocr, max_new_tokens=4, chance=100 / len(W.WORDS),
        ),
        Recipe(
            "ground", "iou", "box",
            [
                "where is the {colour} {shape}? answer with a box.",
                "give the bounding box of the {colour} {shape}.",
                "locate the {colour} {shape}.", "find the {colour} {shape} and give its box.",
                "box the {colour} {shape}.", "output the box of the {colour} {shape}.",
                "which box holds the {colour} {shape}?", "show the {colour} {shape} with a box.",
            ],
            [
                "mark the {colour} {shape} with a box.",
                "what is the box of the {colour} {shape}?",
                "point out the {colour} {shape} as a box.",
                "draw a box around the {colour} {shape}.",
            ],
            _make_ground, max_new_tokens=12, chance=100 / 9,
        ),
        Recipe(
            "compose", "vqa", "word",
            [
                "what colour is the shape at the {pos}?",
                "which colour has the object at the {pos}?",
                "name the colour of the shape at the {pos}.",
                "the shape at the {pos} is which colour?",
                "tell me the colour of the object at the {pos}.",
                "what is the colour of the shape at the {pos}?",
                "identify the colour at the {pos}.", "colour of the object at the {pos}?",
            ],
            [
                "say the colour of the shape at the {pos}.", "what colour is at the {pos}?",
                "give the colour of the object at the {pos}.", "which colour is the {pos} shape?",
            ],
            _make_compose, max_new_tokens=4, chance=100 / 6,
        ),
        Recipe(
            "count_mcq", "mc", "letter",
            [
                "how many shapes are there? {options} answer with the letter.",
                "count the shapes. {options} answer with the letter.",
                "how many objects are there? {options} answer with the letter.",
                "choose the number of shapes. {options} answer with the letter.",
                "what is the number of objects? {options} answer with the letter.",
                "how many shapes do you see? {options} answer with the letter.",
                "pick the count of objects. {options} answer with the letter.",
                "select how many shapes there are. {options} answer with the letter.",
            ],
            [
                "number of objects? {options} answer with the letter.",
                "how many things are in the picture? {options} answer with the letter.",
                "say how many shapes there are. {options} answer with the letter.",
                "what is the count of shapes? {options} answer with the letter.",
            ],
            _make_count_mcq, max_new_tokens=3, chance=25.0,
        ),
    ]
}  # fmt: skip


# ---- the tiny base's pretraining mix (generic captions and detection, no task templates) ----
CAPTION_PROMPTS = [
    "describe the image.",
    "write a caption for the image.",
    "what does the picture show?",
    "caption this picture.",
]
DETECT_PROMPTS = ["detect every object.", "list the objects with their boxes."]
GRID_PROMPTS = ["describe every cell.", "list the grid cell by cell."]


def pretrain_sample(rng: np.random.Generator, max_objects: int = 4) -> Sample:
    """One sample of the base's pretraining mix: a caption, a detection list or a word."""
    kind = rng.random()
    if kind < 0.15:
        word, row = W.WORDS[rng.integers(len(W.WORDS))], int(rng.integers(W.GRID))
        img = W.draw_word(word, row)
        prompt = CAPTION_PROMPTS[rng.integers(len(CAPTION_PROMPTS))]
        answer = f"the word {word} at {W.POSITIONS[row * 3 + 1]}"
        return Sample(img, prompt, answer, [answer])
    detect = kind >= 0.85  # detection lists are long: at most two objects keep sequences short
    objs = W.random_objects(rng, int(rng.integers(1, (2 if detect else max_objects) + 1)))
    img = W.draw_objects(objs)
    if kind < 0.5:
        # the dense signal: every cell named in a fixed order teaches the LM where each image
        # token is and the tower what each cell holds
        prompt = GRID_PROMPTS[rng.integers(len(GRID_PROMPTS))]
        return Sample(img, prompt, W.grid_listing(objs), [W.grid_listing(objs)])
    if not detect:
        prompt = CAPTION_PROMPTS[rng.integers(len(CAPTION_PROMPTS))]
        noun = "object" if len(objs) == 1 else "objects"
        answer = f"{len(objs)} {noun}: " + W.caption(objs)
    else:
        prompt = DETECT_PROMPTS[rng.integers(len(DETECT_PROMPTS))]
        answer = " and ".join(f"{W.fmt_box(o.box)} {o.colour} {o.shape}" for o in objs)
    return Sample(img, prompt, answer, [answer])


def vocabulary_texts() -> list[str]:
    """Every string the world can produce, for building the word-level tokenizer."""
    texts = list(CAPTION_PROMPTS) + list(DETECT_PROMPTS) + list(GRID_PROMPTS)
    texts += [
        "the word at object objects empty and answer with the letter",
        "A. B. C. D. E. F. G. H.",
    ]
    texts += list(W.SHAPES) + W.COLOUR_NAMES + W.POSITIONS + W.WORDS + W.NUMBER_WORDS
    texts += [str(i) for i in range(100)] + [f"{i / 100:.2f}" for i in range(101)]
    texts += list("ABCDEFGH") + ["[", "]", ",", ":", "?", "."]
    fills = {"colour": "", "shape": "", "pos": "", "options": ""}
    for r in RECIPES.values():
        texts += [t.format(**fills) for t in r.train_templates + r.heldout_templates]
        rng = np.random.default_rng(0)
        texts += [s.question + " " + s.answer for s in (r.sample(rng) for _ in range(50))]
    rng = np.random.default_rng(0)
    texts += [pretrain_sample(rng).answer for _ in range(200)]
    return texts
