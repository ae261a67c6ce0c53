"""Preemption: SIGTERM, SIGUSR1 and SIGUSR2 ask a run to stop cleanly.

Schedulers warn before they stop a job: SLURM sends SIGTERM at preemption or at the time limit
(and a chosen signal earlier with ``--signal``); submitit, behind ``hydra/launcher=slurm``, asks
for SIGUSR2. The handler only records the request (and says so on stderr). The runner then, at
the next training step, saves the task's mid-task checkpoint and stops; outside training it stops
at the next evaluated task (keeping a trained task's weights). It writes ``results.json`` so far
and raises :class:`Preempted`; ``python -m mcl.train`` exits with :data:`EXIT_CODE`, after
handing the signal to whatever handler was installed before (submitit's requeues the job).
``resume=true`` (implied in a requeued SLURM job) continues bit-identically.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")
EXIT_CODE = 75  # EX_TEMPFAIL: stopped on request, resumable ("try again later")

_requested: str | None = None
_previous: dict[int, object] = {}  # the handlers ours replaced (handed on after the stop)
_active = False


class Preempted(Exception):
    """The run stopped on a preemption signal after saving what it had; resume continues it."""

    def __init__(self, message: str, signame: str | None = None):
        super().__init__(message)
        self.signame = signame


def requested() -> str | None:
    """The name of the signal that asked this process to stop, or None."""
    return _requested


def request(name: str = "SIGTERM") -> None:
    """Ask for a stop as a signal would (tests, or code that knows the job is about to end)."""
    global _requested
    if _requested is None:
        _requested = name
        with contextlib.suppress(OSError):  # os.write: safe inside a signal handler
            os.write(
                2,
                f"[mcl] {name} received: saving a checkpoint at the next step, then stopping "
                f"(exit code {EXIT_CODE}; continue with resume=true)\n".encode(),
            )


def _handler(signum, frame) -> None:
    request(signal.Signals(signum).name)


def clear() -> None:
    global _requested
    _requested = None


@contextlib.contextmanager
def handling():
    """Install the handlers for the duration of a run (main thread only) and restore them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _active
    clear()
    _previous.clear()
    installed = {}
    for name in SIGNALS:
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        old = signal.getsignal(sig)
        if old is _handler:
            continue
        installed[sig] = old
        signal.signal(sig, _handler)
    _previous.update(installed)
    _active = True
    try:
        yield
    finally:
        _active = False
        for sig, old in installed.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, old if old is not None else signal.SIG_DFL)


def reclaim() -> None:
    """Put our handlers back in front (main thread, while :func:`handling` is active). Lightning
    wraps SIGTERM at every fit to end the fit at once (a ``SystemExit`` that exits 0, before
    anything is saved); the runner's own stop saves first."""
    if threading.current_thread() is not threading.main_thread() or not _active:
        return
    for sig in _previous:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(sig, _handler)


def agreed() -> str | None:
    """:func:`requested`, agreed across the ranks of a process group (any rank's request stops
    all of them at the same step). A collective call: every rank must make it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return _requested
    import torch

    backend = dist.get_backend()
    dev = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
    flag = torch.tensor([1 if _requested else 0], device=dev)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() and _requested is None:
        request("SIGTERM (another rank)")
    return _requested


def hand_on() -> None:
    """After the run saved and stopped: call the handler that was installed before ours for the
    signal received (submitit's requeues the job and exits), if it was a Python function."""
    name = (_requested or "").split(" ")[0]
    sig = getattr(signal, name, None)
    old = _previous.get(sig) if sig is not None else None
    if callable(old) and old is not _handler:
        old(sig, None)
