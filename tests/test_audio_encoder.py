"""Frozen pretrained audio towers (``model.xmodal.audio_encoder``: whisper | clap).

The towers come from transformers with random weights from the shipped small configs (or from
a local folder); they read the shards' raw 16 kHz waveforms through transformers' feature
extractors, stay frozen in the base's dtype and out of task checkpoints, while the projection
after them trains (in fp32 over a half-precision base). ``logmel`` (the default) keeps mcl's
trained conv encoder and attaches no tower.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mcl.models.xmodal as xmodal
from mcl.models.audio_encoders import build_audio_tower
from mcl.train import build, run
from tests.conftest import compose_cfg

MICRO_AUDIO = [
    "model=micro",
    "bench=mcl",
    "bench.tasks=[image,audio]",
    "bench.unseen=[]",
    "bench.synthetic.train=48",
    "bench.synthetic.test=8",
    "bench.synthetic.shard_size=48",
    "train.steps=3",
    "train.batch_size=8",
    "eval.batch_size=16",
    "method=pathweave",
    "logger=none",
]


def _waves():
    rng = np.random.default_rng(0)
    return [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (4000, 16000, 200_000)]


@pytest.mark.parametrize("kind", ["whisper", "clap"])
def test_towers_read_raw_16k_waveforms(kind):
    tower, features = build_audio_tower({"audio_encoder": kind}, seed=0)
    x = features(_waves())
    assert torch.equal(x, features(_waves()))  # long clips are cut, never cropped at random
    h = tower(x)
    assert h.shape[0] == 3 and h.shape[-1] == tower.width and h.dim() == 3
    assert not any(p.requires_grad for p in tower.parameters())
    tower.train()
    ran = []
    tower.model.register_forward_pre_hook(lambda m, a: ran.append(m.training))
    assert torch.equal(tower(x), h) and ran == [False]  # frozen: no dropout in training either
    again, _ = build_audio_tower({"audio_encoder": kind}, seed=0)
    assert all(
        torch.equal(a, b) for a, b in zip(tower.state_dict().values(), again.state_dict().values())
    )


def test_audio_encoder_choices_and_paths_are_checked(tmp_path):
    assert build_audio_tower({}) is None and build_audio_tower({"audio_encoder": "logmel"}) is None
    with pytest.raises(ValueError, match="beats.*logmel, whisper, clap"):
        build_audio_tower({"audio_encoder": "beats"})
    with pytest.raises(ValueError, match="no config.json there"):
        build_audio_tower({"audio_encoder": "whisper", "audio_encoder_path": str(tmp_path)})


def test_a_local_whisper_checkpoint_loads_offline(tmp_path):
    from transformers import WhisperConfig, WhisperModel

    from mcl.models.audio_encoders import CONFIG_DIR

    model = WhisperModel(WhisperConfig.from_json_file(CONFIG_DIR / "whisper_tiny_random.json"))
    model.save_pretrained(tmp_path / "whisper")
    tower, _ = build_audio_tower(
        {"audio_encoder": "whisper", "audio_encoder_path": str(tmp_path / "whisper")}
    )
    saved = model.encoder.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in tower.model.state_dict().items())
    with pytest.raises(ValueError, match="audio_encoder=clap but .* 'whisper' model"):
        build_audio_tower(
            {"audio_encoder": "clap", "audio_encoder_path": str(tmp_path / "whisper")}
        )


def test_logmel_default_attaches_no_tower(tmp_path):
    runner = build(compose_cfg(tmp_path, MICRO_AUDIO), tmp_path / "run")
    mllm = runner.method.mllm
    assert isinstance(mllm.xmodal.inputs["audio"].encoder, xmodal.AudioEncoder)
    assert getattr(mllm, "frozen_encoders", None) is None
    assert mllm.collator.modal.get("audio_features") is None


def test_tower_frozen_in_base_dtype_projection_trains_in_fp32(tmp_path):
    over = [*MICRO_AUDIO, "model.xmodal.audio_encoder=whisper", "model.dtype=bfloat16"]
    runner = build(compose_cfg(tmp_path, over), tmp_path / "run")
    method, dm = runner.method, runner.dm
    tower = method.mllm.frozen_encoders["audio"]
    assert {p.dtype for p in tower.parameters()} == {torch.bfloat16}
    proj = method.mllm.xmodal.inputs["audio"]
    assert {p.dtype for p in proj.parameters()} == {torch.float32}
    method.on_task_start(dm.bench.task_names.index("audio"), dm)
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    assert not any(".frozen_encoders." in n for n in trainable)
    assert any(n.startswith("mllm.xmodal.inputs.audio.encoder.map.") for n in trainable)
    samples = dm.test_samples("audio")[:2]
    batch = method.mllm.collator.train_batch(samples)
    loss = method.mllm(**method.model_inputs(batch)).loss
    loss.backward()
    assert proj.encoder.map.weight.grad is not None
    assert all(p.grad is None for p in tower.parameters())


@pytest.mark.parametrize("kind", ["whisper", pytest.param("clap", marks=pytest.mark.slow)])
def test_pathweave_trains_the_projection_not_the_tower(tmp_path, monkeypatch, kind):
    seen = {}
    attach = xmodal.attach_xmodal

    def spy(mllm, modalities, cfg=None):
        attach(mllm, modalities, cfg)
        seen["mllm"] = mllm
        seen["tower"] = {k: v.clone() for k, v in mllm.frozen_encoders.state_dict().items()}
        seen["proj"] = {k: v.clone() for k, v in mllm.xmodal.inputs["audio"].state_dict().items()}

    monkeypatch.setattr(xmodal, "attach_xmodal", spy)
    over = [*MICRO_AUDIO, f"model.xmodal.audio_encoder={kind}"]
    results = run(compose_cfg(tmp_path, over), tmp_path / "out")
    assert (
        json.loads((tmp_path / "out" / "results.json").read_text())["matrix"] == results["matrix"]
    )
    mllm = seen["mllm"]
    after = mllm.frozen_encoders.state_dict()
    assert all(torch.equal(after[k], v) for k, v in seen["tower"].items())
    proj = mllm.xmodal.inputs["audio"].state_dict()
    assert any(not torch.equal(proj[k], v) for k, v in seen["proj"].items())
