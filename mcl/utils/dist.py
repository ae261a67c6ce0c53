"""What the runner needs to know about several processes (``hardware=ddp``, DDP under SLURM):
which rank this is, how to split evaluation, and how to keep method state identical.

With Lightning's subprocess launcher the other ranks start at rank 0's first ``fit`` and rerun the
whole command; from then on the process group lives until exit. Before it exists a rank knows its
number only from the environment (``LOCAL_RANK`` set by the launcher, ``RANK``/``SLURM_PROCID``).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    if initialized():
        return dist.get_rank()
    for key in ("RANK", "LOCAL_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:  # srun-launched ranks
        return int(os.environ.get("SLURM_PROCID", "0"))
    return 0


def world() -> int:
    return dist.get_world_size() if initialized() else 1


def is_main() -> bool:
    return rank() == 0


def gather(obj) -> list:
    """Every rank's ``obj`` on every rank (a one-item list without a process group)."""
    if not initialized() or world() == 1:
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def _device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sync_state(state: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Rank 0's tensors on every rank. Task-boundary work (allocation, importance, SVD) runs on
    every rank from the same data and seed; this removes numeric drift between GPUs and fails
    loudly if the ranks built different structures (which DDP would otherwise hang on)."""
    if not initialized() or world() == 1:
        return state
    shapes = {k: (tuple(v.shape), str(v.dtype)) for k, v in state.items()}
    if any(s != shapes for s in gather(shapes)):
        raise RuntimeError(
            f"{what}: the ranks built different method state (keys or shapes differ); a method's "
            "task-boundary decisions must not depend on the rank's data"
        )
    dev = _device()
    out = {}
    for k in sorted(state):
        t = state[k].detach().to(dev).contiguous()
        dist.broadcast(t, src=0)
        out[k] = t.to(state[k].device)
    return out


def leave() -> None:
    """Every rank leaves the process group together at the end of a run: a barrier, then the
    group is destroyed. Without it rank 0 (which hosts the group's store) can exit while another
    rank still tears its group down; that rank then dies in C++ ("terminate called without an
    active exception") and Lightning's launcher SIGKILLs the whole run, results already written."""
    if not initialized():
        return
    dist.barrier()
    dist.destroy_process_group()
