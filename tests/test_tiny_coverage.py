"""The tiny base's word-level vocabulary does not cover real text: a run on a real benchmark says
how much of it the base can read, in one line, before training."""

from __future__ import annotations

import json
from pathlib import Path

from mcl.data.bench import Benchmark
from mcl.data.prepare import prepare
from mcl.data.synthetic import tasks as T
from mcl.data.synthetic import twins
from mcl.models.tiny import build_tokenizer
from mcl.models.tiny_coverage import coverage, notice

from .test_prepare import write_coin

FIXTURE = Path(__file__).parent / "fixtures" / "llava" / "cvit"


def _vocab() -> dict:
    """The tiny base's vocabulary: its world's words plus the twins' (as load_tiny_base adds)."""
    return build_tokenizer(T.vocabulary_texts(), twins.vocabulary_texts()).get_vocab()


def _fixture_texts() -> tuple[list[str], list[str]]:
    questions, answers = [], []
    for path in sorted(FIXTURE.glob("*/train.json")):
        for rec in json.loads(path.read_text()):
            questions.append(rec["conversations"][0]["value"])
            answers.append(rec["conversations"][1]["value"])
    return questions, answers


def test_the_tiny_vocabulary_misses_much_of_real_text():
    vocab = _vocab()
    questions, answers = _fixture_texts()
    everything, answered = coverage(vocab, questions + answers), coverage(vocab, answers)
    # real LLaVA-1.5 records (TextVQA, GQA, ImageNet, Places365, ScienceQA, Flickr30k): under
    # half of their distinct words, and of their answers' words, are in the vocabulary (29%, 33%)
    assert 0.1 < everything < 0.5 and 0.1 < answered < 0.5
    assert coverage(vocab, ["what colour is the square ?", "red"]) == 1.0
    assert coverage(vocab, []) is None


def test_a_real_benchmark_gets_one_line_naming_the_share(tmp_path):
    out = tmp_path / "coin"
    prepare(
        "coin", write_coin(tmp_path / "CoIN", 2, 2), out, tasks=["gqa", "vizwiz"], progress=False
    )
    bench = Benchmark(out, ["gqa", "vizwiz"], [], "real")
    line = notice(_vocab(), bench, "tiny_it")
    assert "\n" not in line and line.startswith("[mcl] model=tiny_it knows ")
    assert "of this benchmark's words" in line and "real scores need a real model" in line
    assert "model=llava15_7b" in line
