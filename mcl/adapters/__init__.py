"""nn.Modules only: adapters that wrap a target ``nn.Linear`` by name (what peft lacks:
mixtures of LoRA experts, routers, ...). Injection is separate from training."""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn


def wrap_linears(model: nn.Module, pattern: str, factory: Callable[[nn.Linear], nn.Module]):
    """Replace every ``nn.Linear`` whose full name matches ``pattern`` (``re.fullmatch``) with
    ``factory(linear)``; returns the wrapped names. Raises if nothing matched (a typo in the
    targets would otherwise train nothing silently)."""
    names = [
        n for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.fullmatch(pattern, n)
    ]
    if not names:
        raise ValueError(f"no nn.Linear matches {pattern!r}; check the method's targets")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, factory(getattr(parent, child)))
    return names
