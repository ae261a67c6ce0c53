"""The notebooks run, in a real Jupyter kernel (nbclient), against runs the tests make, so they
never rot; and the committed copies carry their outputs (issue 27, item 11)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from mcl.train import run
from tests.conftest import MICRO, compose_cfg

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
_spec = importlib.util.spec_from_file_location("nb_execute", NOTEBOOKS / "execute.py")
nb_execute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nb_execute)


def text_of(nb) -> str:
    """Everything the executed notebook printed or displayed as text."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") or o.get("data", {}).get("text/plain", ""))
    return "\n".join(out)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """A logs directory as mcl writes it: one sweep of two methods (micro model)."""
    logs = tmp_path_factory.mktemp("nb") / "logs"
    sweep = logs / "multirun" / "2026-01-01_00-00-00"
    for i, method in enumerate(["seq_lora", "zero_shot"]):
        out = sweep / f"{i}_synth_{method}_s0"
        cfg = compose_cfg(out, [*MICRO, f"method={method}", f"paths.output_dir={out}"])
        run(cfg, out)
    return logs


@pytest.mark.slow
def test_compare_methods_notebook_executes(logs, tmp_path, monkeypatch):
    sweep = next((logs / "multirun").iterdir())
    nb = nb_execute.execute(
        "compare_methods.ipynb", {"RUN_DIRS": [str(sweep)], "OUT": str(tmp_path)}
    )
    text = text_of(nb)
    assert "| seq_lora |" in text and "| zero_shot |" in text
    assert (tmp_path / "matrices.png").stat().st_size > 0
    assert (tmp_path / "forgetting.png").stat().st_size > 0
    # by default it reads the newest sweep under the logs directory ($MCL_LOGS here)
    monkeypatch.setenv("MCL_LOGS", str(logs))
    assert "| seq_lora |" in text_of(nb_execute.execute("compare_methods.ipynb"))


@pytest.mark.slow
def test_quickstart_notebook_reads_the_newest_run(logs, monkeypatch):
    monkeypatch.setenv("MCL_LOGS", str(logs))  # no hard-coded ../logs: found as mcl finds it
    text = text_of(nb_execute.execute("quickstart.ipynb"))
    assert "run: logs/multirun/2026-01-01_00-00-00/1_synth_zero_shot_s0" in text  # the newest
    assert "0 (zero-shot)" in text and "data faults: none" in text
    assert "after task 1:" in text


@pytest.mark.parametrize("name", nb_execute.NOTEBOOKS)
def test_committed_notebooks_carry_their_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert nb.metadata.get("keep_output") is True  # nbstripout (pre-commit) keeps them
    assert all(c.outputs for c in code[1:]), "run python notebooks/execute.py"
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert "../logs" not in "".join(c.source for c in code)


@pytest.mark.slow
def test_quickstart_notebook_shows_each_eval_set_of_a_task(logs, tmp_path):
    """A task evaluated on two sets: the notebook's table has a column per set and the
    per-stage table, not the first columns under the tasks' names."""
    src = logs / "multirun" / "2026-01-01_00-00-00" / "0_synth_seq_lora_s0"
    run_dir = tmp_path / "two_sets"
    shutil.copytree(src, run_dir)
    r = json.loads((run_dir / "results.json").read_text())
    first = r["tasks"][0]
    r["columns"] = [{"name": f"{first}/a", "task": first, "set": "a"}]
    r["columns"] += [{"name": f"{first}/b", "task": first, "set": "b"}]
    r["columns"] += [{"name": t, "task": t, "set": t} for t in r["tasks"][1:]]
    r["stage_matrix"] = [list(row) for row in r["matrix"]]
    r["matrix"] = [[row[0], row[0], *row[1:]] for row in r["matrix"]]
    (run_dir / "results.json").write_text(json.dumps(r))
    text = text_of(nb_execute.execute("quickstart.ipynb", {"RUN_DIR": str(run_dir)}))
    assert f"{first}/a" in text and f"{first}/b" in text
