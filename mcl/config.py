"""Config helpers: where ``conf/`` is, and one-line errors for unknown group options.

Hydra's own message for ``method=typo`` is several lines plus a traceback hint; researchers
launching sweeps want one line naming the bad value and the valid ones, before anything runs.
"""

from __future__ import annotations

import re
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("method", "bench", "model", "hardware", "logger", "experiment", "sweep", "paths")


class ConfigError(ValueError):
    """A user-facing configuration mistake; the message says how to fix it."""


def choices(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_overrides(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Raise :class:`ConfigError` if a ``group=option`` override names an option that does not
    exist. Sweep values (``a,b``) are checked one by one; ``glob(...)``/``range(...)`` and
    interpolations are left to Hydra."""
    for arg in argv:
        m = re.fullmatch(r"[+~]{0,2}([\w/]+)=(.*)", arg)
        if not m or m.group(1) not in GROUPS:
            continue
        group, value = m.groups()
        if not value or value == "null" or re.search(r"[(){}$*]", value):
            continue
        valid = choices(group, conf_dir)
        for option in value.split(","):
            if option not in valid:
                raise ConfigError(
                    f"unknown {group} '{option}'; choose one of: {', '.join(valid)} "
                    f"(or add conf/{group}/{option}.yaml)"
                )
