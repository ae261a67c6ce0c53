"""Audio files read with soundfile into the ``float32 [N]`` 16 kHz waveform the shards store.

Channels are averaged to mono. Another rate is resampled to 16 kHz by linear interpolation
(``numpy.interp`` on the sample times): simple and dependency-free; it does not low-pass first,
so content above 8 kHz of a 44.1/48 kHz file folds back (PathWeave's BEATs front end resamples
with torchaudio's windowed sinc). Clips are cut to ``max_seconds`` (AudioCaps clips are 10 s).
A file soundfile cannot read, or one without a sample, is a :class:`MediaError` counted as
``unreadable_audio``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mcl.data.readers.media import MediaError
from mcl.data.schema import SAMPLE_RATE

MAX_SECONDS = 10.0


def resample(wave: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """``wave`` at ``rate`` Hz as ``target`` Hz, linearly interpolated."""
    if rate == target or len(wave) == 0:
        return wave
    n = max(1, int(round(len(wave) * target / rate)))
    t = np.arange(n) * (rate / target)
    return np.interp(t, np.arange(len(wave)), wave).astype(np.float32)


def load(path: str | Path, max_seconds: float | None = MAX_SECONDS) -> np.ndarray:
    """The mono 16 kHz ``float32`` waveform of the file at ``path``, in [-1, 1]."""
    import soundfile as sf

    path = Path(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except MemoryError:
        raise
    except Exception as e:  # soundfile.LibsndfileError, RuntimeError, ...
        raise MediaError(f"{path.name}: {type(e).__name__}: {e}", "unreadable_audio") from e
    wave = data.mean(axis=1) if data.size else np.zeros(0, np.float32)
    if len(wave) == 0:
        raise MediaError(f"{path.name}: holds no sample", "unreadable_audio")
    if not np.isfinite(wave).all():
        raise MediaError(f"{path.name}: non-finite samples", "unreadable_audio")
    wave = resample(wave.astype(np.float32), int(rate))
    if max_seconds:
        wave = wave[: int(max_seconds * SAMPLE_RATE)]
    return np.clip(wave, -1.0, 1.0).astype(np.float32)
