"""A vectorised path for the common case of CLIP-style preprocessing: images that already have
the processor's crop size need no resize or crop, only rescale and normalise, which numpy does for
the whole batch at once. The HF processor loops over images in Python (≈ 0.45 ms each here,
a third of the data pipeline's time on the tiny model).

Bit-identical to the processor (same dtypes, same operation order: ``tests/test_data.py``);
anything else (other sizes, other processors, unusual options) returns None and the caller uses
the processor.
"""

from __future__ import annotations

import numpy as np
import torch


def _size(s, key: str):
    return s.get(key) if isinstance(s, dict) else getattr(s, key, None)


def fast_pixel_values(image_processor, images) -> torch.Tensor | None:
    ip = image_processor
    if type(ip).__name__ not in ("CLIPImageProcessorPil", "CLIPImageProcessor"):
        return None
    if not (ip.do_rescale and ip.do_normalize) or getattr(ip, "do_pad", False):
        return None
    crop = ip.crop_size if ip.do_center_crop else None
    h, w = (_size(crop, "height"), _size(crop, "width")) if crop else (None, None)
    edge = _size(ip.size, "shortest_edge") if ip.do_resize else None
    if h is None or w is None or (ip.do_resize and edge != min(h, w)):
        return None
    arrays = []
    for im in images:
        if getattr(im, "size", None) != (w, h):  # PIL: (width, height)
            return None
        arrays.append(np.asarray(im.convert("RGB") if im.mode != "RGB" else im))
    x = np.stack(arrays)  # (B, H, W, 3) uint8
    # as transformers' rescale and normalize: upcast to float64, scale, cast to float32, then
    # (x - mean) / std in float32
    x = (x.astype(np.float64) * ip.rescale_factor).astype(np.float32)
    mean = np.asarray(ip.image_mean, dtype=np.float32)
    std = np.asarray(ip.image_std, dtype=np.float32)
    x = (x - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
