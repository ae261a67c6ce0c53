"""Loading the published files and reading their fields the way every reader needs.

A file that cannot be read at all (absent, not UTF-8, not JSON) raises :class:`ReadError` with one
line naming it: no record of it could be trusted. A bad line of a JSONL file only spoils that
record, so it becomes a ``Problem`` and the rest is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from mcl.data.readers.record import MALFORMED, MISSING, Problem


class ReadError(ValueError):
    """A whole file is unusable; the message is one line naming the file and the cause."""


def load(path: str | Path) -> object:
    """A JSON document, or a list of the records of a JSONL file (``None`` for a bad line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReadError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ReadError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise ReadError(f"{path}: cannot be read ({e.strerror})") from None
    stripped = text.strip()
    if not stripped:
        raise ReadError(f"{path}: empty file")
    lines = [line for line in stripped.splitlines() if line.strip()]
    if path.suffix != ".jsonl":  # a .jsonl of one line is still a list of one record
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as whole:
            if len(lines) < 2:  # one document that does not parse: no JSONL to fall back on
                raise ReadError(f"{path}: not valid JSON ({whole})") from None
        except RecursionError:
            raise ReadError(f"{path}: nested too deeply for Python's JSON reader") from None
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError):
            out.append(None)
    if all(item is None for item in out):
        raise ReadError(f"{path}: neither JSON nor JSONL")
    return out


def records(path: str | Path) -> Iterator[tuple[int, object]]:
    """``(index, record)`` of a file holding a list of records (JSON list or JSONL)."""
    data = load(path)
    if isinstance(data, dict):
        keys = ", ".join(list(map(str, data))[:4])
        raise ReadError(
            f"{path}: holds one JSON object (keys {keys}, ...), expected a list of records"
        )
    if not isinstance(data, list):
        raise ReadError(f"{path}: holds a JSON {type(data).__name__}, expected a list of records")
    yield from enumerate(data)


def record_id(rec: dict, index: int, *keys: str) -> str:
    """The record's own id (first of ``keys`` present), else ``#index`` (0-based position)."""
    for key in keys:
        value = rec.get(key)
        if value is not None and value != "":
            return str(value)
    return f"#{index}"


def text(value: object) -> str | None:
    """A stripped non-empty string, or ``None``."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def answer_list(value: object) -> list[str] | None:
    """Every reference of a string-or-list answer field, in order with duplicates; ``None`` when
    there is none (absent, null, empty, or only empty strings)."""
    items = value if isinstance(value, list) else [value]
    out = [t for t in (text(v) for v in items) if t is not None]
    return out or None


def clean_question(value: str) -> str:
    """The question without LLaVA's ``<image>`` placeholder."""
    return value.replace("<image>", "").strip()


def not_a_record(file: str | Path, index: int) -> Problem:
    return Problem(f"#{index}", "record", str(file), MALFORMED, "not a JSON object")


def missing(rid: str, name: str, file: str | Path, detail: str = "") -> Problem:
    return Problem(rid, name, str(file), MISSING, detail)
