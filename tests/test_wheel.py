"""A built wheel runs on its own: installed in a fresh venv, ``python -m mcl.train
experiment=smoke`` works from an empty directory (configs, model architectures and the tiny
bases all travel inside the package; docs/getting_started.md, "Installing from a wheel")."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject():
    """pyproject lists its packages (mcl.conf has no directory of its own in the repository): a
    new subpackage missing from that list would be left out of the wheel."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mcl").rglob("__init__.py")
    }
    assert listed == found | {"mcl.conf"}


def _build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the sources (an in-tree build would leave build/ in the checkout)."""
    src = tmp / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "mcl", src / "mcl", ignore=skip)
    shutil.copytree(ROOT / "conf", src / "conf", ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
           "--no-index", "-q", "-w", str(tmp / "dist"), str(src)]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("mcl-*.whl")
    return wheel


def _venv_with(wheel: Path, venv: Path) -> Path:
    """A fresh venv holding the wheel; the current environment's site-packages come after its
    own (a .pth file), so torch & co. are found without installing them again while ``mcl``
    comes from the wheel. (``--system-site-packages`` would not do: it exposes the base
    interpreter's packages, not those of the venv the tests run in.)"""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    cmd = [str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    own = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    outer = [*site.getsitepackages(), site.getusersitepackages()]
    (Path(own) / "outer_env.pth").write_text("\n".join(outer) + "\n")
    return py


@pytest.mark.slow
def test_wheel_installs_and_runs_smoke_from_an_empty_directory(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (ROOT / "mcl").rglob("*"):  # code, model configs, the shipped tiny bases
        rel = path.relative_to(ROOT).as_posix()
        if path.is_file() and "__pycache__" not in rel:
            assert rel in names, f"{rel} is not in the wheel"
    for path in (ROOT / "conf").rglob("*.yaml"):
        rel = path.relative_to(ROOT / "conf").as_posix()
        assert rel.startswith("local/") or f"mcl/conf/{rel}" in names, f"conf/{rel} not in wheel"
    assert not any(n.startswith("mcl/conf/local/") for n in names)  # machine-specific stays

    py = _venv_with(wheel, tmp_path / "venv")
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no checkout on the path
    env |= {"MCL_CACHE": str(tmp_path / "cache"), "MCL_LOGS": str(tmp_path / "logs")}
    where = subprocess.run(
        [str(py), "-c", "import mcl, mcl.config as c; print(mcl.__file__); print(c.CONF_DIR)"],
        capture_output=True, text=True, cwd=empty, env=env, check=True,
    ).stdout.split()  # fmt: skip
    package, conf = (Path(w).resolve() for w in where)
    assert package.is_relative_to((tmp_path / "venv").resolve()), where
    assert conf == package.parent / "conf", where  # the wheel's own configs

    cmd = [str(py), "-m", "mcl.train", "experiment=smoke", "progress=false"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=empty, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    (result,) = (tmp_path / "logs").glob("synth/seq_lora/s0/*/results.json")
    result = json.loads(result.read_text())
    assert result["complete"] is True
    assert result["code_version"].startswith("mcl ")  # no checkout: the package's own version
    assert list(empty.iterdir()) == []  # nothing written into the working directory
