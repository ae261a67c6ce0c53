"""mcl/callbacks holds mechanisms any method may use: none of its modules imports a method, and
the curriculum callback works for any object that offers its two-method interface."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from mcl.callbacks.allocation import allocate
from mcl.callbacks.curriculum import RescaledUpdates, UpdateRatioCallback, share_ratios

CALLBACKS = Path(__file__).resolve().parents[1] / "mcl" / "callbacks"


def _imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its tree (function-level imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import hides what it reaches"
            names.add(node.module or "")
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_no_callback_module_imports_a_method():
    files = sorted(CALLBACKS.glob("*.py"))
    assert {"allocation.py", "curriculum.py", "subspace.py"} <= {f.name for f in files}
    bad = {
        f.name: sorted(n for n in _imported(f) if n.split(".")[:2] == ["mcl", "methods"])
        for f in files
    }
    assert not any(bad.values()), bad


def test_importing_the_callbacks_loads_no_method_module():
    """The same promise at run time, in a fresh interpreter: nothing reaches mcl.methods
    indirectly either."""
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import mcl.callbacks as c\n"
        "for m in pkgutil.iter_modules(c.__path__):\n"
        "    importlib.import_module('mcl.callbacks.' + m.name)\n"
        "print(json.dumps(sorted(n for n in sys.modules if n.startswith('mcl.'))))\n"
    )
    root = str(CALLBACKS.parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "mcl.callbacks.curriculum" in loaded and "mcl.callbacks.allocation" in loaded
    assert not [n for n in loaded if n.startswith("mcl.methods")], loaded


class StandIn:
    """Not a method: two parameter groups and fixed ratios, the whole interface."""

    def __init__(self, model: nn.Module, ratios: dict[str, float]):
        self.model, self.ratios = model, ratios

    def update_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"a": [self.model[0].weight], "b": [self.model[1].weight]}

    def update_ratios(self) -> dict[str, float]:
        return self.ratios


class Tiny(L.LightningModule):
    def __init__(self, model: nn.Module, source: StandIn):
        super().__init__()
        self.model, self.source = model, source

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.model(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def configure_callbacks(self):
        return [UpdateRatioCallback(self.source)]


def _train(ratios: dict[str, float]) -> list[torch.Tensor]:
    """One SGD step of a two-layer stand-in model under the callback; returns the updates."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 1, bias=False))
    before = [p.detach().clone() for p in model.parameters()]
    data = torch.utils.data.TensorDataset(torch.randn(4, 3))
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(model, StandIn(model, ratios)), torch.utils.data.DataLoader(data, 4))
    return [p.detach() - b for p, b in zip(model.parameters(), before, strict=True)]


def test_the_curriculum_callback_rescales_a_stand_in_objects_groups():
    source = StandIn(nn.Sequential(nn.Linear(2, 2)), {})
    assert isinstance(source, RescaledUpdates)
    plain = _train({"a": 1.0, "b": 1.0})
    scaled = _train({"a": 0.5, "b": 3.0})
    assert plain[0].abs().sum() > 0 and plain[1].abs().sum() > 0
    torch.testing.assert_close(scaled[0], 0.5 * plain[0])
    torch.testing.assert_close(scaled[1], 3.0 * plain[1])
    frozen = _train({"a": 0.0, "b": 1.0})
    assert frozen[0].abs().sum() == 0


def test_the_curriculum_callback_refuses_an_object_without_the_interface():
    with pytest.raises(TypeError, match="update_groups"):
        UpdateRatioCallback(object())


def test_share_ratios_average_one():
    assert share_ratios({"vision": 0.2, "lm": 0.8}) == pytest.approx({"vision": 0.4, "lm": 1.6})
    assert share_ratios({"a": 0.5, "b": 0.5}) == {"a": 1.0, "b": 1.0}


def test_allocate_spends_a_budget_over_plain_unit_names():
    scores = {"v.0": 1.0, "v.1": 0.1, "l.0": 2.0, "l.1": 0.5, "l.2": 3.0, "l.10": 0.0}
    modality = {u: "vision" if u.startswith("v") else "lm" for u in scores}
    a = allocate(scores, modality, budget_portion=0.5, vit_min_share=0.25)
    assert a["n_vision"] + a["n_lm"] == 3 and "l.2" in a["units"]
