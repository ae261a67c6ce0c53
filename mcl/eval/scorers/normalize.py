"""Answer normalisation: the official VQA answer processing, and the looser one MCIT-family
evaluation scripts use. Pure functions of strings; every rule in `rules` and `compat` starts
here."""

from __future__ import annotations

import itertools
import re

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


def loose(text: str) -> str:
    """Light normalisation seen in MCIT-family eval scripts: lower-case, drop "." and ",",
    collapse whitespace. (MCITlib's own eval code was not in the sources we could read.)"""
    return " ".join(text.lower().replace(".", "").replace(",", "").split())
