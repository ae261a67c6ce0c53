"""Per-task answer scorers (see shared/specs/metrics.md, "Per-task scorers"), their registry
(`build_scorer`) and the anchors' compatibility modes (`SCORER_MODES`; anchors.md, "Scorer
conventions differ between anchors").

The per-sample scorers are torchmetrics `Metric`s whose states are sums (summed across ranks),
so DDP reduction is exact and free. The per-sample rule lives in `score_one`, a pure function of
(prediction, references) returning 0..1, so predictions files can log it per sample. `compute()`
returns the mean x100, or NaN when nothing was scored (a missing cell, never 0). The caption
scorers (`cider`, `bleu4`, `rougeL`) live in `mcl.eval.caption`.

Modes (`build_scorer(name, mode=...)`); a mode changes only the scorers it names, every other
scorer stays strict (`scorer_mode_applies`, `effective_scorer_mode` tell which ran):

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
- `two_way_contains` (`exact`, `vqa`): SMoLoRA's ImageNet / Places365 rule, case-insensitive
  substring match in either direction (`two_way_contains_score`).
- `lower_exact` (`exact`, `vqa`): SMoLoRA's OCR-VQA rule, lower-case exact match; an answer
  containing "Unanswerable" is wrong (`lower_exact_score`).
- `best_ref_cider` (`cider`): SMoLoRA's caption "CIDEr" against each prediction's best single
  reference (`mcl.eval.caption.cider_best_reference`).

A benchmark can also set a mode per task (`bench.scorer_mode` as a {task: mode} map, or the
name of one of its `scorer_presets`, e.g. cvit's `smolora`); `task_modes` resolves that.

`smolora_if_ok` is SMoLoRA's instruction-following compliance rule (its MIF), which judges the
answer's form, not its correctness.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence

import torch
from torchmetrics import Metric

# ---------------------------------------------------------------- VQA answer normalisation
# Follows the official VQA evaluation script (GT-Vision-Lab/VQA vqaEval.py).
_PUNCT = ';/[]"{}()=+\\_-><@`,?!'
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# The official regex meant "a period not inside a number" but its lookbehind is mistyped, so in
# effect it drops every period not followed by a digit ("3." -> "3", "3.5" kept). We keep that.
_PERIOD = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0",  # the official map has it: "none" answers a "how many" question with 0
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# Canonical contractions; every spelling with some apostrophes left out maps to them. Forms whose
# apostrophe-less spelling is a common word ("we'll" -> "well", "it's" -> "its") are left out.
_CANONICAL_CONTRACTIONS = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't
haven't he'd he'd've he's how'd how'll how's i'd've i'm i've isn't it'd it'd've it'll ma'am
mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't shan't she'd've
she's should've shouldn't shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd
someone'd've someone'll someone's something'd something'd've something'll something's that's
there'd there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've
we've weren't what'll what're what's what've when's where'd where's where've who'd who'd've who'll
who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'd've y'all'll
you'd you'd've you'll you're you've
"""


def _contraction_table(words: str) -> dict[str, str]:
    """Map each spelling with one or more apostrophes dropped to the canonical contraction."""
    table = {}
    for word in words.split():
        parts = word.split("'")
        for keep in itertools.product((True, False), repeat=len(parts) - 1):
            if not all(keep):
                tail = "".join(("'" if k else "") + p for k, p in zip(keep, parts[1:]))
                table[parts[0] + tail] = word
    return table


_CONTRACTIONS = _contraction_table(_CANONICAL_CONTRACTIONS)


def _strip_punctuation(text: str) -> str:
    """Official punctuation step: a mark touching a space (or any mark, when the text has a
    digit,digit pattern such as "1,000") is deleted, any other mark becomes a space; then periods
    that do not precede a digit are deleted."""
    out = text
    delete = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _PUNCT:
        if delete or f"{p} " in text or f" {p}" in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def normalize_vqa(text: str) -> str:
    """Standard VQA answer normalisation: whitespace, punctuation, lower-case, number words to
    digits, drop articles a/an/the, standardise contractions ("dont" -> "don't")."""
    text = _strip_punctuation(text.replace("\n", " ").replace("\t", " ").strip())
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


# ---------------------------------------------------------------- per-sample rules
def _as_refs(refs: str | Sequence[str]) -> list[str]:
    refs = [refs] if isinstance(refs, str) else list(refs)
    if not refs:
        raise ValueError("a sample has no reference answers")
    return refs


def vqa_score(pred: str, refs: str | Sequence[str]) -> float:
    """VQA accuracy of one answer, in 0..1.

    With >= 10 references: the official rule, min(#matches/3, 1) averaged over the leave-one-out
    subsets (10-choose-9 for the usual 10 answers). With 3..9 references: min(#matches/3, 1) on
    all of them. With 1-2 references the /3 rule cannot reach 1, so it is exact match after
    normalisation. References are normalised like the prediction (the official script only strips
    their punctuation, which gives the same result on VQAv2's already-normalised answers but
    would wrongly fail raw references such as "Two").
    """
    refs = [normalize_vqa(r) for r in _as_refs(refs)]
    pred = normalize_vqa(pred)
    n, m = len(refs), sum(r == pred for r in refs)
    if n >= 10:
        # leaving out a matching ref leaves m-1 matches; leaving out another leaves m
        return (m * min((m - 1) / 3, 1.0) + (n - m) * min(m / 3, 1.0)) / n
    if n >= 3:
        return min(m / 3, 1.0)
    return 1.0 if m else 0.0


def exact_match_score(pred: str, refs: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference."""
    pred = normalize_vqa(pred)
    return float(any(normalize_vqa(r) == pred for r in _as_refs(refs)))


_LETTERS = "ABCDEFGH"
_CHOICE_PATTERNS = (  # tried in order; group 1 is the letter
    re.compile(r"^\s*[(\[]?([A-Ha-h])[)\]]?\s*[.:)]?\s*$"),  # "B", "b", "(B)", "B.", "b)"
    re.compile(r"^\s*[(\[]?([A-H])(?:[)\]]|[.:])"),  # "B. red car", "(C) dog"
    re.compile(r"(?i:answer|option|choice)\s*(?:is|:)?\s*[(\[]?([A-H])\b"),  # "the answer is B"
    # lower-case only at the end, so "the answer is a cat" is not read as option A
    re.compile(r"(?i:answer|option|choice)\s*(?:is|:)?\s*[(\[]?([a-h])[)\]]?\s*[.!]?\s*$"),
    re.compile(r"[(\[]([A-H])[)\]]"),  # "I think (B)"
)


def _option_texts(options: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """Letter -> normalised option text; options are given in A, B, ... order or as a mapping."""
    if not options:
        return {}
    pairs = options.items() if isinstance(options, Mapping) else zip(_LETTERS, options)
    return {str(k).strip().upper(): normalize_vqa(str(v)) for k, v in pairs}


def extract_choice(
    text: str, options: Sequence[str] | Mapping[str, str] | None = None
) -> str | None:
    """Option letter (A-H) named by `text`, or None.

    Order: the whole text equals an option's text; an explicit letter ("B", "(b)", "B.",
    "the answer is B"); exactly one option's text appears as whole words in the answer.
    """
    texts = _option_texts(options)
    norm = normalize_vqa(text)
    for letter, option in texts.items():
        if option and norm == option:
            return letter
    for pattern in _CHOICE_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1).upper()
    hits = [
        letter
        for letter, option in texts.items()
        if option and re.search(rf"(?<!\S){re.escape(option)}(?!\S)", norm)
    ]
    return hits[0] if len(hits) == 1 else None


def choice_score(
    pred: str, refs: str | Sequence[str], options: Sequence[str] | Mapping[str, str] | None = None
) -> float:
    """1.0 when the option chosen by the prediction is the key (a letter, or the option text)."""
    keys = {extract_choice(r, options) for r in _as_refs(refs)} - {None}
    if not keys:
        raise ValueError(f"reference {refs!r} names no option letter; pass `options` for texts")
    return float(extract_choice(pred, options) in keys)


# a number not glued to a word, so "x1: 0.1" yields 0.1 and not 1
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_BRACKETED = re.compile(r"[\[(]([^\[\]()]*)[\])]")
IOU_THRESHOLD = 0.5


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """First box [x1, y1, x2, y2] in `text`, or None when fewer than 4 numbers can be found.

    A bracketed group with 4 numbers is preferred over loose numbers ("region 2: [...]"). Corners
    are reordered so x1 <= x2 and y1 <= y2. Units are not checked: IoU only needs the prediction
    and the reference in the same units (normally 0-1).
    """
    for chunk in [m.group(1) for m in _BRACKETED.finditer(text)] + [text]:
        numbers = [float(n) for n in _NUMBER.findall(chunk)[:4]]
        if len(numbers) == 4 and all(math.isfinite(v) for v in numbers):
            x1, y1, x2, y2 = numbers
            return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)
    return None


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when the union is empty."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def iou_score(pred: str, refs: str | Sequence[str]) -> float:
    """1.0 when the predicted box overlaps a reference box with IoU >= 0.5; 0 if unparsable.

    A reference without a box is a data error and raises (the loader should have caught it).
    """
    boxes = [b for b in map(parse_box, _as_refs(refs)) if b is not None]
    if not boxes:
        raise ValueError(f"reference {refs!r} contains no box [x1, y1, x2, y2]")
    box = parse_box(pred)
    if box is None:
        return 0.0
    # tolerance: an IoU of exactly 0.5 in exact arithmetic may come out as 0.4999999999
    return float(max(box_iou(box, b) for b in boxes) >= IOU_THRESHOLD - 1e-9)


# ---------------------------------------------------------------- torchmetrics wrappers
class _MeanScore(Metric):
    """Mean of `score_one` over samples, x100; `sum`/`count` states reduce by summation."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("sum", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("count", default=zero.clone(), dist_reduce_fx="sum")

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        raise NotImplementedError

    def update(self, preds: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
        _check_lengths(preds, refs)
        self._add([self.score_one(p, r) for p, r in zip(preds, refs)])

    def _add(self, scores: list[float]) -> None:
        self.sum += sum(scores)
        self.count += len(scores)

    def compute(self) -> torch.Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"))
        return (self.sum / self.count * 100).float()


def _check_lengths(preds: Sequence, refs: Sequence) -> None:
    if isinstance(preds, str):
        raise TypeError("preds must be a list of strings, not one string")
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} reference lists")


class VQAAccuracy(_MeanScore):
    """VQA soft accuracy (see `vqa_score` for the rule with fewer than 10 references)."""

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return vqa_score(pred, refs)


class ExactMatch(_MeanScore):
    """Normalised exact match against any reference (classification, single-answer VQA)."""

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return exact_match_score(pred, refs)


class MultipleChoice(_MeanScore):
    """Accuracy of the chosen option; `update(..., options=[[text A, text B, ...], ...])` lets
    answers given as option text count."""

    def score_one(self, pred: str, refs: str | Sequence[str], options=None) -> float:
        return choice_score(pred, refs, options)

    def update(self, preds: Sequence[str], refs: Sequence[Sequence[str]], options=None) -> None:
        _check_lengths(preds, refs)
        options = [None] * len(preds) if options is None else options
        _check_lengths(preds, options)
        self._add([self.score_one(p, r, o) for p, r, o in zip(preds, refs, options)])


class GroundingIoU(_MeanScore):
    """Share of predicted boxes with IoU >= 0.5; unparsable answers score 0 and are counted in
    the `unparsable` state, so a format failure can be told apart from a localisation failure."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("unparsable", default=zero, dist_reduce_fx="sum")

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return iou_score(pred, refs)

    def parse(self, pred: str) -> tuple[float, ...] | None:
        return parse_box(pred)

    def update(self, preds: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
        super().update(preds, refs)
        self.unparsable += sum(self.parse(p) is None for p in preds)


# ---------------------------------------------------------------- compatibility modes
def coin_vqa_exact_score(pred: str, refs: str | Sequence[str]) -> float:
    """CoIN's VQAv2 / VizWiz rule: `pred.upper() == answer.upper()` against the single
    `answer` field, i.e. case-insensitive exact match with the first reference and no other
    normalisation ("2" vs "two" or a final period fails). Both sides are stripped of surrounding
    whitespace (CoIN's generation script strips outputs; mcl's predictions may not be)."""
    return float(pred.strip().upper() == _as_refs(refs)[0].strip().upper())


UNANSWERABLE = "Unanswerable"


def _loose(text: str) -> str:
    """Light normalisation seen in MCIT-family eval scripts: lower-case, drop "." and ",",
    collapse whitespace. (MCITlib's own eval code was not in the sources we could read.)"""
    return " ".join(text.lower().replace(".", "").replace(",", "").split())


def mcitlib_contains_score(pred: str, refs: str | Sequence[str]) -> float:
    """MCITlib's answer rule: 1.0 when a (loosely normalised, non-empty) reference is a plain
    substring of the loosely normalised prediction ("cat" counts inside "a black cat", and also
    inside "concatenate"). A prediction containing "Unanswerable" (case-sensitive, as in the
    source) is skipped before comparison: it scores 0 even when the reference is "unanswerable",
    yet is still counted in the denominator.

    anchors.md only says skipped "Unanswerable" answers are counted; in the CoIN-derived scripts
    we could read (e.g. the OCR-VQA one: `if 'Unanswerable' in result['text']: continue` with
    `total = len(results)`) the test is on the prediction, so that is what is reproduced.
    """
    if UNANSWERABLE in pred:
        return 0.0
    norm = _loose(pred)
    return float(any(ref and ref in norm for ref in map(_loose, _as_refs(refs))))


def coin_parse_box(text: str) -> tuple[float, float, float, float] | None:
    """CoIN's grounding parser, step by step (ETrain/Eval/LLaVA/CoIN/eval_grounding.py): drop
    one leading space, delete every "[" and "]", then cut the first and the last character
    (`[1:-1]`, evidently meant for the brackets that were already deleted), split on ",", and
    `float()` each part; anything but exactly 4 numbers is unparsable (None).

    So "[0.12, 0.30, 0.56, 0.78]" parses as (0.12, 0.30, 0.56, 0.7): the first cut only eats the
    leading "0" of "0.12", but the last coordinate loses its final digit. A leading "1.0"
    becomes ".0" = 0, and any text around the box makes it unparsable. Corners are not
    reordered. This reproduces the quirk exactly rather than approximating it.
    """
    text = text[1:] if text.startswith(" ") else text
    text = text.replace("[", "").replace("]", "")
    try:
        numbers = [float(x) for x in text[1:-1].split(",")]
    except ValueError:
        return None
    return tuple(numbers) if len(numbers) == 4 else None  # type: ignore[return-value]


def coin_iou_score(pred: str, refs: str | Sequence[str]) -> float:
    """1.0 when CoIN's parse of the prediction has IoU strictly above 0.5 (CoIN uses `>`) with a
    reference box; references are parsed normally (CoIN does not cut them)."""
    boxes = [b for b in map(parse_box, _as_refs(refs)) if b is not None]
    if not boxes:
        raise ValueError(f"reference {refs!r} contains no box [x1, y1, x2, y2]")
    box = coin_parse_box(pred)
    if box is None:
        return 0.0
    return float(max(box_iou(box, b) for b in boxes) > IOU_THRESHOLD)


class CoinVQAExact(_MeanScore):
    """`coin_vqa_exact` mode of `vqa`: see `coin_vqa_exact_score`."""

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return coin_vqa_exact_score(pred, refs)


class MCITlibContains(_MeanScore):
    """`mcitlib_contains` mode of `vqa` and `exact`: see `mcitlib_contains_score`. The `skipped`
    state counts predictions scored 0 because they contain "Unanswerable"."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("skipped", default=zero, dist_reduce_fx="sum")

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return mcitlib_contains_score(pred, refs)

    def update(self, preds: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
        super().update(preds, refs)
        self.skipped += sum(UNANSWERABLE in p for p in preds)


class CoinGroundingIoU(GroundingIoU):
    """`coin_grounding` mode of `iou`: CoIN's parser and strict threshold (`coin_iou_score`);
    `unparsable` counts answers CoIN's parser rejects."""

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return coin_iou_score(pred, refs)

    def parse(self, pred: str) -> tuple[float, ...] | None:
        return coin_parse_box(pred)


def two_way_contains_score(pred: str, refs: str | Sequence[str]) -> float:
    """SMoLoRA's ImageNet / Places365 rule: correct when the stripped, lower-cased prediction
    contains a reference or is contained in one ("tabby" matches "tabby cat" and vice versa).
    An empty prediction is wrong (it would be a substring of everything)."""
    p = pred.strip().lower()
    return float(
        bool(p)
        and any(
            r.strip().lower() in p or p in r.strip().lower() for r in _as_refs(refs) if r.strip()
        )
    )


def lower_exact_score(pred: str, refs: str | Sequence[str]) -> float:
    """SMoLoRA's OCR-VQA rule: lower-case exact match of the stripped strings; a prediction
    containing "Unanswerable" is wrong."""
    if UNANSWERABLE in pred:
        return 0.0
    return float(any(pred.strip().lower() == r.strip().lower() for r in _as_refs(refs)))


class TwoWayContains(_MeanScore):
    """`two_way_contains` mode of `exact` and `vqa`: see `two_way_contains_score`."""

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return two_way_contains_score(pred, refs)


class LowerExact(_MeanScore):
    """`lower_exact` mode of `exact` and `vqa`: see `lower_exact_score`."""

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        return lower_exact_score(pred, refs)


_CAPTION_SCORERS = ("cider", "bleu4", "rougeL")


def smolora_if_ok(scorer: str, pred: str, refs: str | Sequence[str]) -> bool:
    """SMoLoRA's instruction-following compliance (Eval_IF `eval_*_instruction.py`;
    smolora.md section 2.5), by the task's scorer kind:

    - multiple choice: exactly one letter A-Z after strip / upper-case;
    - captions: ends with "." and (more than 4 words, or is a substring of a reference);
    - everything else (VQA-type): at most 2 words, or equals a reference (case-insensitive).
    """
    text = pred.strip()
    if scorer == "mc":
        return len(text) == 1 and "A" <= text.upper() <= "Z"
    if scorer in _CAPTION_SCORERS:
        return text.endswith(".") and (
            len(text.split()) > 4 or any(text in r for r in _as_refs(refs))
        )
    return len(text.split()) <= 2 or any(text.lower() == r.strip().lower() for r in _as_refs(refs))


# ---------------------------------------------------------------- registry
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


def _scorer_class(name: str, mode: str) -> type[Metric]:
    from mcl.eval import caption  # imported here: caption builds on this module

    mode = effective_scorer_mode(name, mode)
    variants: dict[tuple[str, str], type[Metric]] = {
        ("vqa", "coin_vqa_exact"): CoinVQAExact,
        ("vqa", "mcitlib_contains"): MCITlibContains,
        ("exact", "mcitlib_contains"): MCITlibContains,
        ("iou", "coin_grounding"): CoinGroundingIoU,
        ("cider", "mcitlib_caption_avg7"): caption.CaptionAvg7,
        ("cider", "best_ref_cider"): caption.CIDErBestRef,
        ("exact", "two_way_contains"): TwoWayContains,
        ("vqa", "two_way_contains"): TwoWayContains,
        ("exact", "lower_exact"): LowerExact,
        ("vqa", "lower_exact"): LowerExact,
    }
    strict: dict[str, type[Metric]] = {
        "vqa": VQAAccuracy,
        "exact": ExactMatch,
        "mc": MultipleChoice,
        "iou": GroundingIoU,
        "cider": caption.CIDErD,
        "bleu4": caption.BLEU4,
        "rougeL": caption.RougeL,
    }
    return variants.get((name, mode)) or strict[name]


def build_scorer(name: str, mode: str = "strict", **kwargs) -> Metric:
    """A fresh scorer for a task's `scorer:` name under a compatibility mode (one instance per
    task and stage). A mode that does not concern `name` gives the strict scorer; unknown names
    or modes raise ValueError listing the valid ones."""
    return _scorer_class(name, mode)(**kwargs)


# ---------------------------------------------------------------- answer-format compliance
def format_ok(scorer: str, answer_type: str | None, pred: str) -> bool:
    """Whether an answer has the *form* the task asks for, right or wrong (SMoLoRA's
    instruction-following view): an option letter for multiple choice, a parsable box for
    grounding, digits for numbers, a sentence for captions, a short phrase otherwise."""
    words = pred.split()
    if scorer == "mc":
        return extract_choice(pred) is not None
    if scorer == "iou":
        return parse_box(pred) is not None
    if scorer in _CAPTION_SCORERS:
        return len(words) >= 2
    if answer_type == "number":
        return re.fullmatch(r"\d+", pred.strip()) is not None
    return 1 <= len(words) <= 3


def score_records(records: Sequence[Mapping], scorer: str, mode: str = "strict") -> dict:
    """One task's scores from its prediction records ({"pred", "answers", "heldout"}, as in a
    run's predictions/rowN/TASK.jsonl): `score` on the main samples, `held` on the held-out
    instruction templates (None when there are none), and `mif`, the % of all answers that
    pass SMoLoRA's compliance rule (`smolora_if_ok`). The runner and `mcl.eval.rescore` both
    score through here, so a re-scored run matches a fresh one."""
    main, held = build_scorer(scorer, mode=mode), build_scorer(scorer, mode=mode)
    n_if = 0
    for r in records:
        (held if r.get("heldout") else main).update([r["pred"]], [r["answers"]])
        n_if += smolora_if_ok(scorer, r["pred"], r["answers"])
    any_held = any(r.get("heldout") for r in records)
    return {
        "score": float(main.compute()),
        "held": float(held.compute()) if any_held else None,
        "mif": 100.0 * n_if / len(records) if records else None,
    }
