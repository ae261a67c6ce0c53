"""Numbers users read are generated: every results page, its figures and the README's headline
block are exactly what ``python -m mcl.report --publish docs/results/PAGE --from-summaries``
makes from the committed run summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcl.report.publish import (
    FIGURES,
    PAGE_FILE,
    Page,
    markdown,
    page_runs,
    readme_block,
    readme_path,
)
from mcl.report.publish import _groups as page_groups
from mcl.report.summary import KEEP

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
PAGES = sorted(p.parent for p in RESULTS.glob(f"*/{PAGE_FILE}"))
STALE = "stale: rerun python scripts/publish_results.py"


def test_there_are_pages():
    assert {"synth", "cvit", "dmole", "clmm", "mcl", "lambda"} <= {p.name for p in PAGES}


@pytest.mark.parametrize("page_dir", PAGES, ids=lambda p: p.name)
def test_a_results_page_is_regenerated_from_its_committed_summaries(page_dir):
    assert (RESULTS / f"{page_dir.name}.md").read_text() == markdown(page_dir), STALE


@pytest.mark.parametrize("page_dir", PAGES, ids=lambda p: p.name)
def test_a_pages_figures_are_regenerated_byte_for_byte(page_dir, tmp_path):
    page = Page.load(page_dir)
    groups = page_groups(page, page_runs(page_dir, page.split))
    for file, _, plot in FIGURES:
        plot(tmp_path / file, groups)
        assert (tmp_path / file).read_bytes() == (page_dir / file).read_bytes(), (file, STALE)


@pytest.mark.parametrize("page_dir", PAGES, ids=lambda p: p.name)
def test_committed_summaries_are_compact(page_dir):
    files = list((page_dir / "runs").glob("*/results.json"))
    assert files
    for path in files:
        run = json.loads(path.read_text())
        assert set(run) <= set(KEEP) | {"versions", "code_version", "hardware"}, path
        assert {"config", "matrix", "metrics"} <= set(run), path
    assert not [p for p in (page_dir / "runs").rglob("*") if p.is_file() and p.suffix != ".json"]


def test_the_readme_shows_the_headline_page_from_its_summaries():
    headline = [p for p in PAGES if Page.load(p).readme]
    assert [p.name for p in headline] == ["cvit_headline"]
    assert readme_block(headline[0]) in readme_path(headline[0]).read_text(), STALE
