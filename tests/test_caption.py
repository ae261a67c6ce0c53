"""Caption scorers: CIDEr-D, BLEU and ROUGE-L against pycocoevalcap (its pure-Python scorers, no
Java) and hand-computed values; the METEOR approximation; torchmetrics state plumbing."""

import math

import pytest
import torch

from mcl.eval.caption import (
    BLEU4,
    CaptionAvg7,
    CIDErD,
    RougeL,
    _exact_alignment,
    bleu_coco,
    caption_avg7_components,
    cider_d,
    meteor_approx,
    meteor_exact,
    rouge_l_coco,
    tokenize_caption,
)
from mcl.eval.scorers import build_scorer

# Several references each; an exact copy of a reference ("a cat"), an empty caption, a repeated
# word (clipping), a far too long caption (length penalty), unseen n-grams, punctuation and case.
PREDS = [
    "A man riding a horse on the beach.",
    "",
    "dog dog dog dog dog",
    "a cat",
    "a very long caption about a small red car parked next to a tall old building in the city",
    "Two people, sitting on a bench!",
    "a bowl of fruit",
]
REFS = [
    [
        "A man rides a horse on a beach.",
        "a person riding a horse along the shore",
        "man on a horse",
    ],
    ["a bowl of fruit on a table", "fruit in a bowl"],
    ["a dog runs in the park", "the dog is playing with a dog toy", "a brown dog"],
    ["a cat sitting on a mat", "a cat", "the cat sleeps"],
    ["a red car parked by a building", "a small red car on the street", "car parked at night"],
    ["two people sitting on a bench", "a couple sits on a bench", "people on a bench", "bench"],
    ["a bowl of fruit on a table", "apples in a bowl", "a bowl of fruit"],
]


def _coco_inputs(preds, refs):
    """pycocoevalcap's dict format, pre-tokenised with our tokenizer (its own needs Java)."""
    gts = {i: [" ".join(tokenize_caption(r)) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(tokenize_caption(p))] for i, p in enumerate(preds)}
    return gts, res


def test_tokenize_caption():
    assert tokenize_caption("A man's hat, on the_floor!") == [
        "a",
        "man",
        "s",
        "hat",
        "on",
        "the",
        "floor",
    ]
    assert tokenize_caption("Black-and-white   PHOTO.") == ["black", "and", "white", "photo"]
    assert tokenize_caption("  ...  ") == []
    assert tokenize_caption("Café 3.5") == ["café", "3", "5"]


def test_cider_d_matches_pycocoevalcap():
    cider_mod = pytest.importorskip("pycocoevalcap.cider.cider")
    gts, res = _coco_inputs(PREDS, REFS)
    theirs, their_scores = cider_mod.Cider().compute_score(gts, res)
    ours, our_scores = cider_d(PREDS, REFS)
    assert ours == pytest.approx(float(theirs), abs=1e-6)
    assert our_scores == pytest.approx([float(s) for s in their_scores], abs=1e-6)
    assert our_scores[1] == 0.0  # empty caption
    assert our_scores[3] > our_scores[2]  # a copy of a reference beats "dog dog dog dog dog"


def test_cider_d_matches_pycocoevalcap_on_subsets():
    """df and idf depend on the corpus: check corpora of other sizes and compositions too."""
    cider_mod = pytest.importorskip("pycocoevalcap.cider.cider")
    for idx in ([0, 3], [2, 4, 5], [1, 2, 3, 6]):
        preds, refs = [PREDS[i] for i in idx], [REFS[i] for i in idx]
        theirs, _ = cider_mod.Cider().compute_score(*_coco_inputs(preds, refs))
        assert cider_d(preds, refs)[0] == pytest.approx(float(theirs), abs=1e-6)


def test_cider_d_hand_computed():
    # Corpus of 2: "cat"/"dog" each appear in one image's refs -> idf = log 2 - log 1.
    # Identical one-word caption: unigram cosine 1, orders 2-4 empty -> 10 * (1+0+0+0)/4 = 2.5.
    # "cat cat" vs "cat": tf 2 vs 1 -> clipped dot min(2w, w) * w = w^2, norms 2w * w -> 0.5;
    # its bigram has no reference counterpart -> 0; length 2 vs 1 -> penalty exp(-1/72).
    corpus, scores = cider_d(["cat cat", "dog"], [["cat"], ["dog"]])
    assert scores == pytest.approx([10 * 0.5 / 4 * math.exp(-1 / 72), 2.5], abs=1e-12)
    assert corpus == pytest.approx(sum(scores) / 2)
    # a single-caption corpus has idf 0 everywhere
    assert cider_d(["a cat"], [["a cat"]])[0] == 0.0
    with pytest.raises(ValueError):
        cider_d([], [])


def test_cider_length_penalty_and_clipping():
    refs = [["a dog runs in the park"], ["a cat on a mat"], ["two birds in a tree"]]
    exact = cider_d(["a dog runs in the park", "x", "y"], refs)[1][0]
    longer = cider_d(["a dog runs in the park in the park in the park", "x", "y"], refs)[1][0]
    repeated = cider_d(["dog dog dog dog dog dog", "x", "y"], refs)[1][0]
    single = cider_d(["dog", "x", "y"], refs)[1][0]
    assert exact > longer > 0
    assert repeated < exact and single < exact


def test_bleu_and_rouge_l_match_pycocoevalcap():
    bleu_mod = pytest.importorskip("pycocoevalcap.bleu.bleu")
    rouge_mod = pytest.importorskip("pycocoevalcap.rouge.rouge")
    gts, res = _coco_inputs(PREDS, REFS)
    theirs, _ = bleu_mod.Bleu(4).compute_score(gts, res, verbose=0)
    assert bleu_coco(PREDS, REFS) == pytest.approx(theirs, abs=1e-9)
    theirs, their_scores = rouge_mod.Rouge().compute_score(gts, res)
    ours = [
        rouge_l_coco(tokenize_caption(p), [tokenize_caption(r) for r in rs])
        for p, rs in zip(PREDS, REFS)
    ]
    assert ours == pytest.approx(list(their_scores), abs=1e-9)
    assert caption_avg7_components(PREDS, REFS)["ROUGE_L"] == pytest.approx(float(theirs))


def test_cider_metric_across_updates_equals_functional():
    metric = CIDErD()
    metric.update(PREDS[:2], REFS[:2])
    metric.update(PREDS[2:5], REFS[2:5])
    metric.update([], [])
    metric.update(PREDS[5:], REFS[5:])
    expected = cider_d(PREDS, REFS)[0] * 100
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)
    assert metric.compute().item() > 100  # caption scores can exceed 100
    assert metric.pairs() == (PREDS, REFS)
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(metric.compute().item())


def test_cider_metric_merge_state():
    rank0, rank1 = CIDErD(), CIDErD()
    rank0.update(PREDS[:3], REFS[:3])
    rank1.update(PREDS[3:], REFS[3:])
    rank0.merge_state(rank1)
    assert rank0.compute().item() == pytest.approx(cider_d(PREDS, REFS)[0] * 100, rel=1e-6)


@pytest.mark.parametrize("other_rank_empty", [False, True])
def test_cider_metric_survives_ddp_gather(other_rank_empty):
    """Simulate a 2-rank all-gather: the string records travel as tensors of uneven length,
    and a rank with no data sends torchmetrics' empty placeholder of the metric's dtype."""
    rank1 = CIDErD()
    if not other_rank_empty:
        rank1.update(PREDS[4:], REFS[4:])
    remote = torch.cat(rank1.samples) if rank1.samples else torch.tensor([], dtype=rank1.dtype)

    def gather(tensor, group=None):
        assert tensor.dtype == remote.dtype
        return [tensor, remote]

    rank0 = CIDErD(dist_sync_fn=gather, distributed_available_fn=lambda: True)
    rank0.update(PREDS[:2], REFS[:2])
    rank0.update(PREDS[2:4], REFS[2:4])
    n = 4 if other_rank_empty else len(PREDS)
    assert rank0.compute().item() == pytest.approx(cider_d(PREDS[:n], REFS[:n])[0] * 100, rel=1e-6)


def test_unicode_and_quotes_survive_the_state_encoding():
    metric = CIDErD()
    preds, refs = ['a "quoted" café\n', "naïve ünïcödé"], [['a "quoted" café'], ["naïve", "x\0y"]]
    metric.update(preds, refs)
    assert metric.pairs() == (preds, refs)


def test_bleu4_sanity():
    metric = BLEU4()
    metric.update(["A man rides a horse on a beach."], [["a man rides a horse on a beach"]])
    metric.update(["two dogs play in the snow"], [["two dogs play in the snow", "dogs in snow"]])
    assert metric.compute().item() == pytest.approx(100.0)
    disjoint = BLEU4()
    disjoint.update(["red green blue yellow"], [["one two three four five"]])
    assert disjoint.compute().item() == 0.0
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(BLEU4().compute().item())


def test_bleu4_agrees_with_coco_bleu4_on_this_corpus():
    metric = BLEU4()
    metric.update(PREDS[:4], REFS[:4])
    metric.update(PREDS[4:], REFS[4:])
    assert metric.compute().item() == pytest.approx(bleu_coco(PREDS, REFS)[3] * 100, rel=1e-5)


def test_rouge_l_sanity():
    metric = RougeL()
    metric.update(["The cat sat."], [["the cat sat", "a dog"]])
    assert metric.compute().item() == pytest.approx(100.0)
    metric.update(["red green blue"], [["one two three"]])
    assert metric.compute().item() == pytest.approx(50.0)
    # LCS "the cat" = 2 of 3 pred and 2 of 4 ref words: P = 2/3, R = 1/2, F1 = 4/7
    assert metric.score_one("the black cat", ["the cat is here"]) == pytest.approx(4 / 7, rel=1e-6)
    assert metric.score_one("", ["a cat"]) == 0.0


CAT_MAT = (["the", "cat", "sat", "on", "the", "mat"], ["on", "the", "mat", "the", "cat", "sat"])


def test_exact_alignment_prefers_long_runs():
    cand, ref = CAT_MAT
    assert _exact_alignment(cand, ref) == [(0, 3), (1, 4), (2, 5), (3, 0), (4, 1), (5, 2)]


def test_meteor_approximation_hand_computed():
    cand, ref = CAT_MAT
    # m = 6, P = R = 1 -> F-mean 1; 2 chunks -> penalty 0.6 * (2/6)^0.2
    assert meteor_exact(cand, ref) == pytest.approx(1 - 0.6 * (1 / 3) ** 0.2)
    assert meteor_exact(cand, cand) == 1.0  # one chunk covering both: no penalty
    assert meteor_exact(["x"], ["y"]) == 0.0
    # "a cat" vs "a black cat": m = 2, P = 1, R = 2/3, 2 chunks
    p, r = 1.0, 2 / 3
    fmean = p * r / (0.85 * p + 0.15 * r)
    expected = fmean * (1 - 0.6 * (2 / 2) ** 0.2)
    assert meteor_exact(["a", "cat"], ["a", "black", "cat"]) == pytest.approx(expected)
    # corpus value: best reference per caption, averaged
    assert meteor_approx(["a cat", "x"], [["a black cat", "a cat"], ["y"]]) == pytest.approx(0.5)


def test_caption_avg7_mode():
    strict, avg7 = build_scorer("cider"), build_scorer("cider", mode="mcitlib_caption_avg7")
    assert isinstance(avg7, CaptionAvg7) and isinstance(strict, CIDErD)
    for metric in (strict, avg7):
        metric.update(PREDS[:3], REFS[:3])
        metric.update(PREDS[3:], REFS[3:])
    parts = avg7.compute_components()
    assert set(parts) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}
    assert parts["CIDEr"] == pytest.approx(strict.compute().item(), rel=1e-6)
    assert avg7.compute().item() == pytest.approx(sum(parts.values()) / 7, rel=1e-6)
    assert avg7.compute().item() < strict.compute().item()  # the other six are all <= 100
