"""Point clouds from ``.npz`` files into the ``float32 [N, 3]`` the shards store.

Cap3D's Objaverse clouds (PathWeave's 3D stage, ``<sample_id>_8192.npz``) hold 8192 points of
xyz + rgb, one ``[8192, 6]`` array (``arr_0``); files with separate ``xyz``/``points`` and
``rgb``/``colors`` arrays are read too. The shards keep xyz only: mcl's point encoder (a
PointNet) reads coordinates, PathWeave's ULIP-2 PointBERT reads colours as well (a documented
deviation). A file that is not an npz, lacks the arrays or holds non-finite values is
``unreadable_points``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mcl.data.readers.media import MediaError

N_POINTS = 8192


def load(path: str | Path) -> np.ndarray:
    """The xyz coordinates of the cloud at ``path``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except MemoryError:
        raise
    except Exception as e:  # BadZipFile, ValueError, OSError, ...
        raise MediaError(f"{path.name}: {type(e).__name__}: {e}", "unreadable_points") from e
    xyz = next((arrays[k] for k in ("xyz", "points", "pc", "arr_0") if k in arrays), None)
    if xyz is None or xyz.ndim != 2 or xyz.shape[1] < 3 or len(xyz) < 3:
        shapes = {k: v.shape for k, v in arrays.items()}
        raise MediaError(f"{path.name}: no [N, 3+] point array ({shapes})", "unreadable_points")
    xyz = np.asarray(xyz[:, :3], np.float32)
    if not np.isfinite(xyz).all():
        raise MediaError(f"{path.name}: non-finite coordinates", "unreadable_points")
    return np.ascontiguousarray(xyz)
