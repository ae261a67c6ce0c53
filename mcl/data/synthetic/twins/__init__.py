"""Synthetic twins: one module per benchmark, each a ``RECIPES: dict[str, Recipe]`` whose task
names are the real benchmark's task names (so ``conf/bench/<name>.yaml`` lists one sequence that
runs on real shards or on its twin).

``synth`` is the default sequence (``mcl.data.synthetic.tasks``). A twin may borrow recipes of
another twin (``coin`` reuses ``cvit``'s and ``synth``'s grounding).
"""

from __future__ import annotations

import importlib
import re

from mcl.data.synthetic.tasks import Recipe

TWINS = {
    "synth": "mcl.data.synthetic.tasks",
    "cvit": "mcl.data.synthetic.twins.cvit",
    "dmole": "mcl.data.synthetic.twins.dmole",
    "clmm": "mcl.data.synthetic.twins.clmm",
    "mcl": "mcl.data.synthetic.twins.mcl",
}


def recipes(twin: str) -> dict[str, Recipe]:
    """The recipes of one twin, by task name."""
    if twin not in TWINS:
        raise ValueError(f"no synthetic twin '{twin}'; known twins: {', '.join(TWINS)}")
    return importlib.import_module(TWINS[twin]).RECIPES


def available() -> dict[str, dict[str, Recipe]]:
    """Every twin whose module exists (for the tokenizer's vocabulary)."""
    out = {}
    for name, mod in TWINS.items():
        try:
            out[name] = importlib.import_module(mod).RECIPES
        except ModuleNotFoundError:
            continue
    return out


def vocabulary_texts(samples_per_task: int = 50) -> list[str]:
    """Every string the twins (other than ``synth``, the base's own world) can produce."""
    import numpy as np

    texts: list[str] = []
    for twin, recs in available().items():
        if twin == "synth":
            continue
        for r in recs.values():
            templates = r.train_templates + r.heldout_templates
            texts += [re.sub(r"\{\w+\}", " ", t) for t in templates] + list(r.vocab)
            rng = np.random.default_rng(0)
            for _ in range(samples_per_task):
                s = r.sample(rng)
                texts += [s.question, s.answer, *s.refs]
    return texts
