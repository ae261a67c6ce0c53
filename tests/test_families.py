"""Real MLLM families (``mcl.models.hf``): LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL and InternVL (HF
format), each a tiny random-weight model of the family's own transformers class with the
family's own processor class (image processor configured for 32-48 px images, an offline
word-level tokenizer with the family's special tokens, a minimal chat template that puts the
image placeholder before the text). Each is saved with ``save_pretrained`` and loaded back through
``load_hf``; then collation (answer-only labels, the processor's image-token count), one
seq_lora optimizer step, batched generation, and adapter injection of seq_lora and two
mixture methods. Methods that run the vision tower on ``pixel_values`` themselves refuse these
models in one line. Nothing is downloaded.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import transformers as tf
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tokenizers import AddedToken, Tokenizer, models
from transformers import PreTrainedTokenizerFast

from mcl.adapters.moe_lora import MoELoRALinear
from mcl.adapters.smolora import SMoLoRALinear
from mcl.config import ConfigError
from mcl.data.synthetic import tasks as T
from mcl.models.hf import FAMILIES, load_hf, load_llava, processor_class, wrap_hf
from mcl.models.mllm import IGNORE_INDEX, model_inputs
from mcl.models.tiny import IMAGE_MEAN, IMAGE_STD, SPECIALS, build_tiny, pre_tokenizer, words_of
from mcl.models.xmodal import attach_xmodal
from tests.conftest import compose_cfg, method_cfg
from tests.test_collate import TEXT, VISION

pytestmark = pytest.mark.filterwarnings("ignore:.*self.trainer. reference is not registered")
LAYERS = 2
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    " [/INST]{% else %}{% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}"
    "{% endfor %}"
)
INTERNVL_TEMPLATE = QWEN_TEMPLATE.replace(
    "<|vision_start|><|image_pad|><|vision_end|>", "<IMG_CONTEXT>\n"
)


def family_tokenizer(specials: list[str], named: dict[str, str], eos: str):
    """The tiny model's word-level vocabulary plus the family's special tokens (registered as
    special, so adjacent ones like ``<|vision_start|><|image_pad|>`` split)."""
    words = sorted(words_of(T.vocabulary_texts()) | {"user", "assistant"} - set(SPECIALS))
    toks = SPECIALS + [s for s in specials if s not in SPECIALS]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(toks + words)}, "<unk>"))
    tk.pre_tokenizer = pre_tokenizer()
    tk.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in toks])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token=eos,
        extra_special_tokens=named,
        padding_side="right",
    )


def text_config(tok, model_type: str, **kw) -> dict:
    return {
        "model_type": model_type,
        "vocab_size": len(tok),
        "hidden_size": 64,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 512,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "tie_word_embeddings": False,
        **kw,
    }


def build_llava_next():
    tok = family_tokenizer(["<image>", "[INST]", "[/INST]"], {"image_token": "<image>"}, "</s>")
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    image_processor = tf.LlavaNextImageProcessorPil(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=pinpoints,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )
    processor = processor_class("llava_next")(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=16,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=MISTRAL_TEMPLATE,
    )
    config = tf.LlavaNextConfig(
        text_config=text_config(tok, "llama"),
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "image_size": 32,
            "patch_size": 16,
        },
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=4,
    )
    return tf.LlavaNextForConditionalGeneration(config), processor


def build_qwen(family: str):
    specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
    specials += ["<|image_pad|>", "<|video_pad|>"]
    named = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
    tok = family_tokenizer(specials, named, "<|im_end|>")
    image_processor = tf.Qwen2VLImageProcessorPil(
        size={"shortest_edge": 16 * 16, "longest_edge": 48 * 48},  # pixel budget
        patch_size=8,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )
    processor = processor_class(family)(
        image_processor=image_processor, tokenizer=tok, chat_template=QWEN_TEMPLATE
    )
    ids = {
        "image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
    }
    # M-RoPE: the head's 8 frequency pairs split over (time, height, width)
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    vision = {"patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2, "num_heads": 2}
    if family == "qwen2_vl":
        config = tf.Qwen2VLConfig(
            text_config=text_config(tok, "qwen2_vl_text", rope_parameters=rope),
            vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 64, **vision},
            **ids,
        )
        return tf.Qwen2VLForConditionalGeneration(config), processor
    config = tf.Qwen2_5_VLConfig(
        text_config=text_config(tok, "qwen2_5_vl_text", rope_parameters=rope),
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "out_hidden_size": 64,
            "window_size": 32,  # 2x2 merged patches per window: block 0 windowed, 1 full
            "fullatt_block_indexes": [1],
            **vision,
        },
        **ids,
    )
    return tf.Qwen2_5_VLForConditionalGeneration(config), processor


def build_internvl():
    specials = ["<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    named = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }
    tok = family_tokenizer(specials, named, "<|im_end|>")
    image_processor = tf.GotOcr2ImageProcessorPil(
        size={"height": 32, "width": 32}, image_mean=IMAGE_MEAN, image_std=IMAGE_STD
    )
    processor = processor_class("internvl")(
        image_processor=image_processor,
        tokenizer=tok,
        image_seq_length=4,  # (32 / 8)^2 patches x downsample_ratio^2
        chat_template=INTERNVL_TEMPLATE,
    )
    config = tf.InternVLConfig(
        text_config=text_config(tok, "qwen2"),
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "image_size": [32, 32],
            "patch_size": [8, 8],
        },
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=4,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    return tf.InternVLForConditionalGeneration(config), processor


# family -> builder, image tokens per 48x48 image, the projector and its linears
SPEC = {
    # AnyRes: the 48 px image fits the 64x64 pinpoint: base 2x2 patches + the 4x4 grid + one
    # newline per grid row = 4 + 16 + 4
    "llava_next": (build_llava_next, 24, ("multi_modal_projector", ("linear_1", "linear_2"))),
    # 48 px / 8 px patches = 6x6, merged 2x2 -> 9
    "qwen2_vl": (lambda: build_qwen("qwen2_vl"), 9, ("visual.merger", ("mlp.0", "mlp.2"))),
    "qwen2_5_vl": (lambda: build_qwen("qwen2_5_vl"), 9, ("visual.merger", ("mlp.0", "mlp.2"))),
    # tiles of 32 px: a 2x2 grid + the thumbnail = 5 tiles of 4 tokens
    "internvl": (build_internvl, 20, ("multi_modal_projector", ("linear_1", "linear_2"))),
}
NEW = list(SPEC)
PRESETS = {
    "llava_next_7b": "llava_next",
    "qwen2_vl_7b": "qwen2_vl",
    "qwen2_5_vl_7b": "qwen2_5_vl",
    "internvl3_8b": "internvl",
}


def _samples(n: int = 2, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [vars(T.pretrain_sample(rng)) for _ in range(n)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every family's tiny model + processor written with save_pretrained, and the in-memory
    originals (built once per module)."""
    out = {}
    for family, (builder, _, _) in SPEC.items():
        torch.manual_seed(0)
        model, processor = builder()
        path = tmp_path_factory.mktemp(family)
        model.save_pretrained(path)
        processor.save_pretrained(path)
        out[family] = (path, model.eval(), processor)
    return out


def _load(saved, family):
    return load_hf(str(saved[family][0]), family, dtype="float32")


def _method(name: str, **over):
    return instantiate(OmegaConf.merge(method_cfg(name), over))


def _image_token_id(mllm) -> int:
    cfg = mllm.model.config
    return getattr(cfg, "image_token_id", None) or cfg.image_token_index


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("family", NEW)
def test_load_hf_reads_the_family_and_its_processor_from_disk(saved, family):
    path, ref_model, ref_proc = saved[family]
    mllm = _load(saved, family)
    model_cls, proc_cls, _ = FAMILIES[family]
    assert type(mllm.model).__name__ == model_cls and type(mllm.processor).__name__ == proc_cls
    assert mllm.family == family and mllm.collator.expand == "processor"
    assert mllm.info["path"] == str(path) and mllm.model.dtype == torch.float32
    assert mllm.processor.chat_template == ref_proc.chat_template
    assert mllm.tokenizer.get_vocab() == ref_proc.tokenizer.get_vocab()
    # the same batch and the same logits as the in-memory model: weights and processor survive
    ref = wrap_hf(ref_model, ref_proc, family)
    a, b = mllm.collator.train_batch(_samples()), ref.collator.train_batch(_samples())
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), k
    with torch.no_grad():
        la, lb = mllm(**model_inputs(a)).logits, ref(**model_inputs(b)).logits
    torch.testing.assert_close(la, lb)
    # the parts methods fine-tune in full are found under this family's names
    names = {id(m): n for n, m in mllm.model.named_modules()}
    projector, linears = SPEC[family][2]
    (proj,) = mllm.part_modules("projector")
    assert names[id(proj)] == "model." + projector
    assert {n for n, m in proj.named_modules() if isinstance(m, torch.nn.Linear)} == set(linears)
    assert [names[id(m)] for m in mllm.part_modules("lm")] == ["model.language_model", "lm_head"]
    # DataLoader workers get a pickled collator (the image-only processor stand-in included)
    copy = pickle.loads(pickle.dumps(mllm.collator))
    assert torch.equal(copy.train_batch(_samples())["input_ids"], a["input_ids"])


@pytest.mark.parametrize("family", NEW)
def test_bfloat16_weights_take_the_float32_image_tensors(saved, family):
    mllm = load_hf(str(saved[family][0]), family)  # the presets' dtype
    assert mllm.model.dtype == torch.bfloat16
    batch = mllm.collator.train_batch(_samples())
    assert batch["pixel_values"].dtype == torch.float32  # the model casts them itself
    with torch.no_grad():
        out = mllm(**model_inputs(batch))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert len(mllm.generate(mllm.collator.prompt_batch(_samples()), max_new_tokens=2)) == 2


def test_a_checkpoint_of_another_family_is_one_line(saved, tmp_path):
    with pytest.raises(ValueError, match="holds a 'qwen2_5_vl' model.*model.family=qwen2_5_vl"):
        load_hf(str(saved["qwen2_5_vl"][0]), "qwen2_vl", dtype="float32")
    with pytest.raises(ValueError, match="model.family='qwen3'; choose one of llava, "):
        load_hf(str(saved["qwen2_vl"][0]), "qwen3")
    (tmp_path / "config.json").write_text('{"model_type": "internvl_chat"}')
    with pytest.raises(ValueError, match="remote-code InternVL checkpoint; use its HF-format"):
        load_hf(str(tmp_path), "internvl")


def test_the_llava_family_keeps_mcls_own_image_expansion(tmp_path):
    """LLaVA-1.5 through load_hf (and its alias load_llava): the fixed-count path, unchanged."""
    torch.manual_seed(0)
    tiny = build_tiny(TEXT, VISION)
    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    samples = _samples(3)
    want = tiny.collator.train_batch(samples)
    for mllm in (load_hf(str(tmp_path), "llava", dtype="float32"), load_llava(str(tmp_path))):
        assert mllm.collator.expand == "mcl" and mllm.collator.image_seq_length == 9
        got = mllm.collator.train_batch(samples)
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want if torch.is_tensor(want[k]))


# ---------------------------------------------------------------- collation


@pytest.mark.parametrize("family", NEW)
def test_train_batch_labels_only_the_answer_and_has_the_processors_image_tokens(saved, family):
    mllm = _load(saved, family)
    samples = _samples()
    batch = mllm.collator.train_batch(samples)
    prompts = mllm.collator.prompt_batch(samples)
    tok, image_id = mllm.tokenizer, _image_token_id(mllm)
    per_image = SPEC[family][1]
    assert batch["n_skipped"].item() == 0
    assert len(set(prompts["attention_mask"].sum(1).tolist())) == 2  # so padding is exercised
    for i, s in enumerate(samples):
        ids, labels, att = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        n = int(att.sum())
        assert att[:n].all() and not att[n:].any()  # right padding
        answer = tok(" " + s["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        start = n - len(answer)
        assert labels[start:n].tolist() == answer == ids[start:n].tolist()
        assert (labels[:start] == IGNORE_INDEX).all() and (labels[n:] == IGNORE_INDEX).all()
        assert (ids[n:] == tok.pad_token_id).all() and tok.pad_token_id not in ids[:n].tolist()
        # each row's prompt is the processor's expansion of that sample alone
        alone = mllm.collator.prompt_batch([s])["input_ids"][0]
        assert alone.tolist() == ids[:start].tolist()
        assert int((ids == image_id).sum()) == per_image
        # generation sees exactly this prompt, left-padded
        p_ids, p_att = prompts["input_ids"][i], prompts["attention_mask"][i]
        assert p_ids[p_att.bool()].tolist() == ids[:start].tolist()
        assert not p_att[: len(p_att) - start].any()  # left padding
        assert s["question"].split()[0] in tok.decode(ids[:start])
    if family == "llava_next":
        assert batch["pixel_values"].shape[:2] == (2, 5)  # base view + 4 tiles, per image
        assert batch["image_sizes"].tolist() == [[48, 48]] * 2
    elif family == "internvl":
        assert batch["pixel_values"].shape == (10, 3, 32, 32)  # 5 tiles an image
    else:  # flattened patches; M-RoPE needs the token types, image tokens = 1
        grid = batch["image_grid_thw"]
        assert grid.tolist() == [[1, 6, 6], [1, 6, 6]]
        assert batch["pixel_values"].shape[0] == int(grid.prod(-1).sum())
        assert torch.equal(batch["mm_token_type_ids"] == 1, batch["input_ids"] == image_id)
        assert torch.equal(prompts["mm_token_type_ids"] == 1, prompts["input_ids"] == image_id)


# ---------------------------------------------------------------- training and generation


@pytest.mark.parametrize("family", NEW)
def test_one_seq_lora_step_trains_the_lora_weights_only(saved, family):
    mllm = _load(saved, family)
    torch.manual_seed(0)
    method = _method("seq_lora")
    method.setup_model(mllm)
    method.on_task_start(0, None)
    trainable = method.trainable_named()
    assert trainable and set(trainable) == method.expected_trainable()
    assert all(".lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    batch = mllm.collator.train_batch(_samples())
    opt = torch.optim.AdamW(trainable.values(), lr=1e-2, weight_decay=0.0)
    method.train()
    loss = method.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    changed = {n for n, p in method.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {n for n in trainable if ".lora_B." in n}  # A's grad is 0 while B = 0
    method.eval()
    with torch.no_grad():
        after = method.mllm(**method.model_inputs(batch)).loss
    assert after < loss.detach()


@pytest.mark.parametrize("family", NEW)
def test_generate_answers_each_prompt_as_it_would_alone(saved, family):
    mllm = _load(saved, family)
    samples = _samples(3)
    batch = mllm.collator.prompt_batch(samples)
    assert len(set(batch["attention_mask"].sum(1).tolist())) == 3  # three amounts of padding
    answers = mllm.generate(batch, max_new_tokens=4)
    assert len(answers) == 3 and all(isinstance(a, str) and a for a in answers)
    # left padding (and Qwen's M-RoPE positions) must not change a row's greedy answer
    alone = [mllm.generate(mllm.collator.prompt_batch([s]), max_new_tokens=4)[0] for s in samples]
    assert answers == alone
    with torch.no_grad():  # the next-token distribution itself, not just its argmax
        last = mllm(**model_inputs(batch)).logits[:, -1]
        for i, s in enumerate(samples):
            one = mllm(**model_inputs(mllm.collator.prompt_batch([s]))).logits[0, -1]
            torch.testing.assert_close(last[i], one, rtol=1e-4, atol=1e-4)
    # the prompt is sliced off: the raw output starts with the prompt, the answer is what follows
    with torch.no_grad():
        raw = mllm.model.generate(
            **model_inputs(batch),
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=mllm.tokenizer.pad_token_id,
        )
    width = batch["input_ids"].shape[1]
    assert torch.equal(raw[:, :width], batch["input_ids"])
    new = mllm.tokenizer.batch_decode(raw[:, width:], skip_special_tokens=True)
    assert [t.strip() for t in new] == answers


# ---------------------------------------------------------------- adapter injection


def _lm_linears(names) -> set[str]:
    names = list(names)
    return {f"model.language_model.layers.{i}.{n}" for i in range(LAYERS) for n in names}


@pytest.mark.parametrize("family", NEW)
@pytest.mark.parametrize("name", ["seq_lora", "moelora", "smolora"])
def test_adapters_wrap_the_expected_modules_and_train(saved, family, name):
    mllm = _load(saved, family)
    torch.manual_seed(0)
    if name == "smolora":  # its projector experts route per sample: refused on tiles/patches
        with pytest.raises(ValueError, match=f"^smolora .*{family} .*method.projector=false$"):
            _method(name).setup_model(mllm)
        assert all(p.requires_grad for p in mllm.parameters())  # refused before touching it
    # SMoLoRA's default oracle routing reads the benchmark's type table: route on the text here
    over = {"projector": False, "if_route": "text_embedding"} if name == "smolora" else {}
    method = _method(name, **over)
    method.setup_model(mllm)
    method.on_task_start(0, None)
    model = mllm.model
    if name == "seq_lora":
        wrapped = {n for n, m in model.named_modules() if hasattr(m, "lora_A")}
        want = _lm_linears(f"self_attn.{p}" for p in ATTN)
    elif name == "moelora":
        wrapped = {n for n, m in model.named_modules() if isinstance(m, MoELoRALinear)}
        want = _lm_linears(f"self_attn.{p}" for p in ATTN)
    else:  # SMoLoRA: the LM's MLP
        wrapped = {n for n, m in model.named_modules() if isinstance(m, SMoLoRALinear)}
        want = _lm_linears(f"mlp.{p}" for p in MLP)
    assert wrapped == want  # the LM only: nothing in the vision tower or the projector
    trainable = method.trainable_named()
    assert trainable and set(trainable) == method.expected_trainable()
    # one forward/backward through the wrapped model: every trainable tensor is reached
    method.train()
    loss = method.training_step(mllm.collator.train_batch(_samples()), 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in trainable.values())
    frozen = [n for n, p in method.named_parameters() if n not in trainable]
    assert all(method.get_parameter(n).grad is None for n in frozen)


@pytest.mark.parametrize("family", NEW)
def test_methods_that_need_the_llava_vision_path_refuse_in_one_line(saved, family):
    mllm = _load(saved, family)
    for name in ("eproj", "tir_ewc", "fwd_prompt", "dmole"):
        with pytest.raises(ValueError, match=f"^{name} runs the vision tower.*{family} model"):
            _method(name).setup_model(mllm)
    assert all(p.requires_grad for p in mllm.parameters())  # refused before touching it
    with pytest.raises(ValueError, match="x-modal inputs need a LLaVA.*xmodal.enabled=false"):
        attach_xmodal(mllm, ["image", "video"], {"seed": 0})
    assert mllm.xmodal is None
    with pytest.raises(ValueError, match="x-modal inputs need the LLaVA-1.5 collation"):
        mllm.collator.set_modal({"image": 4}, {"image": ""})
    mllm.collator.virtual_tokens = 2
    with pytest.raises(ValueError, match="soft-prompt slots"):
        mllm.collator.train_batch(_samples())


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_load_a_local_checkpoint_of_their_family(saved, tmp_path, preset):
    from mcl.train import _instantiate_model

    family = PRESETS[preset]
    over = [f"model={preset}", "model.dtype=float32"]
    cfg = compose_cfg(tmp_path, [*over, f"model.path={saved[family][0]}"])
    assert cfg.model._target_ == "mcl.models.hf.load_hf" and cfg.model.family == family
    assert cfg.model.dtype == "float32" and "xmodal" not in cfg.model
    mllm = _instantiate_model(cfg.model)
    assert mllm.family == family and mllm.name == cfg.model.name
    assert mllm.collator.train_batch(_samples())["input_ids"].shape[0] == 2
    with pytest.raises(ConfigError, match=f"^model {cfg.model.name}: model.path is not set"):
        _instantiate_model(compose_cfg(tmp_path, [*over, "model.path=null"]).model)
