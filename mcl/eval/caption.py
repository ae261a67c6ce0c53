"""Caption scorers: CIDEr-D (ours, pure Python), BLEU-4 and ROUGE-L (torchmetrics), and MCITlib's
seven-metric caption average (docs/concepts.md, "Per-task scorers").

Like the other scorers these report x100, so a CIDEr-D of 1.105 is reported as 110.5. CIDEr-D is
not bounded by 1 (the standard definition multiplies by 10), so **caption scores can exceed 100**;
a perfect caption on a typical corpus scores several hundred.

Tokenisation (all caption scorers here): lower-case, replace every character that is neither a
letter, a digit nor whitespace (so all punctuation, apostrophes and underscores) with a space,
split on whitespace. "A man's hat." -> ["a", "man", "s", "hat"]. The official COCO pipeline uses
the Java PTB tokenizer instead ("man 's", hyphenated words kept whole), so numbers can differ from
Java-tokenised ones by a little; on identical token lists the maths here matches pycocoevalcap
(tests/test_caption.py checks CIDEr-D, BLEU-1..4 and ROUGE-L against it).

CIDEr and the caption average are corpus-level (document frequencies come from all test
references), so their metric keeps every (prediction, references) pair until `compute()`; see
`_CorpusCaptionMetric` for how the strings survive DDP gathering.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

import torch
from torchmetrics import Metric
from torchmetrics.functional.text import rouge_score
from torchmetrics.text import BLEUScore

from mcl.eval.base import MeanScore, as_refs, check_lengths

Tokenizer = Callable[[str], list[str]]
_NON_WORD = re.compile(r"[^\w\s]|_")


def tokenize_caption(text: str) -> list[str]:
    """Lower-case word tokens with all punctuation removed (see the module docstring)."""
    return _NON_WORD.sub(" ", text.lower()).split()


def _joined(text: str) -> str:
    return " ".join(tokenize_caption(text))


def _ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    """Counts of every n-gram of order 1..n, keyed by token tuples."""
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i : i + k])] += 1
    return counts


def _tokenized(
    preds: Sequence[str], refs: Sequence[str | Sequence[str]], tokenizer: Tokenizer
) -> tuple[list[list[str]], list[list[list[str]]]]:
    check_lengths(preds, refs)
    return (
        [tokenizer(p) for p in preds],
        [[tokenizer(r) for r in as_refs(rs)] for rs in refs],
    )


# ---------------------------------------------------------------- CIDEr-D
def cider_d(
    preds: Sequence[str],
    refs: Sequence[str | Sequence[str]],
    n: int = 4,
    sigma: float = 6.0,
    tokenizer: Tokenizer = tokenize_caption,
    per_reference: bool = False,
) -> tuple[float, list[float]]:
    """CIDEr-D of a corpus: (corpus score, per-caption scores), on the usual 0..~10 scale.

    For each caption and each n-gram order k = 1..n, the caption and each reference become
    tf-idf vectors (tf = n-gram count in the sentence; idf = log(#captions in the corpus) -
    log(max(1, df)), df = number of captions whose references contain the n-gram). The similarity
    to one reference is sum_g min(c_g, r_g) * r_g / (|c| |r|) -- the candidate's weights clipped
    by the reference's, which clips repeated words -- times the Gaussian length penalty
    exp(-(len_c - len_r)^2 / (2 sigma^2)). The caption's score is 10 x the mean over k of the
    similarities averaged over its references; the corpus score is the mean over captions.

    This is the maths of pycocoevalcap 1.2's `Cider` class, which despite its name computes
    CIDEr-D (it has the clipping and the length penalty; it is the "CIDEr" column of the COCO
    leaderboard) and of the original `CiderD` scorer with df taken from the test references.
    pycocoevalcap measures length as the number of bigrams (words - 1); the difference of two
    lengths is the same, except for an empty sentence, whose similarity is 0 either way.

    A corpus of one caption scores 0: every reference n-gram then has idf log(1) - log(1) = 0.
    CIDEr needs the whole test set, never a single batch. With `per_reference=True` it returns
    instead, per caption, the list of its scores against each single reference (the terms the
    caption's score averages).
    """
    cands, refss = _tokenized(preds, refs, tokenizer)
    if not cands:
        raise ValueError("CIDEr-D of an empty corpus")
    cand_counts = [_ngram_counts(c, n) for c in cands]
    ref_counts = [[_ngram_counts(r, n) for r in rs] for rs in refss]
    df: Counter = Counter()
    for counts in ref_counts:
        df.update(set().union(*counts))
    log_corpus = math.log(len(cands))

    def tfidf(counts: Counter) -> tuple[list[dict], list[float]]:
        vec: list[dict] = [{} for _ in range(n)]
        norms = [0.0] * n
        for gram, tf in counts.items():
            weight = tf * (log_corpus - math.log(max(1.0, df[gram])))
            vec[len(gram) - 1][gram] = weight
            norms[len(gram) - 1] += weight * weight
        return vec, [math.sqrt(x) for x in norms]

    per_ref = []  # per caption: its CIDEr-D against each single reference (corpus df)
    for cand, counts, refs_tokens, refs_counts in zip(cands, cand_counts, refss, ref_counts):
        vec, norm = tfidf(counts)
        sims = []
        for ref, ref_count in zip(refs_tokens, refs_counts):
            ref_vec, ref_norm = tfidf(ref_count)
            penalty = math.exp(-((len(cand) - len(ref)) ** 2) / (2 * sigma**2))
            sim = 0.0
            for k in range(n):
                ref_k = ref_vec[k]
                dot = sum(min(w, ref_k.get(g, 0.0)) * ref_k.get(g, 0.0) for g, w in vec[k].items())
                if norm[k] and ref_norm[k]:
                    dot /= norm[k] * ref_norm[k]
                sim += dot * penalty
            sims.append(10.0 * sim / n)
        per_ref.append(sims)
    if per_reference:
        return per_ref  # type: ignore[return-value]
    scores = [sum(sims) / len(sims) for sims in per_ref]
    return sum(scores) / len(scores), scores


def cider_best_reference(
    preds: Sequence[str],
    refs: Sequence[str | Sequence[str]],
    n: int = 4,
    sigma: float = 6.0,
    tokenizer: Tokenizer = tokenize_caption,
) -> float:
    """CVIT's reference caption "CIDEr" (its eval_flickr30k_cider.py): for each
    prediction keep only the single reference it scores best against, then compute corpus
    CIDEr-D against those chosen references alone. Optimistic next to standard CIDEr-D.

    The spec does not say with which document frequencies the best reference is chosen; here
    it is the per-reference CIDEr-D term under the full test set's df [INFERENCE], ties going
    to the first reference. The second pass takes df from the chosen references only, as a
    corpus built from them would. Returns the 0..~10 scale score, like `cider_d`."""
    per_ref = cider_d(preds, refs, n=n, sigma=sigma, tokenizer=tokenizer, per_reference=True)
    chosen = [[as_refs(r)[max(range(len(s)), key=s.__getitem__)]] for r, s in zip(refs, per_ref)]
    return cider_d(preds, chosen, n=n, sigma=sigma, tokenizer=tokenizer)[0]


# ---------------------------------------------------------------- COCO-style BLEU and ROUGE-L
_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap's guards against log(0) and division by zero


def bleu_coco(
    preds: Sequence[str],
    refs: Sequence[str | Sequence[str]],
    n: int = 4,
    tokenizer: Tokenizer = tokenize_caption,
) -> list[float]:
    """Corpus BLEU-1..n as pycocoevalcap computes it (0..1 each).

    Clipped n-gram matches (clip = the highest count in any one reference) and n-gram counts are
    summed over the corpus; BLEU-k is the geometric mean of the precisions 1..k, each as
    (matches + 1e-15) / (count + 1e-9), so an order without matches gives ~0 rather than an error;
    the brevity penalty uses, per caption, the reference length closest to the caption's (the
    shorter on ties). torchmetrics' BLEUScore (the `bleu4` scorer) differs only in returning
    exactly 0 when an order has no match and in breaking length ties by reference order.
    """
    cands, refss = _tokenized(preds, refs, tokenizer)
    correct, guess = [0] * n, [0] * n
    test_len = ref_len = 0
    for cand, rs in zip(cands, refss):
        max_ref: Counter = Counter()
        for r in rs:
            max_ref |= _ngram_counts(r, n)
        for gram, count in _ngram_counts(cand, n).items():
            correct[len(gram) - 1] += min(count, max_ref[gram])
        for k in range(n):
            guess[k] += max(0, len(cand) - k)
        test_len += len(cand)
        ref_len += min((abs(len(r) - len(cand)), len(r)) for r in rs)[1]
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + _TINY) / (guess[k] + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_coco(cand: Sequence[str], refs: Sequence[Sequence[str]], beta: float = 1.2) -> float:
    """ROUGE-L of one tokenised caption as pycocoevalcap computes it (0..1): the best LCS
    precision and the best LCS recall over the references (taken separately), combined as
    F_beta with beta = 1.2."""
    if not cand:
        return 0.0
    lcs = [_lcs_length(r, cand) for r in refs]
    prec = max(m / len(cand) for m in lcs)
    rec = max(m / len(r) if r else 0.0 for m, r in zip(lcs, refs))
    if prec == 0 or rec == 0:
        return 0.0
    return (1 + beta**2) * prec * rec / (rec + beta**2 * prec)


# ---------------------------------------------------------------- METEOR approximation
def _exact_alignment(cand: Sequence[str], ref: Sequence[str]) -> list[tuple[int, int]]:
    """Greedy one-to-one alignment of identical words, left to right over the candidate: a word
    continues the current chunk when the next reference position is free and equal; otherwise
    it takes the free equal position that starts the longest run of equal words (the first such
    position on ties). This always finds the maximum number of matches and usually the fewest
    chunks, but it is a heuristic, not METEOR's exhaustive aligner."""
    free: defaultdict[str, list[int]] = defaultdict(list)
    for j, word in enumerate(ref):
        free[word].append(j)
    taken: set[int] = set()

    def run(i: int, j: int) -> int:
        k = 0
        while i + k < len(cand) and j + k < len(ref) and j + k not in taken:
            if cand[i + k] != ref[j + k]:
                break
            k += 1
        return k

    pairs: list[tuple[int, int]] = []
    for i, word in enumerate(cand):
        slots = free[word]
        if not slots:
            continue
        after = pairs[-1][1] + 1 if pairs and pairs[-1][0] == i - 1 else None
        j = after if after in slots else max(slots, key=lambda s: (run(i, s), -s))
        slots.remove(j)
        taken.add(j)
        pairs.append((i, j))
    return pairs


def meteor_exact(
    cand: Sequence[str],
    ref: Sequence[str],
    alpha: float = 0.85,
    beta: float = 0.2,
    gamma: float = 0.6,
) -> float:
    """Exact-match-only METEOR of a tokenised caption against one reference (0..1).

    P = m / len(cand), R = m / len(ref) over the m aligned unigrams (`_exact_alignment`);
    F-mean = P R / (alpha P + (1 - alpha) R); fragmentation penalty = gamma (chunks / m)^beta,
    set to 0 when both sentences are matched entirely in one chunk (as METEOR 1.5 does, so an
    identical caption scores 1); score = F-mean (1 - penalty). alpha, beta, gamma default to
    METEOR 1.5's English parameters. Not modelled: the stem, synonym and paraphrase matchers and
    the content/function-word weighting (delta), so this is lower than the Java METEOR whenever
    those would have matched more words.
    """
    pairs = _exact_alignment(cand, ref)
    m = len(pairs)
    if m == 0:
        return 0.0
    prec, rec = m / len(cand), m / len(ref)
    fmean = prec * rec / (alpha * prec + (1 - alpha) * rec)
    chunks = 1 + sum(
        1 for (i0, j0), (i1, j1) in zip(pairs, pairs[1:]) if not (i1 == i0 + 1 and j1 == j0 + 1)
    )
    whole = m == len(cand) == len(ref) and chunks == 1
    penalty = 0.0 if whole else gamma * (chunks / m) ** beta
    return fmean * (1 - penalty)


def meteor_approx(
    preds: Sequence[str],
    refs: Sequence[str | Sequence[str]],
    tokenizer: Tokenizer = tokenize_caption,
) -> float:
    """Corpus METEOR approximation (0..1): per caption the best `meteor_exact` over its
    references, averaged over captions. (The Java METEOR aggregates match statistics over the
    corpus before scoring, a further, usually small, difference.)"""
    cands, refss = _tokenized(preds, refs, tokenizer)
    scores = [max(meteor_exact(c, r) for r in rs) for c, rs in zip(cands, refss)]
    return sum(scores) / len(scores)


def caption_avg7_components(
    preds: Sequence[str], refs: Sequence[str | Sequence[str]]
) -> dict[str, float]:
    """MCITlib's seven caption metrics, each 0..1 (CIDEr 0..~10): BLEU-1..4, METEOR (the
    exact-match approximation above), ROUGE-L and CIDEr-D, all COCO-style."""
    cands, refss = _tokenized(preds, refs, tokenize_caption)
    bleu = bleu_coco(preds, refs)
    return {
        **{f"Bleu_{k + 1}": b for k, b in enumerate(bleu)},
        "METEOR": meteor_approx(preds, refs),
        "ROUGE_L": sum(rouge_l_coco(c, rs) for c, rs in zip(cands, refss)) / len(cands),
        "CIDEr": cider_d(preds, refs)[0],
    }


# ---------------------------------------------------------------- torchmetrics wrappers
_SEP = b"\0"  # json.dumps escapes control characters, so a NUL byte never occurs inside a record


class _CorpusCaptionMetric(Metric):
    """Keeps every (prediction, references) pair until `compute()`.

    The pairs are stored as one list state, `samples`, with `dist_reduce_fx="cat"`: each
    `update` appends a 1-D tensor holding the UTF-8 bytes of one JSON record per sample, NUL
    terminated. torchmetrics can only all-gather tensors, and it gathers list states of uneven
    length across ranks; the byte values live in a float tensor of the metric's dtype because
    torchmetrics substitutes an empty tensor of that dtype on a rank that saw no data (0..255 are
    exact even in bfloat16). Sample order across ranks does not change a corpus score.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("samples", default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[str], refs: Sequence[str | Sequence[str]]) -> None:
        check_lengths(preds, refs)
        if not len(preds):
            return
        payload = b"".join(
            json.dumps([str(p), as_refs(r)]).encode() + _SEP for p, r in zip(preds, refs)
        )
        data = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        self.samples.append(data.to(device=self.device, dtype=self.dtype))

    def pairs(self) -> tuple[list[str], list[list[str]]]:
        """All (predictions, references) seen so far (after a DDP sync: on every rank)."""
        state = self.samples
        if isinstance(state, list):
            state = torch.cat(state) if state else torch.zeros(0)
        raw = state.to(torch.uint8).cpu().numpy().tobytes()
        records = [json.loads(x) for x in raw.split(_SEP) if x]
        return [r[0] for r in records], [r[1] for r in records]

    def compute(self) -> torch.Tensor:
        preds, refs = self.pairs()
        if not preds:
            return torch.tensor(float("nan"))
        return torch.tensor(self.corpus_score(preds, refs) * 100, dtype=torch.float32)

    def corpus_score(self, preds: list[str], refs: list[list[str]]) -> float:
        raise NotImplementedError


class CIDErD(_CorpusCaptionMetric):
    """Corpus CIDEr-D (n = 1..4, sigma = 6, df from the test references) x100; see `cider_d`.
    Scores can exceed 100."""

    def __init__(self, n: int = 4, sigma: float = 6.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n, self.sigma = n, sigma

    def corpus_score(self, preds: list[str], refs: list[list[str]]) -> float:
        return cider_d(preds, refs, n=self.n, sigma=self.sigma)[0]


class CIDErBestRef(_CorpusCaptionMetric):
    """`best_ref_cider` mode of `cider`: the best-reference CIDEr x100 of CVIT's reference
    evaluation (`cider_best_reference`)."""

    def corpus_score(self, preds: list[str], refs: list[list[str]]) -> float:
        return cider_best_reference(preds, refs)


class CaptionAvg7(_CorpusCaptionMetric):
    """MCITlib's caption score (`mcitlib_caption_avg7`): the plain mean of BLEU-1, BLEU-2,
    BLEU-3, BLEU-4, METEOR, ROUGE-L and CIDEr-D, x100 (`caption_avg7_components`).

    MCITlib gets these from pycocoevalcap with the Java PTB tokenizer and METEOR 1.5. Here BLEU,
    ROUGE-L and CIDEr-D reproduce pycocoevalcap's maths on our tokens, and METEOR is replaced by
    a documented exact-match-only approximation (`meteor_exact`: no stemming, synonyms or
    paraphrases), so the average runs without Java and is slightly below MCITlib's when METEOR's
    extra matchers would have fired. Because CIDEr is on a 0..10 scale the average can exceed 100.
    """

    def corpus_score(self, preds: list[str], refs: list[list[str]]) -> float:
        components = caption_avg7_components(preds, refs)
        return sum(components.values()) / len(components)

    def compute_components(self) -> dict[str, float]:
        """Each of the seven metrics x100 (for logging next to the average)."""
        preds, refs = self.pairs()
        if not preds:
            return {}
        return {k: v * 100 for k, v in caption_avg7_components(preds, refs).items()}


class BLEU4(BLEUScore):
    """Corpus BLEU-4 x100 from torchmetrics' `BLEUScore` (uniform weights, no smoothing) on our
    caption tokens. Corpus-level, so a caption without a 4-gram match does not zero the score;
    torchmetrics returns exactly 0 only when the whole corpus has no match of some order. States
    are summed across ranks. NaN before any update."""

    def __init__(self, **kwargs) -> None:
        super().__init__(n_gram=4, smooth=False, **kwargs)
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("count", default=zero, dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], refs: Sequence[str | Sequence[str]]) -> None:
        check_lengths(preds, refs)
        super().update(
            [_joined(p) for p in preds], [[_joined(r) for r in as_refs(rs)] for rs in refs]
        )
        self.count += len(preds)

    def compute(self) -> torch.Tensor:
        if self.count == 0:
            return torch.tensor(float("nan"))
        return (super().compute() * 100).float()


class RougeL(MeanScore):
    """Mean ROUGE-L F1 x100 from torchmetrics' `rouge_score` (the `ROUGEScore` maths; best
    reference per caption, `accumulate="best"`) on our caption tokens. Only ROUGE-Lsum and the
    stemmer need nltk, which is not installed; plain ROUGE-L does not. Kept as sum/count states
    rather than wrapping `ROUGEScore`, whose per-sample list states do not gather across ranks
    of unequal size. (pycocoevalcap's ROUGE-L uses F_beta with beta = 1.2 instead; see
    `rouge_l_coco`, used by the MCITlib average.)"""

    def score_one(self, pred: str, refs: str | Sequence[str]) -> float:
        out = rouge_score(
            pred,
            as_refs(refs),
            accumulate="best",
            rouge_keys="rougeL",
            normalizer=_joined,
            tokenizer=str.split,
        )
        return float(out["rougeL_fmeasure"])
