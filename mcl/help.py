"""``python -m mcl.train --help``: what mcl is, its config groups and their options (read from
``conf/``, so the list never goes stale), the settings most runs change, and where to read more.
Hydra's own flags stay under ``--hydra-help``.

    python -m mcl.help          # the same text
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from mcl.config import CONF_DIR, GROUPS, choices

INTRO = """\
mcl - multimodal continual instruction tuning. Trains a multimodal LLM on a sequence of
instruction tasks with a continual-learning method, evaluates every task after each one, and
writes the accuracy matrix, the continual metrics (Last, MAA, BWT, forgetting, FWT, unseen) and
every answer to one run directory."""

USAGE = """\
usage: python -m mcl.train [group=option ...] [key=value ...]
       python -m mcl.train -m group=a,b seed=0,1,2     one job per combination (a sweep)
       python -m mcl.train --cfg job [overrides]       print the composed config, run nothing"""

EXAMPLES = """\
  python -m mcl.train                                 seq_lora on the synthetic sequence
  python -m mcl.train method=smolora bench=cvit       a method on a benchmark (its twin if no data)
  python -m mcl.train experiment=smoke                a one-minute check of an install
  python -m mcl.train train.steps=500 method.r=16     any key of the composed config
  python -m mcl.train resume=true                     continue the last unfinished run
  python -m mcl.train bench.root=/data/cvit           real shards (python -m mcl.data.convert)
  python -m mcl.report logs/multirun/<timestamp>      compare runs: mean +- std, CSV, figures"""

MORE = """\
  README.md                  quickstart, benchmarks, baselines, methods, outputs
  docs/                      GPU runs, FSDP/DeepSpeed, memory planning
  conf/<group>/<option>.yaml every option, commented
  python -m mcl.train --hydra-help     Hydra's own flags (multirun, launchers, tab completion)"""


# what the settings train.yaml leaves uncommented mean
SETTING_NOTES = {
    "seed": "seeds data order, initialisation and sampling",
    "train.steps": "optimizer steps per task (wins over train.epochs)",
    "train.epochs": "passes over each task's training set instead of steps",
    "eval.batch_size": "test samples per generation batch",
}


def _describe(path: Path) -> str:
    """The first line of a config's leading comment (``@package`` lines skipped)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text and not text.startswith("@package"):
            return text
    return ""


def _defaults(conf_dir: Path) -> dict[str, str | None]:
    """The train config's default option per group (``experiment: null`` -> None)."""
    from omegaconf import OmegaConf

    out: dict[str, str | None] = {}
    for item in OmegaConf.to_container(OmegaConf.load(conf_dir / "train.yaml"))["defaults"]:
        if isinstance(item, dict):
            for group, option in item.items():
                out[group.split(" ")[-1]] = option
    return out


def _settings(conf_dir: Path) -> list[tuple[str, str, str]]:
    """``(dotted key, default, comment)`` of train.yaml's own settings (the hydra block and the
    defaults list left out), as the file writes them."""
    out, parent = [], None
    for line in (conf_dir / "train.yaml").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^( *)([A-Za-z_]\w*):\s*([^#]*?)\s*(?:#\s*(.*))?$", line)
        if not m:
            continue
        indent, key, value, comment = m.groups()
        if not indent:
            parent = key if not value else None
            if value and key not in ("defaults",):
                out.append((key, value, comment or ""))
        elif parent and parent not in ("hydra", "defaults") and len(indent) == 2 and value:
            out.append((f"{parent}.{key}", value, comment or ""))
    return out


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 3)].rstrip() + "..."


def help_text(conf_dir: Path = CONF_DIR, width: int | None = None) -> str:
    """The ``--help`` text, ``width`` columns wide (default: the terminal's, 80-120)."""
    width = width or min(120, max(80, shutil.get_terminal_size((100, 24)).columns))
    defaults = _defaults(conf_dir)
    lines = [INTRO, "", USAGE, "", "Config groups (group=option; * = default):"]
    for group in GROUPS:
        options = choices(group, conf_dir)
        if not options:
            continue
        default = defaults.get(group)
        lines.append(f"  {group}" + ("" if default else "  (none by default)"))
        name_w = max(len(o) for o in options) + 2
        for option in options:
            mark = "*" if option == default else " "
            desc = _describe(conf_dir / group / f"{option}.yaml")
            head = f"   {mark} {option.ljust(name_w)}"
            lines.append(head + _clip(desc, width - len(head)))
    launchers = choices("hydra/launcher", conf_dir)
    if launchers:
        lines.append(f"  hydra/launcher  (with -m): {', '.join(launchers)}")
    lines += ["", "Settings (key=value; the default as conf/train.yaml has it):"]
    settings = _settings(conf_dir)
    key_w = max(len(f"{k}={v}") for k, v, _ in settings) + 2
    for key, value, comment in settings:
        head = f"  {f'{key}={value}'.ljust(key_w)}"
        lines.append(head + _clip(comment or SETTING_NOTES.get(key, ""), width - len(head)))
    lines += [
        f"  {'<group>.<key>=value'.ljust(key_w)}any option's own key, e.g. method.r=16, "
        "bench.root=/data/cvit",
        "",
        "Examples:",
        EXAMPLES,
        "",
        "More:",
        MORE,
    ]
    return "\n".join(lines)


def main() -> None:
    print(help_text())


if __name__ == "__main__":
    main()
