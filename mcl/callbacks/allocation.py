"""Budgeted allocation of new experts between two modalities (D-MoLE's allocator; reusable).

A method scores its candidate units (a module, or one layer's attention block) and hands the
scores here with each unit's modality and, for a parameter budget, its cost; :func:`allocate`
answers which units get a new expert. Nothing here knows a model or a method: units are names,
so any expert-adding method can spend a budget the same way.

By count (default) ``total = round_half_up(budget_portion * #units)`` units, split between
``vision`` and ``lm``: the vision tower gets ``max(floor(vit_min_share * total), round(total *
its share of the score mass))`` of them (``curriculum=split``, the inter-modal curriculum of
D-MoLE's code) or half (``none`` / ``rescale``: an even split). By parameters
(``budget_params``) each modality spends its share of the cap instead. Each modality takes its
top-scored units (``allocator=zc``) or a fixed, evenly spaced set (``allocator=fixed``).
"""

from __future__ import annotations

import math
import random
import re

MODALITIES = ("vision", "lm")


def round_half_up(x: float) -> int:
    """The code's rounding, ``int(x + 0.5)`` (budget, ViT share, zero-cost batches): halves go
    up, where Python's ``round`` takes them to the even neighbour (``round(2.5) == 2``). For
    the non-negative counts here ``int`` truncation is the floor."""
    return int(x + 0.5)


def _natural(name: str) -> tuple:
    """Sort key that orders layer numbers numerically (layers.2 before layers.10)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def allocate(
    scores: dict[str, float],
    modality: dict[str, str],
    budget_portion: float = 0.5,
    vit_min_share: float = 0.25,
    curriculum: str = "split",
    allocator: str = "zc",
    budget_params: int | None = None,
    cost: dict[str, int] | None = None,
    seed: int = 42,
) -> dict:
    """Choose the units (modules or blocks) that get a new expert for one task.

    ``scores``/``modality``/``cost`` are per unit. By count (default): ``total =
    round_half_up(budget_portion * #units)``, split between ``vision`` and ``lm`` as described
    in the module docstring (capped by what each modality has; a modality's shortfall goes to
    the other). By parameters (``budget_params``): each modality may spend its share of the budget,
    taking units in order while they fit, so the total never exceeds it. Ties in score are
    broken by a seeded shuffle (the code: pandas ``sample(random_state=42)``)."""
    if curriculum not in ("split", "none", "rescale"):
        raise ValueError(f"curriculum must be split, none or rescale, not {curriculum!r}")
    if allocator not in ("zc", "fixed"):
        raise ValueError(f"allocator must be zc or fixed, not {allocator!r}")
    units = {m: sorted((u for u in scores if modality[u] == m), key=_natural) for m in MODALITIES}
    mass = {m: sum(scores[u] for u in units[m]) for m in MODALITIES}
    share_v = mass["vision"] / (mass["vision"] + mass["lm"]) if sum(mass.values()) > 0 else 0.5
    if not units["vision"]:
        share_v = 0.0
    frac_v = share_v if curriculum == "split" else 0.5

    def order(m: str, n: int) -> list[str]:
        if allocator == "fixed":  # evenly spaced over depth, the same for every task
            us = units[m]
            return [us[math.floor((i + 0.5) * len(us) / n)] for i in range(n)] if n else []
        shuffled = list(units[m])
        random.Random(seed).shuffle(shuffled)
        return sorted(shuffled, key=lambda u: -scores[u])  # stable: ties keep the shuffle

    if budget_params is None:
        total = round_half_up(budget_portion * len(scores))
        n_v = total // 2 if curriculum != "split" else round_half_up(total * share_v)
        if curriculum == "split":
            n_v = max(math.floor(vit_min_share * total), n_v)
        n_v = min(n_v, len(units["vision"]))
        n_l = min(total - n_v, len(units["lm"]))
        n_v = min(len(units["vision"]), total - n_l)  # give a shortfall back to vision
        chosen = {"vision": order("vision", n_v)[:n_v], "lm": order("lm", n_l)[:n_l]}
    else:
        if cost is None:
            raise ValueError("budget_params needs the per-unit parameter cost")
        frac = max(vit_min_share, frac_v) if curriculum == "split" else frac_v
        allowance = {"vision": budget_params * frac, "lm": budget_params * (1 - frac)}
        if not units["vision"]:
            allowance = {"vision": 0, "lm": budget_params}
        chosen = {}
        for m in MODALITIES:
            spent, picked = 0, []
            for u in order(m, len(units[m])):
                if spent + cost[u] <= allowance[m]:
                    picked.append(u)
                    spent += cost[u]
            chosen[m] = picked
    picked = chosen["vision"] + chosen["lm"]
    return {
        "units": sorted(picked, key=_natural),
        "n_vision": len(chosen["vision"]),
        "n_lm": len(chosen["lm"]),
        "vision_share": share_v,
        "cost": sum((cost or {}).get(u, 0) for u in picked),
    }
