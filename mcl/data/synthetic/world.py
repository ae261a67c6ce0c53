"""The synthetic visual world: shapes, colours and words on a 3x3 grid.

Why a grid whose cells match the vision tower's patches: a tiny CLIP-style tower trained in minutes
on 2 CPU cores cannot find a small object that straddles patches (we measured chance-level colour
accuracy after 1,500 steps for objects at 1/9 of a 32 px image with patch 4). With one object per
16 px cell and 16 px patches, every image token *is* one grid cell, so the model learns "what is
where" quickly and the continual tasks are about instructions and answer formats, as in MCIT.

The grid, palette and shapes are the view's (:mod:`mcl.data.canvas`), shared with the renderers
of real samples. Everything is drawn from a ``numpy`` generator seeded by (seed, task, split,
index) alone, so any sample can be regenerated bit-for-bit.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mcl.data.canvas import (
    CELL,
    COLOUR_NAMES,
    COLOURS,
    GRID,
    IMAGE_SIZE,
    OUTLINE,
    SHAPES,
    WHITE,
    cell_origin,
    draw_shape,
)

# Row-major cell names; "centre" is the middle cell.
POSITIONS = [
    "top left",
    "top",
    "top right",
    "left",
    "centre",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
]
WORDS = ["cat", "dog", "sun", "car", "tree", "fish", "book", "moon"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five"]
SPLITS = {"train": 0, "test": 1, "pretrain": 2}


def sample_rng(seed: int, task: str, split: str, index: int) -> np.random.Generator:
    """The one source of randomness for a sample; train and test never share a stream."""
    return np.random.default_rng([seed, zlib.crc32(task.encode()), SPLITS[split], index])


@dataclass
class Obj:
    shape: str
    colour: str
    cell: int  # 0..8 row-major
    size: int = 12  # side of the bounding square in pixels (<= CELL)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Normalised [x1, y1, x2, y2] of the object's bounding square."""
        x0, y0 = self.origin
        s = IMAGE_SIZE
        return (x0 / s, y0 / s, (x0 + self.size) / s, (y0 + self.size) / s)

    @property
    def origin(self) -> tuple[int, int]:
        return cell_origin(self.cell, self.size)

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]


def draw_objects(objs: list[Obj], background=WHITE) -> Image.Image:
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
    d = ImageDraw.Draw(img)
    for o in objs:
        draw_shape(d, o.shape, *o.origin, o.size, COLOURS[o.colour], OUTLINE)
    return img


_FONT: ImageFont.FreeTypeFont | None = None


def draw_word(word: str, row: int, colour=(0, 0, 0)) -> Image.Image:
    """A word in Pillow's bundled font, centred horizontally in grid row ``row``."""
    global _FONT
    if _FONT is None:
        _FONT = ImageFont.load_default(size=14)
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255))
    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = d.textbbox((0, 0), word, font=_FONT)
    x = (IMAGE_SIZE - (x1 - x0)) // 2 - x0
    y = row * CELL + (CELL - (y1 - y0)) // 2 - y0
    d.text((x, y), word, fill=colour, font=_FONT)
    return img


def random_objects(rng: np.random.Generator, n: int, size_range=(10, 14)) -> list[Obj]:
    """``n`` objects in distinct cells, sorted in reading order (what captions list)."""
    cells = sorted(rng.choice(GRID * GRID, size=n, replace=False).tolist())
    return [
        Obj(
            shape=SHAPES[rng.integers(len(SHAPES))],
            colour=COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))],
            cell=c,
            size=int(rng.integers(size_range[0], size_range[1] + 1)),
        )
        for c in cells
    ]


def grid_listing(objs: list[Obj]) -> str:
    """Every cell in reading order, e.g. "top left red circle , top empty , ..."."""
    by_cell = {o.cell: f"{o.colour} {o.shape}" for o in objs}
    return " , ".join(f"{POSITIONS[c]} {by_cell.get(c, 'empty')}" for c in range(GRID * GRID))


def fmt_box(box: tuple[float, float, float, float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"


def caption(objs: list[Obj]) -> str:
    # Position first: the LM names a cell, then reads that cell's token for colour and shape.
    # (Colour first would need the LM to bind an object before naming where it is: a tiny model
    # stays at chance on that for thousands of steps.)
    parts = [f"at {o.position} a {o.colour} {o.shape}" for o in objs]
    return " and ".join(parts)
