"""Real MLLM architectures without a checkpoint: each model preset's ``config.json`` ships with mcl
(``mcl/models/configs/<preset>.json``, the published Hugging Face configs), so the real model can
be built with random weights, or on the ``meta`` device with no weights at all, and nothing is
downloaded.

Presets (``conf/model/<preset>.yaml``), their family (``mcl.models.hf.FAMILIES``) and the
checkpoint whose config ships:

- ``llava15_7b``   ``llava``       llava-hf/llava-1.5-7b-hf           7.06B parameters
- ``llava15_13b``  ``llava``       llava-hf/llava-1.5-13b-hf          13.35B
- ``llava_next_7b`` ``llava_next`` llava-hf/llava-v1.6-mistral-7b-hf  7.57B
- ``qwen2_vl_7b``  ``qwen2_vl``    Qwen/Qwen2-VL-7B-Instruct          8.29B
- ``qwen2_5_vl_7b`` ``qwen2_5_vl`` Qwen/Qwen2.5-VL-7B-Instruct        8.29B
- ``internvl3_8b`` ``internvl``    OpenGVLab/InternVL3-8B-hf          7.94B

API:

- :func:`load_config` -- the preset's transformers config, optionally with fewer LM / vision
  layers (``lm_layers``, ``vision_layers``) or a smaller vocabulary (``vocab_size``); hidden
  sizes, heads, KV heads and MLP widths stay the real ones.
- :func:`build_arch` -- the family's transformers model from that config: on ``meta`` (shapes
  only, instant; what ``python -m mcl.plan`` uses) or with random weights on ``cpu``/``cuda``.
- :func:`build_processor` -- the family's own processor class with the checkpoint's image
  settings and an offline word-level tokenizer: the synthetic world's words plus the family's
  special tokens at the ids the config uses (``<image>`` = 32000 for LLaVA, ``<|image_pad|>`` =
  151655 for Qwen, ``<IMG_CONTEXT>`` = 151667 for InternVL), every other id a filler token, so
  ``len(tokenizer)`` is the model's vocabulary and every generated id decodes.
- :func:`load_random` -- an :class:`~mcl.models.mllm.MLLM` of both (through
  :func:`mcl.models.hf.wrap_hf`), Hydra-instantiable. ``model=<preset>
  model._target_=mcl.models.arch.load_random`` swaps it into any preset (the preset is found from
  ``model.name``): ``python -m mcl.train model=llava15_7b model._target_=mcl.models.arch.load_random
  +model.lm_layers=2 +model.vision_layers=2`` trains a real-width, two-layer LLaVA-1.5-7B on CPU.

Reduced depth keeps every layer's shape; Qwen2.5-VL's full-attention vision blocks become the
last block (the others stay windowed); LLaVA keeps selecting the second-to-last tower layer.
``vocab_size`` below the real one moves the special tokens to the top ids of the smaller table
and rewrites the config's token ids to match (the real tokens keep their real ids otherwise).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch

from mcl.models.hf import FAMILIES, model_dtype, processor_class, wrap_hf
from mcl.models.mllm import MLLM

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# preset -> (family, the preset's model.name, the checkpoint whose config.json ships)
PRESETS = {
    "llava15_7b": ("llava", "llava-1.5-7b", "llava-hf/llava-1.5-7b-hf"),
    "llava15_13b": ("llava", "llava-1.5-13b", "llava-hf/llava-1.5-13b-hf"),
    "llava_next_7b": ("llava_next", "llava-next-7b", "llava-hf/llava-v1.6-mistral-7b-hf"),
    "qwen2_vl_7b": ("qwen2_vl", "qwen2-vl-7b", "Qwen/Qwen2-VL-7B-Instruct"),
    "qwen2_5_vl_7b": ("qwen2_5_vl", "qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct"),
    "internvl3_8b": ("internvl", "internvl3-8b", "OpenGVLab/InternVL3-8B-hf"),
}

_QWEN_SPECIALS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
}
# per family: special tokens (real id, or None: any free id -- tokens mcl never feeds), the
# tokenizer's roles, its named tokens (what the processor reads), and the config's token ids
TOKENS = {
    "llava": {
        "specials": {"<unk>": 0, "<s>": 1, "</s>": 2, "<image>": 32000, "<pad>": 32001},
        "roles": {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"},
        "named": {"image_token": "<image>"},
        "ids": {  # dict paths in the nested config
            "image_token_index": "<image>",
            "pad_token_id": "<pad>",
            "text_config.bos_token_id": "<s>",
            "text_config.eos_token_id": "</s>",
            "text_config.pad_token_id": "<pad>",
        },
    },
    "qwen2_vl": {
        "specials": {
            **_QWEN_SPECIALS,
            "<|vision_start|>": 151652,
            "<|vision_end|>": 151653,
            "<|vision_pad|>": 151654,
            "<|image_pad|>": 151655,
            "<|video_pad|>": 151656,
            "<unk>": None,
        },
        "roles": {"unk": "<unk>", "eos": "<|im_end|>", "pad": "<|endoftext|>"},
        "named": {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        "ids": {
            "image_token_id": "<|image_pad|>",
            "video_token_id": "<|video_pad|>",
            "vision_start_token_id": "<|vision_start|>",
            "vision_end_token_id": "<|vision_end|>",
            "text_config.bos_token_id": "<|endoftext|>",
            "text_config.eos_token_id": "<|im_end|>",
        },
    },
    "internvl": {
        "specials": {
            **_QWEN_SPECIALS,
            "<img>": 151665,
            "</img>": 151666,
            "<IMG_CONTEXT>": 151667,
            "<video>": None,
            "<unk>": None,
        },
        "roles": {"unk": "<unk>", "eos": "<|im_end|>", "pad": "<|endoftext|>"},
        "named": {
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
        "ids": {
            "image_token_id": "<IMG_CONTEXT>",
            "text_config.bos_token_id": "<|endoftext|>",
            "text_config.eos_token_id": "<|im_end|>",
        },
    },
}
TOKENS["llava_next"] = {
    **TOKENS["llava"],
    "specials": {**TOKENS["llava"]["specials"], "[INST]": None, "[/INST]": None},
}
TOKENS["qwen2_5_vl"] = TOKENS["qwen2_vl"]

# chat templates: the image placeholder, then the question (as mcl's collator asks for)
_QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEMPLATES = {
    "llava": (  # llava-hf's: "USER: <image>\n<question> ASSISTANT:"
        "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %} "
        "{% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    ),
    "llava_next": (  # Mistral's: "[INST] <image>\n<question> [/INST]"
        "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
        " [/INST]{% else %}{% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}"
        "{% endfor %}"
    ),
    "qwen2_vl": _QWEN_TEMPLATE,
    "qwen2_5_vl": _QWEN_TEMPLATE,
    "internvl": _QWEN_TEMPLATE.replace(
        "<|vision_start|><|image_pad|><|vision_end|>", "<IMG_CONTEXT>\n"
    ),
}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
ROLE_WORDS = ["USER", "ASSISTANT", "user", "assistant", "system"]


# ---------------------------------------------------------------- configs


def presets() -> list[str]:
    return list(PRESETS)


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(
            f"no shipped architecture for preset {preset!r}; choose one of {', '.join(PRESETS)}"
        )


def family_of(preset: str) -> str:
    _check_preset(preset)
    return PRESETS[preset][0]


def preset_of_name(name: str) -> str:
    """The preset whose ``model.name`` is ``name`` (e.g. ``llava-1.5-7b`` -> ``llava15_7b``)."""
    for preset, (_, n, _) in PRESETS.items():
        if name in (n, preset):
            return preset
    raise ValueError(
        f"no shipped architecture for model {name!r}; pass preset= one of {', '.join(PRESETS)}"
    )


def config_path(preset: str) -> Path:
    _check_preset(preset)
    return CONFIG_DIR / f"{preset}.json"


def model_class(family: str):
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"family {family!r}; choose one of {', '.join(FAMILIES)}")
    return getattr(transformers, FAMILIES[family][0])


def real_vocab_size(preset: str) -> int:
    return _config_dict(preset)["text_config"]["vocab_size"]


@cache
def _config_json(preset: str) -> str:
    return config_path(preset).read_text()


def _config_dict(preset: str) -> dict:
    """The shipped config as transformers reads it, in nested form (text_config, vision_config):
    Qwen2-VL's published config is flat, transformers nests it."""
    cls = model_class(family_of(preset)).config_class
    return cls.from_dict(json.loads(_config_json(preset))).to_dict()


def _set(d: dict, path: str, value) -> None:
    *parents, key = path.split(".")
    for p in parents:
        d = d[p]
    d[key] = value


def special_ids(family: str, vocab_size: int) -> dict[str, int]:
    """Each special token's id in a vocabulary of ``vocab_size``: its real id when that fits,
    else the top free ids (in real-id order); tokens with no real id take the first free ids
    above the words (see :func:`_layout`)."""
    specials = TOKENS[family]["specials"]
    fixed = {t: i for t, i in specials.items() if i is not None and i < vocab_size}
    moved = sorted((i, t) for t, i in specials.items() if i is not None and i >= vocab_size)
    top = vocab_size - 1
    for _, t in moved:
        while top in fixed.values():
            top -= 1
        fixed[t] = top
        top -= 1
    return fixed


def load_config(
    preset: str,
    lm_layers: int | None = None,
    vision_layers: int | None = None,
    vocab_size: int | None = None,
):
    """The preset's transformers config (``LlavaConfig``, ``Qwen2VLConfig``, ...), from the
    shipped ``config.json``; ``lm_layers`` / ``vision_layers`` cut the depth, ``vocab_size`` the
    embedding table (token ids then follow :func:`special_ids`)."""
    family = family_of(preset)
    d = _config_dict(preset)
    text, vision = d["text_config"], d["vision_config"]
    if lm_layers is not None:
        if lm_layers < 1:
            raise ValueError(f"lm_layers={lm_layers} must be >= 1")
        text["num_hidden_layers"] = lm_layers
        text.pop("layer_types", None)  # recomputed for the new depth
        if "max_window_layers" in text:
            text["max_window_layers"] = min(text["max_window_layers"], lm_layers)
    if vision_layers is not None:
        if vision_layers < 1:
            raise ValueError(f"vision_layers={vision_layers} must be >= 1")
        key = "depth" if "depth" in vision else "num_hidden_layers"
        vision[key] = vision_layers
        if "fullatt_block_indexes" in vision:  # Qwen2.5-VL: keep one full-attention block
            kept = [i for i in vision["fullatt_block_indexes"] if i < vision_layers]
            vision["fullatt_block_indexes"] = kept or [vision_layers - 1]
    if vocab_size is not None:
        need = len(TOKENS[family]["specials"]) + len(_words()) + 1
        if vocab_size < need:
            raise ValueError(f"vocab_size={vocab_size} is too small; at least {need}")
        text["vocab_size"] = vocab_size
        if "vocab_size" in d:
            d["vocab_size"] = vocab_size
        ids = special_ids(family, vocab_size)
        for path, token in TOKENS[family]["ids"].items():
            _set(d, path, ids[token])
    return model_class(family).config_class.from_dict(d)


def build_arch(
    preset: str,
    device: str | torch.device = "meta",
    dtype: str | torch.dtype = torch.bfloat16,
    lm_layers: int | None = None,
    vision_layers: int | None = None,
    vocab_size: int | None = None,
    seed: int = 0,
):
    """The preset's transformers model (``LlavaForConditionalGeneration``, ...) in eval mode, from
    the shipped config: on ``meta`` no memory is allocated (shapes and dtypes only); on a real
    device the weights are the family's random initialisation, drawn from ``seed``."""
    config = load_config(preset, lm_layers, vision_layers, vocab_size)
    cls = model_class(family_of(preset))
    if torch.device(device).type != "meta":
        torch.manual_seed(seed)
    with torch.device(device):
        model = cls._from_config(config, dtype=model_dtype(dtype))
    return model.eval()


# ---------------------------------------------------------------- processor


@cache
def _words() -> tuple[str, ...]:
    from mcl.data.synthetic import tasks as T
    from mcl.models.tiny import words_of

    words = words_of(T.vocabulary_texts()) | set(ROLE_WORDS)
    return tuple(sorted(words - set().union(*(t["specials"] for t in TOKENS.values()))))


def _layout(family: str, vocab_size: int) -> dict[str, int]:
    """token -> id over the whole vocabulary: the specials (:func:`special_ids`), then the
    specials without a real id and the words in the lowest free ids, then fillers."""
    ids = special_ids(family, vocab_size)
    taken = set(ids.values())
    free = (i for i in range(vocab_size) if i not in taken)
    loose = [t for t, i in TOKENS[family]["specials"].items() if i is None]
    vocab = dict(ids)
    for token in [*loose, *_words()]:
        vocab[token] = next(free)
    for i in free:
        vocab[f"<unused{i}>"] = i
    return vocab


def build_tokenizer(family: str, vocab_size: int):
    """An offline word-level tokenizer: the synthetic world's words, the family's special tokens
    (registered as special, named as the family's processor expects), ``vocab_size`` ids."""
    from tokenizers import AddedToken, Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from mcl.models.tiny import pre_tokenizer

    spec = TOKENS[family]
    tk = Tokenizer(models.WordLevel(_layout(family, vocab_size), spec["roles"]["unk"]))
    tk.pre_tokenizer = pre_tokenizer()
    tk.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in spec["specials"]])
    roles = {f"{k}_token": v for k, v in spec["roles"].items()}
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, extra_special_tokens=dict(spec["named"]), padding_side="right", **roles
    )


def _image_processor(family: str, config, **kw):
    """The checkpoint's image preprocessing (PIL backends: no torchvision needed); ``kw``
    overrides any setting (e.g. Qwen's pixel budget ``size``, InternVL's ``max_patches``)."""
    import transformers as tf

    if family == "llava":
        v = config.vision_config.image_size
        args = dict(size={"shortest_edge": v}, crop_size={"height": v, "width": v})
        return tf.CLIPImageProcessorPil(
            **{**args, "image_mean": CLIP_MEAN, "image_std": CLIP_STD, **kw}
        )
    if family == "llava_next":
        v = config.vision_config.image_size
        args = dict(
            size={"shortest_edge": v},
            crop_size={"height": v, "width": v},
            image_grid_pinpoints=config.image_grid_pinpoints,
            image_mean=CLIP_MEAN,
            image_std=CLIP_STD,
        )
        return tf.LlavaNextImageProcessorPil(**{**args, **kw})
    if family in ("qwen2_vl", "qwen2_5_vl"):
        v = config.vision_config
        args = dict(
            size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384},  # min/max pixels
            patch_size=v.patch_size,
            merge_size=v.spatial_merge_size,
            temporal_patch_size=v.temporal_patch_size,
            image_mean=CLIP_MEAN,
            image_std=CLIP_STD,
        )
        return tf.Qwen2VLImageProcessorPil(**{**args, **kw})
    side = config.vision_config.image_size[0]  # internvl: 448 px tiles, up to 12 + a thumbnail
    args = dict(
        size={"height": side, "width": side},
        crop_to_patches=True,
        min_patches=1,
        max_patches=12,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    return tf.GotOcr2ImageProcessorPil(**{**args, **kw})


def build_processor(preset: str, config=None, **image_kwargs):
    """The family's processor (its own class; the image-only stand-in without torchvision) for
    a model built from ``config`` (default: the preset's shipped one): the checkpoint's image
    settings (``image_kwargs`` override them) and :func:`build_tokenizer`'s tokenizer."""
    family = family_of(preset)
    config = config if config is not None else load_config(preset)
    tok = build_tokenizer(family, config.text_config.vocab_size)
    image_processor = _image_processor(family, config, **image_kwargs)
    cls, template = processor_class(family), TEMPLATES[family]
    if family in ("llava", "llava_next"):
        return cls(
            image_processor=image_processor,
            tokenizer=tok,
            patch_size=config.vision_config.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            num_additional_image_tokens=1,  # CLIP's CLS token
            chat_template=template,
        )
    if family == "internvl":
        return cls(
            image_processor=image_processor,
            tokenizer=tok,
            image_seq_length=config.image_seq_length,
            chat_template=template,
        )
    return cls(image_processor=image_processor, tokenizer=tok, chat_template=template)


# ---------------------------------------------------------------- the MLLM


def load_random(
    preset: str | None = None,
    name: str | None = None,
    dtype: str = "bfloat16",
    lm_layers: int | None = 2,
    vision_layers: int | None = 2,
    vocab_size: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    processor_kwargs: dict | None = None,
    xmodal: dict | None = None,
    gradient_checkpointing: bool = False,
    **_: object,
) -> MLLM:
    """A random-weight :class:`MLLM` of a preset's real architecture (see the module docstring):
    real widths and head layout, ``lm_layers`` / ``vision_layers`` deep (None: the real depth),
    its family's processor with an offline tokenizer. ``preset`` defaults to the one named by
    ``name`` (a preset's ``model.name``), so ``model._target_=mcl.models.arch.load_random`` turns
    any real-model preset into this; its other keys (``path``, ``family``) are ignored.
    ``processor_kwargs`` override the image processor's settings."""
    if preset is None:
        if name is None:
            raise ValueError("load_random needs preset= (or a preset's model.name)")
        preset = preset_of_name(name)
    family = family_of(preset)
    config = load_config(preset, lm_layers, vision_layers, vocab_size)
    model = build_arch(preset, device, dtype, lm_layers, vision_layers, vocab_size, seed)
    processor = build_processor(preset, config, **(processor_kwargs or {}))
    info = {
        "random_weights": True,
        "preset": preset,
        "config_of": PRESETS[preset][2],
        "lm_layers": config.text_config.num_hidden_layers,
        "vision_layers": _vision_depth(config),
    }
    mllm = wrap_hf(
        model, processor, family, name=name or PRESETS[preset][1], info=info, xmodal=xmodal
    )
    if gradient_checkpointing:
        if not hasattr(mllm, "set_gradient_checkpointing"):
            raise ValueError("gradient_checkpointing needs MLLM.set_gradient_checkpointing")
        mllm.set_gradient_checkpointing(True)
    return mllm


def _vision_depth(config) -> int:
    v = config.vision_config
    return getattr(v, "depth", None) or v.num_hidden_layers
