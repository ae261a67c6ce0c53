"""Config helpers: where ``conf/`` is, and one-line errors for unknown group options.

Hydra's own message for ``method=typo`` is several lines plus a traceback hint; researchers
launching sweeps want one line naming the bad value and the valid ones, before anything runs.

The configs live in the repository's top-level ``conf/``; a wheel carries the same files as
``mcl/conf`` (pyproject's package-dir), so :data:`CONF_DIR` is whichever of the two exists: the
package's copy in an installed wheel, ``conf/`` beside the package in a checkout or an editable
install. Users add config groups of their own without touching either: Hydra's
``hydra.searchpath=[file:///my/confs]`` on the command line (:func:`search_dirs`).
"""

from __future__ import annotations

import re
from pathlib import Path

_HERE = Path(__file__).resolve().parent
CONF_DIR = _HERE / "conf" if (_HERE / "conf" / "train.yaml").is_file() else _HERE.parent / "conf"
GROUPS = ("method", "bench", "model", "hardware", "logger", "experiment", "sweep", "paths")


class ConfigError(ValueError):
    """A user-facing configuration mistake; the message says how to fix it."""


def choices(group: str, conf_dir: Path = CONF_DIR, extra: list[Path] = ()) -> list[str]:
    """The options of a config group: ``conf_dir``'s and those of the ``extra`` directories."""
    # one folder deep too (experiment=results/cvit); deeper folders are a preset's own groups
    return sorted(
        {
            p.relative_to(d / group).with_suffix("").as_posix()
            for d in (conf_dir, *extra)
            for pattern in ("*.yaml", "*/*.yaml")
            for p in (d / group).glob(pattern)
        }
    )


def search_dirs(argv: list[str]) -> list[Path]:
    """The user's config directories named by ``hydra.searchpath=[...]`` in ``argv``.

    Hydra itself reads that override when it composes; mcl's own up-front checks read it here so
    that ``method=my_lora`` from such a directory is a known option. ``file://DIR`` (or a bare
    path) and ``pkg://package.module`` entries are understood; others are left to Hydra."""
    dirs: list[Path] = []
    for arg in argv:
        m = re.fullmatch(r"\+{0,2}hydra\.searchpath=\[?(.*?)\]?", arg)
        if not m:
            continue
        for entry in filter(None, (e.strip().strip("'\"") for e in m.group(1).split(","))):
            if entry.startswith("pkg://"):
                dirs += _package_dirs(entry[len("pkg://") :])
            elif "://" not in entry or entry.startswith("file://"):
                dirs.append(Path(entry.removeprefix("file://")).expanduser())
    return dirs


def _package_dirs(name: str) -> list[Path]:
    import importlib.util

    try:
        spec = importlib.util.find_spec(name.replace("/", "."))
    except (ImportError, ValueError):
        return []
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


def check_overrides(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Raise :class:`ConfigError` if a ``group=option`` override names an option that does not
    exist (in ``conf_dir`` or a directory on ``hydra.searchpath``). Sweep values (``a,b``) are
    checked one by one; ``glob(...)``/``range(...)`` and interpolations are left to Hydra."""
    extra = search_dirs(argv)
    for arg in argv:
        m = re.fullmatch(r"[+~]{0,2}([\w/]+)=(.*)", arg)
        if not m or m.group(1) not in GROUPS:
            continue
        group, value = m.groups()
        if not value or value == "null" or re.search(r"[(){}$*]", value):
            continue
        valid = choices(group, conf_dir, extra)
        for option in value.split(","):
            if option not in valid:
                raise ConfigError(
                    f"unknown {group} '{option}'; choose one of: {', '.join(valid)} "
                    f"(or add {group}/{option}.yaml to a directory of your own and pass "
                    "hydra.searchpath=[file:///that/directory])"
                )
