"""The documentation: the site builds strictly, its links resolve, and nothing the repository
cites points at a file that is not in it.

- the mkdocs site (mkdocs.yml, docs/) builds with ``--strict`` (a broken nav entry, link, anchor
  or docstring reference fails it);
- every relative link in docs/**/*.md and README.md reaches an existing file, and its #anchor a
  heading of that file;
- every repo-looking path (``docs/...md``, ``mcl/...py``, ``conf/...yaml``, ``tests/...py``,
  ``benchmarks/...``, ``scripts/...``) written in code, configs or docs exists;
- every option of a method's config is described on its method page.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Cited paths that are rightly absent, each with why. Anything else cited must exist.
NOT_SHIPPED = {
    # files the docs tell the reader to write (worked examples)
    "mcl/methods/ema_lora.py": "docs/extending.md's example method",
    "conf/method/ema_lora.yaml": "docs/extending.md's example method",
    "mcl/plugins/l2.py": "docs/plugins.md's example plugin",
    "conf/plugin/l2.yaml": "docs/plugins.md's example plugin",
    "conf/method/smolorra.yaml": "the error message for a mistyped method name",
    "conf/local/default.yaml": "the user's untracked overrides (gitignored)",
    # paths inside other projects' repositories
    "scripts/SMoLoRA/ins_gen.py": "SMoLoRA's repository",
    "scripts/convert_gqa_for_eval.py": "LLaVA's repository",
}


def _tracked(*suffixes: str) -> list[Path]:
    """The repository's files with these suffixes (git's list when there is one, so build
    outputs and caches are left out)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        files = [ROOT / f for f in out]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*") if ".git" not in p.parts]
    return sorted(p for p in files if p.suffix in suffixes and p.is_file())


def _markdown_files() -> list[Path]:
    return sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]


def _prose(text: str) -> str:
    """Markdown without its fenced code blocks (links there are examples, not links)."""
    return re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)


# --- the site ---------------------------------------------------------------------------------


def test_site_builds_strict(tmp_path):
    """mkdocs build --strict: nav entries exist, links and anchors resolve, docstrings render."""
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, (
        f"mkdocs build --strict failed (pip install -e '.[dev]' installs mkdocs):\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "metrics" / "index.html").is_file()


# --- links ------------------------------------------------------------------------------------

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _slugs(heading: str) -> set[str]:
    """The anchors a heading gets: mkdocs' (Python-Markdown toc) and GitHub's, or its {#id}."""
    explicit = re.search(r"\{\s*#([\w-]+)[^}]*\}\s*$", heading)
    if explicit:
        return {explicit.group(1)}
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"[`*]", "", text).strip()
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    toc = re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_text).strip().lower())
    github = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
    return {toc, github}


def _anchors(md: Path) -> set[str]:
    anchors: set[str] = set()
    for line in _prose(md.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            for slug in _slugs(m.group(1)):
                # repeated headings get -1 / _1 suffixes; accept the base and the first few
                anchors |= {slug} | {f"{slug}{sep}{i}" for sep in "-_" for i in range(1, 5)}
    anchors |= set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", md.read_text(encoding="utf-8")))
    return anchors


def test_relative_links_resolve():
    bad = []
    for md in _markdown_files():
        for target in _LINK.findall(_prose(md.read_text(encoding="utf-8"))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            where = f"{md.relative_to(ROOT)}: ({target})"
            if not dest.exists():
                bad.append(f"{where} -> no such file")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{where} -> no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, "broken links:\n" + "\n".join(bad)


# --- cited paths ------------------------------------------------------------------------------

_CITED = re.compile(
    r"(?<![\w./-])((?:docs|mcl|conf|tests|benchmarks|scripts|notebooks)/[\w./-]*?"
    r"\.(?:md|py|yaml|yml|json|sh|ipynb|toml|txt|csv|png))(?![\w/-])"
)
_TEXT = (".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".cfg", ".txt", ".ipynb")


def _cited_paths() -> dict[str, list[str]]:
    """{cited path: [file:line, ...]} for every repo-looking path in the repository's text."""
    cited: dict[str, list[str]] = {}
    for f in _tracked(*_TEXT):
        rel = f.relative_to(ROOT).as_posix()
        if rel == "tests/test_docs.py":
            continue
        for n, line in enumerate(f.read_text(encoding="utf-8", errors="ignore").splitlines(), 1):
            for path in _CITED.findall(line):
                cited.setdefault(path.rstrip("."), []).append(f"{rel}:{n}")
    return cited


def test_cited_repo_paths_exist():
    missing = {
        path: where
        for path, where in _cited_paths().items()
        if path not in NOT_SHIPPED and not (ROOT / path).exists()
    }
    report = [
        f"{p}  (cited at {', '.join(w[:3])}{' ...' if len(w) > 3 else ''})"
        for p, w in sorted(missing.items())
    ]
    assert not missing, "cited paths that are not in the repository:\n" + "\n".join(report)


_OUTSIDE = re.compile(r"(?<![\w.-])(?:shared/|specs/[\w.-]+\.md|DESIGN\.md|anchors\.md)")


def test_nothing_points_outside_the_repository():
    """The team's design notes are not part of the repository: nothing may send a reader there
    (the method pages in docs/methods/ say what the code follows)."""
    hits = []
    for f in _tracked(*_TEXT):
        rel = f.relative_to(ROOT).as_posix()
        if rel == "tests/test_docs.py":
            continue
        for n, line in enumerate(f.read_text(encoding="utf-8", errors="ignore").splitlines(), 1):
            if _OUTSIDE.search(line):
                hits.append(f"{rel}:{n}: {line.strip()[:100]}")
    assert not hits, f"{len(hits)} references outside the repository:\n" + "\n".join(hits)


# --- method pages -----------------------------------------------------------------------------


def _options(conf: Path) -> tuple[dict, list[str]]:
    cfg = yaml.safe_load(conf.read_text(encoding="utf-8")) or {}
    skip = {"_target_", "name", "defaults"}
    return cfg, [k for k in cfg if k not in skip]


def test_every_method_option_is_documented():
    """Each method config's options (and each plugin's) appear on the page that documents it,
    so a new option cannot go undocumented."""
    gaps = []
    for conf in sorted((ROOT / "conf" / "method").glob("*.yaml")):
        cfg, keys = _options(conf)
        if "_target_" not in cfg:
            continue  # seq_lora + a plugin: the plugin's page (below)
        page = DOCS / "methods" / f"{conf.stem}.md"
        if not page.is_file():
            gaps.append(f"{conf.relative_to(ROOT)}: no page {page.relative_to(ROOT)}")
            continue
        text = page.read_text(encoding="utf-8")
        gaps += [f"{page.relative_to(ROOT)}: option `{k}`" for k in keys if f"`{k}`" not in text]
    baselines = (DOCS / "methods" / "baselines.md").read_text(encoding="utf-8")
    for conf in sorted((ROOT / "conf" / "plugin").glob("*.yaml")):
        cfg, keys = _options(conf)
        keys += [f"tir.{k}" for k in (cfg.get("tir") or {}) if k != "_target_"]
        keys = [k for k in keys if k != "tir"]
        gaps += [
            f"docs/methods/baselines.md: {conf.stem} option `{k}`"
            for k in keys
            if f"`{k}`" not in baselines
        ]
    assert not gaps, "undocumented options:\n" + "\n".join(gaps)
