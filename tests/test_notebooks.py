"""The notebooks run against runs the tests make, so they never rot. Code cells are executed in
order in one namespace (what a kernel does), with the parameters cell overridden."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import nbformat
import pytest

from mcl.train import run
from tests.conftest import MICRO, compose_cfg

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(name: str, params: dict) -> dict:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    assert cells[0].startswith("# parameters")
    ns: dict = {}
    exec(compile(cells[0], f"{name}[0]", "exec"), ns)
    ns.update(params)
    for i, src in enumerate(cells[1:], 1):
        exec(compile(src, f"{name}[{i}]", "exec"), ns)
    return ns


@pytest.fixture(scope="module")
def two_methods(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb")
    for method in ["seq_lora", "zero_shot"]:
        cfg = compose_cfg(tmp / method, [*MICRO, f"method={method}"])
        run(cfg, Path(cfg.paths.output_dir))
    return tmp


def test_compare_methods_notebook_executes(two_methods, tmp_path):
    matplotlib.use("Agg")
    ns = execute("compare_methods.ipynb", {"RUN_DIRS": [str(two_methods)], "OUT": str(tmp_path)})
    assert {g["method"] for g in ns["groups"]} == {"seq_lora", "zero_shot"}
    assert (tmp_path / "matrices.png").stat().st_size > 0
    assert (tmp_path / "forgetting.png").stat().st_size > 0
    # a curve per (method, task), starting at the task's own stage: 2 points for the first task
    assert len(ns["curves"]) == 4 and len(ns["curves"][("seq_lora", "color")]) == 2
