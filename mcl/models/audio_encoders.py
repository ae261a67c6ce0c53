"""Frozen pretrained audio encoders from transformers, for the x-modal audio input.

PathWeave (as X-InstructBLIP) reads audio through a frozen pretrained encoder (BEATs) and trains
only what maps its features into the language model. BEATs is not in transformers, so mcl offers
the audio towers that are: Whisper's encoder (``WhisperModel.encoder``) and CLAP's audio model
(``ClapAudioModel``), picked by ``model.xmodal.audio_encoder`` (``logmel``, the default, is mcl's
small trained conv encoder in :mod:`mcl.models.xmodal`).

A tower is loaded from ``model.xmodal.audio_encoder_path`` (a local checkpoint folder; nothing
is fetched) or, without a path, built with random weights from a small shipped config
(``mcl/models/configs/<kind>_tiny_random.json``: tests and smoke runs). It is part of the frozen
base (``mllm.frozen_encoders``: never trained, never in task checkpoints, kept in the base's
dtype, run in eval mode); the trained projection is the audio input module in ``mllm.xmodal``.

The features each tower was trained on are computed in the collator from the shards' raw 16 kHz
waveforms with transformers' own feature extractors, constructed from explicit arguments (no hub):
Whisper's log-mel (``num_mel_bins`` bins, a fixed window of ``2 * max_source_positions`` frames:
30 s for the released models), CLAP's 48 kHz mel (the waveform upsampled 3x, cut to its 10 s).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mcl.data.schema import SAMPLE_RATE

AUDIO_ENCODERS = ("logmel", "whisper", "clap")
CONFIG_DIR = Path(__file__).parent / "configs"


class WhisperFeatures:
    """Raw 16 kHz waveforms -> ``[B, n_mels, frames]``: Whisper's log-mel, padded or cut to the
    encoder's fixed window."""

    def __init__(self, n_mels: int, frames: int):
        from transformers import WhisperFeatureExtractor

        hop = 160
        seconds = frames * hop / SAMPLE_RATE
        self.fe = WhisperFeatureExtractor(
            feature_size=n_mels, sampling_rate=SAMPLE_RATE, hop_length=hop, chunk_length=1
        )
        # chunk_length is whole seconds in the constructor; the window is set exactly here
        self.fe.n_samples = int(round(seconds * SAMPLE_RATE))
        self.fe.nb_max_frames = frames
        self.fe.chunk_length = seconds

    def __call__(self, waves: list[np.ndarray]) -> torch.Tensor:
        out = self.fe(
            [np.asarray(w, np.float32) for w in waves],
            sampling_rate=SAMPLE_RATE,
            return_tensors="np",
        )
        return torch.from_numpy(np.asarray(out["input_features"], np.float32))


def upsample(wave: np.ndarray, factor: int) -> np.ndarray:
    """Band-limited integer upsampling (zero-padded spectrum): nothing is added above the
    original Nyquist frequency."""
    x = torch.as_tensor(np.asarray(wave, np.float32))
    n = len(x)
    spec = torch.fft.rfft(x)
    y = torch.fft.irfft(spec, n * factor) * factor
    return y.numpy()


class ClapFeatures:
    """Raw 16 kHz waveforms -> CLAP's ``input_features`` ``[B, 1 or 4, frames, n_mels]`` at
    48 kHz. Clips are cut to the extractor's window first, so its random crop of longer clips
    never runs (the same sample, the same input)."""

    RATE = 48_000

    def __init__(self, n_mels: int, fusion: bool, seconds: int = 10):
        from transformers import ClapFeatureExtractor

        self.fe = ClapFeatureExtractor(
            feature_size=n_mels,
            sampling_rate=self.RATE,
            max_length_s=seconds,
            truncation="fusion" if fusion else "rand_trunc",
            padding="repeatpad",
        )
        self.seconds = seconds

    def __call__(self, waves: list[np.ndarray]) -> torch.Tensor:
        n = self.seconds * SAMPLE_RATE
        up = [upsample(np.asarray(w, np.float32)[:n], self.RATE // SAMPLE_RATE) for w in waves]
        out = self.fe(up, sampling_rate=self.RATE, return_tensors="np")
        return torch.from_numpy(np.asarray(out["input_features"], np.float32))


class FrozenAudioTower(nn.Module):
    """A pretrained audio encoder, frozen: features -> hidden states ``[B, T, width]``."""

    def __init__(self, kind: str, model: nn.Module, width: int):
        super().__init__()
        self.kind, self.model, self.width = kind, model, width
        self.model.requires_grad_(False)

    @torch.no_grad()
    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Always in eval mode (no dropout: the tower is frozen), whatever mode the method is
        in; the flag itself follows the method (Lightning warns about modules left in eval)."""
        mode = self.model.training
        self.model.eval()
        try:
            return self._hidden(feats)
        finally:
            self.model.train(mode)

    def _hidden(self, feats: torch.Tensor) -> torch.Tensor:
        if self.kind == "whisper":
            return self.model(input_features=feats).last_hidden_state
        # CLAP: its last swin stage's map [B, C, F', T'], averaged over frequency: a sequence
        # over time (clips are never longer than the window: is_longer is always false)
        is_longer = torch.zeros(len(feats), 1, dtype=torch.bool, device=feats.device)
        h = self.model(input_features=feats, is_longer=is_longer).last_hidden_state
        return h.mean(2).transpose(1, 2)


def _random(kind: str, seed: int) -> nn.Module:
    """The tower of the shipped tiny config, with seeded random weights."""
    path = CONFIG_DIR / f"{kind}_tiny_random.json"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "whisper":
            from transformers import WhisperConfig
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            return WhisperEncoder(WhisperConfig.from_json_file(path))
        from transformers import ClapAudioConfig, ClapAudioModel

        return ClapAudioModel(ClapAudioConfig.from_json_file(path))


def _pretrained(kind: str, path: str) -> nn.Module:
    """The audio tower of a local checkpoint folder (a Whisper or CLAP model; for CLAP also a
    bare audio model)."""
    from transformers import AutoConfig, AutoModel

    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"model.xmodal.audio_encoder_path={path}: no config.json there; download the "
            f"checkpoint beforehand (nothing is fetched at run time)"
        )
    cfg = AutoConfig.from_pretrained(folder, local_files_only=True)
    want = {"whisper": ("whisper",), "clap": ("clap", "clap_audio_model")}[kind]
    if cfg.model_type not in want:
        raise ValueError(
            f"model.xmodal.audio_encoder={kind} but {path} holds a {cfg.model_type!r} model"
        )
    if cfg.model_type == "clap_audio_model":
        from transformers import ClapAudioModel

        return ClapAudioModel.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    return model.encoder if kind == "whisper" else model.audio_model


def build_audio_tower(cfg: dict, seed: int = 0) -> tuple[FrozenAudioTower, object] | None:
    """The frozen tower ``model.xmodal.audio_encoder`` names and the collator's feature
    function for it; None for ``logmel`` (mcl's trained conv encoder)."""
    kind = cfg.get("audio_encoder") or "logmel"
    if kind not in AUDIO_ENCODERS:
        raise ValueError(
            f"model.xmodal.audio_encoder={kind!r}; choose one of {', '.join(AUDIO_ENCODERS)}"
        )
    if kind == "logmel":
        return None
    path = cfg.get("audio_encoder_path")
    model = _pretrained(kind, path) if path else _random(kind, seed)
    c = model.config
    if kind == "whisper":
        frames = c.max_source_positions * 2  # two convolutions, the second of stride 2
        feats = WhisperFeatures(c.num_mel_bins, frames)
        width = c.d_model
    else:
        feats = ClapFeatures(c.num_mel_bins, bool(c.enable_fusion))
        width = c.hidden_size
    return FrozenAudioTower(kind, model, width), feats
