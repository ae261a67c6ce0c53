"""Mixed precision at module boundaries: fp32 trainable weights over a bf16/fp16 base.

A module whose own weights are fp32 (an adapter, or a model part trained in full) receives the
base's half-precision activations. Without autocast (evaluation, boundary work, ``32-true``
training) a matmul of the two dtypes fails, so the module computes in its weights' dtype and
hands back the dtype it was given.
"""

from __future__ import annotations

import torch
from torch import nn

HALF = (torch.float16, torch.bfloat16)


def cast_floats(obj, dtype: torch.dtype):
    """``obj`` with every floating tensor in it (tuples, lists, dicts, HF ModelOutputs) cast."""
    if torch.is_tensor(obj):
        return obj.to(dtype) if obj.is_floating_point() and obj.dtype != dtype else obj
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(cast_floats(v, dtype) for v in obj)
    if isinstance(obj, list):
        return [cast_floats(v, dtype) for v in obj]
    if isinstance(obj, dict):  # ModelOutput is an OrderedDict whose items mirror its fields
        for k, v in list(obj.items()):
            obj[k] = cast_floats(v, dtype)
        return obj
    return obj


def _first_float(args, kwargs) -> torch.dtype | None:
    for v in (*args, *kwargs.values()):
        if torch.is_tensor(v) and v.is_floating_point():
            return v.dtype
    return None


def fp32_boundary(module: nn.Module) -> None:
    """Hooks on ``module`` (once): floating inputs are cast to its parameters' dtype, its
    floating outputs back to the dtype its first floating input had."""
    if getattr(module, "_mcl_boundary", False):
        return
    module._mcl_boundary = True

    def before(mod, args, kwargs):
        dtype = next(mod.parameters()).dtype
        mod._mcl_in_dtype = _first_float(args, kwargs)
        return cast_floats(args, dtype), {k: cast_floats(v, dtype) for k, v in kwargs.items()}

    def after(mod, args, kwargs, out):
        dtype = getattr(mod, "_mcl_in_dtype", None)
        return out if dtype is None else cast_floats(out, dtype)

    module.register_forward_pre_hook(before, with_kwargs=True)
    module.register_forward_hook(after, with_kwargs=True)
