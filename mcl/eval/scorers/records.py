"""One task's scores from its saved prediction records. The runner and `mcl.eval.rescore` both
score through `score_records`, so a re-scored run matches a fresh one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mcl.eval.scorers.registry import EXTRA_SCORES, build_scorer, check_extras


def score_records(
    records: Sequence[Mapping], scorer: str, mode: str = "strict", extras: Sequence[str] = ()
) -> dict:
    """Scores of one task's prediction records ({"pred", "answers", "heldout"}, as in a run's
    predictions/rowN/TASK.jsonl): `score` on the main samples, `held` on the held-out
    instruction templates (None when there are none), and `extras`, {name: value} for each
    extra score named (registry `EXTRA_SCORES`; an unknown name raises ValueError)."""
    extras = check_extras(extras)
    main, held = build_scorer(scorer, mode=mode), build_scorer(scorer, mode=mode)
    for r in records:
        (held if r.get("heldout") else main).update([r["pred"]], [r["answers"]])
    any_held = any(r.get("heldout") for r in records)
    return {
        "score": float(main.compute()),
        "held": float(held.compute()) if any_held else None,
        "extras": {name: EXTRA_SCORES[name](records, scorer) for name in extras},
    }
