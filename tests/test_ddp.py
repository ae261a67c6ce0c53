"""``hardware=ddp_cpu``: two gloo processes per task's training. Each sample is seen once per
epoch (the shards are split between the ranks), the trained weights come back to the main
process, and results.json is the single-process contract, written once."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from mcl.models.mllm import ChatCollator
from mcl.train import run
from tests.conftest import MICRO, compose_cfg

# 128 samples in 2 shards, batch 8, 2 ranks: 8 steps = one epoch
DDP = [o for o in MICRO if not o.startswith("train.steps")] + [
    "hardware=ddp_cpu",
    "train.steps=8",
    "bench.tasks=[color,position]",
    "++method.lr=1e-2",
]


def test_ddp_cpu_splits_the_data_and_keeps_the_results_contract(tmp_path, monkeypatch):
    seen = tmp_path / "seen"
    seen.mkdir()
    real = ChatCollator.train_batch

    def record(self, samples):  # runs inside the forked ranks
        if torch.distributed.is_initialized():
            with open(seen / f"rank{torch.distributed.get_rank()}.txt", "a") as f:
                f.writelines(f"{s['task']}/{s['key']}\n" for s in samples if s)
        return real(self, samples)

    monkeypatch.setattr(ChatCollator, "train_batch", record)
    cfg = compose_cfg(tmp_path, DDP)
    out = Path(cfg.paths.output_dir)
    results = run(cfg, out)

    ranks = {p.stem: p.read_text().split() for p in seen.glob("rank*.txt")}
    assert set(ranks) == {"rank0", "rank1"}
    color = [{k for k in keys if k.startswith("color/")} for keys in ranks.values()]
    assert color[0] and color[1] and not color[0] & color[1]  # disjoint shards
    assert len(color[0] | color[1]) == 128  # together: every sample once in the epoch
    # the weights trained in the ranks are the main process's afterwards
    state = load_file(str(out / "checkpoints" / "task00" / "adapters.safetensors"))
    assert any("lora_B" in k and state[k].abs().sum() > 0 for k in state)
    r = json.loads((out / "results.json").read_text())
    assert r == json.loads(json.dumps(results)) and r["complete"]
    assert len(r["matrix"]) == 3 and all(v is not None for v in r["matrix"][2])
    assert r["config"]["hardware"]["strategy"] == "ddp_fork"
