"""X-modal inputs for LLaVA-family models: video, audio, depth and point clouds beside images.

The base is pretrained on images only (PathWeave's setting); :func:`attach_xmodal` adds, per
non-image modality, an input module that turns the sample's native payload into a few feature
vectors of the vision tower's width, which then go through the model's *own* connector (the
LLaVA projector) into placeholder positions of the prompt, after a modality cue (``video:``):

- video: up to ``video_frames`` frames (first and last always), each through the frozen vision
  tower; the frames' patch features are concatenated, plus a learned per-frame embedding;
- depth: two frames, the RGB image and its depth map (grey), as in PathWeave;
- audio: a log-mel spectrogram (computed in the collator) through a small conv encoder, pooled
  to ``audio.tokens`` time steps; or (``audio_encoder: whisper | clap``) a frozen pretrained
  tower from transformers (:mod:`mcl.models.audio_encoders`, kept in ``mllm.frozen_encoders``)
  whose hidden states a trained projection pools to ``audio.tokens`` vectors;
- points: a PointNet-style encoder (per-point MLP, max-pool) over ``points.n_points`` points in
  the canonical (principal-axes) pose, expanded to ``points.tokens`` tokens.

Each module ends with a linear map into the tower's feature space (identity-initialised for the
frame modalities, so a fresh video frame reads exactly like an image). The modules start from a
fixed seed (the same weights whatever method runs) and are trained by the stage of their
modality (see ``ContinualMethod.expected_trainable``). The shared :class:`Route` tells
modality-routed adapters which modality each row of the current forward pass belongs to.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from torch import nn

from mcl.data.render import canonical_view
from mcl.data.schema import MODALITIES, RGBD, SAMPLE_RATE
from mcl.models.audio_encoders import build_audio_tower

MODALITY_INDEX = {m: i for i, m in enumerate(MODALITIES)}
FRAME_MODALITIES = ("video", "depth")
# the modality cue before each input; the image cue is empty because the tiny base was
# pretrained without one (PathWeave's X-InstructBLIP base used " image: ")
DEFAULT_CUES = {
    "image": "",
    "video": "video:",
    "audio": "audio:",
    "depth": "depth:",
    "points": "3d:",
}


class Route:
    """Which modality each row of the current forward pass is (shared by the MLLM and any
    modality-routed adapter). ``const`` (one modality for every row: the connector runs one
    modality group at a time) wins over ``ids`` (per sample: the LM sees mixed batches)."""

    def __init__(self):
        self.ids: torch.Tensor | None = None
        self.const: int | None = None

    def rows(self, n: int) -> torch.Tensor | int | None:
        """The modality index per row for an input with ``n`` rows (an int when they all share
        one), or None when nothing routes (an image-only model)."""
        if self.const is not None:
            return self.const
        if self.ids is not None and len(self.ids) == n:
            return self.ids
        return None

    @contextlib.contextmanager
    def scope(self, ids: torch.Tensor | None = None, const: int | None = None):
        old = self.ids, self.const
        self.ids, self.const = (ids if ids is not None else self.ids), const
        try:
            yield
        finally:
            self.ids, self.const = old

    def replay(self):
        """A context that puts back the routing of this moment: gradient checkpointing
        recomputes a layer during backward, after the forward's ``scope`` has closed."""
        ids, const = self.ids, self.const

        @contextlib.contextmanager
        def restored():
            old = self.ids, self.const
            self.ids, self.const = ids, const
            try:
                yield
            finally:
                self.ids, self.const = old

        return restored()


# ---------------------------------------------------------------- payload -> tensor (collator)


def pick_frames(n: int, k: int) -> list[int]:
    """``k`` frame indices spread over ``n`` frames, first and last included."""
    if n <= k:
        return list(range(n)) + [n - 1] * (k - n)
    return [round(i * (n - 1) / (k - 1)) for i in range(k)] if k > 1 else [n - 1]


def mel_filterbank(n_fft: int, n_mels: int, sr: int) -> torch.Tensor:
    """HTK-style triangular mel filters, ``[n_mels, n_fft // 2 + 1]``."""
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731
    edges = np.linspace(mel(0), mel(sr / 2), n_mels + 2)
    hz = 700 * (10 ** (edges / 2595) - 1)
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        lo, c, hi = hz[i], hz[i + 1], hz[i + 2]
        fb[i] = np.clip(np.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)), 0, None)
    return torch.tensor(fb, dtype=torch.float32)


def log_mel(wave: np.ndarray, n_mels: int = 40, n_fft: int = 400, hop: int = 160) -> torch.Tensor:
    """``[n_mels, frames]`` log-mel spectrogram of a 16 kHz clip, standardised per clip."""
    x = torch.as_tensor(np.asarray(wave, np.float32))
    if len(x) < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - len(x)))
    spec = (
        torch.stft(
            x, n_fft, hop, window=torch.hann_window(n_fft), center=False, return_complex=True
        ).abs()
        ** 2
    )
    m = torch.log(mel_filterbank(n_fft, n_mels, SAMPLE_RATE) @ spec + 1e-6)
    return (m - m.mean()) / (m.std() + 1e-5)


def points_tensor(points: np.ndarray, n: int) -> torch.Tensor:
    """``[n, 3]``: the cloud in its canonical pose, scaled to the unit ball, ``n`` points
    spread evenly over the stored order (a fixed subsample: the same sample, the same input)."""
    q = canonical_view(points)
    q = q / (np.linalg.norm(q, axis=1).max() or 1.0)
    idx = np.linspace(0, len(q) - 1, n).round().astype(int)
    return torch.tensor(q[idx], dtype=torch.float32)


def depth_frames(sample: dict):
    """The two frames of a depth sample: its RGB image (or the depth view when there is none)
    and the depth map as a grey image."""
    from PIL import Image

    payload = sample["payload"]
    depth = payload.depth if isinstance(payload, RGBD) else payload
    rgb = sample.get("rgb") or (payload.rgb if isinstance(payload, RGBD) else None)
    grey = Image.fromarray(np.asarray(depth, np.uint8)).convert("RGB")
    return [rgb if rgb is not None else grey, grey]


# ---------------------------------------------------------------- encoders


class AudioEncoder(nn.Module):
    """Log-mel ``[B, n_mels, T]`` -> ``[B, tokens, d]``: two 1-D convolutions, pooled in time."""

    def __init__(self, n_mels: int, d: int, tokens: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(n_mels, d, 3, padding=1),
            nn.GELU(),
            nn.Conv1d(d, d, 3, stride=2, padding=1),
            nn.GELU(),
        )
        self.pool = nn.AdaptiveAvgPool1d(tokens)
        self.pos = nn.Parameter(torch.zeros(tokens, d))
        self.norm = nn.LayerNorm(d)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.conv(mel)).transpose(1, 2)
        return self.norm(h + self.pos)


class PointEncoder(nn.Module):
    """Points ``[B, N, 3]`` -> ``[B, tokens, d]``: PointNet (shared per-point MLP, max-pool),
    then one linear map to ``tokens`` vectors."""

    def __init__(self, d: int, tokens: int, hidden: int = 64):
        super().__init__()
        self.point = nn.Sequential(
            nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, d),
        )  # fmt: skip
        self.expand = nn.Linear(d, tokens * d)
        self.norm = nn.LayerNorm(d)
        self.tokens, self.d = tokens, d

    def forward(self, pts: torch.Tensor) -> torch.Tensor:
        g = self.point(pts).max(dim=1).values
        return self.norm(self.expand(g).view(len(pts), self.tokens, self.d))


class TowerTokens(nn.Module):
    """A frozen tower's hidden states ``[B, T, width]`` -> ``[B, tokens, d]``: pooled in time,
    then the trained projection into the vision tower's feature space."""

    def __init__(self, width: int, d: int, tokens: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool1d(tokens)
        self.map = nn.Linear(width, d)
        self.pos = nn.Parameter(torch.zeros(tokens, d))
        self.norm = nn.LayerNorm(d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.pool(h.transpose(1, 2)).transpose(1, 2)
        return self.norm(self.map(h) + self.pos)


class ModalInput(nn.Module):
    """One modality's input path up to the connector: encoder (frame modalities use the frozen
    vision tower) and a linear map into the tower's feature space."""

    def __init__(self, modality: str, d: int, frames: int = 0, encoder: nn.Module | None = None):
        super().__init__()
        self.modality, self.frames = modality, frames
        self.encoder = encoder
        self.proj = nn.Linear(d, d)
        if modality in FRAME_MODALITIES:
            with torch.no_grad():  # a fresh frame reads exactly like an image
                self.proj.weight.copy_(torch.eye(d))
                self.proj.bias.zero_()
            self.frame_pos = nn.Parameter(torch.zeros(frames, 1, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Frame modalities: tower features ``[B, F, P, d]`` -> ``[B, F*P, d]``; others: the
        encoder's input -> ``[B, tokens, d]``."""
        if self.modality in FRAME_MODALITIES:
            x = x + self.frame_pos
            return self.proj(x.flatten(1, 2))
        return self.proj(self.encoder(x))


class XModal(nn.Module):
    """The input modules of the non-image modalities (``mllm.xmodal``) and how to embed a batch."""

    def __init__(
        self, modalities: list[str], d: int, patches: int, cfg: dict, audio_width: int = 0
    ):
        """``audio_width``: the hidden size of a frozen audio tower (0: the log-mel encoder)."""
        super().__init__()
        audio, points = cfg.get("audio", {}), cfg.get("points", {})
        # what the collator needs to turn payloads into these modules' inputs
        self.prep = {
            "video_frames": int(cfg.get("video_frames", 4)),
            "n_mels": int(audio.get("n_mels", 40)),
            "n_points": int(points.get("n_points", 256)),
        }
        self.inputs = nn.ModuleDict()
        self.tokens: dict[str, int] = {"image": patches}
        for m in modalities:
            if m == "video":
                k = self.prep["video_frames"]
                self.inputs[m] = ModalInput(m, d, frames=k)
                self.tokens[m] = k * patches
            elif m == "depth":
                self.inputs[m] = ModalInput(m, d, frames=2)
                self.tokens[m] = 2 * patches
            elif m == "audio":
                n = int(audio.get("tokens", 12))
                enc = (
                    TowerTokens(audio_width, d, n)
                    if audio_width
                    else AudioEncoder(self.prep["n_mels"], d, n)
                )
                self.inputs[m] = ModalInput(m, d, encoder=enc)
                self.tokens[m] = n
            elif m == "points":
                n = int(points.get("tokens", 4))
                self.inputs[m] = ModalInput(m, d, encoder=PointEncoder(d, n))
                self.tokens[m] = n
            elif m != "image":
                raise ValueError(f"no input module for modality {m!r}; known: {MODALITIES}")


def tower_features(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """``[N, P, d]``: the vision tower's features as LLaVA selects them (layer, CLS dropped)."""
    cfg = model.config
    tower = model.model.vision_tower
    p = next(tower.parameters())
    out = tower(pixel_values.to(p.device, p.dtype), output_hidden_states=True)
    layer = cfg.vision_feature_layer
    if not isinstance(layer, int):
        raise ValueError("x-modal inputs need a single vision_feature_layer")
    h = out.hidden_states[layer]
    return h[:, 1:] if cfg.vision_feature_select_strategy == "default" else h


def embed(mllm, batch: dict) -> torch.Tensor:
    """The LM's input embeddings of an x-modal batch: text embeddings with every sample's
    modality features written, in order, into its placeholder positions. The connector runs
    once per modality group, with ``mllm.route`` saying which modality it is serving."""
    model, xm = mllm.model, mllm.xmodal
    ids = batch["input_ids"]
    emb = model.get_input_embeddings()(ids)
    mods = batch["modality_ids"]
    projector = model.model.multi_modal_projector
    frozen = getattr(mllm, "frozen_encoders", None) or {}
    feats: list[torch.Tensor | None] = [None] * len(ids)
    for m, key in (("image", "pixel_values"), *((m, MODAL_KEYS[m]) for m in xm.inputs)):
        rows = (mods == MODALITY_INDEX[m]).nonzero().flatten().tolist()
        if not rows:
            continue
        x = batch[key]
        if m == "image":
            h = tower_features(model, x)
        elif m in FRAME_MODALITIES:
            b, f = x.shape[:2]
            h = tower_features(model, x.flatten(0, 1)).unflatten(0, (b, f))
            h = xm.inputs[m](h.to(xm.inputs[m].proj.weight.dtype))
        else:
            if m in frozen:  # a pretrained tower (frozen, base dtype) before the projection
                q = next(frozen[m].parameters())
                x = frozen[m](x.to(q.device, q.dtype))
            p = next(xm.inputs[m].parameters())
            h = xm.inputs[m](x.to(p.device, p.dtype))
        with mllm.route.scope(const=MODALITY_INDEX[m]):
            h = projector(h.to(next(projector.parameters()).dtype))
        for j, r in enumerate(rows):
            feats[r] = h[j]
    mask = ids == model.config.image_token_id
    for r, f in enumerate(feats):
        n = int(mask[r].sum())
        if f is None or n != len(f):
            raise ValueError(
                f"sample {r}: {n} placeholder tokens for {0 if f is None else len(f)} features"
            )
    flat = torch.cat([f for f in feats if f is not None]).to(emb.dtype)
    return emb.masked_scatter(mask.unsqueeze(-1), flat)


# batch key of each non-image modality's input tensor
MODAL_KEYS = {
    "video": "video_frames",
    "audio": "audio_mel",
    "depth": "depth_frames",
    "points": "points",
}
XMODAL_KEYS = ("modality_ids", *MODAL_KEYS.values())


def attach_xmodal(mllm, modalities: list[str], cfg: dict | None = None) -> None:
    """Give ``mllm`` input modules for ``modalities`` (image needs none) and make its collator
    carry every modality. Seeded (``cfg.seed``) without touching the global RNG, so every
    method starts from the same modules."""
    cfg = dict(cfg or {})
    model = mllm.model
    if not hasattr(getattr(model, "model", None), "multi_modal_projector"):
        raise ValueError(
            f"x-modal inputs need a LLaVA-family model (vision tower + multi_modal_projector); "
            f"{type(model).__name__} has none: set model.xmodal.enabled=false"
        )
    if mllm.collator.expand != "mcl":  # LLaVA-NeXT / InternVL: the processor tiles images
        raise ValueError(
            f"x-modal inputs need a LLaVA-1.5 model (fixed image tokens); {mllm.name} is a "
            f"{mllm.family} model: set model.xmodal.enabled=false"
        )
    vcfg = model.config.vision_config
    d = vcfg.hidden_size
    patches = mllm.collator.image_seq_length
    seed = int(cfg.get("seed", 0))
    tower = build_audio_tower(cfg, seed) if "audio" in modalities else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mods = [m for m in modalities if m != "image"]
        xm = XModal(mods, d, patches, cfg, audio_width=tower[0].width if tower else 0)
    p = next(model.parameters())
    mllm.xmodal = xm.to(p.device, p.dtype)
    if tower is not None:  # part of the frozen base: the method freezes it, checkpoints skip it
        mllm.frozen_encoders = nn.ModuleDict({"audio": tower[0].to(p.device, p.dtype)})
        xm.prep["audio_features"] = tower[1]
    cues = {**DEFAULT_CUES, **(cfg.get("cues") or {})}
    mllm.collator.set_modal(
        tokens=xm.tokens, cues={m: cues.get(m, "") for m in xm.tokens}, **xm.prep
    )
    mllm.info = {**mllm.info, "xmodal": {m: xm.tokens[m] for m in xm.tokens}}


def collate_modal(collator, samples: list[dict]) -> dict[str, torch.Tensor]:
    """Per-modality input tensors of ``samples`` (in sample order within each modality) and
    ``modality_ids``; a modality the model has no input module for is a clear error."""
    out: dict[str, torch.Tensor] = {}
    spec = collator.modal
    mods = [s.get("modality") or "image" for s in samples]
    unknown = sorted({m for m in mods if m not in spec["tokens"]})
    if unknown:
        raise ValueError(
            f"samples of modality {unknown} but the model has input modules for "
            f"{sorted(spec['tokens'])}; attach them (model.xmodal) for this benchmark"
        )
    out["modality_ids"] = torch.tensor([MODALITY_INDEX[m] for m in mods])
    group = lambda m: [s for s, sm in zip(samples, mods) if sm == m]  # noqa: E731
    if imgs := group("image"):
        out["pixel_values"] = collator._images([s["image"] for s in imgs])
    if vids := group("video"):
        k = spec["video_frames"]
        frames = [list(s["payload"][pick_frames(len(s["payload"]), k)]) for s in vids]
        flat = collator._images([f for fs in frames for f in fs])
        out["video_frames"] = flat.unflatten(0, (len(vids), k))
    if deps := group("depth"):
        flat = collator._images([f for s in deps for f in depth_frames(s)])
        out["depth_frames"] = flat.unflatten(0, (len(deps), 2))
    if (auds := group("audio")) and spec.get("audio_features") is not None:
        out["audio_mel"] = spec["audio_features"]([s["payload"] for s in auds])
    elif auds:
        mels = [log_mel(s["payload"], spec["n_mels"]) for s in auds]
        width = max(m.shape[1] for m in mels)
        out["audio_mel"] = torch.stack(
            [torch.nn.functional.pad(m, (0, width - m.shape[1])) for m in mels]
        )
    if pts := group("points"):
        out["points"] = torch.stack([points_tensor(s["payload"], spec["n_points"]) for s in pts])
    return out
