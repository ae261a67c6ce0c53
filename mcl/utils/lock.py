"""A run directory is owned by one run: ``<run dir>/run.lock``.

The lock is an exclusive ``flock`` on that file, held for the whole run; the kernel drops it when
the process ends, however it ends (``kill -9`` included), so a lock left behind by a dead run is
never mistaken for a live one. The file also says who holds it (pid, host, start time, command
line) for the message a second run prints when it refuses. On file systems where ``flock`` does
not reach across machines, a heartbeat (the file's mtime, refreshed every ``HEARTBEAT_S``) keeps
a run on another host from taking a directory whose owner still beats.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

from mcl.config import ConfigError

NAME = "run.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0  # another host's lock without a heartbeat for this long is stale


class RunDirError(ConfigError):
    """The run directory is in use by another run, or holds a finished/other run."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or _start_time(pid) in (None, started)


def _read(path: Path) -> dict:
    try:
        info = json.loads(path.read_text() or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def describe(info: dict) -> str:
    when = info.get("since")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else "?"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, since {since}"


class RunLock:
    """``with RunLock(run_dir):`` owns ``run_dir`` or raises :class:`RunDirError` in one line."""

    def __init__(self, run_dir: str | Path, heartbeat_s: float = HEARTBEAT_S):
        self.dir = Path(run_dir)
        self.path = self.dir / NAME
        self.heartbeat_s = heartbeat_s
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.took_over: dict | None = None  # the dead owner's record, when its lock was stale

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _refuse(self, info: dict) -> RunDirError:
        return RunDirError(
            f"run directory {self.dir} is in use by another run ({describe(info)}); wait for "
            "it to finish, or choose another directory (hydra.run.dir=... or paths.log_dir=...)"
        )

    def acquire(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(20):  # retried only when the file was swapped under us (released)
            # read-only: flock needs no write access, and an open writer would keep the
            # file system from being remounted read-only under a run
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise self._refuse(_read(self.path)) from None
            try:  # the owner released (and removed) it between our open and our flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - a pathological race
            raise self._refuse(_read(self.path))
        old = _read(self.path)
        host = socket.gethostname()
        if old.get("pid") is not None:
            if old.get("host") == host:  # we hold the flock, so its owner is gone
                live = fcntl is None and _alive(int(old["pid"]), old.get("started"))
            else:  # flock may not reach across hosts (NFS): trust the heartbeat
                age = time.time() - os.stat(self.path).st_mtime
                live = age < STALE_AFTER_S
            if live and int(old["pid"]) != os.getpid():
                os.close(fd)
                raise self._refuse(old)
            if int(old["pid"]) != os.getpid():
                self.took_over = old
        self._fd = fd
        me = {
            "pid": os.getpid(),
            "host": host,
            "started": _start_time(os.getpid()),
            "since": time.time(),
            "argv": sys.argv,
        }
        try:
            with open(self.path, "w") as f:  # same inode: the flock stays on it
                f.write(json.dumps(me) + "\n")
                f.flush()
                with contextlib.suppress(OSError):
                    os.fsync(f.fileno())
        except OSError:  # a full or read-only disk: give the lock back, report the error
            self.release()
            raise
        if self.took_over:
            print(
                f"[mcl] {self.path}: the run that held it ({describe(self.took_over)}) is gone "
                "(killed?); taking the directory over"
            )
        if self.heartbeat_s:
            self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="mcl-lock")
            self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        if self._fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding it: a waiting run re-opens a fresh file
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None
