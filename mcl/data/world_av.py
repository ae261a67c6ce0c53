"""The non-image synthetic world (video, audio, depth, point clouds) and its 48 px renderings.

Generators draw everything from a ``numpy`` generator (``world.sample_rng``) and return the
sample's *native payload* plus a ground-truth ``info`` dict:

- video: ``uint8 [F, 48, 48, 3]``, 4-8 frames of one shape on white moving two cells left /
  right / up / down, or staying in its cell while its colour changes;
- audio: ``float32 [N]`` at 16 kHz (0.75 s), 1-4 beeps whose pitch glides up or down over the
  clip, in a low (125-500 Hz) or a high (2-8 kHz) register. Samples lie on the int16 grid, so a
  16-bit WAV stores them exactly;
- depth: :class:`RGBD`, the RGB image of 2-3 shapes at different distances and its depth map
  (``uint8 [48, 48]``, metres x :data:`DEPTH_SCALE`, a back wall at :data:`WALL_DEPTH`);
- points: ``float32 [N, 3]``, N in [256, 1024], on a sphere, cube, cylinder, cone or torus with a
  random rotation, scale, offset and Gaussian noise.

:func:`as_image` turns any payload into the 48x48 RGB view that image-only models consume
(models with x-modal input modules, ``mcl.models.xmodal``, read the native payload instead).
Every renderer keeps the world's one rule: a 16 px cell is one vision-tower patch, so what a
question asks about must show up as *which patches* hold *what*.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from mcl.data import world as W

MODALITIES = ("image", "video", "audio", "depth", "points")

# ---- drawing (the image world's shapes at any pixel position) ----


def draw_shape(d: ImageDraw.ImageDraw, shape: str, x0: int, y0: int, s: int, fill, outline):
    """One shape in the ``s``-px square at (x0, y0), exactly as :func:`world.draw_objects` does."""
    if shape == "circle":
        d.ellipse([x0, y0, x0 + s - 1, y0 + s - 1], fill=fill, outline=outline)
    elif shape == "square":
        d.rectangle([x0, y0, x0 + s - 1, y0 + s - 1], fill=fill, outline=outline)
    else:
        d.polygon(W._shape_polygon(shape, x0, y0, s - 1), fill=fill, outline=outline)


def _cell_origin(cell: int, size: int) -> tuple[int, int]:
    r, c = divmod(cell, W.GRID)
    pad = (W.CELL - size) // 2
    return c * W.CELL + pad, r * W.CELL + pad


# ---- video ----

# The answer words are the world's position words, so the base already knows them.
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1)}
VIDEO_KINDS = ("move", "recolour")
WHITE = (255, 255, 255)


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
        x0, y0 = _cell_origin(start, size)
        travel = 2 * W.CELL
        offsets = [round(travel * k / (n - 1)) for k in range(n)]
        xy = [(x0 + dx * o, y0 + dy * o) for o in offsets]
        final = c0
    else:
        direction = None
        start = end = int(rng.integers(W.GRID * W.GRID))
        a, b = np.array(W.COLOURS[c0], float), np.array(W.COLOURS[c1], float)
        colours = [tuple(int(round(v)) for v in a + (b - a) * k / (n - 1)) for k in range(n)]
        xy = [_cell_origin(start, size)] * n
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


def render_video(frames: np.ndarray) -> Image.Image:
    """A motion-history image: every frame's shape composited in time order, older ones fainter.

    Why not tiled key frames: four 24 px tiles cut across the 16 px patches and shrink a shape
    below what a tiny tower resolves. Compositing keeps the world's geometry (a cell = a patch):
    where the shape started is a faint ghost, where it ended is the solid shape in its true
    colour, so "which side does it move to?" and "what colour does it turn?" are read from the
    patches the way the image tasks read position and colour. Pixels that differ from white are
    foreground (the synthetic world's background is white).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"video payload must be uint8 [F, H, W, 3], got {frames.shape}")
    n = len(frames)
    fg = (frames < 250).any(-1)  # [F, H, W]
    last = n - 1 - np.argmax(fg[::-1], axis=0)  # the latest frame showing each pixel
    w = (0.25 + 0.75 * (last / (n - 1) if n > 1 else np.ones_like(last)))[..., None]
    top = np.take_along_axis(frames, last[None, ..., None], axis=0)[0].astype(float)
    out = np.where(fg.any(0)[..., None], 255.0 * (1 - w) + top * w, 255.0)
    return _to_image(out)


# ---- audio ----

SAMPLE_RATE = 16_000
CLIP_SECONDS = 0.75
REGISTERS = {"low": (125.0, 500.0), "high": (2000.0, 8000.0)}  # bottom / top third of the view
CONTOURS = ("rising", "falling")
SPEC_FMIN, SPEC_FMAX = 125.0, 8000.0  # 6 octaves on 48 rows: 8 rows = 1 octave


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


def pcm_grid(wave: np.ndarray) -> np.ndarray:
    """Round a waveform onto the 16-bit PCM grid (k / 32768), so WAV storage is lossless."""
    q = np.clip(np.round(np.asarray(wave, np.float64) * 32768), -32768, 32767)
    return (q / 32768).astype(np.float32)


@lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n).astype(np.float32)


@lru_cache(maxsize=4)
def _row_bins(n_fft: int, sr: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """For each log-spaced row (low -> high), the FFT bins inside it (the nearest if none)."""
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    edges = SPEC_FMIN * (SPEC_FMAX / SPEC_FMIN) ** (np.arange(rows + 1) / rows)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        idx = np.nonzero((freqs >= lo) & (freqs < hi))[0]
        if len(idx) == 0:
            idx = np.array([np.abs(freqs - np.sqrt(lo * hi)).argmin()])
        out.append(idx)
    # as one gather + reduceat: bins of all rows concatenated, and where each row starts
    starts = np.cumsum([0] + [len(i) for i in out[:-1]])
    return np.concatenate(out), starts


def spectrogram(
    wave: np.ndarray, sr: int = SAMPLE_RATE, width: int = 48, rows: int = 48, n_fft: int = 1024
) -> np.ndarray:
    """Log-power spectrogram ``[rows, width]`` in [0, 1] (1 = loudest), row 0 = highest pitch.

    ``width`` Hann-windowed frames centred evenly over the clip; log-spaced frequency rows from
    125 Hz to 8 kHz (each the strongest bin inside it); 60 dB below the clip's peak = 0.
    """
    wave = np.asarray(wave, np.float32).reshape(-1)
    if len(wave) == 0 or not np.isfinite(wave).all():
        raise ValueError("audio payload must be a finite, non-empty waveform")
    centres = ((np.arange(width) + 0.5) * len(wave) / width).astype(int)
    padded = np.pad(wave, n_fft // 2)
    frames = padded[centres[:, None] + np.arange(n_fft)[None, :]] * _hann(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [width, bins]
    bins, starts = _row_bins(n_fft, sr, rows)
    spec = np.maximum.reduceat(power[:, bins], starts, axis=1).T  # [rows, width]
    db = 10 * np.log10(spec.astype(np.float64) + 1e-12)
    level = np.clip((db - (db.max() - 60.0)) / 60.0, 0, 1)
    return level[::-1]


def render_audio(wave: np.ndarray, sr: int = SAMPLE_RATE) -> Image.Image:
    """The log-spectrogram as dark ink on white: time left -> right, pitch bottom -> top.

    Why: on a log-frequency axis of 8 rows per octave the low register fills the bottom row of
    patches and the high register the top row (high / low = which patch row), every beep is a
    separate dash along x (how many = how many dashes) and a glide is a visibly slanted staircase
    (rising / falling). Dark-on-white keeps silence looking like the empty cells the tower was
    pretrained on.
    """
    return _to_image(255.0 * (1 - spectrogram(wave, sr))[..., None].repeat(3, -1))


def audio_features(wave: np.ndarray, sr: int = SAMPLE_RATE) -> dict:
    """What a listener reports of a beep clip, measured from the waveform alone: the number of
    beeps (runs of sound in the spectrogram), the register (mean pitch above or below 1 kHz)
    and the contour (sign of the pitch slope over the sounding frames)."""
    spec = spectrogram(wave, sr, width=96, rows=48)  # row 0 = highest pitch
    active = spec.max(0) > 0.5
    runs = int(np.sum(active[1:] & ~active[:-1]) + active[0])
    cols = np.nonzero(active)[0]
    if len(cols) == 0:
        return {"n_beeps": 0, "register": "low", "contour": "rising"}
    pitch = 47 - spec[:, cols].argmax(0)  # 0 = lowest row
    mid_row = 48 * np.log(1000 / SPEC_FMIN) / np.log(SPEC_FMAX / SPEC_FMIN)
    slope = np.polyfit(cols, pitch, 1)[0] if len(cols) > 1 else 0.0
    return {
        "n_beeps": runs,
        "register": "high" if pitch.mean() > mid_row else "low",
        "contour": "rising" if slope >= 0 else "falling",
    }


# high register -> top row, low -> bottom row; the 4th beep goes to the middle row
_BEEP_CELLS = {"high": [0, 1, 2, 4], "low": [6, 7, 8, 4]}


def render_audio_grid(wave: np.ndarray, sr: int = SAMPLE_RATE) -> Image.Image:
    """The clip as the world's shapes, for image-only tiny models (the default view).

    Why: LoRA on the LM cannot teach a frozen tiny vision tower to read a spectrogram, but the
    tower reads counts, colours and rows well. So the audio features measured from the waveform
    (:func:`audio_features`) are drawn in that vocabulary, like a 3-row spectrogram: one square
    per beep, in the top row for a high register and the bottom row for a low one, red when the
    pitch rises and blue when it falls. :func:`render_audio` is the full spectrogram.
    """
    f = audio_features(wave, sr)
    colour = "red" if f["contour"] == "rising" else "blue"
    cells = _BEEP_CELLS[f["register"]][: max(0, min(4, f["n_beeps"]))]
    return W.draw_objects([W.Obj("square", colour, c) for c in cells])


# ---- depth ----

DEPTH_SCALE = 32.0  # depth map value = metres * 32 (uint8: up to ~7.97 m)
WALL_DEPTH = 5.0
DEPTH_LEVELS = (1.0, 1.8, 2.6, 3.4)  # objects' base distances (m), jittered by +-0.15


@dataclass
class RGBD:
    """A depth sample's payload as generated: the RGB image and its depth map (uint8 [H, W],
    metres x :data:`DEPTH_SCALE`; smaller = nearer)."""

    rgb: Image.Image
    depth: np.ndarray


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
        x0, y0 = _cell_origin(cells[i], size)
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


def render_depth(depth: np.ndarray) -> Image.Image:
    """Grey-scale depth, min-max normalised per image: nearest = black, the wall = white.

    Why: relative, per-image depth is what monocular estimators (MiDaS, used to make PathWeave's
    depth data) give. Shown as ink on white like the rest of the world (the tiny tower was
    pretrained on white backgrounds; near = bright on black was not learnable by a LoRA on the
    LM). Linear in depth rather than inverse depth, so far objects stay visible. "Where is the
    nearest object?" = which patch holds the darkest shape. Colours are not visible here.
    (The RGB image travels in the shard too, for encoders that take both, as PathWeave's depth
    path does.)
    """
    d = np.asarray(depth)
    if d.ndim != 2:
        raise ValueError(f"depth payload must be [H, W], got {d.shape}")
    d = d.astype(float)
    lo, hi = d.min(), d.max()
    g = (hi - d) / (hi - lo) if hi > lo else np.zeros_like(d)
    # ink on white, like the rest of the world: the wall is white, nearer = darker
    img = _to_image(255.0 * (1 - g)[..., None].repeat(3, -1))
    if img.size != (W.IMAGE_SIZE, W.IMAGE_SIZE):
        img = img.resize((W.IMAGE_SIZE, W.IMAGE_SIZE), Image.NEAREST)
    return img


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


def canonical_view(points: np.ndarray) -> np.ndarray:
    """The points centred and rotated onto their principal axes (x = largest variance,
    z = smallest = the viewing direction), each axis' sign set so its third moment is positive."""
    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) < 3 or not np.isfinite(p).all():
        raise ValueError(f"points payload must be finite float [N >= 3, 3], got {p.shape}")
    p = p - p.mean(0)
    _, vecs = np.linalg.eigh(p.T @ p / len(p))
    q = p @ vecs[:, ::-1]
    return q * np.where((q**3).mean(0) < 0, -1.0, 1.0)


def render_points(points: np.ndarray) -> Image.Image:
    """An orthographic depth projection in the canonical (principal-axes) view.

    Why: a fixed camera on a randomly posed cylinder may look straight down its axis and see a
    disc, the same as a sphere. Rotating onto the principal axes and looking along the
    least-spread one shows each solid's most telling silhouette: sphere = disc, cube = square /
    hexagon, cylinder = 5:2 rectangle, cone = triangle, torus = ring with a hole. The cloud is
    scaled to fill the image; each point is a 5x5 splat (so 256 points leave no holes) whose ink
    is darker the nearer it is (a z-buffer keeps the nearest), on white like the rest of the
    world.
    """
    q = canonical_view(points)
    s = np.abs(q[:, :2]).max() or 1.0
    q = q / s
    size, m = W.IMAGE_SIZE, 2
    col = np.round((q[:, 0] + 1) / 2 * (size - 1 - 2 * m) + m).astype(int)
    row = np.round((1 - q[:, 1]) / 2 * (size - 1 - 2 * m) + m).astype(int)
    near = np.clip((q[:, 2] + 1) / 2, 0, 1)
    buf = np.full((size + 4, size + 4), -1.0)  # z-buffer with a 2 px border
    np.maximum.at(buf, (row + 2, col + 2), near)
    # 5x5 splats = a 5x5 max filter of the point z-buffer (the max of maxima)
    buf = np.max([buf[dr : dr + size, dc : dc + size] for dr in range(5) for dc in range(5)], 0)
    grey = np.where(buf < 0, 255.0, 255.0 * (1 - (0.3 + 0.6 * buf)))
    return _to_image(grey[..., None].repeat(3, -1))


# ---- one entry point ----


def _to_image(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))


def infer_modality(payload) -> str:
    """The modality of a generated payload (for writers that were not told)."""
    if isinstance(payload, Image.Image):
        return "image"
    if isinstance(payload, RGBD):
        return "depth"
    a = np.asarray(payload)
    if a.ndim == 4:
        return "video"
    if a.ndim == 1:
        return "audio"
    if a.ndim == 2 and a.shape[1] == 3 and a.dtype.kind == "f":
        return "points"
    if a.ndim == 2:
        return "depth"
    raise ValueError(f"cannot tell the modality of a payload of shape {a.shape}")


def as_image(modality: str, payload) -> Image.Image:
    """The 48x48 RGB view of a payload that image-only models consume (identity for images).

    ``payload`` is what :mod:`mcl.data.shards` decodes: a PIL image (image), ``uint8
    [F, H, W, 3]`` (video), a float waveform at 16 kHz (audio), ``uint8 [H, W]`` depth or an
    :class:`RGBD` (depth), ``float [N, 3]`` (points).
    """
    if modality == "image":
        return payload if payload.mode == "RGB" else payload.convert("RGB")
    if modality == "video":
        return render_video(payload)
    if modality == "audio":
        return render_audio_grid(payload)
    if modality == "depth":
        return render_depth(payload.depth if isinstance(payload, RGBD) else payload)
    if modality == "points":
        return render_points(payload)
    raise ValueError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
