"""The classic baselines (seq_lora + a plugin) give the results they gave as subclasses: the
same seed, the same accuracy matrices and the same trained tensors, recorded in
``tests/fixtures/plugins_golden.json`` by the subclass implementations on the micro model.

The micro model answers nothing right in six steps, so the matrices alone would prove little:
each task checkpoint's tensors are summarised too (per trained tensor its sum and absolute sum;
the regularisers' statistics summed per kind: importance, anchor, owner), as is what the method
reported per task (TIR's similarities).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mcl.train import run
from tests.conftest import MICRO, compose_cfg

GOLDEN = Path(__file__).parent / "fixtures" / "plugins_golden.json"
METHODS = ["seq_lora", "seq_ft", "moelora", "ewc", "mas", "lwf", "replay", "tir_ewc", "tir_mas"]
# a buffer of 1% of 128 samples is one sample: a quarter makes replay's mixture matter
BEFORE = {"replay": ["method.share=0.25"]}  # how the subclass took it (to record the fixture)
AFTER = {"replay": ["method.plugins.replay.share=0.25"]}


def tensors_summary(path: Path) -> dict:
    """Per trained tensor [sum, sum |x|]; the regularisers' buffers (``<kind>__<param>``)
    summed per kind, whatever module holds them."""
    trained, stats = {}, {}
    for name, t in sorted(load_file(str(path)).items()):
        t = t.double()
        leaf = name.rsplit(".", 1)[-1]
        if "__" in leaf:
            kind = leaf.split("__", 1)[0]
            stats[kind] = stats.get(kind, 0.0) + float(t.sum())
        else:
            trained[name] = [float(t.sum()), float(t.abs().sum())]
    return {"trained": trained, "stats": stats}


def summary(results: dict, out: Path) -> dict:
    return {
        "matrix": results["matrix"],
        "unseen_matrix": results["unseen_matrix"],
        "method_info": results["method_info"],
        "checkpoints": [
            tensors_summary(d / "adapters.safetensors")
            for d in sorted((out / "checkpoints").glob("task*"))
        ],
    }


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_baseline_results_are_unchanged(method, tmp_path):
    golden = json.loads(GOLDEN.read_text())[method]
    cfg = compose_cfg(tmp_path, [*MICRO, f"method={method}", *AFTER.get(method, [])])
    results = run(cfg, tmp_path / "out")
    got = summary(results, tmp_path / "out")
    assert got["matrix"] == golden["matrix"]
    assert got["unseen_matrix"] == golden["unseen_matrix"]
    assert results["method"] == method
    # float sums: equal to rounding (another CPU may order a reduction differently)
    want, have = _flat(golden), _flat(got)
    assert sorted(have) == sorted(want)
    off = [k for k in want if not _close(have[k], want[k])]
    assert not off, f"{len(off)} values differ, e.g. {off[0]}: {have[off[0]]} != {want[off[0]]}"


def _flat(node, prefix: str = "") -> dict:
    """``{"a/0/b/": leaf}`` for every leaf of nested dicts and lists."""
    if isinstance(node, dict | list):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        out = {}
        for key, child in items:
            out |= _flat(child, f"{prefix}{key}/")
        return out
    return {prefix: node}


def _close(a, b) -> bool:
    if isinstance(b, float) and isinstance(a, float):
        return a == pytest.approx(b, rel=1e-5, abs=1e-7)
    return a == b
