"""What every x-modal file loader raises: :class:`MediaError`, with the skip reason it counts as.

A video, audio file, depth map or point cloud that is absent or does not decode spoils only its
own sample, as a bad image does in ``mcl.data.convert``: the converter skips it and counts the
reason (``missing_<modality>`` / ``unreadable_<modality>``), and the run goes on.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


class MediaError(ValueError):
    """One sample's file cannot be used; ``reason`` is the skip reason it is counted under."""

    def __init__(self, message: str, reason: str):
        super().__init__(" ".join(str(message).split()))
        self.reason = reason


def resolve(root: str | Path, rel: str, modality: str) -> Path:
    """``root / rel``, refusing absolute paths, ``..`` and symlinks that leave ``root``
    (``path_escape``), and absent files (``missing_<modality>``)."""
    if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
        raise MediaError(f"{rel}: outside the media root", "path_escape")
    root_real = Path(os.path.realpath(root))
    path = Path(os.path.realpath(root_real / rel))
    if root_real != path and root_real not in path.parents:
        raise MediaError(f"{rel}: resolves outside the media root", "path_escape")
    if not path.is_file():
        raise MediaError(f"{rel}: no such file under {root}", f"missing_{modality}")
    return path
