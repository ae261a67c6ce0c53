"""Compatibility modes: which scorers each anchor's convention changes, and the mode every task
of a benchmark is scored under (one mode, a {task: mode} map, or a benchmark preset).

- `strict` (default): the official scorers.
- `coin_vqa_exact` (`vqa`): CoIN's VQAv2/VizWiz rule, case-insensitive exact match of the
  stripped prediction with the stripped *first* reference only (`coin_vqa_exact_score`).
- `mcitlib_caption_avg7` (`cider`): the mean of BLEU-1..4, METEOR, ROUGE-L and CIDEr-D
  (`mcl.eval.caption.CaptionAvg7`; METEOR is an exact-match approximation).
- `mcitlib_contains` (`vqa`, `exact`): correct when a loosely normalised reference is a substring
  of the loosely normalised prediction; a prediction containing "Unanswerable" is skipped as
  wrong but stays in the denominator (`mcitlib_contains_score`).
- `coin_grounding` (`iou`): CoIN's box parser, which cuts the first and last character off the
  bracket-stripped answer, and its strict IoU > 0.5 (`coin_parse_box`, `coin_iou_score`).
- `two_way_contains` (`exact`, `vqa`): CVIT's reference ImageNet / Places365 rule,
  case-insensitive substring match in either direction (`two_way_contains_score`).
- `lower_exact` (`exact`, `vqa`): CVIT's reference OCR-VQA rule, lower-case exact match; an
  answer containing "Unanswerable" is wrong (`lower_exact_score`).
- `best_ref_cider` (`cider`): CVIT's reference caption "CIDEr" against each prediction's best
  single reference (`mcl.eval.caption.cider_best_reference`).

A benchmark sets a mode per task with `bench.scorer_mode` (a {task: mode} map, or the name of
one of its `scorer_presets`); `task_modes` resolves that. Pure Python: no scorer is built here.
"""

from __future__ import annotations

from collections.abc import Mapping

SCORER_NAMES = ("vqa", "exact", "mc", "iou", "cider", "bleu4", "rougeL")
SCORER_MODES = (
    "strict",
    "coin_vqa_exact",
    "mcitlib_caption_avg7",
    "mcitlib_contains",
    "coin_grounding",
    "two_way_contains",
    "lower_exact",
    "best_ref_cider",
)
# mode -> the scorers it changes; every other scorer runs strict under that mode
MODE_SCORERS: dict[str, tuple[str, ...]] = {
    "strict": SCORER_NAMES,
    "coin_vqa_exact": ("vqa",),
    "mcitlib_caption_avg7": ("cider",),
    "mcitlib_contains": ("vqa", "exact"),
    "coin_grounding": ("iou",),
    "two_way_contains": ("exact", "vqa"),
    "lower_exact": ("exact", "vqa"),
    "best_ref_cider": ("cider",),
}


def _check_name_and_mode(name: str, mode: str) -> None:
    if name not in SCORER_NAMES:
        raise ValueError(f"unknown scorer '{name}'; choose one of: {', '.join(SCORER_NAMES)}")
    if mode not in SCORER_MODES:
        raise ValueError(f"unknown scorer mode '{mode}'; choose one of: {', '.join(SCORER_MODES)}")


def scorer_mode_applies(name: str, mode: str) -> bool:
    """True when `mode` changes scorer `name` (always True for "strict")."""
    _check_name_and_mode(name, mode)
    return name in MODE_SCORERS[mode]


def effective_scorer_mode(name: str, mode: str) -> str:
    """The mode that actually runs for scorer `name` under `mode`: `mode` or "strict"."""
    return mode if scorer_mode_applies(name, mode) else "strict"


def task_modes(
    scorer_mode: str | Mapping[str, str],
    task_scorers: Mapping[str, str],
    presets: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """The mode each task is scored under: {task: effective mode}.

    `scorer_mode` is one mode for every task (it changes only the scorers it concerns), a
    {task: mode} map (tasks left out stay strict), or the name of one of the benchmark's
    `presets` (such a map). A mode named for a task whose scorer it does not concern is an
    error, since it would silently do nothing."""
    presets = dict(presets or {})
    if isinstance(scorer_mode, str) and scorer_mode in presets:
        scorer_mode = presets[scorer_mode]
    if isinstance(scorer_mode, str):
        if scorer_mode not in SCORER_MODES:
            raise ValueError(
                f"unknown scorer mode '{scorer_mode}'; choose one of: {', '.join(SCORER_MODES)}"
                + (f", or a preset of this benchmark: {', '.join(presets)}" if presets else "")
            )
        return {t: effective_scorer_mode(s, scorer_mode) for t, s in task_scorers.items()}
    unknown = sorted(set(scorer_mode) - set(task_scorers))
    if unknown:
        raise ValueError(
            f"scorer_mode names tasks not in this benchmark: {', '.join(unknown)}; "
            f"its tasks are {', '.join(task_scorers)}"
        )
    out = {}
    for task, scorer in task_scorers.items():
        mode = scorer_mode.get(task, "strict")
        if not scorer_mode_applies(scorer, mode):
            raise ValueError(
                f"scorer mode '{mode}' does not apply to task {task} (scorer '{scorer}'); "
                f"modes for '{scorer}': "
                + ", ".join(m for m, names in MODE_SCORERS.items() if scorer in names)
            )
        out[task] = mode
    return out


def column_modes(
    scorer_mode: str | Mapping[str, str],
    columns: Mapping[str, tuple[str, str]],
    presets: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """:func:`task_modes` for matrix columns (``{column: (task, scorer)}``; an eval set's
    column is ``<task>/<set>``): a {task: mode} map gives a task's mode to each of its sets
    whose scorer it concerns, a {column: mode} entry to that set alone. With one set per task
    (columns named after their tasks) it is :func:`task_modes` itself."""
    presets = dict(presets or {})
    if isinstance(scorer_mode, str) and scorer_mode in presets:
        scorer_mode = presets[scorer_mode]
    scorers = {name: scorer for name, (_, scorer) in columns.items()}
    if isinstance(scorer_mode, str) or all(n == t for n, (t, _) in columns.items()):
        return task_modes(scorer_mode, scorers, presets)
    known = set(columns) | {t for t, _ in columns.values()}
    unknown = sorted(set(scorer_mode) - known)
    if unknown:
        raise ValueError(
            f"scorer_mode names tasks not in this benchmark: {', '.join(unknown)}; "
            f"its tasks and eval sets are {', '.join(sorted(known))}"
        )
    per_column = {}
    for name, (task, scorer) in columns.items():
        if name in scorer_mode:
            per_column[name] = scorer_mode[name]
        elif task in scorer_mode and scorer_mode_applies(scorer, scorer_mode[task]):
            per_column[name] = scorer_mode[task]
    return task_modes(per_column, scorers)
