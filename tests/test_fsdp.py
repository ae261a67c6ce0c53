"""``hardware=fsdp_cpu``: FSDP (FULL_SHARD) with two gloo processes on CPU, checked like
``hardware=ddp_cpu``: each rank sees its own shards, the trained weights come back to the main
process, and results.json is the single-process contract. In fp32 with two ranks the sharded
step computes what DDP computes, so the adapters must equal a ddp_cpu run's. DeepSpeed ZeRO-2 on
CPU is checked the same way when ``deepspeed`` is installed. See docs/fsdp_deepspeed.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mcl.train import run
from tests.conftest import MICRO, compose_cfg
from tests.test_ddp import record_ranks

pytestmark = pytest.mark.slow  # FSDP and DeepSpeed ranks in processes

# 128 samples in 2 shards, batch 8, 2 ranks: 8 steps = one epoch
BASE = [o for o in MICRO if not o.startswith("train.steps")] + [
    "train.steps=8",
    "bench.tasks=[color,position]",
    "++method.lr=1e-2",
]
FSDP = [*BASE, "hardware=fsdp_cpu"]


def _adapters(out: Path, task: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"task{task:02d}" / "adapters.safetensors"))


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_fsdp_cpu_splits_the_data_and_returns_the_full_weights(tmp_path, monkeypatch):
    seen = tmp_path / "seen"
    seen.mkdir()
    record_ranks(monkeypatch, seen)
    cfg = compose_cfg(tmp_path, [*FSDP, "method=seq_lora"])
    out = Path(cfg.paths.output_dir)
    results = run(cfg, out)

    ranks = {p.stem: p.read_text().split() for p in seen.glob("rank*.txt")}
    assert set(ranks) == {"rank0", "rank1"}
    color = [{k for k in keys if k.startswith("color/")} for keys in ranks.values()]
    assert color[0] and color[1] and not color[0] & color[1]  # disjoint shards
    assert len(color[0] | color[1]) == 128  # together: every sample once in the epoch
    # the weights trained in the ranks are the main process's afterwards, whole (not shards)
    state = _adapters(out, 0)
    assert any("lora_B" in k and state[k].abs().sum() > 0 for k in state)
    r = json.loads((out / "results.json").read_text())
    assert r == json.loads(json.dumps(results)) and r["complete"]
    assert len(r["matrix"]) == 3 and all(v is not None for v in r["matrix"][2])
    assert r["config"]["hardware"]["strategy"]["_target_"] == "mcl.utils.fsdp.FSDPCPUStrategy"
    assert r["processes"] == 2

    # the same sequence under DDP: the sharded step must have computed the same update
    ddp = compose_cfg(tmp_path / "ddp", [*BASE, "hardware=ddp_cpu", "method=seq_lora"])
    ddp_out = Path(ddp.paths.output_dir)
    run(ddp, ddp_out)
    for t in (0, 1):
        _assert_same(_adapters(out, t), _adapters(ddp_out, t))


def test_fsdp_cpu_trains_a_mixture(tmp_path):
    """MoELoRA: experts and a router added at task start, all in FSDP's flat parameters."""
    cfg = compose_cfg(tmp_path, [*FSDP, "method=moelora"])
    out = Path(cfg.paths.output_dir)
    run(cfg, out)
    state = _adapters(out, 1)
    assert any("lora_B" in k and state[k].abs().sum() > 0 for k in state)
    r = json.loads((out / "results.json").read_text())
    assert r["complete"] and r["processes"] == 2
    assert all(v is not None for v in r["matrix"][2])


def _cli(tmp_path: Path, out: Path, over: list[str], pythonpath: str | None = None):
    cmd = [
        sys.executable, "-m", "mcl.train", *over, f"paths.log_dir={tmp_path}/logs",
        f"paths.data_dir={tmp_path}/data", f"paths.cache_dir={tmp_path}/cache",
        f"hydra.run.dir={out}", "progress=false",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop("LOCAL_RANK", None)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def test_fsdp_with_ranks_that_outlive_fit_like_on_gpus(tmp_path):
    """``start_method=popen`` (Lightning's launcher, what hardware=fsdp uses on GPUs): every rank
    reruns the command, evaluates its share and syncs the method state at task boundaries, so
    after each fit the full parameters must be back in the plain module on every rank (with FSDP's
    shards left there the ranks' states differ in shape and the run stops). The result must be
    the forked run's."""
    over = [*FSDP, "method=seq_lora"]
    out = tmp_path / "popen"
    r = _cli(tmp_path, out, [*over, "hardware.strategy.start_method=popen"])
    assert r["complete"] and r["processes"] == 2
    assert all(v is not None for v in r["matrix"][2])
    cfg = compose_cfg(tmp_path, over)
    run(cfg, Path(cfg.paths.output_dir))
    for t in (0, 1):
        _assert_same(_adapters(out, t), _adapters(Path(cfg.paths.output_dir), t))


def test_a_run_leaves_its_process_group_on_every_rank(tmp_path):
    """Ranks that outlive fit exit together: a run ends with a barrier and destroys its process
    group. Left alive, rank 0 (the group's store) could exit while rank 1 tore its group down;
    rank 1 then died in C++ and Lightning's launcher SIGKILLed the finished run (seen in CI)."""
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        cfg = compose_cfg(tmp_path, [*BASE, "method=seq_lora"])
        assert run(cfg, Path(cfg.paths.output_dir))["complete"]
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_fsdp_cpu_with_a_parameter_penalty(tmp_path):
    """Inside FSDP's step every view of a flat parameter that holds a trainable tensor reports
    requires_grad=True, frozen base weights included: the penalty must read the trainable set
    pinned at task start (ContinualMethod.pin_trainable), not requires_grad."""
    cfg = compose_cfg(tmp_path, [*FSDP, "method=ewc"])
    out = Path(cfg.paths.output_dir)
    assert run(cfg, out)["complete"]
    state = load_file(str(out / "checkpoints" / "task00" / "adapters.safetensors"))
    importance = [v for k, v in state.items() if k.startswith("plugins.ewc.importance__")]
    assert importance and any(v.abs().sum() > 0 for v in importance)


def test_lightning_fsdp_strategy_refuses_a_cpu_accelerator():
    """What blocks ``hardware=fsdp hardware.accelerator=cpu`` (Lightning's own FSDPStrategy)."""
    import lightning as L
    from lightning.pytorch.strategies import FSDPStrategy

    from mcl.utils.fsdp import FSDPCPUStrategy

    with pytest.raises(ValueError, match="requires a GPU accelerator"):
        L.Trainer(accelerator="cpu", devices=2, strategy=FSDPStrategy(), logger=False)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=FSDPCPUStrategy(), logger=False)
    assert trainer.strategy.root_device.type == "cpu"


def test_deepspeed_zero2_cpu_matches_ddp(tmp_path):
    """DeepSpeed ZeRO-2 on CPU (its CPU accelerator, gloo) through mcl.utils.deepspeed_cpu, forked
    ranks like ddp_cpu: the adapters must equal a ddp_cpu run's."""
    pytest.importorskip("deepspeed")
    cfg = compose_cfg(tmp_path, [*BASE, "hardware=deepspeed_cpu", "method=seq_lora"])
    out = Path(cfg.paths.output_dir)
    run(cfg, out)
    r = json.loads((out / "results.json").read_text())
    assert r["complete"] and r["processes"] == 2
    ddp = compose_cfg(tmp_path / "ddp", [*BASE, "hardware=ddp_cpu", "method=seq_lora"])
    run(ddp, Path(ddp.paths.output_dir))
    for t in (0, 1):
        _assert_same(_adapters(out, t), _adapters(Path(ddp.paths.output_dir), t))


def test_fsdp_cpu_shards_fp32_adapters_over_a_bf16_base(tmp_path):
    """The real path's mix: a bf16 base, fp32 adapters in the same wrapped unit."""
    cfg = compose_cfg(tmp_path, [*FSDP, "method=seq_lora", "model.dtype=bfloat16"])
    out = Path(cfg.paths.output_dir)
    assert run(cfg, out)["complete"]
    lora = {k: v for k, v in _adapters(out, 1).items() if "lora_" in k}
    assert lora and {v.dtype for v in lora.values()} == {torch.float32}
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())
