"""``benchmarks/gpu_check.py``, the acceptance script for a lent GPU, dry-run on the CPU at real
width (one layer, a small vocabulary): it must work the first time it meets a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_dry_runs_on_the_cpu_and_reports_what_a_gpu_run_would(tmp_path):
    out = tmp_path / "gpu_check.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu"]
    cmd += ["--layers", "1", "--vocab", "2048", "--steps", "1", "--batch", "1"]
    cmd += ["--methods", "seq_lora", "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    report = json.loads(out.read_text())
    (row,) = report["methods"]
    assert row["ok"] and row["method"] == "seq_lora"
    assert row["trainable_dtypes"] == ["torch.float32"]  # over a bf16 base
    assert set(row["devices"]) == {"eval", "task_start", "train", "task_end"}
    assert row["s_per_step"] > 0 and row["train_tokens_per_s"] > 0
    assert len(row["boundary_s"]) == 2  # two tasks


@pytest.mark.slow
def test_gpu_check_refuses_a_machine_without_cuda_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert p.returncode == 2 and "no CUDA device" in p.stderr
