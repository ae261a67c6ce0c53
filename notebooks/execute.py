"""Run the notebooks in a Jupyter kernel and save them with their outputs, so a reader sees what
they show before running anything (their metadata says ``keep_output``, which the pre-commit
``nbstripout`` hook honours).

    python -m mcl.train                                          # the quickstart's run
    python -m mcl.train -m method=zero_shot,seq_lora,replay seed=0,1   # compare_methods' sweep
    python notebooks/execute.py [--logs DIR]                     # DIR: default $MCL_LOGS or logs/

Needs the dev extra (nbclient, ipykernel). The tests call :func:`execute` on runs they make.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ("quickstart.ipynb", "compare_methods.ipynb")


def execute(name: str, params: dict | None = None, timeout: int = 600):
    """The notebook ``name`` executed top to bottom in a fresh kernel (started in notebooks/, as
    Jupyter would), ``params`` appended to its ``# parameters`` cell. Raises on a failing
    cell (nbclient's CellExecutionError names it)."""
    nb = nbformat.read(HERE / name, as_version=4)
    if params:
        cell = next(c for c in nb.cells if c.cell_type == "code")
        assert cell.source.startswith("# parameters"), f"{name}: no parameters cell first"
        cell.source += "".join(f"\n{k} = {v!r}" for k, v in params.items())
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
    )
    client.execute()
    return nb


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--logs", default=None, help="the runs' logs directory (default: as mcl finds)")
    a = p.parse_args(argv)
    if a.logs:
        os.environ["MCL_LOGS"] = str(Path(a.logs).resolve())
    for name in NOTEBOOKS:
        nb = execute(name)
        nb.metadata["keep_output"] = True
        nbformat.write(nb, HERE / name)
        # what the pre-commit hook would do (execution counts, timings, cell ids), outputs kept
        subprocess.run([sys.executable, "-m", "nbstripout", str(HERE / name)], check=True)
        print(f"executed and saved {HERE / name}")


if __name__ == "__main__":
    main()
