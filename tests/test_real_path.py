"""The path a 7B run takes, checked on the micro model: the model stays on the run's device for
evaluation and task-boundary work, trainable parameters stay fp32 over a half-precision base,
and gradient checkpointing changes neither the loss nor the gradients."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy
from safetensors.torch import load_file

from mcl.config import ConfigError
from mcl.train import build, trainer_kwargs
from tests.conftest import MICRO, compose_cfg

METHODS = sorted(p.stem for p in (Path(__file__).parent.parent / "conf" / "method").glob("*.yaml"))
TRAINING = [m for m in METHODS if m != "zero_shot"]
# PathWeave adds a path per modality: its twin needs x-modal tasks
XMODAL = [
    "bench=mcl",
    "bench.tasks=[image,video,audio]",
    "bench.synthetic.train=32",
    "bench.synthetic.test=8",
    "bench.synthetic.shard_size=32",
    "bench.unseen=[]",
]


def _overrides(method: str, *extra: str) -> list[str]:
    return [*MICRO, f"method={method}", *(XMODAL if method == "pathweave" else []), *extra]


# ---------------------------------------------------------------- the model stays on its device
class _LeavesOnTeardown(SingleDeviceStrategy):
    """Lightning's strategies move the module to the CPU after every fit; on a GPU that is
    elsewhere. Here every parameter is marked as having left the run's device, until someone
    moves the module back with ``.to``."""

    def teardown(self) -> None:
        module = self.lightning_module
        super().teardown()
        if module is not None:
            module._left_device = True


def _spy_placement(method) -> list[tuple[str, bool]]:
    """Which phases ran while the module was away from the run's device."""
    seen: list[tuple[str, bool]] = []
    orig_to, orig_end, orig_gen = method.to, method.on_task_end, method.generate

    def to(*a, **k):
        method._left_device = False
        return orig_to(*a, **k)

    def on_task_end(t, dm):
        seen.append(("task_end", getattr(method, "_left_device", False)))
        return orig_end(t, dm)

    def generate(batch, **kw):
        seen.append(("eval", getattr(method, "_left_device", False)))
        return orig_gen(batch, **kw)

    method.to, method.on_task_end, method.generate = to, on_task_end, generate
    return seen


def test_evaluation_and_boundary_work_run_where_training_ran(tmp_path):
    cfg = compose_cfg(
        tmp_path,
        _overrides(
            "ewc",
            "+hardware.strategy._target_=tests.test_real_path._LeavesOnTeardown",
            "+hardware.strategy.device=cpu",
        ),
    )
    runner = build(cfg, Path(cfg.paths.output_dir))
    seen = _spy_placement(runner.method)
    results = runner.run()
    assert {p for p, _ in seen} == {"eval", "task_end"}
    away = [p for p, left in seen if left]
    assert not away, f"ran off the run's device after fit: {sorted(set(away))}"
    # results.json says where each phase ran
    assert set(results["devices"]) == {"eval", "task_start", "train", "task_end"}
    assert all(d == ["cpu"] for d in results["devices"].values())


# ---------------------------------------------------------------- fp32 masters over a bf16 base
class _FirstStep(L.Callback):
    """The trainable tensors around the first optimizer step of the first task."""

    def __init__(self):
        self.before: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self.loss: float | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.before:
            return
        for n, p in pl_module.named_parameters():
            if p.requires_grad:
                self.dtypes[n] = p.dtype
                self.before[n] = p.detach().clone()
                self.grads[n] = None if p.grad is None else p.grad.detach().clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.after or not self.before:
            return
        self.loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
        self.after = {n: p.detach().clone() for n, p in pl_module.named_parameters()}


def _first_step(tmp_path, method: str, *extra: str) -> tuple[_FirstStep, dict]:
    cfg = compose_cfg(tmp_path, _overrides(method, "train.steps=1", *extra))
    runner = build(cfg, Path(cfg.paths.output_dir))
    spy = _FirstStep()
    orig = runner.method.callbacks
    runner.method.callbacks = lambda: [*orig(), spy]
    runner.run()
    return spy, runner


@pytest.mark.slow
@pytest.mark.parametrize("method", TRAINING)
def test_a_bf16_base_trains_fp32_parameters_that_move_at_a_small_lr(tmp_path, method):
    spy, runner = _first_step(tmp_path, method, "model.dtype=bfloat16", "method.lr=1e-5")
    assert spy.dtypes, f"{method} trained nothing"
    half = sorted(n for n, d in spy.dtypes.items() if d != torch.float32)
    assert not half, f"{method}: trainable tensors not fp32: {half[:3]}"
    # the base really is bf16 (the casts above are the method's, not a fp32 base's)
    assert runner.method.mllm.model.get_input_embeddings().weight.dtype == torch.bfloat16
    moved = [n for n, g in spy.grads.items() if g is not None and bool(g.abs().max() > 0)]
    assert moved, f"{method}: no trainable tensor got a gradient"
    stuck = [n for n in moved if torch.equal(spy.before[n], spy.after[n])]
    assert not stuck, f"{method}: a 1e-5 step left these unchanged: {stuck[:3]}"
    ck = load_file(str(runner.out / "checkpoints" / "task00" / "adapters.safetensors"))
    saved = {n: ck[n].dtype for n in spy.dtypes if n in ck}
    assert saved, f"{method}: its task checkpoint holds none of its trainable tensors"
    assert set(saved.values()) == {torch.float32}, f"{method}: checkpoint dtypes {saved}"


def test_half_precision_training_that_would_cast_the_masters_is_refused(tmp_path):
    cfg = compose_cfg(tmp_path, [*MICRO, "hardware.precision=bf16-true"])
    with pytest.raises(ConfigError, match="bf16-mixed"):
        trainer_kwargs(cfg)


# ---------------------------------------------------------------- gradient checkpointing
@pytest.mark.slow
@pytest.mark.parametrize("method", TRAINING)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tmp_path, method):
    plain, _ = _first_step(tmp_path / "plain", method)
    ckpt, runner = _first_step(tmp_path / "ckpt", method, "model.gradient_checkpointing=true")
    model = runner.method.mllm.model
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    assert plain.loss == pytest.approx(ckpt.loss, rel=1e-5, abs=1e-6)
    assert plain.grads.keys() == ckpt.grads.keys()
    for n, g in plain.grads.items():
        h = ckpt.grads[n]
        if g is None:
            assert h is None, n
            continue
        torch.testing.assert_close(h, g, rtol=1e-4, atol=1e-6, msg=f"{method}: {n}")
