"""From ``method.plugins`` to plugin objects: one registry, the ``conf/plugin`` config group.

An entry is a plugin name (``ewc``: ``conf/plugin/ewc.yaml`` with its defaults), a config with a
``_target_`` (options inline), or a plugin object. ``method.plugins`` is a list of entries, or a
mapping name -> entry (what ``+plugin@method.plugins.<name>=<name>`` composes: each option is
then a config key, ``method.plugins.<name>.<option>``; a null entry drops that plugin).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from mcl.config import CONF_DIR, search_dirs
from mcl.plugins.base import EXCLUSIVE, Plugin

PLUGIN_DIR = CONF_DIR / "plugin"


def plugin_dirs() -> list[Path]:
    """mcl's ``conf/plugin`` and the ``plugin`` folder of every directory the command line puts
    on Hydra's search path (``hydra.searchpath=[file:///my/confs]``), so a user's own plugin
    configs are found by name like the shipped ones."""
    return [PLUGIN_DIR, *(d / "plugin" for d in search_dirs(sys.argv[1:]))]


def plugin_names() -> list[str]:
    return sorted({p.stem for d in plugin_dirs() for p in d.glob("*.yaml")})


def _from_name(name: str) -> Plugin:
    from omegaconf import OmegaConf

    path = next((d / f"{name}.yaml" for d in plugin_dirs() if (d / f"{name}.yaml").is_file()), None)
    if path is None:
        raise ValueError(
            f"unknown plugin '{name}'; choose one of: {', '.join(plugin_names())} "
            f"(or add conf/plugin/{name}.yaml, or plugin/{name}.yaml in a directory on "
            "hydra.searchpath)"
        )
    return _instantiate(OmegaConf.load(path))


def _instantiate(spec) -> Plugin:
    from hydra.utils import instantiate

    return instantiate(spec)


def build_plugins(specs) -> list[Plugin]:
    """The plugin objects ``specs`` names, in order."""
    if specs is None:
        return []
    if isinstance(specs, str):
        specs = [specs]
    entries = list(specs.values()) if isinstance(specs, Mapping) else list(specs)
    out = []
    for e in entries:
        if e is None:
            continue
        if isinstance(e, str):
            e = _from_name(e)
        elif isinstance(e, Mapping) and "_target_" in e:
            e = _instantiate(e)
        if not isinstance(e, Plugin):
            raise ValueError(
                f"plugin entry {e!r} is not a plugin: give a name ({', '.join(plugin_names())}) "
                "or a config with a _target_"
            )
        out.append(e)
    return out


def check_plugins(plugins: list[Plugin], method_name: str, method_fills: set[str]) -> None:
    """Refuse, in one line, a plugin list that cannot run: a name twice, two writers of an
    exclusive slot, or a plugin taking a slot the method fills itself (``method_fills``)."""
    seen: dict[str, str] = {}
    names: set[str] = set()
    for p in plugins:
        if p.name in names:
            raise ValueError(f"plugin {p.name} is listed twice; keep one")
        names.add(p.name)
        for slot in sorted(p.writes):
            what = EXCLUSIVE[slot]
            if slot in method_fills:
                raise ValueError(
                    f"method {method_name} sets {what} itself: plugin {p.name} cannot replace it"
                )
            if slot in seen:
                raise ValueError(f"plugins {seen[slot]} and {p.name} both replace {what}; keep one")
            seen[slot] = p.name
