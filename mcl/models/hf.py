"""Real LLaVA-family checkpoints from a local Hugging Face directory (nothing is downloaded).

``model=llava15_7b model.path=/models/llava-1.5-7b-hf`` loads the model with its own processor
and chat template; everything else in mcl (methods, collator, generation) is the same as on the
tiny model. A missing or wrong path is a one-line error naming the fix.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mcl.models.mllm import MLLM

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def load_llava(
    path: str | None,
    name: str = "llava",
    dtype: str = "bfloat16",
    xmodal: dict | None = None,
    **_: object,
) -> MLLM:
    """A ``LlavaForConditionalGeneration`` and its processor from ``path`` (local files only)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    p = check_model_dir(path)
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype={dtype!r}; choose one of {sorted(DTYPES)}")
    processor = AutoProcessor.from_pretrained(p, local_files_only=True)
    model = LlavaForConditionalGeneration.from_pretrained(
        p, dtype=DTYPES[dtype], local_files_only=True
    )
    model.eval()
    cfg = model.config
    n = getattr(cfg, "image_seq_length", None)
    if not n:
        v = cfg.vision_config
        n = (v.image_size // v.patch_size) ** 2
        n += int(cfg.vision_feature_select_strategy == "full")
    mllm = MLLM(model, processor, image_seq_length=n, name=name, info={"path": str(p)})
    mllm.xmodal_cfg = xmodal
    return mllm
