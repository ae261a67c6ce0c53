"""Building blocks the synthetic twins share: composite images, option lists, captions,
instruction families and small "knowledge" tables.

Every function takes the sample's ``numpy`` generator and draws from nothing else, so a twin's
sample is a function of (seed, task, split, index) alone. Images stay in the tiny base's world
(48 px, one object or one word per grid row / cell), so what a task changes is the instruction and
the answer format, which is what makes sequential fine-tuning forget.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageChops, ImageFilter, ImageOps

from mcl.data.synthetic import world as W

LETTERS = "ABCDEFGH"
ROW_NAMES = [W.POSITIONS[r * W.GRID + 1] for r in range(W.GRID)]  # top, centre, bottom
YES_NO = ["yes", "no"]
UNANSWERABLE = "unanswerable"

# What the tiny base can read off an image, measured with a fresh LoRA (r 8, attention, 250 steps
# of 32) per probe task: colours, positions, counts and words of small objects, reliably as words;
# an object found by its colour, about half of the time. It cannot tell the shapes of grid-cell
# sized objects apart (its captions name a random shape), so no answer depends on a small object's
# shape; a large object (``big_object``) shows its shape about half of the time.
# Multiple choice adds a step: the base never outputs a letter in pretraining, so a LoRA must learn
# the letters' output directions. With the runner's schedule (5 % warm-up, cosine decay) a letter
# is learnt reliably only for a global image property (how many objects) with three options
# (about 100 %); colours of a large shape with three options reach about 60 % (chance 33), with
# four options about 40 %; a property of one small object (its colour or position) stays at chance,
# shuffled options stay at chance, and mixing option lists whose letters mean different things
# keeps every kind of the task near chance. Hence: three options, in a fixed order, one meaning
# per letter within a task.
MC_COLOURS = ["red", "green", "blue"]

# ---------------------------------------------------------------- fixed "knowledge" tables
# Things in nature by colour: (main answer, the answer a minority of annotators give); both count
# as right under the VQA rule with 6 + 4 references. OK-VQA-style outside knowledge.
NATURE = {
    "red": ("apple", "cherry"),
    "green": ("grass", "leaf"),
    "blue": ("sky", "sea"),
    "yellow": ("banana", "lemon"),
    "purple": ("grape", "plum"),
    "orange": ("carrot", "pumpkin"),
}
ANIMALS = ("cat", "dog", "fish")  # the world's words that name animals


def words(*phrases: str) -> list[str]:
    """The whitespace words of some phrases (for a recipe's ``vocab``)."""
    return sorted({w for p in phrases for w in p.split()})


# ---------------------------------------------------------------- images
def blank_image() -> Image.Image:
    return Image.new("RGB", (W.IMAGE_SIZE, W.IMAGE_SIZE), (255, 255, 255))


def compose(*images: Image.Image) -> Image.Image:
    """Overlay images drawn on white (words, objects in disjoint cells): the darker pixel wins."""
    out = images[0]
    for img in images[1:]:
        out = ImageChops.darker(out, img)
    return out


def text_image(words_by_row: dict[int, str], objs: list[W.Obj] = ()) -> Image.Image:
    """Words in Pillow's bundled font, one per grid row, plus objects in the other rows."""
    layers = [W.draw_word(w, row) for row, w in sorted(words_by_row.items())]
    if objs:
        layers.append(W.draw_objects(list(objs)))
    return compose(*layers) if layers else blank_image()


def objects_in_rows(rng: np.random.Generator, rows: list[int], n: int) -> list[W.Obj]:
    """``n`` random objects in distinct cells of the given rows, in reading order."""
    cells = [r * W.GRID + c for r in rows for c in range(W.GRID)]
    chosen = sorted(rng.choice(len(cells), size=n, replace=False).tolist())
    return [
        W.Obj(
            shape=W.SHAPES[rng.integers(len(W.SHAPES))],
            colour=W.COLOUR_NAMES[rng.integers(len(W.COLOUR_NAMES))],
            cell=cells[i],
            size=int(rng.integers(10, 15)),
        )
        for i in chosen
    ]


def blurred(img: Image.Image, radius: float = 1.2) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius))


def scan_image(img: Image.Image) -> Image.Image:
    """A "medical scan" look: grey levels only. (Inverted scans, bright on black, were tried: the
    tiny base then counts at little above chance.)"""
    return ImageOps.grayscale(img).convert("RGB")


def one_object(rng: np.random.Generator) -> W.Obj:
    """One random object in a random cell."""
    return W.random_objects(rng, 1)[0]


def big_object(rng: np.random.Generator) -> W.Obj:
    """One object filling most of the image: its outline spans all nine patches, so its shape
    shows in which patches it covers (the only way the tiny base tells shapes apart)."""
    return W.Obj(
        shape=W.SHAPES[rng.integers(len(W.SHAPES))],
        colour=W.COLOUR_NAMES[rng.integers(len(W.COLOUR_NAMES))],
        cell=4,
        size=int(rng.integers(36, 47)),
    )


def distinct_colours(rng: np.random.Generator, n: int) -> list[W.Obj]:
    """``n`` objects whose colours are all different (so "the red shape" names one object)."""
    colours = rng.permutation(len(W.COLOUR_NAMES))[:n]
    objs = W.random_objects(rng, n)
    for o, c in zip(objs, colours):
        o.colour = W.COLOUR_NAMES[int(c)]
    return objs


# ---------------------------------------------------------------- answers
def fixed_choice(answer: str, options: list[str]) -> tuple[str, str, list[str]]:
    """Lettered options in a fixed order (options text, key letter, option texts).

    The order is fixed per question kind because the tiny base cannot look an answer up in a
    shuffled list (a LoRA probe stays at chance); with a fixed list the letter is learnt.
    """
    letter = LETTERS[options.index(answer)]
    text = " ".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    return text, letter, list(options)


def mc_chance(*n_options: int) -> float:
    """Expected accuracy (0-100) of a random letter, question kinds equally likely."""
    return 100 * float(np.mean([1 / n for n in n_options]))


def number_refs(rng: np.random.Generator, n: int, total: int = 10) -> list[str]:
    """VQAv2-style references for a count: ``total`` annotators, some writing the digit and some
    the word ("2" / "two"; "0" / "none" / "zero"). The digit comes first (the training answer)."""
    spelled = {0: ["none", "zero"], **{i: [w] for i, w in enumerate(W.NUMBER_WORDS) if i}}
    alts = spelled.get(n, [])
    k = int(rng.integers(total // 2, total + 1)) if alts else total
    refs = [str(n)] * k
    refs += [alts[int(rng.integers(len(alts)))] for _ in range(total - k)]
    return refs


def where(o: W.Obj) -> str:
    """ "the top left", "the centre" ..."""
    return f"the {o.position}"


def scene_caption(objs: list[W.Obj]) -> list[str]:
    """Flickr-style references for 1-2 objects, position first (what a tiny LM can produce in
    reading order); the first is the training answer. At most 16 words each."""
    a = " and ".join(f"at {where(o)} a {o.colour} {o.shape}" for o in objs)
    b = " and ".join(f"{where(o)} has a {o.colour} {o.shape}" for o in objs)
    c = " and ".join(f"a {o.colour} {o.shape} at {where(o)}" for o in objs)
    d = " and ".join(f"a {o.colour} {o.shape}" for o in objs)
    e = " and ".join(f"a {o.shape} in {o.colour}" for o in objs)
    return [f"{a} .", f"{b} .", f"{c} .", f"a picture of {d} .", f"there is {e} ."]


def text_caption(word: str, row: int, obj: W.Obj | None) -> list[str]:
    """TextCaps-style references for one word (and maybe one object); the first is the answer."""
    extra = f" and a {obj.colour} {obj.shape}" if obj else ""
    return [
        f"a sign that says {word}{extra} .",
        f"the word {word} is written at the {ROW_NAMES[row]}{extra} .",
        f"a picture with the text {word}{extra} .",
        f"a label that reads {word} .",
    ]


# ---------------------------------------------------------------- instruction families
# CVIT appends one instruction per task type to the question; the first five entries of each
# family are paraphrases of that instruction (the multi-type setting), the rest vary the form.
VQA_TRAIN = [
    "{q} answer the question using a single word or phrase.",
    "{q} reply with a single word or phrase.",
    "{q} give a short answer of one word or phrase.",
    "{q} respond using one word or a short phrase.",
    "{q} use a single word or phrase to answer.",
    "question: {q} short answer:",
    "{q}",
    "answer briefly. {q}",
]
VQA_HELDOUT = [
    "{q} keep the answer to one word or phrase.",
    "please answer in a word or phrase: {q}",
    "{q} a brief answer please.",
    "look at the image and answer: {q}",
]
MC_TRAIN = [
    "{q} {options} answer with the option letter from the given choices directly.",
    "{q} {options} reply with the letter of the correct option.",
    "{q} {options} choose the right option and give its letter.",
    "{q} {options} pick one of the options and answer with its letter.",
    "{q} {options} select the correct choice and output only its letter.",
    "question: {q} options: {options} answer:",
    "{options} {q} answer with a letter.",
    "{q} choices: {options}",
]
MC_HELDOUT = [
    "{q} {options} which letter is correct?",
    "here are the options: {options} {q} letter only.",
    "{q} {options} the answer letter is",
    "{q} possible answers: {options} give the letter.",
]
CAPTION_TRAIN = [
    "what is happening in the presented picture? please describe it in one complete sentence.",
    "what does the presented picture show? describe it in one full sentence.",
    "what is going on in the picture? answer with one complete sentence.",
    "tell me what happens in the picture, in a single complete sentence.",
    "what can be seen in the presented picture? give one full sentence.",
    "write one sentence about the picture.",
    "a short sentence describing this picture:",
    "summarise the picture in one sentence.",
]
CAPTION_HELDOUT = [
    "in one sentence, what is in this picture?",
    "give the picture a one sentence description.",
    "describe the scene briefly in a sentence.",
    "what would a caption for this picture say?",
]
VIZWIZ_TRAIN = [
    "{q} when the provided information is insufficient, respond with unanswerable. "
    "answer the question using a single word or phrase.",
    "{q} if the image does not show enough, reply unanswerable. "
    "otherwise reply with a single word or phrase.",
    "{q} say unanswerable when it cannot be answered from the image, else give one word or phrase.",
    "{q} if there is not enough information, answer unanswerable; "
    "if there is, answer with a word or phrase.",
    "{q} respond with one word or phrase, or with unanswerable when the image is insufficient.",
    "question: {q} answer or unanswerable:",
    "{q} unanswerable is allowed.",
    "a blind user asks: {q}",
]
VIZWIZ_HELDOUT = [
    "{q} answer in a word, or say unanswerable if you cannot tell.",
    "someone who cannot see asks: {q}",
    "{q} if unsure from the image, unanswerable.",
    "help a blind user: {q}",
]
