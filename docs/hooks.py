"""mkdocs hook: the pages of docs/benchmarks/ and docs/results/ join the nav by themselves.

Other pages are listed in mkdocs.yml; these two folders grow with every benchmark and every
published result, so the nav takes whatever files are there at build time (and never names a
file that does not exist, which `--strict` would refuse).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

# nav section title -> folder under docs/ whose *.md pages it lists after its fixed entries
AUTO_SECTIONS = {"Benchmarks": "benchmarks", "Results": "results"}


# Docstrings write matrix cells as A[i][j]; Markdown reads "[i][j]" as a reference link and
# autorefs warns that no object is called "j". Only such index names are let through; every other
# unresolved cross-reference still fails the strict build. An unresolved A[m][m] comes back as
# "A[m][]", which on_post_page writes back as it was.
_INDEX_REF = re.compile(r"Could not find cross-reference target '[A-Za-z](\s*[-+]\s*\d+)?'$")
_EMPTIED_INDEX = re.compile(r"\[([A-Za-z])\]\[\]")
# Docstrings cross-reference in Sphinx's roles (:class:`x`), which Markdown leaves as text
# before the code span; the role name is dropped, the code span stays.
_SPHINX_ROLE = re.compile(r":(?:class|mod|func|meth|data|attr|obj|exc):(?=<code)")


class _IndexRefFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _INDEX_REF.search(record.getMessage())


def _title(page: Path) -> str:
    """The page's first heading, else its file name."""
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return page.stem


def on_startup(command, dirty):
    logger = logging.getLogger("mkdocs.plugins.mkdocs_autorefs._internal.plugin")
    if not any(isinstance(f, _IndexRefFilter) for f in logger.filters):
        logger.addFilter(_IndexRefFilter())


def on_config(config):
    docs = Path(config["docs_dir"])
    for section in config["nav"] or []:
        if not isinstance(section, dict):
            continue
        for title, entries in section.items():
            folder = AUTO_SECTIONS.get(title)
            if folder is None or not isinstance(entries, list):
                continue
            listed = {e if isinstance(e, str) else next(iter(e.values())) for e in entries}
            for page in sorted((docs / folder).glob("*.md")):
                rel = page.relative_to(docs).as_posix()
                if rel not in listed and page.name != "index.md":
                    entries.append({_title(page): rel})
    return config


def on_post_page(output: str, page, config) -> str:
    if page.file.src_uri.startswith("api/"):
        return _SPHINX_ROLE.sub("", _EMPTIED_INDEX.sub(r"[\1][\1]", output))
    return output
