"""Every method gives the results it gave before the package was rearranged (issue 28): the
same seed, the same matrices on ``experiment=smoke``, against ``tests/fixtures/smoke_golden.json``,
recorded with ``python -m mcl.train experiment=smoke method=M`` on the code before the move.

What is compared: the accuracy matrix, the unseen tasks' matrix, the held-out-instruction
scores and the answer-format shares, row by row. A structural change that alters any number a
run reports fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcl.train import run
from tests.conftest import compose_cfg

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "smoke_golden.json").read_text())
FIELDS = ("matrix", "unseen_matrix", "if_scores", "format_scores")
# PathWeave learns one modality per stage: its smoke run is on the modality benchmark
EXTRA = {"pathweave": ["bench=mcl", "bench.tasks=[image,video]", "bench.unseen=[]"]}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(GOLDEN))
def test_smoke_results_are_unchanged(method, tmp_path):
    over = ["experiment=smoke", f"method={method}", "logger=none", *EXTRA.get(method, [])]
    cfg = compose_cfg(tmp_path, over)
    results = run(cfg, tmp_path / "out")
    for field in FIELDS:
        assert results[field] == GOLDEN[method][field], f"{method}: {field} differs"


def test_every_method_has_a_golden_run():
    methods = {p.stem for p in (Path(__file__).parent.parent / "conf" / "method").glob("*.yaml")}
    assert methods == set(GOLDEN)
