"""The continual loop: ``loop`` (the task loop, placement), ``evaluate``, ``checkpoint``,
``results`` (results.json) and ``resume`` (which run directory ``resume=true`` continues). What
the run measured is :class:`mcl.eval.state.RunState`, which re-scoring shares.

The names below load their module on first use, so importing ``mcl.runner`` for
``find_resumable`` does not start Lightning.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ContinualRunner": "mcl.runner.loop",
    "RunState": "mcl.eval.state",
    "derived_keys": "mcl.runner.resume",
    "find_resumable": "mcl.runner.resume",
    "holds_a_run": "mcl.runner.resume",
    "run_record": "mcl.runner.resume",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mcl.runner' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
