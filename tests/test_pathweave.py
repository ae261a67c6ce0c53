"""PathWeave (docs/methods/pathweave.md) and the x-modal inputs it needs, on the micro model.

The spec's tests: a fresh A^m changes nothing; the gate is dense, uniform at init and noisy in
training only; training modality m leaves every earlier modality's outputs bit-identical;
mixed-modality batches route per sample. Plus the x-modal inputs (collator, encoders) and the
whole loop through ``python -m mcl.train``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mcl.adapters.ana import AnALinear, NoisyGate, UniAdapter
from mcl.config import ConfigError
from mcl.models.xmodal import MODALITY_INDEX, Route, log_mel, pick_frames
from mcl.train import build, run
from tests.conftest import compose_cfg

MCL = [
    "model=micro",
    "bench=mcl",
    "bench.synthetic.train=48",
    "bench.synthetic.test=8",
    "bench.synthetic.shard_size=48",
    "train.steps=3",
    "train.batch_size=8",
    "eval.batch_size=16",
]


@pytest.fixture(scope="module")
def pw(tmp_path_factory):
    """A pathweave runner on the mcl twin, and two samples of every task."""
    tmp = tmp_path_factory.mktemp("pw")
    runner = build(compose_cfg(tmp, [*MCL, "method=pathweave"]), tmp / "run")
    dm = runner.dm
    samples = [s for name in dm.bench.task_names for s in dm.test_samples(name)[:2]]
    return runner.method, dm, samples


def _logits(method, samples):
    method.eval()
    batch = method.mllm.collator.train_batch(samples)
    with torch.no_grad():
        return method.mllm(**method.model_inputs(batch)).logits, batch


def _train(method, dm, task: int, steps: int = 3, lr: float = 5e-2):
    """``steps`` AdamW steps on task ``task`` with exactly what the method marks trainable."""
    method.on_task_start(task, dm)
    method.train()
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    samples = dm.sample_task(task, 8 * steps, seed=task)
    for i in range(steps):
        batch = method.mllm.collator.train_batch(samples[8 * i : 8 * i + 8])
        loss = method.mllm(**method.model_inputs(batch)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    method.eval()


# ---------------------------------------------------------------- adapters


def test_uni_adapter_is_zero_at_init_and_linear():
    a = UniAdapter(16, 12)
    assert torch.count_nonzero(a.up.weight) == 0 and torch.count_nonzero(a.up.bias) == 0
    assert torch.count_nonzero(a.down.bias) == 0 and a.scale.item() == 1.0
    x = torch.randn(5, 16)
    assert torch.count_nonzero(a(x)) == 0
    torch.nn.init.normal_(a.up.weight)
    y = torch.randn(5, 16)
    # no nonlinearity, no norm: A(x + y) = A(x) + A(y) (biases are zero)
    torch.testing.assert_close(a(x + y), a(x) + a(y), rtol=1e-5, atol=1e-5)


def test_gate_is_dense_uniform_at_init_and_noisy_only_in_training():
    g = NoisyGate(16, 3)
    x = torch.randn(4, 7, 16)
    g.eval()
    w = g(x)
    assert torch.equal(w, torch.full_like(w, 1 / 3))
    assert torch.equal(g(x), w)  # no noise at eval
    g.train()
    w1, w2 = g(x), g(x)
    assert not torch.allclose(w1, w2)  # noisy in training
    torch.testing.assert_close(w1.sum(-1), torch.ones(4, 7))
    assert (w1 > 0).all()  # dense: every expert gets weight (k = E)


def test_mixed_batch_routes_each_row_to_its_modality_path():
    torch.manual_seed(0)
    route = Route()
    site = AnALinear(torch.nn.Linear(16, 16), route)
    site.add_path("video", [])
    site.add_path("audio", ["video"])
    for p in site.parameters():
        torch.nn.init.normal_(p, std=0.3)
    site.eval()
    x = torch.randn(6, 5, 16)
    ids = torch.tensor([MODALITY_INDEX[m] for m in ["image", "video", "audio"] * 2])
    with route.scope(ids=ids):
        mixed = site(x)
    for r, i in enumerate(ids.tolist()):
        with route.scope(const=i):
            alone = site(x[r : r + 1])
        torch.testing.assert_close(mixed[r : r + 1], alone)
    # image rows: the frozen base alone; video: A^video alone; audio: gated Â_video + A^audio
    torch.testing.assert_close(mixed[0], site.base(x[0]))
    torch.testing.assert_close(mixed[1], site.base(x[1]) + site.uni["video"](x[1]))
    assert set(site.gate) == {"audio"} and site.gate["audio"].w_gate.shape == (16, 2)


# ---------------------------------------------------------------- x-modal inputs


def test_collator_carries_every_modality_with_cues_and_matching_placeholders(pw):
    method, _, samples = pw
    mllm = method.mllm
    batch = mllm.collator.train_batch(samples)
    assert [s["modality"] for s in samples] == [
        m for m in ["image", "video", "audio", "depth", "points"] for _ in range(2)
    ]
    assert batch["video_frames"].shape[:2] == (2, 4) and batch["depth_frames"].shape[:2] == (2, 2)
    assert batch["audio_mel"].shape[:2] == (2, 40) and batch["points"].shape == (2, 256, 3)
    image_id = mllm.model.config.image_token_id
    n = (batch["input_ids"] == image_id).sum(1).tolist()
    tokens = mllm.xmodal and mllm.collator.modal["tokens"]
    assert n == [tokens[s["modality"]] for s in samples]
    text = mllm.tokenizer.decode(batch["input_ids"][2])
    assert "video :" in text or "video:" in text


def test_image_samples_read_the_same_through_the_xmodal_path(pw):
    method, _, samples = pw
    mllm = method.mllm
    images = [s for s in samples if s["modality"] == "image"]
    xm_batch = mllm.collator.train_batch(images)
    mllm.collator.modal, saved = None, mllm.collator.modal
    try:
        native = mllm.collator.train_batch(images)
    finally:
        mllm.collator.modal = saved
    method.eval()
    with torch.no_grad():
        a = mllm(**method.model_inputs(xm_batch)).logits
        b = mllm(**method.model_inputs(native)).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_frames_and_log_mel():
    assert pick_frames(8, 4) == [0, 2, 5, 7] and pick_frames(3, 4) == [0, 1, 2, 2]
    sr = 16000
    t = torch.arange(12000) / sr
    low = log_mel(torch.sin(2 * torch.pi * 200 * t).numpy())
    high = log_mel(torch.sin(2 * torch.pi * 4000 * t).numpy())
    assert low.shape == high.shape == (40, 73)
    # the energy sits in low mel bins for a low tone, high bins for a high one
    assert low.mean(1).argmax() < 10 < high.mean(1).argmax()


# ---------------------------------------------------------------- PathWeave stages


def test_fresh_paths_change_nothing_and_a_stage_trains_its_own_path(pw):
    method, dm, samples = pw
    before, _ = _logits(method, samples)
    method.on_task_start(0, dm)  # image: A^image (the first path: no gate, no in-adapter)
    names = method.expected_trainable()
    assert names and all(".uni.image." in n for n in names)
    after, _ = _logits(method, samples)
    assert torch.equal(before, after)  # zero-init up-projections: outputs unchanged


def test_training_a_modality_leaves_earlier_modalities_bit_identical(pw):
    method, dm, samples = pw
    _, batch = _logits(method, samples)
    rows = {m: (batch["modality_ids"] == MODALITY_INDEX[m]).nonzero().flatten()
            for m in ["image", "video", "audio"]}  # fmt: skip
    _train(method, dm, 0)  # image
    after_image, _ = _logits(method, samples)
    _train(method, dm, 1)  # video: its input module, A^video, F_image^video, G^video
    names = method.expected_trainable()
    assert any(".gate.video." in n for n in names) and any(
        ".inner.image__video." in n for n in names
    )
    assert any(".xmodal.inputs.video." in n for n in names)
    assert not any(".uni.image." in n for n in names)
    after_video, _ = _logits(method, samples)
    assert torch.equal(after_video[rows["image"]], after_image[rows["image"]])
    assert not torch.equal(after_video[rows["video"]], after_image[rows["video"]])
    frozen = {k: v.clone() for k, v in method.adapter_state().items() if "video" in k}
    _train(method, dm, 2)  # audio
    assert not any("video" in n and "video__audio" not in n for n in method.expected_trainable())
    after_audio, _ = _logits(method, samples)
    for m in ["image", "video"]:
        assert torch.equal(after_audio[rows[m]], after_video[rows[m]]), m
    assert not torch.equal(after_audio[rows["audio"]], after_video[rows["audio"]])
    state = method.adapter_state()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    info = method.task_info(2)
    assert info["paths"] == ["image", "video", "audio"] and info["path_params"] > 0
    assert info["connector_params"] > 0 and info["path_share_of_connector_pct"] > 0


def test_a_base_modality_stage_trains_nothing(tmp_path):
    over = [*MCL, "method=pathweave", "method.base_modalities=[image]"]
    runner = build(compose_cfg(tmp_path, over), tmp_path / "run")
    method, dm = runner.method, runner.dm
    method.on_task_start(0, dm)
    assert method.expected_trainable() == set() and method.trains is False
    method.on_task_start(1, dm)  # video is the first path now: no gate
    names = method.expected_trainable()
    assert names and not any(".gate." in n or ".inner." in n for n in names)
    assert method.task_info(1)["paths"] == ["video"]


def test_faithful_to_code_quirks(tmp_path):
    over = [*MCL, "method=pathweave", "method.faithful_to_code=true"]
    runner = build(compose_cfg(tmp_path, over), tmp_path / "run")
    method, dm = runner.method, runner.dm
    for t in range(5):
        method.on_task_start(t, dm)
    sites = method.ana_modules()
    v = [s for n, s in sites.items() if n.endswith("v_proj")]
    summed = [s for s in sites.values() if not s.gated]
    assert v and all(s.skip.get("points") == "always" for s in v)
    assert summed and all(s.skip == {"video": "train", "audio": "train"} for s in summed)
    site = summed[0]
    torch.nn.init.normal_(site.uni["video"].up.weight)
    x = torch.randn(2, 3, site.base.in_features)
    with method.mllm.route.scope(const=MODALITY_INDEX["video"]):
        site.train()
        torch.testing.assert_close(site(x), site.base(x))  # bypassed in training
        site.eval()
        assert not torch.allclose(site(x), site.base(x))


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (["bench=synth"], "only image tasks; use a modality-incremental bench"),
        (["model.xmodal.enabled=false"], "needs the model's x-modal input modules"),
    ],
)
def test_pathweave_refuses_what_it_cannot_run(tmp_path, over, message):
    with pytest.raises(ConfigError, match=message):
        build(compose_cfg(tmp_path, [*MCL, "method=pathweave", *over]), tmp_path / "run")


def test_image_only_methods_refuse_xmodal_benchmarks(tmp_path):
    with pytest.raises(ConfigError, match="reads images only.*model.xmodal.enabled=false"):
        build(compose_cfg(tmp_path, [*MCL, "method=eproj"]), tmp_path / "run")


def test_end_to_end_with_resume(tmp_path):
    over = [*MCL, "method=pathweave", "++method.lr=1e-2"]
    cfg = compose_cfg(tmp_path / "a", over)
    full = run(cfg, Path(cfg.paths.output_dir))
    r = json.loads((tmp_path / "a" / "run" / "results.json").read_text())
    assert r["complete"] and len(r["matrix"]) == 6
    info = {i["task"]: i for i in r["method_info"]}
    assert info["3d"]["paths"] == ["image", "video", "audio", "depth", "points"]
    assert all(info[t]["path_params"] > 0 for t in ["image", "video", "audio", "depth", "3d"])
    # a crash during the fourth task: resuming rebuilds the paths, ends with the same matrix
    crashed = tmp_path / "b" / "run"
    shutil.copytree(tmp_path / "a" / "run", crashed)
    for d in ["task03", "task04"]:
        shutil.rmtree(crashed / "checkpoints" / d)
    partial = json.loads((crashed / "results.json").read_text())
    partial.update(complete=False)
    (crashed / "results.json").write_text(json.dumps(partial))
    resumed = run(compose_cfg(tmp_path / "b", [*over, "resume=true"]), crashed)
    assert resumed["matrix"] == json.loads(json.dumps(full["matrix"]))


def test_mixed_modality_forward_in_bfloat16(tmp_path):
    """bf16-true precision: the x-modal modules follow the model's dtype."""
    runner = build(compose_cfg(tmp_path, [*MCL, "method=pathweave"]), tmp_path / "run")
    method, dm = runner.method, runner.dm
    method.on_task_start(1, dm)
    method.to(torch.bfloat16).eval()
    samples = [s for name in dm.bench.task_names for s in dm.test_samples(name)[:1]]
    batch = method.mllm.collator.train_batch(samples)
    batch = {k: v.to(torch.bfloat16) if torch.is_floating_point(v) else v
             for k, v in batch.items() if torch.is_tensor(v)}  # fmt: skip
    with torch.no_grad():
        out = method.mllm(**method.model_inputs(batch))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)


def test_non_llava_models_get_a_clear_error():
    from types import SimpleNamespace

    from mcl.models.xmodal import attach_xmodal

    fake = SimpleNamespace(model=torch.nn.Linear(2, 2), info={})
    with pytest.raises(ValueError, match="LLaVA-family.*model.xmodal.enabled=false"):
        attach_xmodal(fake, ["video"])
