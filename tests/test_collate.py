"""Label masking and the tiny tokenizer/processor: the loss must cover answer tokens only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcl.data.synthetic import tasks as T
from mcl.data.synthetic import world as W
from mcl.models.mllm import IGNORE_INDEX
from mcl.models.tiny import build_tiny

TEXT = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    intermediate_size=64,
)
VISION = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    image_size=48,
    patch_size=16,
)


@pytest.fixture(scope="module")
def mllm():
    return build_tiny(TEXT, VISION)


def _samples(n=4, task="ground"):
    r = T.RECIPES[task]
    return [vars(r.sample(W.sample_rng(0, task, "train", i))) for i in range(n)]


def test_labels_cover_answer_and_eos_only(mllm):
    samples = _samples()
    batch = mllm.collator.train_batch(samples)
    tok = mllm.tokenizer
    for i, s in enumerate(samples):
        labels = batch["labels"][i]
        ids = batch["input_ids"][i]
        kept = labels[labels != IGNORE_INDEX].tolist()
        expected = tok(" " + s["answer"], add_special_tokens=False)["input_ids"] + [
            tok.eos_token_id
        ]
        assert kept == expected
        # the supervised tokens are the last non-pad tokens of the sequence, right after the prompt
        n = int(batch["attention_mask"][i].sum())
        assert ids[n - len(kept) : n].tolist() == kept
        assert (labels[: n - len(kept)] == IGNORE_INDEX).all()
        # image placeholders and padding never carry a label
        image = ids == mllm.model.config.image_token_id
        assert image.sum() == mllm.collator.image_seq_length
        assert (labels[image] == IGNORE_INDEX).all()
        assert (labels[n:] == IGNORE_INDEX).all()
    assert batch["n_skipped"].item() == 0


def test_tokenizer_keeps_special_tokens_and_numbers_whole(mllm):
    toks = mllm.tokenizer.tokenize(
        "USER: <image> where is the shape? ASSISTANT: [0.04, 0.29, 0.33, 1.00]"
    )
    assert "<image>" in toks and "0.29" in toks and "1.00" in toks
    assert "<unk>" not in toks
    assert toks.count("?") == 1 and toks.count("[") == 1


def test_every_world_answer_is_in_vocabulary(mllm):
    unk = mllm.tokenizer.unk_token_id
    for task, r in T.RECIPES.items():
        for i in range(30):
            s = r.sample(W.sample_rng(1, task, "test", i), heldout=bool(i % 2))
            ids = mllm.tokenizer(s.question + " " + s.answer, add_special_tokens=False)["input_ids"]
            assert unk not in ids, (task, s.question, s.answer)


def test_corrupt_samples_are_dropped_and_counted(mllm):
    batch = mllm.collator.train_batch([None, *_samples(2), None])
    assert batch["input_ids"].shape[0] == 2
    assert batch["n_skipped"].item() == 2


def test_forward_loss_and_batched_generation_match_per_sample(mllm):
    samples = _samples(5, task="count")
    batch = mllm.collator.train_batch(samples)
    batch.pop("n_skipped")
    out = mllm.model(**batch)
    assert torch.isfinite(out.loss)
    # left-padded batched generation must give what one-by-one generation gives
    rng = np.random.default_rng(0)
    for s in samples:  # vary prompt lengths so padding matters
        s["question"] = " ".join(["count"] * int(rng.integers(1, 6))) + " " + s["question"]
    batched = mllm.generate(mllm.collator.prompt_batch(samples), max_new_tokens=5)
    single = [mllm.generate(mllm.collator.prompt_batch([s]), max_new_tokens=5)[0] for s in samples]
    assert batched == single


def test_benchmark_words_extend_the_vocabulary_without_touching_the_base():
    from mcl.models.tiny import extend_vocabulary

    m = build_tiny(TEXT, VISION, seed=0)
    ids = m.tokenizer("describe the image .", add_special_tokens=False)["input_ids"]
    batch = m.collator.train_batch(_samples(2, "color"))
    with torch.no_grad():
        before = m.model(**batch).logits
    n = len(m.tokenizer)
    added = extend_vocabulary(m, ["the zebra sings", "a quokka"])
    assert added == ["quokka", "sings", "zebra"]
    assert len(m.tokenizer) == n + 3 and m.model.get_input_embeddings().weight.shape[0] == n + 3
    assert m.tokenizer("describe the image .", add_special_tokens=False)["input_ids"] == ids
    new_ids = m.tokenizer("zebra quokka", add_special_tokens=False)["input_ids"]
    assert sorted(new_ids) == [n, n + 2] and m.tokenizer.unk_token_id not in new_ids
    with torch.no_grad():
        after = m.model(**m.collator.train_batch(_samples(2, "color"))).logits
    assert torch.equal(after[..., :n], before)  # the base's behaviour on its own words is intact
    # a word's rows depend on the word only, not on what else was added
    m2 = build_tiny(TEXT, VISION, seed=0)
    extend_vocabulary(m2, ["zebra"])
    z1 = m.model.get_input_embeddings().weight[n + 2]
    z2 = m2.model.get_input_embeddings().weight[n]
    assert torch.equal(z1, z2)
    assert extend_vocabulary(m, ["zebra"]) == []


def test_cached_token_ids_equal_the_tokenizers_and_batches_are_unchanged(mllm):
    from mcl.models.mllm import ChatCollator

    col = mllm.collator
    texts = ["what color is the square?", "red", "what color is the square?", "a b c"]
    expect = mllm.tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert col.token_ids(texts) == expect
    assert col.token_ids(texts[:1])[0] is col.token_ids(texts[2:3])[0]  # served from the cache
    # a collator with a warm cache builds the very same batch as a fresh one
    samples = _samples(8, "color")
    warm = col.train_batch(samples)
    cold = ChatCollator(mllm.processor, col.image_seq_length).train_batch(samples)
    for k, v in cold.items():
        assert torch.equal(v, warm[k]) if torch.is_tensor(v) else v == warm[k]
