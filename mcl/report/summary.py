"""Compact run summaries: what a results page keeps of a finished run (committed beside the
page, so the page can be regenerated from them alone), and where the code, packages and
hardware that made the runs are recorded.

A summary keeps the config, the matrices (with their column lists), the metrics, method_info
and the few run facts the tables show (trainable parameters, time, data faults); it drops the
per-sample scores, per-stage logs and everything a checkpoint or prediction file holds."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

# results.json fields a summary keeps (anything else a run writes is dropped)
KEEP = (
    "bench",
    "data_source",
    "method",
    "reference",
    "task_id_at_test",
    "seed",
    "complete",
    "tasks",
    "unseen_tasks",
    "columns",
    "unseen_columns",
    "chance",
    "matrix",
    "unseen_matrix",
    "stage_matrix",
    "scorer_mode",
    "skipped",
    "metrics",
    "params",
    "method_info",
    "timings",
    "devices",
    "processes",
    "config",
)
# where the run was made: recorded by the publisher when the run does not carry it
ENVIRONMENT = ("versions", "code_version", "hardware")
PACKAGES = (
    "mcl",
    "torch",
    "lightning",
    "transformers",
    "hydra-core",
    "omegaconf",
    "numpy",
    "matplotlib",
)


def compact(run: dict, env: dict | None) -> dict:
    """The run's summary: `KEEP`'s fields it has, and its versions, code version and hardware
    (the run's own if it recorded them, else `env`'s; None where neither says)."""
    out = {key: run[key] for key in KEEP if key in run}
    for key in ENVIRONMENT:
        out[key] = run.get(key, (env or {}).get(key))
    return out


def package_versions() -> dict[str, str]:
    """Python's and `PACKAGES`' versions (those installed)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def code_version(root: str | os.PathLike | None = None) -> str:
    """The checkout's commit (`git describe --always --dirty`), or mcl's version outside git."""
    root = Path(root or Path(__file__).resolve().parents[2])
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return f"git {out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return f"mcl {package_versions().get('mcl', 'unknown')}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    """This machine: CPU model, cores this process may use, GPUs (torch's names, if any)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    gpus: list[str] = []
    try:
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return {"cpu": _cpu_name(), "cores": cores, "gpus": gpus}


def environment() -> dict:
    """What `compact` records for runs published from this machine and checkout."""
    return {"versions": package_versions(), "code_version": code_version(), "hardware": hardware()}
