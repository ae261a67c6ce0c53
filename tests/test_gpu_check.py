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


def test_the_gpu_page_is_generated_from_the_committed_run():
    """docs/gpu.md's measured table is what ``gpu_check.py --render`` makes of the committed
    JSON (numbers users read are generated, not pasted)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    report = json.loads((ROOT / "docs" / "results" / "gpu" / "h100_gpu_check.json").read_text())
    page = (ROOT / "docs" / "gpu.md").read_text()
    block = page.split(gpu_check.BEGIN, 1)[1].split(gpu_check.END, 1)[0]
    assert block == "\n" + gpu_check.render(report), (
        "docs/gpu.md differs from its JSON: run python benchmarks/gpu_check.py --render "
        "docs/results/gpu/h100_gpu_check.json --markdown docs/gpu.md"
    )
    assert all(r["ok"] for r in report["methods"])  # the run it shows passed


def test_phase_peaks_attribute_each_peak_to_the_phase_that_made_it(monkeypatch):
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    allocated = iter([10 * 2**30, 30 * 2**30, 20 * 2**30])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: next(allocated))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: None)

    class Runner:
        seen: list = []

        def ran_on(self, phase):
            self.seen.append(phase)

    runner = Runner()
    peaks = gpu_check.track_phase_peaks(runner)
    for phase in ("eval", "train", "eval", "end"):
        runner.ran_on(phase)
    assert peaks == {"eval": 20.0, "train": 30.0}  # the larger of eval's two peaks
    assert Runner.seen == ["eval", "train", "eval"]  # the runner still records its phases
