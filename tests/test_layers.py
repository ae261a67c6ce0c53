"""The layering of the package, as pyproject's ``[tool.importlinter]`` contracts state it: entry
points over the runner, methods over plugins over adapters and callbacks, over models, data, eval,
utils and config; and the real-data path without the synthetic world. A new import that crosses
a layer upwards fails here with the chain that does it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lint(config: Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(%r))"
    return subprocess.run(
        [sys.executable, "-c", code % str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_the_import_contracts_hold():
    p = lint(ROOT / "pyproject.toml")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "KEPT" in p.stdout and "BROKEN" not in p.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract can fail: the same layers over a copy of the package in which an adapter
    imports a method."""
    import shutil

    pkg = tmp_path / "mcl"
    shutil.copytree(ROOT / "mcl", pkg, ignore=shutil.ignore_patterns("bases", "__pycache__"))
    adapter = pkg / "adapters" / "moe_lora.py"
    adapter.write_text(adapter.read_text() + "\nfrom mcl.methods import seq_lora  # noqa\n")
    config = tmp_path / "pyproject.toml"
    config.write_text((ROOT / "pyproject.toml").read_text())
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
        f"from importlinter.cli import lint_imports; sys.exit(lint_imports({str(config)!r}))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode != 0
    assert "mcl.adapters.moe_lora -> mcl.methods" in p.stdout


def test_no_paper_name_in_the_runner_or_the_shared_evaluation():
    """The runner, the metrics and the report name no method (``grep -ri smolora``)."""
    places = [ROOT / "mcl" / "runner", ROOT / "mcl" / "report", ROOT / "mcl" / "eval"]
    hits = [
        str(f.relative_to(ROOT))
        for d in places
        for f in d.rglob("*.py")
        if "smolora" in f.read_text().lower()
    ]
    assert not hits, hits
