"""Real MLLM checkpoints from a local Hugging Face directory (nothing is downloaded).

``model=llava15_7b model.path=/models/llava-1.5-7b-hf`` loads the model with its own processor
and chat template; everything else in mcl (methods, collator, generation) is the same as on the
tiny model. A missing or wrong path is a one-line error naming the fix.

Families (``model.family``), each its transformers class and its processor from the same dir:

- ``llava``: LLaVA-1.5 (``LlavaForConditionalGeneration``); mcl expands ``<image>`` into the
  tower's fixed patch count itself (the path the tiny model uses; x-modal inputs work here).
- ``llava_next``: LLaVA-NeXT / 1.6 (``LlavaNextForConditionalGeneration``, AnyRes tiles).
- ``qwen2_vl`` / ``qwen2_5_vl``: Qwen2-VL, Qwen2.5-VL (dynamic resolution, M-RoPE).
- ``internvl``: InternVL 2.5 / 3 in HF format (``InternVLForConditionalGeneration``, the
  ``-hf`` checkpoints; the remote-code originals are refused).

For all but ``llava`` the processor expands the image placeholder (the count depends on the
image) and returns the family's image tensors (``ChatCollator(expand="processor")``).
"""

from __future__ import annotations

import inspect
import json
from functools import cache
from pathlib import Path

import torch

from mcl.models.mllm import MLLM

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def model_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """The torch dtype that ``model.dtype`` names (a torch dtype passes through)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype={dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


# family -> (model class, processor class, config.json model_type) in transformers
FAMILIES = {
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor", "llava"),
    "llava_next": ("LlavaNextForConditionalGeneration", "LlavaNextProcessor", "llava_next"),
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", "qwen2_vl"),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "qwen2_5_vl"),
    "internvl": ("InternVLForConditionalGeneration", "InternVLProcessor", "internvl"),
}


def check_model_dir(path: str | None) -> Path:
    if not path:
        raise FileNotFoundError(
            "model.path is not set; download the checkpoint (HF format) and pass "
            "model.path=<local dir>"
        )
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(
            f"model path {p} does not exist; download the checkpoint and set model.path"
        )
    if not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"{p} has no config.json; point model.path at a Hugging Face model directory"
        )
    return p


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"model.family={family!r}; choose one of {', '.join(FAMILIES)}")


def _check_model_type(p: Path, family: str) -> None:
    """The checkpoint is of the family asked for (a mismatch would load random weights)."""
    found = json.loads((p / "config.json").read_text()).get("model_type")
    want = FAMILIES[family][2]
    if found == want:
        return
    if found == "internvl_chat":
        raise ValueError(
            f"{p} is a remote-code InternVL checkpoint; use its HF-format version "
            "(e.g. OpenGVLab/InternVL3-8B-hf)"
        )
    fam = next((f for f, (_, _, t) in FAMILIES.items() if t == found), None)
    hint = f"set model.family={fam}" if fam else f"families: {', '.join(FAMILIES)}"
    raise ValueError(f"{p} holds a {found!r} model, not {want!r}; {hint}")


def processor_class(family: str):
    """The family's processor class. Without torchvision, transformers cannot build a processor
    that has a video processor (Qwen2-VL, Qwen2.5-VL, InternVL): its class check imports
    torchvision. mcl feeds images only, so then an image-only subclass stands in (same name,
    image processor, tokenizer, chat template and placeholder expansion; no video processor)."""
    import transformers
    from transformers.utils import is_torchvision_available

    _check_family(family)
    cls = getattr(transformers, FAMILIES[family][1])
    if is_torchvision_available() or "video_processor" not in inspect.signature(cls).parameters:
        return cls
    return _image_only(cls)


IMAGE_ONLY = "ImageOnly"  # prefix of the image-only stand-ins' names in this module


@cache
def _image_only(cls):
    # ProcessorMixin reads its sub-processors from __init__'s parameters and from_pretrained
    # its keyword arguments from __init__'s code, so both must lack video_processor
    def __init__(
        self, image_processor=None, tokenizer=None, image_seq_length=None, chat_template=None, **kw
    ):
        if image_seq_length is not None:  # InternVL's tokens per tile
            kw["image_seq_length"] = image_seq_length
        cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kw)

    attrs = {
        "__init__": __init__,
        "__doc__": f"{cls.__name__} without its video processor (torchvision is not installed).",
        # saved as the real class (processor_class in processor_config.json), pickled (DataLoader
        # workers) by a name of this module that resolves in a fresh process (__getattr__)
        "__module__": __name__,
        "__qualname__": IMAGE_ONLY + cls.__name__,
        "_mcl_image_only": True,
    }
    return type(cls.__name__, (cls,), attrs)


def __getattr__(name: str):
    if name.startswith(IMAGE_ONLY):
        import transformers

        return _image_only(getattr(transformers, name[len(IMAGE_ONLY) :]))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_processor(path, family: str, **kwargs):
    """The family's processor from a local directory (``AutoProcessor`` where it can be built);
    ``kwargs`` override its saved settings (e.g. Qwen2-VL's ``size``: the pixel budget)."""
    from transformers import AutoProcessor

    cls = processor_class(family)
    if getattr(cls, "_mcl_image_only", False):  # AutoProcessor would build the real class
        return cls.from_pretrained(path, local_files_only=True, **kwargs)
    return AutoProcessor.from_pretrained(path, local_files_only=True, **kwargs)


def llava_image_tokens(cfg) -> int:
    """Tokens one ``<image>`` becomes in a LLaVA-1.5 model (the tower's patches, + CLS if kept)."""
    n = getattr(cfg, "image_seq_length", None)
    if not n:
        v = cfg.vision_config
        n = (v.image_size // v.patch_size) ** 2
        n += int(cfg.vision_feature_select_strategy == "full")
    return n


def wrap_hf(
    model,
    processor,
    family: str,
    name: str | None = None,
    info: dict | None = None,
    xmodal: dict | None = None,
) -> MLLM:
    """An :class:`MLLM` from an in-memory HF model and its processor."""
    _check_family(family)
    tok = processor.tokenizer
    if family == "llava":
        n, expand = llava_image_tokens(model.config), "mcl"
    else:
        n, expand = None, "processor"
        if tok.pad_token_id is None:  # batches are padded (masked out): any id will do
            tok.pad_token = tok.eos_token
    mllm = MLLM(model, processor, n, name=name or family, info=info, family=family, expand=expand)
    mllm.xmodal_cfg = xmodal
    return mllm


def load_hf(
    path: str | None,
    family: str = "llava",
    name: str | None = None,
    dtype: str = "bfloat16",
    xmodal: dict | None = None,
    processor_kwargs: dict | None = None,
    gradient_checkpointing: bool = False,
    **_: object,
) -> MLLM:
    """A ``family`` model and its processor from ``path`` (local files only);
    ``processor_kwargs`` override the processor's saved settings."""
    import transformers

    _check_family(family)
    p = check_model_dir(path)
    torch_dtype = model_dtype(dtype)  # a bad value fails before anything is read
    _check_model_type(p, family)
    processor = load_processor(p, family, **(processor_kwargs or {}))
    cls = getattr(transformers, FAMILIES[family][0])
    model = cls.from_pretrained(p, dtype=torch_dtype, local_files_only=True)
    model.eval()
    mllm = wrap_hf(model, processor, family, name=name, info={"path": str(p)}, xmodal=xmodal)
    mllm.set_gradient_checkpointing(gradient_checkpointing)
    return mllm


def load_llava(
    path: str | None,
    name: str = "llava",
    dtype: str = "bfloat16",
    xmodal: dict | None = None,
    gradient_checkpointing: bool = False,
    **_: object,
) -> MLLM:
    """A ``LlavaForConditionalGeneration`` and its processor from ``path`` (local files only)."""
    return load_hf(
        path,
        family="llava",
        name=name,
        dtype=dtype,
        xmodal=xmodal,
        gradient_checkpointing=gradient_checkpointing,
    )
