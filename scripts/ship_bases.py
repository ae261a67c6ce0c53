"""Copy the tiny bases a first run needs into the package (``mcl/models/bases/<key>/``), so that
``python -m mcl.train`` and ``python -m mcl.train bench=cvit`` load them instead of spending
minutes building them. Builds what the cache lacks first.

    python scripts/ship_bases.py            # the defaults: model=tiny and model=tiny_it_cvit

Rerun it after changing a tiny model's config: the shipped copy is found by the config's cache
key, so a stale one is simply not used (``tests/test_ship.py`` says when that happens).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mcl.config import CONF_DIR
from mcl.models.tiny import SHIPPED, _cache_root

MODELS = ("tiny", "tiny_it_cvit")


def ship(model: str) -> Path:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=[f"model={model}", "progress=false"])
    key = instantiate(cfg.model).info["key"]  # loads, or builds into the cache
    src, dst = _cache_root(cfg.paths.cache_dir) / key, SHIPPED / key
    if not src.exists():  # loaded from an already shipped copy
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("info.json", "model.safetensors"):
        shutil.copyfile(src / name, dst / name)
    return dst


def main(argv: list[str]) -> int:
    for model in argv or MODELS:
        print(f"{model}: {ship(model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
