"""``hardware=ddp_cpu``: two gloo processes per task's training. Each sample is seen once per
epoch (the shards are split between the ranks), the trained weights come back to the main
process, and results.json is the single-process contract, written once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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


def record_ranks(monkeypatch, seen: Path) -> None:
    """Each forked rank appends the samples it trains on to ``seen/rank<r>.txt``."""
    real = ChatCollator.train_batch

    def record(self, samples):  # runs inside the forked ranks
        if torch.distributed.is_initialized():
            with open(seen / f"rank{torch.distributed.get_rank()}.txt", "a") as f:
                f.writelines(f"{s['task']}/{s['key']}\n" for s in samples if s)
        return real(self, samples)

    monkeypatch.setattr(ChatCollator, "train_batch", record)


@pytest.mark.slow
def test_ddp_cpu_splits_the_data_and_keeps_the_results_contract(tmp_path, monkeypatch):
    seen = tmp_path / "seen"
    seen.mkdir()
    record_ranks(monkeypatch, seen)
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
    assert r["config"]["hardware"]["strategy"] == "ddp_fork" and r["processes"] == 2


def test_merge_ranks_restores_the_single_process_order_and_weights_method_numbers():
    from mcl.runner.evaluate import merge_ranks

    recs = [{"key": f"k{i}"} for i in range(11)]  # batches of 2: b0..b5, the last one short
    batches = [recs[i : i + 2] for i in range(0, 11, 2)]
    parts = []
    for r in range(3):  # rank r answered batches r, r + 3
        mine = [x for b, chunk in enumerate(batches) if b % 3 == r for x in chunk]
        parts.append((mine, len(mine), {"task_id_acc": 100.0 * r, "note": f"r{r}"}, len(mine)))
    records, n_format, extra = merge_ranks(parts, batch_size=2)
    assert records == recs and n_format == 11
    # sizes 4, 4, 3: the accuracy is the per-sample mean, other values are rank 0's
    assert extra["task_id_acc"] == (0 * 4 + 100 * 4 + 200 * 3) / 11
    assert extra["note"] == "r0"
    assert merge_ranks([(recs, 5, {"a": 1.0}, 11)], 2) == (recs, 5, {"a": 1.0})


@pytest.mark.slow
def test_hardware_ddp_runs_the_whole_command_per_rank_and_rank_0_writes_once(tmp_path):
    """``hardware=ddp`` (the GPU preset) on CPU: Lightning's subprocess launcher starts rank 1 at
    the first fit; rank 0 gathers the answers; method state is synced at task boundaries (EWC's
    importance)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    over = [o for o in DDP if not o.startswith(("hardware", "++method"))]
    cmd = [
        sys.executable, "-m", "mcl.train", *over, "method=ewc",
        "hardware=ddp", "hardware.accelerator=cpu", "hardware.devices=2",
        "hardware.precision=32-true", f"paths.log_dir={tmp_path}/logs",
        f"paths.data_dir={tmp_path}/data", f"paths.cache_dir={tmp_path}/cache",
        f"hydra.run.dir={out}", "progress=false",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["complete"] and r["processes"] == 2
    assert len(r["matrix"]) == 3 and all(v is not None for v in r["matrix"][2])
    # every test sample answered once, in test-set order, though each rank answered half
    from mcl.data.bench import prepare

    cfg = compose_cfg(tmp_path, [*over, "method=ewc"])
    bench = prepare(cfg.bench, cfg.paths.data_dir, progress=False)
    from mcl.data.shards import read_shards

    for task in bench.tasks:
        keys = [s["key"] for s in read_shards(bench.shard_paths(task, "test"))]
        lines = (out / "predictions" / "row2" / f"{task['name']}.jsonl").read_text().splitlines()
        assert [json.loads(x)["key"] for x in lines] == keys
    state = load_file(str(out / "checkpoints" / "task01" / "adapters.safetensors"))
    imp = [k for k in state if "importance" in k or "fisher" in k]
    assert imp and any(state[k].abs().sum() > 0 for k in imp)


def test_gpu_presets_compose_to_lightning_strategies(tmp_path):
    """The multi-GPU presets cannot run here (no GPU); this checks they build what they claim."""
    from datetime import timedelta

    from hydra.utils import instantiate
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, StrategyRegistry

    from mcl.train import trainer_kwargs

    for name, cls in (("ddp", DDPStrategy), ("fsdp", FSDPStrategy)):
        kw = trainer_kwargs(compose_cfg(tmp_path, [f"hardware={name}"]))
        assert kw["accelerator"] == "gpu" and kw["precision"] == "bf16-mixed"
        strategy = instantiate(kw["strategy"])
        assert isinstance(strategy, cls)  # fsdp: mcl's subclass (full parameters after fit)
        assert strategy._timeout == timedelta(hours=3)
    kw = trainer_kwargs(compose_cfg(tmp_path, ["hardware=deepspeed"]))
    assert kw["strategy"] in StrategyRegistry.available_strategies()
    # a global batch counts every GPU: 8 per device x 2 devices x 4 accumulation = 64
    kw = trainer_kwargs(
        compose_cfg(tmp_path, ["hardware=ddp", "train.batch_size=8", "train.global_batch=64"])
    )
    assert kw["accumulate_grad_batches"] == 4


def test_csv_logger_survives_processes_that_each_know_only_their_own_keys(tmp_path):
    """ddp_cpu: a forked rank writes the training keys, the main process the evaluation keys,
    each logger copy remembering only its own (Lightning's writer then fails on the header)."""
    import copy
    import csv

    import pytest
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    from mcl.utils.csv_logger import _HeaderAwareWriter

    def two_processes(writer_cls):
        main = writer_cls(log_dir=str(tmp_path / writer_cls.__name__))  # made before any fork
        rank0 = copy.deepcopy(main)  # task 1's forked rank: a copy of the main's state
        rank0.log_metrics({"train/loss": 1.0}, step=10)
        rank0.save()
        main.log_metrics({"eval/color": 50.0}, step=10)  # never saw train/loss
        main.save()
        rank0 = copy.deepcopy(main)  # task 2's rank
        rank0.log_metrics({"train/loss": 0.5, "epoch": 1}, step=20)
        rank0.save()
        with open(tmp_path / writer_cls.__name__ / "metrics.csv", newline="") as f:
            return list(csv.DictReader(f))

    with pytest.raises(ValueError, match="not in fieldnames"):
        two_processes(ExperimentWriter)
    rows = two_processes(_HeaderAwareWriter)
    assert [r["step"] for r in rows] == ["10", "10", "20"]
    assert rows[0]["train/loss"] == "1.0" and rows[1]["eval/color"] == "50.0"
    assert rows[2]["train/loss"] == "0.5" and rows[2]["epoch"] == "1"
