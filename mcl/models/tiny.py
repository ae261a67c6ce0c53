"""The tiny MLLM: a real ``LlavaForConditionalGeneration`` (CLIP-style tower, Llama-style LM) built
from a small config, an offline word-level tokenizer over the synthetic world's vocabulary, and a
CLIP image processor built from arguments. Nothing is downloaded.

Continual instruction tuning starts from a *pretrained* MLLM, so the tiny base is pretrained once
(all parameters) on the generic caption/detection mix of ``mcl.data.synthetic.tasks`` and cached
under ``$MCL_CACHE`` (default ``~/.cache/mcl``), keyed by a hash of everything that shapes it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from tqdm.auto import tqdm
from transformers import (
    CLIPImageProcessorPil,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from mcl.data.synthetic import tasks as T
from mcl.models.mllm import MLLM
from mcl.utils.io import atomic_write_bytes, atomic_write_json

WORLD_VERSION = 1  # bump when the world or the pretraining mix changes: invalidates cached bases
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s> "
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


def pre_tokenizer():
    # WhitespaceSplit keeps "<image>" whole (Whitespace would split it, see engineering notes);
    # punctuation is isolated so "shape?" and "shape" share a token, but "0.25" stays one token.
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(r"[\[\],?:;!]|\.(?!\d)"), behavior="isolated"),
        ]
    )


def words_of(texts: list[str]) -> set[str]:
    pre = pre_tokenizer()
    return {w for t in texts for w, _ in pre.pre_tokenize_str(t)}


def build_tokenizer(texts: list[str], extra: list[str] = ()) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over ``texts``; ``extra`` words get the ids after them, so adding
    extra words never renumbers the base vocabulary."""
    words = sorted((words_of(texts) - set(SPECIALS)) | {"USER", "ASSISTANT"})
    extra = sorted(set(extra) - set(words) - set(SPECIALS))
    vocab = {w: i for i, w in enumerate(SPECIALS + words + extra)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizer()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="right",
    )


def build_processor(tok, image_size: int, patch_size: int) -> LlavaProcessor:
    # The PIL backend: torchvision is not a dependency (its PyPI wheel breaks beside CPU torch).
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token; v5 defaults to 0 and then mismatches
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tok, text: dict, vision: dict) -> LlavaConfig:
    n_img = (vision["image_size"] // vision["patch_size"]) ** 2
    return LlavaConfig(
        text_config={
            "model_type": "llama",
            "vocab_size": len(tok),
            "max_position_embeddings": 256,
            "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "tie_word_embeddings": False,
            **text,
        },
        vision_config={"model_type": "clip_vision_model", "num_channels": 3, **vision},
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=n_img,
        projector_hidden_act="gelu",
    )


def _base_key(shape: dict, pretrain: dict, vocab: list[str]) -> str:
    blob = json.dumps(
        {"v": WORLD_VERSION, "shape": shape, "pretrain": pretrain, "vocab": vocab}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get("MCL_CACHE", Path.home() / ".cache" / "mcl"))


def build_tiny(text: dict, vision: dict, seed: int = 0, pos_init_std: float | None = None) -> MLLM:
    """A randomly initialised tiny Llava with its tokenizer and processor.

    ``pos_init_std`` re-initialises the tower's position embeddings with a larger spread than
    CLIP's default (0.02, tiny next to patch embeddings): the LM must find a cell by its
    position before it can read the cell's colour, and with near-zero position embeddings that
    is what a tiny model fails to learn in minutes.
    """
    tok = build_tokenizer(T.vocabulary_texts())
    processor = build_processor(tok, vision["image_size"], vision["patch_size"])
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build_config(tok, text, vision))
    if pos_init_std:
        emb = model.model.vision_tower.embeddings.position_embedding
        with torch.no_grad():
            emb.weight.normal_(0.0, pos_init_std)
    n_img = (vision["image_size"] // vision["patch_size"]) ** 2
    return MLLM(model, processor, image_seq_length=n_img, name="tiny")


def extend_vocabulary(mllm: MLLM, texts: list[str]) -> list[str]:
    """Add the words of ``texts`` the base has never seen (the benchmarks' twins' words).

    The base is pretrained on its world's vocabulary only, so adding a benchmark never
    invalidates a cached base: new words get ids after the base's and embedding / output rows
    drawn from a generator seeded by the word itself (the same row whatever else is added).
    Returns the words added.
    """
    tok = mllm.tokenizer
    new = sorted(words_of(texts) - set(tok.get_vocab()))
    if not new:
        return []
    base_words = [w for w, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    n_base = len(base_words)
    words = [w for w in base_words if w not in SPECIALS]
    tok2 = build_tokenizer([" ".join(words)], extra=new)
    assert [tok2.convert_ids_to_tokens(i) for i in range(n_base)] == base_words
    vision = mllm.model.config.vision_config
    processor = build_processor(tok2, vision.image_size, vision.patch_size)
    model = mllm.model
    model.resize_token_embeddings(len(tok2), mean_resizing=False)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    with torch.no_grad():
        e_std, h_std = emb[:n_base].std().item(), head[:n_base].std().item()
        for i, w in enumerate(new, start=n_base):
            g = torch.Generator().manual_seed(zlib.crc32(w.encode()))
            emb[i] = torch.randn(emb.shape[1], generator=g) * e_std
            head[i] = torch.randn(head.shape[1], generator=g) * h_std
    model.config.text_config.vocab_size = len(tok2)
    fresh = MLLM(model, processor, mllm.collator.image_seq_length, name=mllm.name, info=mllm.info)
    mllm.processor, mllm.tokenizer, mllm.collator = fresh.processor, tok2, fresh.collator
    mllm.info = {**mllm.info, "extra_words": len(new)}
    return new


def _lr_lambda(warmup: int, total: int, floor: float = 0.1):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _fit(
    mllm: MLLM,
    next_batch,
    steps: int,
    lr: float,
    warmup: int,
    seed: int,
    min_lr_ratio: float,
    desc: str,
    progress: bool,
) -> dict:
    """Full-parameter AdamW with linear warm-up and a cosine to ``min_lr_ratio``; ``next_batch()``
    gives each step's samples."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(mllm.model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(warmup, steps, min_lr_ratio))
    mllm.model.train()
    losses, t0 = [], time.time()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=2)
    for step in bar:
        batch = mllm.collator.train_batch(next_batch())
        loss = mllm.model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mllm.model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    mllm.model.eval()
    return {"final_loss": float(np.mean(losses[-100:])), "seconds": round(time.time() - t0, 1)}


def pretrain(
    mllm: MLLM,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    seed: int,
    bucket: int = 1,
    min_lr_ratio: float = 0.1,
    progress: bool = True,
) -> dict:
    """Full-parameter pretraining on the generic mix (drawn on the fly, seeded).

    ``bucket`` > 1 draws that many batches at once and groups them by answer length (less
    padding, faster steps, but batches of one kind change the learning dynamics);
    ``min_lr_ratio`` is where the cosine schedule ends.
    """
    rng = np.random.default_rng([seed, 7])
    batches: list[list] = []

    def next_batch() -> list[dict]:
        if not batches:
            pool = [T.pretrain_sample(rng) for _ in range(bucket * batch_size)]
            if bucket > 1:  # grid listings are 3x longer than captions: group by length
                pool.sort(key=lambda s: len(s.answer))
            batches.extend(pool[i * batch_size : (i + 1) * batch_size] for i in range(bucket))
            if bucket > 1:
                batches[:] = [batches[i] for i in rng.permutation(bucket)]
        return [vars(s) for s in batches.pop()]

    desc = "pretraining tiny base"
    return _fit(mllm, next_batch, steps, lr, warmup, seed, min_lr_ratio, desc, progress)


def instruct_tune(
    mllm: MLLM,
    twin: str,
    tasks: list[str],
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    seed: int,
    min_lr_ratio: float = 0.1,
    progress: bool = True,
) -> dict:
    """Joint instruction tuning of the whole base on a uniform mix of ``tasks`` of synthetic
    twins (all training templates, samples drawn on the fly from a seed of their own, so never
    the benchmark's own samples). A task is a name in ``twin`` or ``other_twin/name``. This
    makes a base like InstructBLIP or LLaVA-1.5, which had been tuned on many instruction tasks
    before any continual sequence starts — the condition under which He et al.
    (docs/methods/eproj.md) find that regularisation works at all."""
    from mcl.data.synthetic import twins

    chosen = []
    for t in tasks or []:
        tw, _, name = t.rpartition("/")
        recipes = twins.recipes(tw or twin)
        if name not in recipes:
            raise ValueError(
                f"instruct.tasks: {name!r} is not a task of twin {tw or twin!r}; choose from "
                f"{', '.join(recipes)}"
            )
        if recipes[name].modality != "image":
            raise ValueError(f"instruct.tasks must be image tasks; {t} is {recipes[name].modality}")
        chosen.append(recipes[name])
    if not chosen:
        raise ValueError("instruct.tasks is empty; name the twin tasks to tune on")
    rng = np.random.default_rng([seed, 11])

    def next_batch() -> list[dict]:
        picks = rng.integers(len(chosen), size=batch_size)
        return [vars(chosen[i].sample(rng)) for i in picks]

    desc = f"instruction-tuning tiny base ({len(chosen)} twin tasks)"
    return _fit(mllm, next_batch, steps, lr, warmup, seed, min_lr_ratio, desc, progress)


def load_tiny_base(
    text: dict,
    vision: dict,
    pretrain_cfg: dict,
    cache_dir: str | None = None,
    pos_init_std: float | None = 1.0,
    seed: int = 0,
    progress: bool = True,
    name: str = "tiny",
    benchmark_words: bool = True,
    xmodal: dict | None = None,
    instruct: dict | None = None,
    dtype: str = "float32",
    gradient_checkpointing: bool = False,
) -> MLLM:
    """The pretrained tiny base (cached), with every synthetic twin's words added to its
    vocabulary (``benchmark_words``; see :func:`extend_vocabulary`). ``xmodal`` configures the
    non-image input modules a benchmark with other modalities gets (attached by ``mcl.train``;
    the base itself is pretrained on images only). ``instruct`` (the arguments of
    :func:`instruct_tune`) adds a second, cached stage: joint instruction tuning on twin tasks."""
    if instruct and not benchmark_words:
        raise ValueError(
            "model.instruct tunes on twin tasks, whose words the base only has with "
            "benchmark_words=true; set model.benchmark_words=true or model.instruct=null"
        )
    stage_one = (text, vision, pretrain_cfg, cache_dir, pos_init_std, seed, progress)

    def base(weights: bool) -> MLLM:
        mllm = _pretrained_base(*stage_one, weights=weights)
        if benchmark_words:
            from mcl.data.synthetic import twins

            extend_vocabulary(mllm, twins.vocabulary_texts())
        return mllm

    if not instruct:
        mllm = base(weights=True)
    else:  # stage two's weights replace all of stage one's: load them alone when they exist
        mllm = base(weights=False)
        if not _instruct_tuned(mllm, dict(instruct), cache_dir, progress, build=False):
            mllm = base(weights=True)
            _instruct_tuned(mllm, dict(instruct), cache_dir, progress, build=True)
    mllm.xmodal_cfg = xmodal
    mllm.name = name
    # the cached base is fp32; a half-precision copy is how a 7B base arrives (model.dtype)
    from mcl.models.hf import model_dtype

    mllm.model.to(model_dtype(dtype))
    mllm.set_gradient_checkpointing(gradient_checkpointing)
    return mllm


def _instruct_tuned(
    mllm: MLLM, instruct: dict, cache_dir: str | None, progress: bool, build: bool = True
) -> bool:
    """Stage two, in place: the instruction-tuned weights from the cache (or the copy shipped
    with mcl), or tuned (and cached) on first use; with ``build=False`` only loaded (returns
    whether they were). Keyed by the stage-one base, the vocabulary and ``instruct``."""
    base_key = mllm.info.get("key")
    vocab = sorted(mllm.tokenizer.get_vocab())
    blob = json.dumps({"base": base_key, "vocab": vocab, "instruct": instruct}, sort_keys=True)
    key = f"{base_key}-it-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def tune() -> dict:
        print(f"[mcl] instruction-tuning the tiny base (first use, cached under {key})")
        stats = instruct_tune(mllm, progress=progress, **instruct)
        return {**mllm.info, "key": key, "base_key": base_key, "instruct": {**instruct, **stats}}

    return _load_or_build(mllm, _cache_root(cache_dir) / key, tune if build else None)


def _pretrained_base(
    text, vision, pretrain_cfg, cache_dir, pos_init_std, seed, progress, weights: bool = True
) -> MLLM:
    """The pretrained tiny base: loaded from the cache (or the copy shipped with mcl), or built
    (and cached) on first use. ``weights=False``: the architecture and its cache key only (for a
    second stage whose weights replace these)."""
    mllm = build_tiny(text, vision, seed=seed, pos_init_std=pos_init_std)
    vocab = list(mllm.tokenizer.get_vocab())
    shape = {"text": text, "vision": vision, "pos_init_std": pos_init_std, "seed": seed}
    key = _base_key(shape, pretrain_cfg, sorted(vocab))
    path = _cache_root(cache_dir) / key

    def build() -> dict:
        if pretrain_cfg.get("steps", 0) > 0:
            print(f"[mcl] building the tiny base (first use, cached at {path})")
            stats = pretrain(mllm, progress=progress, **pretrain_cfg)
        else:
            stats = {"final_loss": None, "seconds": 0.0}
        return {"key": key, "pretrain": pretrain_cfg, **stats}

    if weights:
        _load_or_build(mllm, path, build)
    else:
        mllm.info = {"key": key}
    return mllm


def _cache_root(cache_dir: str | None) -> Path:
    return (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "tiny"


# tiny bases shipped with mcl (scripts/ship_bases.py), by cache key: a first run loads these
# instead of spending minutes building them
SHIPPED = Path(__file__).parent / "bases"


def _load_or_build(mllm: MLLM, path: Path, build) -> bool:
    """Load ``mllm``'s weights and info from ``path`` (or the shipped copy of the same key), or
    ``build()`` them (training ``mllm`` in place, returning its info) and write both there.
    ``build=None``: load only. Returns whether the weights were loaded or built."""
    for where in (path, SHIPPED / path.name):
        weights = where / "model.safetensors"
        if weights.exists():
            mllm.model.load_state_dict(load_file(weights))
            mllm.info = json.loads((where / "info.json").read_text())
            mllm.model.eval()
            return True
    if build is None:
        return False
    info = build()
    path.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared tensors; the tiny config unties embeddings, so none exist.
    state = {k: v.contiguous() for k, v in mllm.model.state_dict().items()}
    # info first, weights last: the weights file is what readers look for, so a concurrent
    # sweep job never finds weights without their info (both builders write identical bytes).
    atomic_write_json(path / "info.json", info)
    atomic_write_bytes(path / "model.safetensors", save_tensors(state))
    mllm.info = info
    return True
