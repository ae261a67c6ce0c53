"""Real width, reduced depth, on the CPU: each model family's real architecture (hidden sizes,
head layout, image processing) with two LM and two vision layers, random weights and a 2,048-word
vocabulary, in bf16 under ``bf16-mixed``, through ``python -m mcl.train``: a couple of steps per
task, then generation.

CI runs every method once, each on a family that supports it, and every family at least once:
LLaVA-NeXT, whose any-resolution tiles make even a 48 px image over a thousand tokens, runs
``seq_lora`` alone (about seven minutes in all on two cores). ``MCL_REAL_WIDTH=all`` runs every
applicable method on every family (about half an hour)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
METHODS = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))
FAMILIES = ["llava15_7b", "llava_next_7b", "qwen2_vl_7b", "qwen2_5_vl_7b", "internvl3_8b"]
# methods that read one fixed-size image per row (the vision tower on pixel_values, per-sample
# projector routing, x-modal inputs): LLaVA-1.5 only; the others refuse the other families in
# one line (tests/test_families.py)
LLAVA_ONLY = {"dmole", "eproj", "fwd_prompt", "tir_ewc", "tir_mas", "pathweave", "smolora"}
MODEL = [
    "model._target_=mcl.models.arch.load_random",
    "+model.lm_layers=2",
    "+model.vision_layers=2",
    "+model.vocab_size=2048",
    "hardware.precision=bf16-mixed",
]
SMALL = [
    "bench.tasks=[color,position]",
    "bench.unseen=[]",
    "bench.synthetic.train=4",
    "bench.synthetic.test=2",
    "bench.synthetic.shard_size=4",
    "train.steps=2",
    "train.batch_size=1",
    "eval.batch_size=2",
    "logger=none",
    "progress=false",
]
XMODAL = ["bench=mcl", "bench.tasks=[image,video]"]


def _jobs() -> dict[tuple[str, bool], list[str]]:
    """(family, x-modal bench) -> methods to run there."""
    every = os.environ.get("MCL_REAL_WIDTH") == "all"
    jobs: dict[tuple[str, bool], list[str]] = {}
    others = ["qwen2_vl_7b", "qwen2_5_vl_7b", "internvl3_8b"]
    spread = [m for m in METHODS if m not in LLAVA_ONLY]
    for m in METHODS:
        if every:
            families = ["llava15_7b"] if m in LLAVA_ONLY else FAMILIES
        elif m in LLAVA_ONLY:
            families = ["llava15_7b"]
        else:  # round robin over the other families
            families = [others[spread.index(m) % len(others)]]
        for f in families:
            jobs.setdefault((f, m == "pathweave"), []).append(m)
    jobs.setdefault(("llava_next_7b", False), ["seq_lora"])
    return jobs


JOBS = _jobs()


@pytest.mark.slow
@pytest.mark.parametrize(
    "family,xmodal", sorted(JOBS), ids=[f"{f}{'-xmodal' if x else ''}" for f, x in sorted(JOBS)]
)
def test_real_width_runs_every_applicable_method_end_to_end(tmp_path, family, xmodal):
    methods = JOBS[(family, xmodal)]
    cmd = [sys.executable, "-m", "mcl.train", "-m", f"model={family}", *MODEL, *SMALL]
    cmd += [*(XMODAL if xmodal else []), f"method={','.join(methods)}"]
    cmd += [f"paths.log_dir={tmp_path}/logs", f"paths.data_dir={tmp_path}/data"]
    cmd += [f"hydra.sweep.dir={tmp_path}/sweep", f"paths.cache_dir={tmp_path}/cache"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    runs = {json.loads(r.read_text())["method"]: r for r in tmp_path.glob("sweep/*/results.json")}
    assert sorted(runs) == sorted(methods)
    for m, path in runs.items():
        r = json.loads(path.read_text())
        assert r["complete"], m
        assert r["model_info"]["random_weights"] and r["model_info"]["lm_layers"] == 2, m
        assert all(v is not None for v in r["matrix"][-1]), f"{m}: generation left no score"
        assert all(d == ["cpu"] for d in r["devices"].values()), m
        if m == "zero_shot":
            continue
        ck = load_file(str(path.parent / "checkpoints" / "task00" / "adapters.safetensors"))
        floats = {str(v.dtype) for v in ck.values() if v.is_floating_point()}
        assert floats == {"torch.float32"}, f"{m} on a bf16 base saved {floats}"
