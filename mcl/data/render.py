"""Non-image payloads as the 48x48 RGB view image-only models consume.

:func:`as_image` turns any native payload (:mod:`mcl.data.schema`) into that view; models with
x-modal input modules (``mcl.models.xmodal``) read the native payload instead. Real and
synthetic samples go through the same renderers. Every renderer keeps the view's one rule
(:mod:`mcl.data.canvas`): a 16 px cell is one vision-tower patch, so what a question asks about
must show up as *which patches* hold *what*.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from mcl.data import canvas as C
from mcl.data.schema import MODALITIES, RGBD, SAMPLE_RATE


def _to_image(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))


# ---- video ----


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

SPEC_FMIN, SPEC_FMAX = 125.0, 8000.0  # 6 octaves on 48 rows: 8 rows = 1 octave


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
_BEEP_SIZE = 12


def render_audio_grid(wave: np.ndarray, sr: int = SAMPLE_RATE) -> Image.Image:
    """The clip as the world's shapes, for image-only tiny models (the default view).

    Why: LoRA on the LM cannot teach a frozen tiny vision tower to read a spectrogram, but the
    tower reads counts, colours and rows well. So the audio features measured from the waveform
    (:func:`audio_features`) are drawn in that vocabulary, like a 3-row spectrogram: one square
    per beep, in the top row for a high register and the bottom row for a low one, red when the
    pitch rises and blue when it falls. :func:`render_audio` is the full spectrogram.
    """
    f = audio_features(wave, sr)
    fill = C.COLOURS["red" if f["contour"] == "rising" else "blue"]
    img = Image.new("RGB", (C.IMAGE_SIZE, C.IMAGE_SIZE), C.WHITE)
    d = ImageDraw.Draw(img)
    for cell in _BEEP_CELLS[f["register"]][: max(0, min(4, f["n_beeps"]))]:
        x0, y0 = C.cell_origin(cell, _BEEP_SIZE)
        C.draw_shape(d, "square", x0, y0, _BEEP_SIZE, fill, C.OUTLINE)
    return img


# ---- depth ----


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
    if img.size != (C.IMAGE_SIZE, C.IMAGE_SIZE):
        img = img.resize((C.IMAGE_SIZE, C.IMAGE_SIZE), Image.NEAREST)
    return img


# ---- point clouds ----


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
    size, m = C.IMAGE_SIZE, 2
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


def as_image(modality: str, payload) -> Image.Image:
    """The 48x48 RGB view of a payload that image-only models consume (identity for images).

    ``payload`` is what :mod:`mcl.data.shards` decodes: a PIL image (image), ``uint8
    [F, H, W, 3]`` (video), a float waveform at 16 kHz (audio), ``uint8 [H, W]`` depth or an
    :class:`~mcl.data.schema.RGBD` (depth), ``float [N, 3]`` (points).
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
