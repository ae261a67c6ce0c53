"""What a sample is, whether it was converted from real data or generated.

A decoded sample (:func:`mcl.data.shards.decode_sample`) is a dict with ``key``, ``task``,
``modality`` (one of :data:`MODALITIES`), ``payload`` (the native payload), ``image`` (the
48x48 RGB view image-only models consume, :func:`mcl.data.render.as_image`), ``question``,
``answer``, ``answers`` (all references), ``answer_type`` and ``meta``; depth samples add
``rgb``. Native payloads by modality:

- image: a PIL RGB image;
- video: ``uint8 [F, H, W, 3]`` frames;
- audio: a ``float32 [N]`` waveform in [-1, 1) at :data:`SAMPLE_RATE`;
- depth: ``uint8 [H, W]`` (metres x 32, smaller = nearer), or an :class:`RGBD` with its image;
- points: ``float32 [N, 3]``.

``meta`` is free-form; the fields methods read have accessors here, so a sample without them
(real data converted without the field) reads as None instead of raising.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
from PIL import Image

MODALITIES = ("image", "video", "audio", "depth", "points")
SAMPLE_RATE = 16_000  # Hz, every audio payload's rate (shards store 16-bit PCM WAV at it)


@dataclass
class RGBD:
    """A depth payload with its RGB image: the depth map is ``uint8 [H, W]`` (metres x 32;
    smaller = nearer), ``rgb`` a PIL image or None."""

    rgb: Image.Image | None
    depth: np.ndarray


def infer_modality(payload) -> str:
    """The modality of a native payload (for writers that were not told)."""
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


def sample_modality(sample: dict) -> str:
    """A sample's (or a shard record's) modality; records written before modalities existed
    are images."""
    return sample.get("modality") or "image"


def instruction_text(template: str) -> str:
    """A template's instruction: its literal text without the per-sample fields, e.g.
    ``"{q} {options} answer with the option letter."`` -> ``"answer with the option letter."``.
    Stored as ``meta.instruction`` so a method can embed the instruction CVIT's code embeds
    (SMoLoRA's instruction-type table) without guessing where a question ends."""
    parts = [lit for lit, *_ in string.Formatter().parse(template)]
    return " ".join(" ".join(parts).split())


def sample_instruction(sample: dict) -> str | None:
    """The instruction a (decoded) sample was generated with, or None when its data does not
    say (real data converted without it)."""
    return (sample.get("meta") or {}).get("instruction")
