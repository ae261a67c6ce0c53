"""Every benchmark ``mcl.data.prepare`` reads has a page under ``docs/benchmarks/`` that names its
commands and every file its config reads, so it cannot drift from ``conf/bench/<bench>.yaml``."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcl.data.convert import load_bench

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"


@pytest.mark.parametrize("bench", ["coin", "ucit", "mllm_dcl", "cvit", "dmole", "clmm"])
def test_the_page_names_the_commands_and_every_file(bench):
    page = (DOCS / f"{bench}.md").read_text(encoding="utf-8")
    assert f"python -m mcl.data.prepare --bench {bench} --root DIR" in page
    assert f"python -m mcl.data.verify  --bench {bench} --root DIR" in page
    assert f"python -m mcl.train bench={bench} bench.source=real" in page
    cfg = load_bench(bench)
    for task, entry in cfg["files"]["tasks"].items():
        for split in ("train", "test"):
            spec = entry.get(split)
            path = spec["file"] if isinstance(spec, dict) else spec
            assert path is None or f"`{path}`" in page, (task, split)
        for split, n in (entry.get("expect") or {}).items():
            assert f"{split} {n}" in page, (task, split)
