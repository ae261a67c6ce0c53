"""Real checkpoints load from a local HF directory (here: the micro base saved in HF format),
and a missing path is a one-line error."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from mcl.config import ConfigError
from mcl.train import build, run
from tests.conftest import MICRO, compose_cfg


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The micro base (with the twins' words) saved as a Hugging Face model directory."""
    tmp = tmp_path_factory.mktemp("hf")
    mllm = instantiate(compose_cfg(tmp, MICRO).model)
    mllm.model.save_pretrained(tmp / "model")
    mllm.processor.save_pretrained(tmp / "model")
    return tmp / "model", mllm


def _over(path) -> list[str]:
    return [
        *(o for o in MICRO if o != "model=micro"),
        "model=llava15_7b",
        f"model.path={path}",
        "model.dtype=float32",
    ]


@pytest.mark.slow
def test_a_local_checkpoint_loads_with_its_processor_and_runs_the_loop(saved, tmp_path):
    path, ref = saved
    cfg = compose_cfg(tmp_path, _over(path))
    runner = build(cfg, tmp_path / "run")
    mllm = runner.method.mllm
    assert mllm.info["path"] == str(path) and mllm.collator.image_seq_length == 9
    samples = runner.dm.test_samples("color")[:4]
    a, b = mllm.collator.train_batch(samples), ref.collator.train_batch(samples)
    assert torch.equal(a["input_ids"], b["input_ids"])
    with torch.no_grad():
        la = mllm.model(**runner.method.model_inputs(a)).logits
        lb = ref.model(**runner.method.model_inputs(b)).logits
    torch.testing.assert_close(la, lb)
    results = run(cfg, tmp_path / "run2")
    assert results["complete"] and all(v is not None for v in results["matrix"][-1])


@pytest.mark.parametrize("bad", ["/nonexistent/llava", "NOCONFIG"])
def test_a_missing_model_path_is_one_line(tmp_path, bad):
    if bad == "NOCONFIG":
        bad = tmp_path / "empty"
        bad.mkdir()
    with pytest.raises(ConfigError, match="model llava-1.5-7b: .*(does not exist|no config.json)"):
        build(compose_cfg(tmp_path, _over(bad)), tmp_path / "run")


def test_cli_missing_model_path_exits_2_with_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "mcl.train", *_over("/nonexistent/llava"),
         f"paths.log_dir={tmp_path}/logs", f"paths.data_dir={tmp_path}/data",
         f"paths.cache_dir={tmp_path}/cache", "progress=false"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "does not exist; download the checkpoint" in lines[0]
    assert "Traceback" not in r.stderr
