"""The 48 px view: a 3x3 grid of 16 px cells, its palette and how shapes are drawn on it.

Why a grid whose cells match the vision tower's patches: a tiny CLIP-style tower trained in
minutes on 2 CPU cores cannot find a small object that straddles patches, so every view that
image-only models read (a synthetic image or a rendering of real audio, video, depth, points)
puts one thing per 16 px cell. The synthetic world (:mod:`mcl.data.synthetic.world`) and the
renderers (:mod:`mcl.data.render`) both draw with these primitives.
"""

from __future__ import annotations

import numpy as np
from PIL import ImageDraw

IMAGE_SIZE = 48
GRID = 3
CELL = IMAGE_SIZE // GRID

SHAPES = ["circle", "square", "triangle", "diamond", "cross", "star"]
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 210, 20),
    "purple": (140, 40, 170),
    "orange": (245, 130, 20),
}
COLOUR_NAMES = list(COLOURS)
WHITE = (255, 255, 255)
OUTLINE = (0, 0, 0)  # a dark outline makes a shape visible independently of its fill colour


def cell_origin(cell: int, size: int) -> tuple[int, int]:
    """Top-left pixel of a ``size``-px square centred in grid cell ``cell`` (row-major)."""
    r, c = divmod(cell, GRID)
    pad = (CELL - size) // 2
    return c * CELL + pad, r * CELL + pad


def shape_polygon(shape: str, x0: int, y0: int, s: int) -> list[tuple[float, float]] | None:
    """The outline of a polygonal shape in the square at (x0, y0) of side ``s`` (None for the
    circle and the square, which have their own primitives)."""
    cx, cy, h = x0 + s / 2, y0 + s / 2, s / 2
    if shape == "triangle":
        return [(cx, y0), (x0 + s, y0 + s), (x0, y0 + s)]
    if shape == "diamond":
        return [(cx, y0), (x0 + s, cy), (cx, y0 + s), (x0, cy)]
    if shape == "cross":
        t = s / 6
        return [
            (cx - t, y0), (cx + t, y0), (cx + t, cy - t), (x0 + s, cy - t),
            (x0 + s, cy + t), (cx + t, cy + t), (cx + t, y0 + s), (cx - t, y0 + s),
            (cx - t, cy + t), (x0, cy + t), (x0, cy - t), (cx - t, cy - t),
        ]  # fmt: skip
    if shape == "star":
        pts = []
        for k in range(10):
            r = h if k % 2 == 0 else h * 0.45
            a = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + r * np.cos(a), cy + r * np.sin(a)))
        return pts
    return None


def draw_shape(d: ImageDraw.ImageDraw, shape: str, x0: int, y0: int, s: int, fill, outline):
    """One shape in the ``s``-px square at (x0, y0)."""
    if shape == "circle":
        d.ellipse([x0, y0, x0 + s - 1, y0 + s - 1], fill=fill, outline=outline)
    elif shape == "square":
        d.rectangle([x0, y0, x0 + s - 1, y0 + s - 1], fill=fill, outline=outline)
    else:
        d.polygon(shape_polygon(shape, x0, y0, s - 1), fill=fill, outline=outline)
