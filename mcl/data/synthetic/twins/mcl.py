"""The ``mcl`` twin (PathWeave): one task per modality, image -> video -> audio -> depth -> 3d.

PathWeave's stages are captioning / QA / classification on a new modality each. The twin keeps
their structure with one-word answers a ~1M-parameter model can learn with a LoRA in a few
hundred steps, all in one answer style (a single word), so training one modality overwrites the
others' answers (sequential fine-tuning forgets):

- ``image``: "what colour is the shape at the {pos}?" (one object) -> a colour;
- ``video``: where the shape moves (-> left / right / top / bottom, the world's position words)
  or what colour it turns (-> a colour);
- ``audio``: is the pitch rising or falling, how many beeps (1-4), is it high or low;
- ``depth``: where the nearest object is, or which of two objects is nearer -> a position;
- ``3d``: what solid the point cloud is -> sphere / cube / cylinder / cone / torus (ModelNet-style
  classification, exact match).

Tasks with several question kinds pick the kind in ``make`` and fill ``{ask}`` (training
phrasings) and ``{ask_h}`` (held-out phrasings) into the templates, so held-out instructions
are new wrappers *and* new phrasings. ``chance`` is the expected score of guessing uniformly
among the answers the question admits (e.g. 2 for "rising or falling?", 6 shapes for "which
shape is nearest?"), averaged over the task's question kinds.
"""

from __future__ import annotations

import numpy as np

from mcl.data.synthetic import world as W
from mcl.data.synthetic import world_av as A
from mcl.data.synthetic.tasks import Recipe

# ---- question kinds: (training phrasings, held-out phrasings) ----

VIDEO_ASKS = {
    "move": (
        [
            "which side does the shape move to?",
            "where does the shape go?",
            "towards which side does the object move?",
            "which way does the shape travel?",
        ],
        ["to which side is the object moving?", "where is the shape heading?"],
    ),
    "recolour": (
        [
            "what colour does the shape turn?",
            "which colour does the object become?",
            "what colour does the shape change to?",
            "what is the final colour of the shape?",
        ],
        ["into which colour does the object change?", "what colour is the shape at the end?"],
    ),
}
AUDIO_ASKS = {
    "contour": (
        [
            "is the pitch rising or falling?",
            "does the tone go rising or falling?",
            "is the melody rising or falling?",
            "rising or falling pitch?",
        ],
        ["is the sound rising or falling in pitch?", "tell me if the pitch is rising or falling."],
    ),
    "count": (
        [
            "how many beeps are there?",
            "count the beeps.",
            "how many tones do you hear?",
            "what is the number of beeps?",
        ],
        ["how many times does it beep?", "say how many beeps you hear."],
    ),
    "register": (
        [
            "is the tone high or low?",
            "is the sound high or low?",
            "high or low pitch?",
            "is the beep high or low?",
        ],
        ["does the sound have a high or a low pitch?", "tell me if the tone is high or low."],
    ),
}
DEPTH_ASKS = {
    "nearest": (
        [
            "where is the nearest object?",
            "where is the object closest to the camera?",
            "in which cell is the nearest shape?",
            "where is the closest shape?",
        ],
        ["name the position of the object nearest to the viewer.", "where is the closest object?"],
    ),
    "pair": (
        [
            "which is nearer, the object at the {a} or the one at the {b}?",
            "which is closer, the shape at the {a} or the shape at the {b}?",
            "is the object at the {a} or the one at the {b} nearer?",
            "which one is nearer to the camera, the {a} one or the {b} one?",
        ],
        [
            "of the shapes at the {a} and the {b}, which is closer?",
            "which is less far away, the {a} object or the {b} object?",
        ],
    ),
}


def _asks(rng: np.random.Generator, asks: dict, kind: str, **fill) -> dict:
    """``{ask}`` / ``{ask_h}`` fills: one training and one held-out phrasing of ``kind``."""
    train, heldout = asks[kind]
    return {
        "ask": train[rng.integers(len(train))].format(**fill),
        "ask_h": heldout[rng.integers(len(heldout))].format(**fill),
        "_meta": {"kind": kind},
    }


def _phrasings(asks: dict) -> list[str]:
    blank = {"a": "", "b": ""}
    return [p.format(**blank) for train, held in asks.values() for p in train + held]


# ---- makers ----


def _make_image(rng):
    # the colour of a lone object: what the tiny base reads reliably. (Shapes in a cell it does
    # not; the colour at a named position among 2-3 objects reached only 28% in 250 steps.)
    (t,) = W.random_objects(rng, 1)
    return W.draw_objects([t]), {"pos": t.position}, t.colour


def _make_video(rng):
    frames, info = A.make_video(rng)
    fill = _asks(rng, VIDEO_ASKS, info["kind"])
    return frames, fill, info["direction"] if info["kind"] == "move" else info["colour"]


def _make_audio(rng):
    wave, info = A.make_audio(rng)
    kind = list(AUDIO_ASKS)[rng.integers(len(AUDIO_ASKS))]
    answer = {
        "contour": info["contour"],
        "count": str(info["n_beeps"]),
        "register": info["register"],
    }
    return wave, _asks(rng, AUDIO_ASKS, kind), answer[kind]


def _make_depth(rng):
    # answers are positions: the tiny tower reads where a dark shape is, not which shape it is
    rgbd, info = A.make_depth(rng)
    objs = info["objects"]
    where = lambda o: W.POSITIONS[o["cell"]]  # noqa: E731
    if rng.random() < 0.5:
        return rgbd, _asks(rng, DEPTH_ASKS, "nearest"), where(objs[info["nearest"]])
    i, j = rng.choice(len(objs), 2, replace=False)
    a, b = objs[i], objs[j]
    near = a if a["depth"] < b["depth"] else b
    fill = _asks(rng, DEPTH_ASKS, "pair", a=where(a), b=where(b))
    fill["_meta"]["cells"] = [a["cell"], b["cell"]]
    return rgbd, fill, where(near)


def _make_3d(rng):
    points, info = A.make_points(rng)
    return points, {}, info["shape"]


# ---- recipes ----

_VIDEO_WRAP = (
    [
        "{ask}", "watch the video. {ask}", "look at the clip. {ask}", "in this video, {ask}",
        "here is a short clip. {ask}", "{ask} answer with one word.",
        "after watching the frames: {ask}", "the video shows one shape. {ask}",
    ],
    [
        "view the clip and say: {ask_h}", "from the video, {ask_h}",
        "{ask_h} reply with a single word.", "consider the moving picture. {ask_h}",
    ],
)  # fmt: skip
_AUDIO_WRAP = (
    [
        "{ask}", "listen to the audio. {ask}", "here is a sound clip. {ask}",
        "in this recording, {ask}", "{ask} answer with one word.", "listen carefully. {ask}",
        "the clip contains beeps. {ask}", "after hearing the audio: {ask}",
    ],
    [
        "hear the sound and say: {ask_h}", "from the audio, {ask_h}",
        "{ask_h} reply with a single word.", "consider this recording. {ask_h}",
    ],
)  # fmt: skip
_DEPTH_WRAP = (
    [
        "{ask}", "look at the depth map. {ask}", "here is a depth image. {ask}",
        "in this depth view, {ask}", "{ask} answer with one word.", "using the depth, {ask}",
        "the scene has a few shapes. {ask}", "judge the distances. {ask}",
    ],
    [
        "from the depth map, {ask_h}", "consider how far each shape is. {ask_h}",
        "{ask_h} reply with a single word.", "study the depth picture and say: {ask_h}",
    ],
)  # fmt: skip

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "image", "vqa", "word",
            [
                "in the image, what colour is at the {pos}?",
                "look at the picture: which colour does the {pos} shape have?",
                "name the colour of the object in the {pos} cell.",
                "the picture shows shapes. what colour is the one at the {pos}?",
                "tell me the colour found at the {pos} of the image.",
                "in this image the {pos} shape is which colour?",
                "identify the colour of the picture's {pos} object.",
                "which colour sits at the {pos} of the image?",
            ],
            [
                "say which colour the {pos} object of the picture has.",
                "what is the colour at the {pos} of this image?",
                "give the colour of the shape in the image's {pos} cell.",
                "looking at the image, the {pos} object is what colour?",
            ],
            _make_image, max_new_tokens=4, chance=100 / len(W.COLOUR_NAMES), modality="image",
            vocab=list(W.COLOUR_NAMES),
        ),
        Recipe(
            "video", "vqa", "word", *_VIDEO_WRAP, _make_video, max_new_tokens=4,
            chance=(100 / len(A.DIRECTIONS) + 100 / len(W.COLOUR_NAMES)) / 2, modality="video",
            vocab=_phrasings(VIDEO_ASKS) + list(A.DIRECTIONS) + W.COLOUR_NAMES,
        ),
        Recipe(
            "audio", "vqa", "word", *_AUDIO_WRAP, _make_audio, max_new_tokens=4,
            chance=(100 / 2 + 100 / 4 + 100 / 2) / 3, modality="audio",
            vocab=_phrasings(AUDIO_ASKS) + list(A.CONTOURS) + list(A.REGISTERS)
            + ["1", "2", "3", "4"],
        ),
        Recipe(
            "depth", "vqa", "word", *_DEPTH_WRAP, _make_depth, max_new_tokens=4,
            # a guess among the objects shown: 2-3 for "nearest", 2 for a pair
            chance=((100 / 2 + 100 / 3) / 2 + 100 / 2) / 2, modality="depth",
            vocab=_phrasings(DEPTH_ASKS) + list(W.POSITIONS),
        ),
        Recipe(
            "3d", "exact", "word",
            [
                "what shape is this?", "which 3d shape is this?",
                "name the shape of the point cloud.", "what object do the points form?",
                "classify this point cloud.", "what is the shape of this object?",
                "which solid is shown?", "tell me the shape of the points.",
            ],
            [
                "identify the solid in the point cloud.", "what geometric body is this?",
                "say what shape the points make.", "which primitive do you see?",
            ],
            _make_3d, max_new_tokens=4, chance=100 / len(A.SOLIDS), modality="points",
            vocab=list(A.SOLIDS),
        ),
    ]
}  # fmt: skip
