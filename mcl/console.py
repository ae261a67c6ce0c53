"""The run's console, also in a file: :func:`tee_console` copies everything printed to stdout and
stderr into ``<run dir>/train.log`` (Hydra creates that file for its logging, which mcl does not
use, so it stayed empty). Progress bars are kept as their last state, not as every redraw."""

from __future__ import annotations

import io
import os
import sys
import threading
from pathlib import Path


class _Tee(io.TextIOBase):
    """A text stream writing to ``stream`` and, line by line, to ``log``: a carriage return
    starts its line over (a progress bar's redraw), so the log keeps what the screen shows."""

    def __init__(self, stream, log, lock: threading.Lock):
        self.stream, self.log, self.lock = stream, log, lock
        self._line = ""

    def write(self, text: str) -> int:
        n = self.stream.write(text)
        with self.lock:
            for part in text.splitlines(keepends=True):
                if part.endswith(("\n", "\r")):
                    line = self._line + part.rstrip("\r\n")
                    self._line = ""
                    if part.endswith("\n"):
                        self.log.write(line.rsplit("\r", 1)[-1] + "\n")
                    else:  # a redraw: this line starts over, unless it was the final state
                        self._line = line + "\r"
                else:
                    self._line += part
        return len(text) if n is None else n

    def flush(self) -> None:
        self.stream.flush()
        with self.lock:
            self.log.flush()

    def close_line(self) -> None:
        """Write a pending partial line (a progress bar's last state) to the log."""
        with self.lock:
            last = self._line.rstrip("\r").rsplit("\r", 1)[-1]
            if last.strip():  # a bar that cleared itself leaves only spaces
                self.log.write(last + "\n")
            self._line = ""

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", "utf-8")

    @property
    def errors(self):
        return getattr(self.stream, "errors", "strict")

    def __getattr__(self, name):
        return getattr(self.stream, name)


class _AppendLog:
    """The log file, opened for each line and closed again: a run holds no file open in its
    directory (a file system can then be remounted read-only under it, and the console log
    never stops a run: a line that cannot be written is dropped)."""

    def __init__(self, path: Path):
        self.path, self.closed = path, False

    def write(self, text: str) -> None:
        if self.closed:
            return
        try:
            with open(self.path, "a", encoding="utf-8", errors="backslashreplace") as f:
                f.write(text)
        except OSError:
            pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def tee_console(path: str | os.PathLike):
    """From now on, copy stdout and stderr into ``path`` (appended line by line), until the
    returned function is called (or the process exits). Returns that restore function."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = _AppendLog(path)
    lock = threading.Lock()
    old = sys.stdout, sys.stderr
    tees = _Tee(sys.stdout, log, lock), _Tee(sys.stderr, log, lock)
    sys.stdout, sys.stderr = tees

    def restore() -> None:
        for tee in tees:
            tee.close_line()
        if (sys.stdout, sys.stderr) == tees:
            sys.stdout, sys.stderr = old
        log.close()

    import atexit

    atexit.register(lambda: None if log.closed else restore())
    return restore
