"""The CVIT, D-MoLE and CLMM synthetic twins: names, templates, determinism, answers, vocabulary."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
from omegaconf import OmegaConf

from mcl.config import CONF_DIR
from mcl.data.synthetic import tasks as T
from mcl.data.synthetic import twins
from mcl.data.synthetic import world as W
from mcl.data.synthetic.twins import _common as C
from mcl.eval.scorers import iou_score, parse_box
from mcl.models.tiny import pre_tokenizer, words_of

TWINS = ["cvit", "dmole", "clmm"]
SCORERS = {"vqa", "exact", "mc", "iou", "cider"}
N = 40  # samples per task and check


def _bench(twin: str):
    return OmegaConf.load(CONF_DIR / "bench" / f"{twin}.yaml")


def _samples(recipe, split="train", n=N, heldout=False, seed=0):
    return [
        recipe.sample(W.sample_rng(seed, recipe.name, split, i), heldout=heldout) for i in range(n)
    ]


def _all_recipes():
    return [(tw, r) for tw in TWINS for r in twins.recipes(tw).values()]


ALL = _all_recipes()
IDS = [f"{tw}-{r.name}" for tw, r in ALL]


def _pattern(template: str) -> re.Pattern:
    """A template as a regex: each ``{field}`` matches any text."""
    return re.compile(re.sub(r"\\\{\w+\\\}", "(.+)", re.escape(template)))


@pytest.mark.parametrize("twin", TWINS)
def test_task_names_match_the_bench_yaml(twin):
    cfg = _bench(twin)
    assert list(twins.recipes(twin)) == list(cfg.tasks) + list(cfg.unseen)
    assert cfg.synthetic.twin == twin
    for name, r in twins.recipes(twin).items():
        assert r.name == name


@pytest.mark.parametrize(("twin", "recipe"), ALL, ids=IDS)
def test_templates_and_metadata(twin, recipe):
    assert len(recipe.train_templates) >= 8
    assert len(recipe.heldout_templates) >= 4
    assert not set(recipe.train_templates) & set(recipe.heldout_templates)
    assert len(set(recipe.train_templates[:5])) == 5  # the multi-type setting's 5 paraphrases
    assert recipe.scorer in SCORERS
    assert 0 < recipe.chance <= 100
    assert recipe.modality == "image"
    assert recipe.max_new_tokens >= 1


@pytest.mark.parametrize("twin", TWINS)
def test_first_five_templates_give_distinct_questions(twin):
    for recipe in twins.recipes(twin).values():
        image, fill, answer = recipe.make(W.sample_rng(0, recipe.name, "train", 0))
        questions = [t.format(**fill) for t in recipe.train_templates[:5]]
        assert len(set(questions)) == 5, recipe.name


@pytest.mark.parametrize(("twin", "recipe"), ALL, ids=IDS)
def test_deterministic(twin, recipe):
    for i in (0, 7):
        for heldout in (False, True):
            a, b = (
                recipe.sample(W.sample_rng(3, recipe.name, "test", i), heldout=heldout)
                for _ in range(2)
            )
            assert (a.question, a.answer, a.refs, a.meta) == (b.question, b.answer, b.refs, b.meta)
            assert a.image.tobytes() == b.image.tobytes()
            assert a.image.size == (W.IMAGE_SIZE, W.IMAGE_SIZE)
    # different indices give different samples
    ss = _samples(recipe, n=8)
    assert len({(s.question, s.answer, s.image.tobytes()) for s in ss}) > 1


@pytest.mark.parametrize(("twin", "recipe"), ALL, ids=IDS)
def test_heldout_templates_never_in_training(twin, recipe):
    patterns = [_pattern(t) for t in recipe.heldout_templates]
    for s in _samples(recipe, n=60):
        assert s.meta["template"] == "train"
        assert not any(p.fullmatch(s.question) for p in patterns), s.question
    for s in _samples(recipe, split="test", n=12, heldout=True):
        assert s.meta["template"] == "heldout"
        assert any(p.fullmatch(s.question) for p in patterns), s.question


@pytest.mark.parametrize("twin", TWINS)
def test_n_templates_limits_training_instructions(twin):
    for recipe in twins.recipes(twin).values():
        first = _pattern(recipe.train_templates[0])
        others = [_pattern(t) for t in recipe.train_templates[1:5]]
        for i in range(10):
            s = recipe.sample(W.sample_rng(0, recipe.name, "train", i), n_templates=1)
            assert first.fullmatch(s.question), (recipe.name, s.question)
        five = [first, *others]
        used = set()
        for i in range(60):
            s = recipe.sample(W.sample_rng(0, recipe.name, "train", i), n_templates=5)
            hits = {k for k, p in enumerate(five) if p.fullmatch(s.question)}
            assert hits, (recipe.name, s.question)
            used |= hits
        assert used == set(range(5)), recipe.name


@pytest.mark.parametrize(("twin", "recipe"), ALL, ids=IDS)
def test_answers_and_references(twin, recipe):
    for s in _samples(recipe) + _samples(recipe, "test", 12, heldout=True):
        assert s.answer and s.refs
        assert s.answer in s.refs
        assert all(isinstance(r, str) and r for r in s.refs)
        n_tokens = len(pre_tokenizer().pre_tokenize_str(s.answer))
        assert n_tokens <= recipe.max_new_tokens, s.answer  # generation can finish the answer
        if recipe.scorer == "cider":
            assert len([w for w in s.answer.split() if w != "."]) <= 16, s.answer
            assert s.answer.endswith(" .")  # CVIT's instruction-following rule for captions
            assert len(set(s.refs)) >= 3  # paraphrased references
        else:
            assert n_tokens <= 12, s.answer
        if recipe.scorer == "mc":
            assert s.answer in C.LETTERS
            assert f"{s.answer}. " in s.question
            opts = s.meta["options"]
            assert 3 <= len(opts) <= 4 and len(set(opts)) == len(opts)
            text = " ".join(f"{C.LETTERS[i]}. {o}" for i, o in enumerate(opts))
            assert text in s.question
        if recipe.scorer == "iou":
            box = parse_box(s.answer)
            assert box is not None
            assert box == pytest.approx(tuple(s.meta["box"]), abs=0.006)
            assert iou_score(s.answer, s.refs) == 1.0
        if recipe.scorer in ("vqa", "exact"):
            assert len(s.refs) in (1, 10)


def test_answer_words_are_in_the_vocabulary():
    vocab = words_of(twins.vocabulary_texts() + T.vocabulary_texts())
    missing = defaultdict(set)
    for tw, recipe in ALL:
        for s in _samples(recipe, n=150, seed=1) + _samples(recipe, "test", 30, heldout=True):
            for w in words_of([s.answer, s.question]) - vocab:
                missing[f"{tw}/{recipe.name}"].add(w)
    assert not missing, dict(missing)


def test_recipe_vocab_lists_every_answer_word():
    """Answers use only template words, the base world's words or the recipe's ``vocab``, so
    the tokenizer's vocabulary does not depend on which samples it happened to look at."""
    base = words_of(T.vocabulary_texts())
    for tw, recipe in ALL:
        allowed = base | words_of(recipe.vocab) | words_of(recipe.train_templates)
        for s in _samples(recipe, n=200, seed=2):
            assert words_of([s.answer]) <= allowed, (tw, recipe.name, s.answer)


def test_kvqa_is_language_heavy():
    """The answer depends on the question alone: the same question with different images
    always gets the same answer."""
    recipe = twins.recipes("dmole")["kvqa"]
    by_question = defaultdict(lambda: (set(), set()))
    for s in _samples(recipe, n=600):
        answers, images = by_question[s.question]
        answers.add(s.answer)
        images.add(s.image.tobytes())
    assert all(len(a) == 1 for a, _ in by_question.values())
    assert sum(len(i) >= 2 for _, i in by_question.values()) >= 10


def test_dmole_modality_balance():
    r = twins.recipes("dmole")
    assert r["skvg"].scorer == "iou" and r["ocrvqa"].scorer == "vqa"  # vision-heavy
    # the vision-heavy tasks' answers vary with the image for a fixed question
    by_question = defaultdict(set)
    for s in _samples(r["ocrvqa"], n=200):
        by_question[s.question].add(s.answer)
    assert max(len(a) for a in by_question.values()) >= 4


def test_vqav2_number_paraphrases():
    recipe = twins.recipes("cvit")["vqav2"]
    refs = [s.refs for s in _samples(recipe, n=200) if s.answer.isdigit()]
    assert refs and all(len(r) == 10 for r in refs)
    assert any(any(not x.isdigit() for x in r) for r in refs)  # "two" beside "2"


def test_vizwiz_has_unanswerable_questions():
    answers = [s.answer for s in _samples(twins.recipes("cvit")["vizwiz"], n=200)]
    share = answers.count(C.UNANSWERABLE) / len(answers)
    assert 0.1 < share < 0.4


def test_clmm_similar_pairs_share_format():
    r = twins.recipes("clmm")
    assert r["flickr30k"].train_templates == r["textcaps"].train_templates
    assert r["vqav2"].train_templates == r["gqa"].train_templates
    assert r["ocrvqa"].train_templates == r["textvqa"].train_templates
    # A-OKVQA asks OK-VQA's questions as multiple choice
    ok = {s.question.split("?")[0] for s in _samples(r["okvqa"], n=100)}
    aok = [s.question for s in _samples(r["aokvqa"], n=40)]
    assert all(any(q in a for q in ok) for a in aok)
    assert r["okvqa"].scorer == "vqa" and r["aokvqa"].scorer == "mc"


@pytest.mark.parametrize("twin", TWINS)
def test_generate_a_small_twin(tmp_path, twin):
    from mcl.data.shards import read_shards
    from mcl.data.synthetic.synth import generate

    cfg = _bench(twin)
    out = generate(
        tmp_path / twin, twin, list(cfg.tasks), list(cfg.unseen), train=3, test=3,
        shard_size=10, progress=False, twin=twin, instructions=5,
    )  # fmt: skip
    task = cfg.tasks[0]
    rows = read_shards(sorted((out / task).glob("train-*.tar")))
    assert len(rows) == 3 and all(r["task"] == task for r in rows)


def test_multiple_choice_options_are_fixed():
    """The tiny base learns letters only from a few fixed option lists of three (see _common):
    no shuffling, so the same options always come in the same order."""
    for tw, recipe in ALL:
        if recipe.scorer == "mc":
            lists = {tuple(s.meta["options"]) for s in _samples(recipe, n=80)}
            assert len(lists) <= 4 and {len(x) for x in lists} == {3}, (tw, recipe.name, lists)


def test_scienceqa_key_is_the_nth_option_for_n_shapes():
    from mcl.data.synthetic.twins import cvit

    for i in range(40):
        image, fill, letter = cvit.RECIPES["scienceqa"].make(W.sample_rng(0, "sqa", "train", i))
        rng = W.sample_rng(0, "sqa", "train", i)  # replay the draw of the shapes
        n = len(W.random_objects(rng, int(rng.integers(1, 4))))
        assert letter == C.LETTERS[n - 1]
        assert (fill["q"], fill["_meta"]["options"]) in [(q, o) for q, o in cvit._SQA]


def test_gqa_relations_point_the_right_way():
    from mcl.data.synthetic.twins import cvit

    for i in range(200):
        objs, anchor, rel, other = cvit._related_pair(W.sample_rng(0, "gqa-rel", "train", i))
        (ar, ac), (r, c) = divmod(anchor.cell, W.GRID), divmod(other.cell, W.GRID)
        assert len(objs) == 2 and anchor.colour != other.colour
        assert {
            "left of": r == ar and c < ac,
            "right of": r == ar and c > ac,
            "above": c == ac and r < ar,
            "below": c == ac and r > ar,
        }[rel]


def test_kvqa_answers_come_from_the_story():
    from mcl.data.synthetic.twins import dmole

    for s in _samples(dmole.RECIPES["kvqa"], n=100):
        entity = next(e for e in dmole.STORY if f"the {e} " in s.question)
        assert s.answer in dmole.STORY[entity]
        assert f" {s.answer} " in s.question  # the knowledge quoted in the question
