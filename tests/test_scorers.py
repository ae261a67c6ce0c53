"""Scorer rules on hand-checked cases: VQA normalisation and soft accuracy, exact match,
multiple-choice letter extraction, grounding IoU, the torchmetrics sum/count plumbing, the
registry, and each compatibility mode against strict on an example where they differ."""

import math

import pytest
import torch

from mcl.eval.caption import BLEU4, CaptionAvg7, CIDErBestRef, CIDErD, RougeL, cider_d
from mcl.eval.scorers import (
    SCORER_MODES,
    SCORER_NAMES,
    CoinGroundingIoU,
    CoinVQAExact,
    ExactMatch,
    GroundingIoU,
    LowerExact,
    MCITlibContains,
    MultipleChoice,
    TwoWayContains,
    VQAAccuracy,
    box_iou,
    build_scorer,
    coin_iou_score,
    coin_parse_box,
    coin_vqa_exact_score,
    effective_scorer_mode,
    extract_choice,
    iou_score,
    lower_exact_score,
    mcitlib_contains_score,
    mif_ok,
    normalize_vqa,
    parse_box,
    score_records,
    scorer_mode_applies,
    task_modes,
    two_way_contains_score,
    vqa_score,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two", "2"),
        ("ten dogs", "10 dogs"),
        ("none", "0"),
        ("The red one.", "red 1"),  # article dropped, number word, final period
        ("an apple", "apple"),
        ("a", ""),
        ("Yes!", "yes"),
        ("yes, sir", "yes sir"),  # comma touching a space is deleted
        ("black-and-white", "black and white"),  # mark inside a word becomes a space
        ("1,000", "1000"),  # digit,digit: punctuation deleted, not spaced
        ("3.5", "3.5"),  # period inside a number kept
        ("It is 3.", "it is 3"),  # period not followed by a digit dropped
        ("  left\tside\n", "left side"),
        ("dont", "don't"),
        ("Isnt it", "isn't it"),
        ("couldntve", "couldn't've"),
        ("well", "well"),  # not read as "we'll"
        ("3:30", "3:30"),  # ":" is not in the official punctuation list
        ("red/blue", "red blue"),  # "/" inside a word becomes a space
        ("What?", "what"),
        ("Three Cats", "3 cats"),
        ("(a) dog", "dog"),  # "(" -> space, ")" touches a space -> deleted; "a" is an article
    ],
)
def test_normalize_vqa(raw, expected):
    assert normalize_vqa(raw) == expected


def test_vqa_ten_refs_leave_one_out():
    # 10 refs, 2 equal "2": the 2 subsets without a match-ref have 1 match -> 1/3 each,
    # the 8 others have 2 matches -> 2/3 each: (2*1/3 + 8*2/3) / 10 = 18/30 = 0.6
    refs = ["2", "two", "3", "3", "3", "3", "4", "4", "4", "4"]
    assert vqa_score("Two", refs) == pytest.approx(0.6)
    # 3 matches: 3 subsets keep 2 -> 2/3, 7 keep 3 -> 1: (3*2/3 + 7) / 10 = 0.9
    assert vqa_score("3", ["3", "3", "3"] + ["x"] * 7) == pytest.approx(0.9)
    # 4 matches: every subset keeps >= 3 -> 1.0
    assert vqa_score("3", ["3"] * 4 + ["x"] * 6) == pytest.approx(1.0)
    assert vqa_score("5", ["3"] * 10) == 0.0


def test_vqa_few_refs():
    assert vqa_score("two", ["2"]) == 1.0  # one ref: normalised exact match
    assert vqa_score("cat", ["dog", "Cat"]) == 1.0  # two refs: any match
    assert vqa_score("cat", ["dog", "cow"]) == 0.0
    assert vqa_score("cat", ["cat", "dog", "cow"]) == pytest.approx(1 / 3)  # 3..9: min(m/3, 1)
    assert vqa_score("cat", ["cat"] * 3 + ["dog"]) == 1.0
    with pytest.raises(ValueError):
        vqa_score("cat", [])


def test_vqa_metric_mean_times_100():
    metric = VQAAccuracy()
    metric.update(["Two", "cat"], [["2", "two", "3", "3", "3", "3", "4", "4", "4", "4"], ["dog"]])
    metric.update(["yes"], [["Yes"]])
    # (0.6 + 0 + 1) / 3 * 100
    assert metric.compute().item() == pytest.approx(160 / 3, rel=1e-6)
    assert metric.count.item() == 3


def test_states_reduce_by_sum():
    """DDP reduction sums `sum` and `count`; merging two ranks' states gives the global mean."""
    rank0, rank1 = ExactMatch(), ExactMatch()
    rank0.update(["a dog"], [["dog"]])
    rank1.update(["cat", "cow"], [["cat"], ["dog"]])
    rank0.merge_state(rank1)
    assert rank0.compute().item() == pytest.approx(200 / 3, rel=1e-6)
    assert set(rank0._reductions) >= {"sum", "count"}


def test_empty_metric_is_nan_not_zero():
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(build_scorer("exact").compute().item())


def test_exact_match():
    metric = ExactMatch()
    assert metric.score_one("The Eiffel Tower.", ["eiffel tower"]) == 1.0
    assert metric.score_one("three", ["4", "3"]) == 1.0
    assert metric.score_one("tower", ["eiffel tower"]) == 0.0
    with pytest.raises(ValueError):
        metric.update(["a", "b"], [["a"]])


@pytest.mark.parametrize(
    ("pred", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("C) a dog", "C"),
        ("the answer is B", "B"),
        ("The answer is D because it is red", "D"),
        ("Answer: (c)", "C"),
        ("I think (E) fits", "E"),
        ("the answer is a cat", None),  # "a" is an article, not option A
        ("A dog", None),
        ("no idea", None),
    ],
)
def test_extract_choice_letters(pred, letter):
    assert extract_choice(pred) == letter


def test_extract_choice_option_text():
    options = ["cat", "dog", "red bird"]
    assert extract_choice("Dog.", options) == "B"
    assert extract_choice("it is a red bird", options) == "C"
    assert extract_choice("a cat or a dog", options) is None  # two options named: ambiguous
    assert extract_choice("X", {"X": "zebra", "Y": "yak"}) is None  # only A-H are letters
    assert extract_choice("yak", {"X": "zebra", "Y": "yak"}) == "Y"


def test_multiple_choice_metric():
    metric = MultipleChoice()
    options = [["cat", "dog"], ["red", "blue"], None, None]
    metric.update(["b", "red", "(C)", "D"], [["B"], ["A"], ["C"], ["A"]], options=options)
    # correct, correct (text "red" = option A), correct, wrong -> 75
    assert metric.compute().item() == pytest.approx(75.0)
    assert metric.score_one("dog", ["dog"], options=["cat", "dog"]) == 1.0  # key given as text


def test_parse_box():
    assert parse_box("[ 0.05 , 0.30 , 0.40 , 0.62 ]") == (0.05, 0.30, 0.40, 0.62)
    assert parse_box("object 2 is at [0.1, 0.2, 0.3, 0.4]") == (0.1, 0.2, 0.3, 0.4)
    assert parse_box("x1: 0.1, y1: 0.2, x2: .5, y2: 0.6") == (0.1, 0.2, 0.5, 0.6)
    assert parse_box("[0.5, 0.6, 0.1, 0.2]") == (0.1, 0.2, 0.5, 0.6)  # corners reordered
    assert parse_box("[0.1, 0.2, 0.3]") is None
    assert parse_box("on the left") is None


def test_box_iou_hand_computed():
    # overlap [0.5,1]x[0,1] = 0.5; union 1 + 1 - 0.5 = 1.5 -> 1/3
    assert box_iou((0, 0, 1, 1), (0.5, 0, 1.5, 1)) == pytest.approx(1 / 3)
    # inner box area 0.25 inside area 0.5 -> 0.5
    assert box_iou((0, 0, 1, 0.5), (0, 0, 0.5, 0.5)) == pytest.approx(0.5)
    assert box_iou((0, 0, 0.2, 0.2), (0.5, 0.5, 1, 1)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_grounding_metric_counts_unparsable():
    metric = GroundingIoU()
    preds = ["[0.0, 0.0, 0.5, 0.5]", "[0.5, 0, 1.5, 1]", "[ 0 , 0 , 0.5 , 0.5 ]", "left"]
    refs = [["[0, 0, 1, 0.5]"], ["[0, 0, 1, 1]"], ["[0.6, 0.6, 1, 1]"], ["[0, 0, 1, 1]"]]
    metric.update(preds, refs)
    # IoU 0.5 (hit, threshold inclusive), 1/3 (miss), 0 (miss), unparsable (miss) -> 25
    assert metric.compute().item() == pytest.approx(25.0)
    assert metric.unparsable.item() == 1
    assert metric.score_one("left", ["[0, 0, 1, 1]"]) == 0.0
    with pytest.raises(ValueError, match="no box"):
        metric.score_one("[0, 0, 1, 1]", ["somewhere"])


def test_build_scorer():
    assert isinstance(build_scorer("vqa"), VQAAccuracy)
    assert isinstance(build_scorer("exact"), ExactMatch)
    assert isinstance(build_scorer("mc"), MultipleChoice)
    assert isinstance(build_scorer("iou"), GroundingIoU)
    assert isinstance(build_scorer("cider"), CIDErD)
    assert isinstance(build_scorer("bleu4"), BLEU4)
    assert isinstance(build_scorer("rougeL"), RougeL)
    assert build_scorer("vqa") is not build_scorer("vqa")
    with pytest.raises(ValueError, match="unknown scorer 'bleu'; choose one of: vqa, exact"):
        build_scorer("bleu")


def test_build_scorer_modes_and_errors():
    assert SCORER_NAMES == ("vqa", "exact", "mc", "iou", "cider", "bleu4", "rougeL")
    assert SCORER_MODES[0] == "strict" and len(SCORER_MODES) == 8
    expected = {
        ("vqa", "coin_vqa_exact"): CoinVQAExact,
        ("vqa", "mcitlib_contains"): MCITlibContains,
        ("exact", "mcitlib_contains"): MCITlibContains,
        ("iou", "coin_grounding"): CoinGroundingIoU,
        ("cider", "mcitlib_caption_avg7"): CaptionAvg7,
        ("cider", "best_ref_cider"): CIDErBestRef,
        ("exact", "two_way_contains"): TwoWayContains,
        ("vqa", "two_way_contains"): TwoWayContains,
        ("exact", "lower_exact"): LowerExact,
        ("vqa", "lower_exact"): LowerExact,
    }
    for name in SCORER_NAMES:
        strict_type = type(build_scorer(name))
        for mode in SCORER_MODES:
            applies = scorer_mode_applies(name, mode)
            assert applies == (mode == "strict" or (name, mode) in expected)
            assert effective_scorer_mode(name, mode) == (mode if applies else "strict")
            # a mode changes only the scorers it concerns
            want = expected.get((name, mode), strict_type)
            assert type(build_scorer(name, mode=mode)) is want
    with pytest.raises(
        ValueError, match="unknown scorer mode 'coin'; choose one of: strict, coin_"
    ):
        build_scorer("vqa", mode="coin")
    with pytest.raises(ValueError, match="unknown scorer mode"):
        scorer_mode_applies("vqa", "loose")
    with pytest.raises(ValueError, match="unknown scorer 'CIDEr'"):
        scorer_mode_applies("CIDEr", "strict")
    for bad in (lambda: build_scorer("x"), lambda: build_scorer("vqa", mode="x")):
        with pytest.raises(ValueError) as err:
            bad()
        assert "\n" not in str(err.value)


def test_coin_vqa_exact_mode():
    ten = ["2"] * 9 + ["two"]
    assert vqa_score("Two", ten) == 1.0
    assert coin_vqa_exact_score("Two", ten) == 0.0  # no number-word mapping
    assert coin_vqa_exact_score("YES ", ["yes", "no"]) == 1.0  # case-insensitive, stripped
    assert coin_vqa_exact_score("no", ["yes", "no", "no", "no"]) == 0.0  # first reference only
    assert vqa_score("no", ["yes", "no", "no", "no"]) == 1.0
    assert coin_vqa_exact_score("yes.", ["yes"]) == 0.0  # punctuation is not stripped
    strict, coin = build_scorer("vqa"), build_scorer("vqa", mode="coin_vqa_exact")
    for metric in (strict, coin):
        metric.update(["Two", "yes"], [ten, ["Yes"]])
        metric.update(["no"], [["yes", "no", "no", "no"]])
    assert strict.compute().item() == pytest.approx(100.0)
    assert coin.compute().item() == pytest.approx(100 / 3, rel=1e-6)
    # exact match and grounding stay strict under this mode
    assert type(build_scorer("exact", mode="coin_vqa_exact")) is ExactMatch
    assert type(build_scorer("iou", mode="coin_vqa_exact")) is GroundingIoU


def test_mcitlib_contains_mode():
    assert mcitlib_contains_score("It is a black cat.", ["cat"]) == 1.0
    assert ExactMatch().score_one("It is a black cat.", ["cat"]) == 0.0
    assert mcitlib_contains_score("Concatenate", ["cat"]) == 1.0  # plain substring
    assert mcitlib_contains_score("1,000 people", ["1000"]) == 1.0  # "," dropped
    assert mcitlib_contains_score("dog", ["cat", "dog"]) == 1.0
    assert mcitlib_contains_score("a dog", ["cat"]) == 0.0
    # a prediction containing "Unanswerable" is skipped (0) even when the reference agrees
    assert mcitlib_contains_score("Unanswerable", ["unanswerable"]) == 0.0
    assert (
        mcitlib_contains_score("unanswerable", ["unanswerable"]) == 1.0
    )  # check is case-sensitive
    assert ExactMatch().score_one("Unanswerable", ["unanswerable"]) == 1.0
    strict, mcit = build_scorer("exact"), build_scorer("exact", mode="mcitlib_contains")
    preds = ["It is a black cat.", "Unanswerable", "dog"]
    refs = [["cat"], ["unanswerable"], ["dog"]]
    for metric in (strict, mcit):
        metric.update(preds[:2], refs[:2])
        metric.update(preds[2:], refs[2:])
    assert strict.compute().item() == pytest.approx(200 / 3, rel=1e-6)
    # the skipped sample stays in the denominator: 2 of 3, not 2 of 2
    assert mcit.compute().item() == pytest.approx(200 / 3, rel=1e-6)
    assert mcit.count.item() == 3 and mcit.skipped.item() == 1
    assert isinstance(build_scorer("vqa", mode="mcitlib_contains"), MCITlibContains)
    assert type(build_scorer("mc", mode="mcitlib_contains")) is MultipleChoice


def test_coin_parse_box_drops_characters():
    # brackets deleted, then [1:-1] cuts the first and the last character
    assert coin_parse_box("[0.12, 0.30, 0.56, 0.78]") == (0.12, 0.30, 0.56, 0.7)
    assert coin_parse_box(" [0.12, 0.30, 0.56, 0.78]") == (0.12, 0.30, 0.56, 0.7)  # one space
    assert coin_parse_box("[1.0, 0.2, 0.5, 0.6]") == (0.0, 0.2, 0.5, 0.0)  # ".0" and "0."
    assert coin_parse_box("[0, 0, 1, 1]") is None  # first number eaten whole
    assert coin_parse_box("The box is [0.1, 0.2, 0.3, 0.4]") is None  # text around it
    assert coin_parse_box("[0.1, 0.2, 0.3]") is None
    assert coin_parse_box("") is None
    assert parse_box("[0.12, 0.30, 0.56, 0.78]") == (0.12, 0.30, 0.56, 0.78)


def test_coin_grounding_mode():
    ref = ["[0.2, 0.2, 0.6, 0.6]"]
    # y2 "0.6" -> "0." = 0.0: a degenerate box
    assert iou_score("[0.2, 0.2, 0.6, 0.6]", ref) == 1.0
    assert coin_iou_score("[0.2, 0.2, 0.6, 0.6]", ref) == 0.0
    assert coin_iou_score("[0.2, 0.2, 0.6, 0.61]", ref) == 1.0  # a 2-decimal y2 survives
    # IoU exactly 0.5: strict counts it (>=), CoIN does not (>)
    half = "[0.0, 0.0, 1.0, 0.50]"
    assert iou_score(half, ["[0, 0, 1, 1]"]) == 1.0
    assert coin_iou_score(half, ["[0, 0, 1, 1]"]) == 0.0
    strict, coin = build_scorer("iou"), build_scorer("iou", mode="coin_grounding")
    preds = ["[0.2, 0.2, 0.6, 0.6]", "box: [0.2, 0.2, 0.6, 0.61]", "[0.2, 0.2, 0.6, 0.61]"]
    for metric in (strict, coin):
        metric.update(preds[:1], [ref])
        metric.update(preds[1:], [ref, ref])
    assert strict.compute().item() == pytest.approx(100.0)
    assert coin.compute().item() == pytest.approx(100 / 3, rel=1e-6)
    assert strict.unparsable.item() == 0 and coin.unparsable.item() == 1
    with pytest.raises(ValueError, match="no box"):
        coin_iou_score("[0.1, 0.1, 0.5, 0.5]", ["left"])


def test_compute_returns_float_tensor():
    metric = build_scorer("vqa")
    metric.update(["yes"], [["yes"]])
    out = metric.compute()
    assert isinstance(out, torch.Tensor) and out.is_floating_point() and out.item() == 100.0


# ---------------------------------------------------------------- SMoLoRA's conventions
def test_two_way_contains_matches_either_direction():
    assert two_way_contains_score("Tabby cat", ["tabby"]) == 1.0  # reference inside prediction
    assert two_way_contains_score("tabby", ["tabby cat"]) == 1.0  # prediction inside reference
    assert two_way_contains_score("dog", ["tabby cat"]) == 0.0
    assert two_way_contains_score("  ", ["tabby cat"]) == 0.0  # empty would match everything
    assert exact_match_differs_from_two_way()


def exact_match_differs_from_two_way() -> bool:
    m, strict = build_scorer("exact", mode="two_way_contains"), build_scorer("exact")
    m.update(["tabby"], [["tabby cat"]])
    strict.update(["tabby"], [["tabby cat"]])
    return float(m.compute()) == 100.0 and float(strict.compute()) == 0.0


def test_lower_exact_and_unanswerable():
    assert lower_exact_score(" Harry Potter ", ["harry potter"]) == 1.0
    assert lower_exact_score("the harry potter", ["harry potter"]) == 0.0  # no article dropping
    assert lower_exact_score("Unanswerable", ["Unanswerable"]) == 0.0
    assert exact_match_score_strict("the harry potter", "harry potter") == 1.0


def exact_match_score_strict(pred, ref) -> float:
    m = build_scorer("exact")
    m.update([pred], [[ref]])
    return float(m.compute()) / 100


CAPS = [
    ["a red cat sits on a mat .", "there is a cat .", "a dog runs in the park ."],
    ["a blue car on the road .", "a truck parked near a house ."],
    ["two birds fly over the sea .", "birds in the sky ."],
]


def test_best_reference_cider_uses_only_the_best_reference():
    preds = ["a red cat sits on a mat .", "a blue car on a road .", "birds fly over the sea ."]
    per_ref = cider_d(preds, CAPS, per_reference=True)
    assert [len(s) for s in per_ref] == [3, 2, 2]
    # a caption's CIDEr-D is the mean of its per-reference terms
    assert cider_d(preds, CAPS)[1] == pytest.approx([sum(s) / len(s) for s in per_ref])
    best = [[refs[max(range(len(s)), key=s.__getitem__)]] for refs, s in zip(CAPS, per_ref)]
    assert best[0] == ["a red cat sits on a mat ."] and best[1] == ["a blue car on the road ."]
    m = build_scorer("cider", mode="best_ref_cider")
    m.update(preds, CAPS)
    assert float(m.compute()) == pytest.approx(cider_d(preds, best)[0] * 100, rel=1e-6)
    strict = build_scorer("cider")
    strict.update(preds, CAPS)
    assert float(m.compute()) > float(strict.compute())  # optimistic, as the spec warns


@pytest.mark.parametrize(
    ("scorer", "pred", "refs", "ok"),
    [
        ("mc", " b ", ["A"], True),  # one letter, right or wrong
        ("mc", "B.", ["B"], False),
        ("mc", "the answer is B", ["B"], False),
        ("vqa", "red car", ["blue"], True),  # <= 2 words
        ("vqa", "a red car", ["blue"], False),
        ("exact", "Golden Gate Bridge", ["golden gate bridge"], True),  # equals the answer
        ("cider", "a cat sits on the mat.", ["x"], True),  # ends with "." and > 4 words
        ("cider", "a cat sits on the mat", ["x"], False),  # no final period
        ("cider", "a cat.", ["there is a cat."], True),  # short but inside a reference
        ("cider", "a dog.", ["there is a cat."], False),
    ],
)
def test_mif_compliance_rule(scorer, pred, refs, ok):
    assert mif_ok(scorer, pred, refs) is ok


def test_task_modes_single_map_preset_and_errors():
    scorers = {"vqav2": "vqa", "gqa": "exact", "flickr30k": "cider", "sqa": "mc"}
    assert task_modes("coin_vqa_exact", scorers) == {
        "vqav2": "coin_vqa_exact",
        "gqa": "strict",
        "flickr30k": "strict",
        "sqa": "strict",
    }
    presets = {"paper": {"vqav2": "coin_vqa_exact", "flickr30k": "best_ref_cider"}}
    by_preset = task_modes("paper", scorers, presets)
    assert by_preset == task_modes(presets["paper"], scorers)
    assert by_preset["flickr30k"] == "best_ref_cider" and by_preset["gqa"] == "strict"
    with pytest.raises(ValueError, match="does not apply to task gqa") as e:
        task_modes({"gqa": "best_ref_cider"}, scorers)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="not in this benchmark: nope"):
        task_modes({"nope": "strict"}, scorers)
    with pytest.raises(ValueError, match="or a preset of this benchmark: paper"):
        task_modes("smolora", scorers, presets)


def test_score_records_splits_heldout_and_counts_mif():
    records = [
        {"pred": "red", "answers": ["red"], "heldout": False},
        {"pred": "blue", "answers": ["red"], "heldout": False},
        {"pred": "red", "answers": ["red"], "heldout": True},
        {"pred": "it is a red one", "answers": ["red"], "heldout": True},
    ]
    s = score_records(records, "exact", "strict", extras=("mif",))
    assert s["score"] == 50.0 and s["held"] == 0.0 + 50.0 and s["extras"] == {"mif": 75.0}
    assert score_records(records[:2], "exact")["held"] is None
    assert score_records(records, "exact")["extras"] == {}  # a bench declaring none gets none
    assert score_records([], "exact", extras=["mif"])["extras"] == {"mif": None}
    with pytest.raises(ValueError, match="unknown extra score 'nope'; registered: mif"):
        score_records(records, "exact", extras=["nope"])
