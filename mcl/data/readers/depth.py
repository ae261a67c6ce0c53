"""A depth map and its RGB image into the :class:`~mcl.data.schema.RGBD` the shards store.

PathWeave's depth stage (CC3M / LLaVA images with depth maps estimated by Omnidata) reads the
RGB image from the image root and the depth map from the depth root under the same name with
``.png`` (``DepthQAInstructDataset``). Those maps are 16-bit PNGs of relative depth (larger =
farther). The shards hold 8-bit maps (smaller = nearer, like the twin's metres x 32), so a 16-bit
map is scaled linearly, ``round(v / 257)``: the ordering is kept, metres are not recovered (the
files never had them). 8-bit maps are kept as they are; colour maps are converted to grey.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mcl.data.readers.media import MediaError
from mcl.data.schema import RGBD


def depth_path(rel: str) -> str:
    """The depth map's path relative to the depth root: the image's, with ``.png``."""
    return str(Path(rel).with_suffix(".png"))


def to_uint8(img: Image.Image) -> np.ndarray:
    """An 8-bit ``[H, W]`` map of a depth image of any PIL mode."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.int64)
        return np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        top = float(a.max()) or 1.0
        return np.clip(np.round(a / top * 255), 0, 255).astype(np.uint8)
    return np.asarray(img.convert("L"), np.uint8)


def load(rgb: str | Path, depth: str | Path) -> RGBD:
    """The RGB image and 8-bit depth map; an undecodable file is ``unreadable_depth``."""
    out = []
    for path, what in ((rgb, "image"), (depth, "depth map")):
        try:
            img = Image.open(path)
            img.load()
        except MemoryError:
            raise
        except Exception as e:  # PIL raises OSError, SyntaxError, ...
            raise MediaError(
                f"{Path(path).name}: {what} does not decode ({type(e).__name__}: {e})",
                "unreadable_depth",
            ) from e
        out.append(img)
    image, dmap = out
    return RGBD(image.convert("RGB"), np.ascontiguousarray(to_uint8(dmap)))
