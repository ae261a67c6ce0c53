"""Video files decoded with PyAV into the ``uint8 [F, H, W, 3]`` frames the shards store.

Frames are sampled as PathWeave's video processors do (X-InstructBLIP's ``load_clip`` with
``sampling="headtail"``, ``n_frms: 5``, ``image_size: 224``): the first frame, the last frame, and
``n - 2`` frames at a fixed stride between them, each resized to a square. A clip with fewer
frames than asked repeats its last frame, as their processor pads. Any decoder error, or a file
with no decodable frame (a truncated mp4 without its index), is a :class:`MediaError` counted as
``unreadable_video``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mcl.data.readers.media import MediaError

N_FRAMES = 5  # PathWeave's n_frms
FRAME_SIZE = 224  # PathWeave's image_size


def frame_indices(total: int, n: int) -> list[int]:
    """``n`` frame positions of a ``total``-frame clip: first and last always, a fixed stride
    between (``(last // (n - 1)) * i``); shorter clips give every frame, then the last again."""
    if total < 1 or n < 1:
        raise ValueError(f"need total >= 1 and n >= 1, got {total}, {n}")
    last = total - 1
    if n == 1:
        return [0]
    if total <= n:
        return list(range(total)) + [last] * (n - total)
    step = last // (n - 1)
    return [0] + [step * i for i in range(1, n - 1)] + [last]


def _decode(path: Path, keep: set[int] | None, size: int) -> tuple[int, dict[int, np.ndarray]]:
    import av

    frames: dict[int, np.ndarray] = {}
    count = 0
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise MediaError(f"{path.name}: no video stream", "unreadable_video")
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if keep is not None and count in keep:
                frames[count] = frame.to_ndarray(width=size, height=size, format="rgb24")
            count += 1
    return count, frames


def load(path: str | Path, n_frames: int = N_FRAMES, size: int = FRAME_SIZE) -> np.ndarray:
    """``uint8 [n_frames, size, size, 3]`` frames of the video at ``path``.

    Two passes: the first counts the decodable frames (container headers may be missing or
    wrong in a cut file), the second converts only the chosen ones.
    """
    path = Path(path)
    try:
        total, _ = _decode(path, None, size)
        if total == 0:
            raise MediaError(f"{path.name}: no decodable frame", "unreadable_video")
        idx = frame_indices(total, n_frames)
        _, got = _decode(path, set(idx), size)
    except MediaError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # av.error.*, OSError, ...: whatever a damaged file makes FFmpeg raise
        raise MediaError(f"{path.name}: {type(e).__name__}: {e}", "unreadable_video") from e
    if any(i not in got for i in idx):
        raise MediaError(f"{path.name}: frames vanished between passes", "unreadable_video")
    return np.stack([got[i] for i in idx]).astype(np.uint8)
