"""The continual loop and what it keeps: ``loop`` (the task loop, placement), ``state`` (what
the run measured), ``evaluate``, ``checkpoint``, ``results`` (results.json) and ``resume``
(which run directory ``resume=true`` continues).

The names below load their module on first use, so ``mcl.runner.state`` (which re-scoring
reads) imports neither Lightning nor the loop.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ContinualRunner": "loop",
    "RunState": "state",
    "derived_keys": "resume",
    "find_resumable": "resume",
    "holds_a_run": "resume",
    "run_record": "resume",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mcl.runner' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mcl.runner.{_EXPORTS[name]}"), name)
