"""Where a run was made: package versions, the code's version and the hardware. The runner
writes them into results.json, so a published number can say what produced it."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

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


@functools.cache
def environment() -> dict:
    """This process's versions, code version and hardware (found once: the runner writes them
    into every results.json, the publisher into summaries of runs that lack them)."""
    return {"versions": package_versions(), "code_version": code_version(), "hardware": hardware()}
