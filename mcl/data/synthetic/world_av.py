"""The non-image synthetic world: generators of video, audio, depth and point-cloud samples.

Generators draw everything from a ``numpy`` generator (``world.sample_rng``) and return the
sample's *native payload* (:mod:`mcl.data.schema`) plus a ground-truth ``info`` dict:

- video: ``uint8 [F, 48, 48, 3]``, 4-8 frames of one shape on white moving two cells left /
  right / up / down, or staying in its cell while its colour changes;
- audio: ``float32 [N]`` at 16 kHz (0.75 s), 1-4 beeps whose pitch glides up or down over the
  clip, in a low (125-500 Hz) or a high (2-8 kHz) register. Samples lie on the int16 grid, so a
  16-bit WAV stores them exactly;
- depth: :class:`~mcl.data.schema.RGBD`, the RGB image of 2-3 shapes at different distances and
  its depth map (``uint8 [48, 48]``, metres x :data:`DEPTH_SCALE`, a back wall at
  :data:`WALL_DEPTH`);
- points: ``float32 [N, 3]``, N in [256, 1024], on a sphere, cube, cylinder, cone or torus with a
  random rotation, scale, offset and Gaussian noise.

Their 48 px views come from :mod:`mcl.data.render`, the same renderers real samples go through;
the generators keep its rule that a 16 px cell is one vision-tower patch, so what a question asks
about shows up as *which patches* hold *what*.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from mcl.data.canvas import WHITE, cell_origin, draw_shape
from mcl.data.render import pcm_grid
from mcl.data.schema import RGBD, SAMPLE_RATE
from mcl.data.synthetic import world as W

# ---- video ----

# The answer words are the world's position words, so the base already knows them.
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1)}
VIDEO_KINDS = ("move", "recolour")


def make_video(rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, dict]:
    """4-8 frames of one shape moving two cells (start and end cell-aligned) or changing colour.

    ``info``: kind, shape, colour (final), start_colour, direction (``None`` for recolour),
    start/end cell, frames.
    """
    kind = kind or VIDEO_KINDS[rng.integers(2)]
    n = int(rng.integers(4, 9))
    shape = W.SHAPES[rng.integers(len(W.SHAPES))]
    c0, c1 = (W.COLOUR_NAMES[i] for i in rng.choice(len(W.COLOUR_NAMES), 2, replace=False))
    size = 12
    if kind == "move":
        direction = list(DIRECTIONS)[rng.integers(4)]
        dx, dy = DIRECTIONS[direction]
        lane = int(rng.integers(W.GRID))  # the row (horizontal moves) or column (vertical)
        first = 0 if (dx + dy) > 0 else W.GRID - 1
        start = lane * W.GRID + first if dx else first * W.GRID + lane
        end = start + 2 * (dx + W.GRID * dy)
        colours = [W.COLOURS[c0]] * n
        x0, y0 = cell_origin(start, size)
        travel = 2 * W.CELL
        offsets = [round(travel * k / (n - 1)) for k in range(n)]
        xy = [(x0 + dx * o, y0 + dy * o) for o in offsets]
        final = c0
    else:
        direction = None
        start = end = int(rng.integers(W.GRID * W.GRID))
        a, b = np.array(W.COLOURS[c0], float), np.array(W.COLOURS[c1], float)
        colours = [tuple(int(round(v)) for v in a + (b - a) * k / (n - 1)) for k in range(n)]
        xy = [cell_origin(start, size)] * n
        final = c1
    frames = np.empty((n, W.IMAGE_SIZE, W.IMAGE_SIZE, 3), np.uint8)
    for k in range(n):
        img = Image.new("RGB", (W.IMAGE_SIZE, W.IMAGE_SIZE), WHITE)
        draw_shape(ImageDraw.Draw(img), shape, *xy[k], size, colours[k], (0, 0, 0))
        frames[k] = np.asarray(img)
    info = {
        "kind": kind,
        "shape": shape,
        "colour": final,
        "start_colour": c0,
        "direction": direction,
        "start_cell": start,
        "end_cell": end,
        "frames": n,
    }
    return frames, info


# ---- audio ----

CLIP_SECONDS = 0.75
REGISTERS = {"low": (125.0, 500.0), "high": (2000.0, 8000.0)}  # bottom / top third of the view
CONTOURS = ("rising", "falling")


def make_audio(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """1-4 beeps; the pitch glides (log-linearly) up or down across the whole beep sequence.

    Low register: 140-180 Hz -> 380-450 Hz; high: 2.2-2.8 kHz -> 6-7 kHz (at least 1.1 octaves),
    reversed for falling. Beeps sit evenly in the clip with jittered onsets and 15 ms raised-cosine
    ramps; gaps are >= 60 ms. ``info``: n_beeps, contour, register, onsets/offsets (s), f_start,
    f_end (Hz).
    """
    n = int(rng.integers(1, 5))
    contour = CONTOURS[rng.integers(2)]
    register = list(REGISTERS)[rng.integers(2)]
    if register == "low":
        lo, hi = rng.uniform(140, 180), rng.uniform(380, 450)
    else:
        lo, hi = rng.uniform(2200, 2800), rng.uniform(6000, 7000)
    f_start, f_end = (lo, hi) if contour == "rising" else (hi, lo)
    margin = 0.03
    slot = (CLIP_SECONDS - 2 * margin) / n
    onsets, offsets = [], []
    for i in range(n):
        dur = min(slot - 0.06, 0.4) * rng.uniform(0.75, 1.0)
        start = margin + i * slot + rng.uniform(0, slot - 0.06 - dur + 1e-9)
        onsets.append(float(start))
        offsets.append(float(start + dur))
    t = np.arange(int(SAMPLE_RATE * CLIP_SECONDS)) / SAMPLE_RATE
    t0, t1 = onsets[0], offsets[-1]
    frac = np.clip((t - t0) / (t1 - t0), 0, 1)
    freq = f_start * (f_end / f_start) ** frac
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    env = np.zeros_like(t)
    ramp = 0.015
    for a, b in zip(onsets, offsets):
        inside = (t >= a) & (t < b)
        edge = np.minimum(t[inside] - a, b - t[inside]) / ramp
        env[inside] = 0.5 - 0.5 * np.cos(np.pi * np.clip(edge, 0, 1))
    amp = rng.uniform(0.3, 0.6)
    wave = amp * env * np.sin(phase + rng.uniform(0, 2 * np.pi))
    info = {
        "n_beeps": n,
        "contour": contour,
        "register": register,
        "onsets": onsets,
        "offsets": offsets,
        "f_start": float(f_start),
        "f_end": float(f_end),
    }
    return pcm_grid(wave), info


# ---- depth ----

DEPTH_SCALE = 32.0  # depth map value = metres * 32 (uint8: up to ~7.97 m)
WALL_DEPTH = 5.0
DEPTH_LEVELS = (1.0, 1.8, 2.6, 3.4)  # objects' base distances (m), jittered by +-0.15


def make_depth(rng: np.random.Generator, n: int | None = None) -> tuple[RGBD, dict]:
    """2-3 shapes (distinct shapes, distinct cells) at distinct distances before a back wall.

    Nearer objects are drawn larger (14 px at 1 m down to 9 px at 3.5 m), as a camera sees them.
    Distances come from distinct levels 0.8 m apart, so every pair is at least 0.5 m apart.
    ``info``: objects (shape, colour, cell, size, depth in metres), nearest (index).
    """
    n = n or int(rng.integers(2, 4))
    cells = sorted(rng.choice(W.GRID * W.GRID, n, replace=False).tolist())
    shapes = [W.SHAPES[i] for i in rng.choice(len(W.SHAPES), n, replace=False)]
    levels = rng.choice(len(DEPTH_LEVELS), n, replace=False)
    dists = [DEPTH_LEVELS[i] + rng.uniform(-0.15, 0.15) for i in levels]
    rgb = Image.new("RGB", (W.IMAGE_SIZE, W.IMAGE_SIZE), WHITE)
    dmap = Image.new("L", (W.IMAGE_SIZE, W.IMAGE_SIZE), int(round(WALL_DEPTH * DEPTH_SCALE)))
    objs = []
    # far to near, so a nearer object would cover a farther one (cells are distinct anyway)
    for i in sorted(range(n), key=lambda j: -dists[j]):
        colour = W.COLOUR_NAMES[rng.integers(len(W.COLOUR_NAMES))]
        size = int(round(np.interp(dists[i], [1.0, 3.5], [14, 9])))
        x0, y0 = cell_origin(cells[i], size)
        draw_shape(ImageDraw.Draw(rgb), shapes[i], x0, y0, size, W.COLOURS[colour], (0, 0, 0))
        v = int(round(dists[i] * DEPTH_SCALE))
        draw_shape(ImageDraw.Draw(dmap), shapes[i], x0, y0, size, v, v)
        objs.append(
            {"shape": shapes[i], "colour": colour, "cell": cells[i], "size": size,
             "depth": float(dists[i])}
        )  # fmt: skip
    objs.sort(key=lambda o: o["cell"])
    nearest = int(np.argmin([o["depth"] for o in objs]))
    return RGBD(rgb, np.asarray(dmap, np.uint8).copy()), {"objects": objs, "nearest": nearest}


# ---- point clouds ----

SOLIDS = ("sphere", "cube", "cylinder", "cone", "torus")
# canonical sizes (before the random scale): elongated / flat solids have one clearly
# distinct principal axis, so the renderer's canonical view is stable
SOLID_PARAMS = {
    "sphere": {"radius": 1.0},
    "cube": {"half": 0.7},
    "cylinder": {"radius": 0.4, "height": 2.0},
    "cone": {"radius": 0.55, "height": 2.0},
    "torus": {"major": 0.75, "minor": 0.25},
}


def _disc(rng, n, r):
    rho, th = r * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
    return rho * np.cos(th), rho * np.sin(th)


def solid_surface(rng: np.random.Generator, shape: str, n: int) -> np.ndarray:
    """``n`` points uniform (by area) on the canonical solid, centred at the origin, axis = z."""
    p = SOLID_PARAMS[shape]
    if shape == "sphere":
        v = rng.normal(size=(n, 3))
        return p["radius"] * v / np.linalg.norm(v, axis=1, keepdims=True)
    if shape == "cube":
        a = p["half"]
        face = rng.integers(6, size=n)
        uv = rng.uniform(-a, a, (n, 2))
        out = np.empty((n, 3))
        axis, sign = face // 2, np.where(face % 2 == 0, -1.0, 1.0)
        for k in range(3):
            m = axis == k
            others = [j for j in range(3) if j != k]
            out[m, k] = sign[m] * a
            out[np.ix_(m, others)] = uv[m]
        return out
    if shape in ("cylinder", "cone"):
        r, h = p["radius"], p["height"]
        side = 2 * np.pi * r * h if shape == "cylinder" else np.pi * r * np.hypot(r, h)
        caps = (2 if shape == "cylinder" else 1) * np.pi * r * r
        on_side = rng.random(n) < side / (side + caps)
        out = np.empty((n, 3))
        k = int(on_side.sum())
        th = rng.uniform(0, 2 * np.pi, k)
        if shape == "cylinder":
            rho, z = np.full(k, r), rng.uniform(-h / 2, h / 2, k)
        else:  # apex at +h/2; the radius grows linearly, so area density grows too
            t = np.sqrt(rng.random(k))
            rho, z = r * t, h / 2 - t * h
        out[on_side] = np.stack([rho * np.cos(th), rho * np.sin(th), z], 1)
        m = ~on_side
        x, y = _disc(rng, int(m.sum()), r)
        if shape == "cylinder":
            z = np.where(rng.random(len(x)) < 0.5, -h / 2, h / 2)
        else:
            z = np.full(len(x), -h / 2)
        out[m] = np.stack([x, y, z], 1)
        return out
    if shape == "torus":
        R, r = p["major"], p["minor"]
        pts = np.empty((0, 3))
        while len(pts) < n:  # rejection by the area element (R + r cos phi)
            th, ph = rng.uniform(0, 2 * np.pi, (2, 2 * n))
            keep = rng.random(2 * n) < (R + r * np.cos(ph)) / (R + r)
            th, ph = th[keep], ph[keep]
            ring = R + r * np.cos(ph)
            pts = np.vstack(
                [pts, np.stack([ring * np.cos(th), ring * np.sin(th), r * np.sin(ph)], 1)]
            )
        return pts[:n]
    raise ValueError(f"unknown solid {shape!r}; known: {SOLIDS}")


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation (from a normalised Gaussian quaternion)."""
    w, x, y, z = (q := rng.normal(size=4)) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def make_points(rng: np.random.Generator, shape: str | None = None) -> tuple[np.ndarray, dict]:
    """256-1024 noisy points on a solid with a random pose: ``x = scale * R p + offset + noise``.

    ``info``: shape, n, rotation (3x3 list), scale, offset, noise (std, same units as x).
    """
    shape = shape or SOLIDS[rng.integers(len(SOLIDS))]
    n = int(rng.integers(256, 1025))
    canon = solid_surface(rng, shape, n)
    rot = random_rotation(rng)
    scale = float(rng.uniform(0.8, 1.25))
    offset = rng.normal(0, 0.1, 3)
    noise = float(rng.uniform(0.005, 0.02))
    pts = scale * canon @ rot.T + offset + rng.normal(0, noise, (n, 3))
    info = {
        "shape": shape,
        "n": n,
        "rotation": rot.tolist(),
        "scale": scale,
        "offset": offset.tolist(),
        "noise": noise,
    }
    return pts.astype(np.float32), info
