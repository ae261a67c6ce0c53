"""The CVIT twin (SMoLoRA): ScienceQA -> TextVQA -> Flickr30k -> ImageNet -> GQA -> VQAv2, unseen
VizWiz, TextCaps and OCR-VQA, in the tiny base's shapes-and-words world.

Each task keeps its real counterpart's *type* and answer format (docs/benchmarks/cvit.md):

- ``scienceqa``: multiple-choice arithmetic on the shapes ("if one more shape were drawn, how
  many would there be?"), three lettered options in a fixed order, answer = the letter (``mc``).
- ``textvqa``: read one of one or two words, asked by row (``vqa``).
- ``flickr30k``: caption 1-2 objects in one sentence, five paraphrased references (``cider``).
- ``imagenet``: name the shape of one large object (``exact``).
- ``gqa``: compositional questions: the colour at a position, where the red shape is, the colour
  of the shape left of / above ... the red one (``vqa``).
- ``vqav2``: colour / count / yes-no, ten annotator references ("2" and "two") (``vqa``).
- unseen ``vizwiz`` (VQA format, "unanswerable" when the image cannot answer), ``textcaps``
  (caption format about text) and ``ocrvqa`` (OCR format: book covers).

Answers use what the tiny base can see (colours, positions, counts, words; the notes above
``_common.MC_COLOURS`` give the probe results): small shapes only appear in captions, where
naming them wrong costs part of the CIDEr, and ``imagenet`` draws its one object large enough to
show its shape.

Templates follow CVIT: one instruction per task type appended to the question, its first five
entries paraphrases of one instruction (the multi-type setting; single-type = the first one).
TextVQA, GQA, VQAv2 and OCR-VQA share the VQA instruction family, as in the original, so those
tasks differ in their questions and images, not in their instruction.
"""

from __future__ import annotations

import numpy as np

from mcl.data.synthetic import world as W
from mcl.data.synthetic.tasks import Recipe
from mcl.data.synthetic.twins import _common as C

# ---------------------------------------------------------------- ScienceQA
# (question, options): arithmetic on the number of shapes n = 1..3; in every kind the key is the
# n-th option, so the letters keep one meaning across the task (see _common). A LoRA probe with
# the runner's schedule: one kind 100 %, these two 85 %, four kinds (also "taken away" and
# "doubled") 58 % (chance 33).
_SQA = [
    ("how many shapes are there?", ["1", "2", "3"]),
    ("if one more shape were drawn, how many shapes would there be?", ["2", "3", "4"]),
]


def _make_scienceqa(rng: np.random.Generator):
    objs = W.random_objects(rng, int(rng.integers(1, 4)))
    q, options = _SQA[rng.integers(len(_SQA))]
    text, letter, opts = C.fixed_choice(options[len(objs) - 1], options)
    return W.draw_objects(objs), {"q": q, "options": text, "_meta": {"options": opts}}, letter


# ---------------------------------------------------------------- TextVQA
def _distinct_words(rng: np.random.Generator, n: int) -> list[str]:
    return [W.WORDS[i] for i in rng.permutation(len(W.WORDS))[:n]]


def _make_textvqa(rng: np.random.Generator):
    n_words = int(rng.integers(1, 3))
    rows = sorted(rng.permutation(W.GRID)[:n_words].tolist())
    ws = _distinct_words(rng, n_words)
    free = [r for r in range(W.GRID) if r not in rows]
    objs = C.objects_in_rows(rng, free, int(rng.integers(0, 2)))
    img = C.text_image(dict(zip(rows, ws)), objs)
    if n_words == 1:
        qs = ["what word is written in the image?", "what does the text say?"]
        q, answer = qs[rng.integers(len(qs))], ws[0]
    else:
        i = int(rng.integers(2))
        q, answer = f"what word is written at the {C.ROW_NAMES[rows[i]]}?", ws[i]
    return img, {"q": q}, answer


# ---------------------------------------------------------------- Flickr30k
def _make_flickr30k(rng: np.random.Generator):
    objs = W.random_objects(rng, int(rng.integers(1, 3)))
    refs = C.scene_caption(objs)
    return W.draw_objects(objs), {"_refs": refs}, refs[0]


# ---------------------------------------------------------------- ImageNet
def _make_imagenet(rng: np.random.Generator):
    o = C.big_object(rng)
    return W.draw_objects([o]), {}, o.shape


# ---------------------------------------------------------------- GQA
_RELATIONS = {  # name -> (row step, column step) from the anchor to the object asked about
    "left of": (0, -1),
    "right of": (0, 1),
    "above": (-1, 0),
    "below": (1, 0),
}


def _related_pair(rng: np.random.Generator) -> tuple[list[W.Obj], W.Obj, str, W.Obj]:
    """Two objects of different colours in one row or column: (objects, anchor, relation, the
    other object, which lies in that direction from the anchor)."""
    rel = list(_RELATIONS)[rng.integers(len(_RELATIONS))]
    dr, dc = _RELATIONS[rel]
    line = int(rng.integers(W.GRID))
    lo, hi = sorted(rng.permutation(W.GRID)[:2].tolist())  # two places along the line
    at, to = (hi, lo) if dr + dc < 0 else (lo, hi)  # left of / above: the other comes first

    def cell(k: int) -> int:
        return line * W.GRID + k if dr == 0 else k * W.GRID + line

    cells = cell(at), cell(to)
    anchor, other = C.distinct_colours(rng, 2)
    anchor.cell, other.cell = cells
    return sorted([anchor, other], key=lambda o: o.cell), anchor, rel, other


def _make_gqa(rng: np.random.Generator):
    u = rng.random()
    if u < 0.35:  # the colour at a position
        objs = W.random_objects(rng, 2)
        t = objs[rng.integers(2)]
        q, answer = f"what is the colour of the object at {C.where(t)}?", t.colour
    elif u < 0.7:  # where a colour is
        objs = C.distinct_colours(rng, 2)
        t = objs[rng.integers(2)]
        q, answer = f"where is the {t.colour} object?", t.position
    else:  # a spatial relation
        objs, anchor, rel, other = _related_pair(rng)
        q, answer = f"what colour is the object {rel} the {anchor.colour} one?", other.colour
    return W.draw_objects(objs), {"q": q}, answer


# ---------------------------------------------------------------- VQAv2
def _make_vqav2(rng: np.random.Generator):
    u = rng.random()
    if u < 0.35:  # colour
        objs = [C.one_object(rng)]
        qs = ["what colour is the shape?", "what colour is the object?"]
        q, answer = qs[rng.integers(len(qs))], objs[0].colour
        refs = [answer] * 10
    elif u < 0.75:  # count
        objs = W.random_objects(rng, int(rng.integers(1, 5)))
        qs = ["how many shapes are there?", "how many objects are in the picture?"]
        refs = C.number_refs(rng, len(objs))
        q, answer = qs[rng.integers(len(qs))], refs[0]
    else:  # yes / no
        objs = [C.one_object(rng)]
        colour = objs[0].colour if rng.random() < 0.5 else W.COLOUR_NAMES[rng.integers(6)]
        answer = "yes" if colour == objs[0].colour else "no"
        q, refs = f"is the shape {colour}?", [answer] * 10
    return W.draw_objects(objs), {"q": q, "_refs": refs}, answer


# ---------------------------------------------------------------- unseen: VizWiz
def _make_vizwiz(rng: np.random.Generator):
    kind = rng.integers(3)
    unanswerable = rng.random() < 0.25
    if kind == 0:
        q = "what colour is this?"
        o = C.one_object(rng)
        o.size = int(rng.integers(12, 17))
        img, answer = W.draw_objects([o]), o.colour
    elif kind == 1:
        q = "how many things are here?"
        objs = W.random_objects(rng, int(rng.integers(1, 5)))
        img, answer = W.draw_objects(objs), str(len(objs))
    else:
        q = "what does this say?"
        word, row = W.WORDS[rng.integers(len(W.WORDS))], int(rng.integers(W.GRID))
        img, answer = W.draw_word(word, row), word
    if unanswerable:  # nothing to see, or objects where text was asked for
        if kind == 2:
            img = W.draw_objects(W.random_objects(rng, int(rng.integers(1, 3))))
        else:
            img = C.blank_image()
        answer = C.UNANSWERABLE
    return img, {"q": q}, answer


# ---------------------------------------------------------------- unseen: TextCaps
def _make_textcaps(rng: np.random.Generator):
    word, row = W.WORDS[rng.integers(len(W.WORDS))], int(rng.integers(W.GRID))
    free = [r for r in range(W.GRID) if r != row]
    objs = C.objects_in_rows(rng, free, int(rng.integers(0, 2)))
    refs = C.text_caption(word, row, objs[0] if objs else None)
    return C.text_image({row: word}, objs), {"_refs": refs}, refs[0]


# ---------------------------------------------------------------- unseen: OCR-VQA
def _make_ocrvqa(rng: np.random.Generator):
    """A book cover: the title in the top row, cover art in the centre, the author at the
    bottom."""
    title, author = _distinct_words(rng, 2)
    art = W.Obj(
        shape=W.SHAPES[rng.integers(len(W.SHAPES))],
        colour=W.COLOUR_NAMES[rng.integers(len(W.COLOUR_NAMES))],
        cell=4,
        size=int(rng.integers(10, 15)),
    )
    img = C.text_image({0: title, 2: author}, [art])
    u = rng.random()
    if u < 0.35:
        q, answer = "what is the title of this book?", title
    elif u < 0.7:
        q, answer = "who is the author of this book?", author
    else:
        q, answer = "what colour is the picture on the cover of this book?", art.colour
    return img, {"q": q}, answer


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "scienceqa", "mc", "letter", C.MC_TRAIN, C.MC_HELDOUT, _make_scienceqa,
            max_new_tokens=3, chance=C.mc_chance(3),
            vocab=C.words(*(q + " " + " ".join(o) for q, o in _SQA)),
        ),
        Recipe(
            "textvqa", "vqa", "word", C.VQA_TRAIN, C.VQA_HELDOUT, _make_textvqa,
            max_new_tokens=4, chance=100 / len(W.WORDS), vocab=list(W.WORDS),
        ),
        Recipe(
            "flickr30k", "cider", "caption", C.CAPTION_TRAIN, C.CAPTION_HELDOUT, _make_flickr30k,
            # caption chances: CIDEr-D of the caption of another random test image (a caption in
            # the right format that ignores the image), mean of 5 x 96 test samples
            max_new_tokens=20, chance=67.0, vocab=C.words("at the has a picture of there is in ."),
        ),
        Recipe(
            "imagenet", "exact", "word",
            [
                "what is the object in the image? answer the question using a single word or "
                "phrase.",
                "what object is in the image? reply with a single word or phrase.",
                "what is the object shown in the image? give a one word or short phrase answer.",
                "which object does the image contain? respond using a single word or phrase.",
                "what object can be seen in the image? use a single word or phrase to answer.",
                "classify the object in the image.",
                "what kind of object is this?",
                "object category:",
            ],
            [
                "tell me what the object is.", "which class does the object belong to?",
                "what category is the thing in the picture?", "label the object in the picture.",
            ],
            _make_imagenet, max_new_tokens=3, chance=100 / len(W.SHAPES), vocab=list(W.SHAPES),
        ),
        Recipe(
            "gqa", "vqa", "word", C.VQA_TRAIN, C.VQA_HELDOUT, _make_gqa, max_new_tokens=4,
            # per question kind: a uniform guess among shapes, yes/no, shapes or colours
            # per question kind, a uniform guess among colours, positions, colours
            chance=0.35 * 100 / 6 + 0.35 * 100 / 9 + 0.3 * 100 / 6,
            vocab=C.words(*W.COLOUR_NAMES, *W.POSITIONS, *_RELATIONS, "object one"),
        ),
        Recipe(
            "vqav2", "vqa", "word", C.VQA_TRAIN, C.VQA_HELDOUT, _make_vqav2, max_new_tokens=4,
            chance=0.35 * 100 / 6 + 0.4 * 100 / 4 + 0.25 * 50,
            vocab=C.words(*W.COLOUR_NAMES, *C.YES_NO, "1 2 3 4 none zero one two three four"),
        ),
        Recipe(
            "vizwiz", "vqa", "word", C.VIZWIZ_TRAIN, C.VIZWIZ_HELDOUT, _make_vizwiz,
            max_new_tokens=4,
            # colour / count / text questions: a guess among their answers and "unanswerable"
            chance=(100 / 7 + 100 / 5 + 100 / 9) / 3,
            vocab=C.words(*W.COLOUR_NAMES, "1 2 3 4", *W.WORDS, C.UNANSWERABLE),
        ),
        Recipe(
            "textcaps", "cider", "caption", C.CAPTION_TRAIN, C.CAPTION_HELDOUT, _make_textcaps,
            max_new_tokens=16, chance=46.0,
            vocab=C.words("a sign that says the word is written at picture with text label reads"),
        ),
        Recipe(
            "ocrvqa", "vqa", "word", C.VQA_TRAIN, C.VQA_HELDOUT, _make_ocrvqa,
            max_new_tokens=4,
            chance=0.7 * 100 / 8 + 0.3 * 100 / 6,
            vocab=C.words(*W.WORDS, *W.COLOUR_NAMES, "title author book picture cover"),
        ),
    ]
}  # fmt: skip
