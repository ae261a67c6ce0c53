"""Rewrite every results page from its committed run summaries (a thin wrapper over
``python -m mcl.report --publish docs/results/PAGE --from-summaries``):

    python scripts/publish_results.py        # every page in docs/results, figures, README block
    python scripts/publish_results.py cvit_headline

A page is a folder ``docs/results/PAGE/`` holding ``page.json`` and ``runs/*/results.json``;
new runs get there through ``python -m mcl.report RUN_DIRS --publish docs/results/PAGE``
(docs/results/index.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcl.report.publish import PAGE_FILE, write_page  # noqa: E402

RESULTS = ROOT / "docs" / "results"


def pages() -> dict[str, Path]:
    """Every page folder below docs/results, by name."""
    return {p.parent.name: p.parent for p in sorted(RESULTS.glob(f"*/{PAGE_FILE}"))}


def main(argv: list[str]) -> int:
    found = pages()
    names = argv or list(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        print(f"error: no page {unknown[0]!r}; pages: {', '.join(found)}", file=sys.stderr)
        return 2
    for name in names:
        for path in write_page(found[name]):
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
