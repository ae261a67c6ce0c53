"""Numbers users read are generated: every results page (and the README's headline block) is what
``scripts/publish_results.py`` makes from the committed run summaries."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _publisher():
    spec = importlib.util.spec_from_file_location("publish", ROOT / "scripts/publish_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


PUBLISH = _publisher()
STALE = "stale: rerun python scripts/publish_results.py"


@pytest.mark.parametrize("name", sorted(n for n, p in PUBLISH.PAGES.items() if p.runs.is_dir()))
def test_a_results_page_is_regenerated_from_its_committed_runs(monkeypatch, name):
    monkeypatch.chdir(ROOT)  # run directories are shown relative to the checkout
    page = PUBLISH.PAGES[name]
    assert page.path.read_text() == PUBLISH.markdown(page), STALE
    methods = {p.parent.name.split("_s")[0] for p in page.runs.glob("*/results.json")}
    assert methods, f"{name} has no runs"
    for figure in ("metrics.png", "matrices.png"):
        assert (PUBLISH.RESULTS / name / figure).stat().st_size > 0


def test_the_readme_shows_the_headline_comparison_from_its_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert PUBLISH.readme_block() in PUBLISH.README.read_text(), STALE
    runs = list(PUBLISH.PAGES["cvit_headline"].runs.glob("*/results.json"))
    assert {p.parent.name.rsplit("_s", 1)[0] for p in runs} == {"seq_lora", "smolora"}
