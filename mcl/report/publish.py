"""Results pages as build artifacts: ``python -m mcl.report RUN_DIRS --publish docs/results/PAGE``
adds each finished run's compact summary to ``PAGE/runs/<label>_s<seed>/results.json``
and writes ``PAGE.md`` and its figures from those summaries alone; ``--from-summaries``
rewrites the page from the committed summaries (what ``tests/test_published.py`` does, so a
page cannot drift from its data).

What a page says besides its numbers (title, a paragraph about the runs, the commands that made
them, row order, the config keys that keep variants apart, an optional per-seed pair, the
papers' claims to check, findings)
is its ``PAGE/page.json``, written on the first publish from the command line's options and
edited by hand afterwards."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from mcl.report.aggregate import aggregate, order_groups, short_number
from mcl.report.claims import sentence as claim_sentence
from mcl.report.collect import (
    ReportError,
    collect,
    config_diff,
    find_results,
    group_key,
    load_run,
    split_values,
)
from mcl.report.curves import plot_forgetting, plot_tradeoff
from mcl.report.plots import plot_matrices, plot_metrics
from mcl.report.render import markdown_table
from mcl.report.summary import compact
from mcl.utils.environment import environment
from mcl.utils.io import atomic_write_text

PAGE_FILE = "page.json"
FIGURES = (
    ("tradeoff.png", "Last against BWT", plot_tradeoff),
    ("forgetting.png", "Each task's score across the sequence", plot_forgetting),
    ("metrics.png", "Last, MAA and BWT", plot_metrics),
    ("matrices.png", "Accuracy matrices", plot_matrices),
)
BEGIN, END = "<!-- cvit-headline:begin -->", "<!-- cvit-headline:end -->"
SHOWN = (("Last", "last"), ("BWT", "bwt"), ("MIF", "MIF"))


@dataclasses.dataclass
class Page:
    """A page's words and layout (its ``page.json``); the numbers come from its summaries."""

    name: str
    title: str = ""
    about: str = ""
    commands: list[str] = dataclasses.field(default_factory=list)
    order: list[str] = dataclasses.field(default_factory=list)  # methods or labels, first
    split: list[str] = dataclasses.field(default_factory=list)  # config keys: separate rows
    pair: list[str] | None = None  # [baseline, method]: a per-seed comparison
    # papers' claims checked on the runs (mcl/report/claims.py): sentences with generated numbers
    claims: list[dict] = dataclasses.field(default_factory=list)
    findings: list[str] = dataclasses.field(default_factory=list)  # paragraphs, by hand
    readme: bool = False  # this page's table is the README's headline block

    @classmethod
    def load(cls, page_dir: Path) -> Page:
        path = page_dir / PAGE_FILE
        if not path.is_file():
            return cls(page_dir.name)
        fields = json.loads(path.read_text(encoding="utf-8"))
        return cls(**{**fields, "name": page_dir.name})

    def save(self, page_dir: Path) -> None:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}
        atomic_write_text(page_dir / PAGE_FILE, json.dumps(fields, indent=2) + "\n")


def shown_dir(page_dir: Path) -> str:
    """The page folder as the page shows it: ``docs/results/PAGE`` in a checkout."""
    parts = page_dir.resolve().parts
    return "/".join(parts[-3:]) if parts[-3:-1] == ("docs", "results") else str(page_dir)


def publish_command(page_dir: Path) -> str:
    return f"python -m mcl.report --publish {shown_dir(page_dir)} --from-summaries"


def _cell(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def run_name(run: dict, split: Sequence[str]) -> str:
    """A summary's folder: the method, its split values where set, the seed; only characters a
    shell leaves alone (a list reads ``image+video``, an empty one ``empty``)."""
    flat = {k: json.loads(v) for k, v in zip(split, split_values(run, split)) if v != "null"}
    values = [
        ("+".join(map(short_number, v)) or "empty") if isinstance(v, list) else short_number(v)
        for v in flat.values()
    ]
    parts = [
        run["method"],
        *(re.sub(r"[^A-Za-z0-9._+=-]", "", v.replace("/", "-")) for v in values),
    ]
    return "_".join(parts) + f"_s{run['seed']}"


def auto_split(runs: Sequence[dict]) -> list[str]:
    """The config keys that differ between runs of one (bench, method): the variants a page
    must keep apart (e.g. method.if_route), unless the page names its own."""
    by: dict[tuple, list[dict]] = {}
    for run in runs:
        by.setdefault(group_key(run), []).append(run)
    return sorted({k for members in by.values() for k in config_diff(members)})


def _finished(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """Every finished run below `paths`, duplicates included."""
    files = {f.resolve() for p in paths for f in find_results(p)}
    return [r for r in map(load_run, sorted(files)) if r and r.get("complete") is True]


def store_summaries(
    run_dirs: Sequence[str], page_dir: Path, page: Page, replace: bool = False
) -> int:
    """Add the finished runs below `run_dirs` to the page's summaries: a run replaces the
    summary of the same method, variant and seed; the others stay (a sweep that finishes over
    days is published as it goes), unless `replace` drops them all first."""
    runs_dir = page_dir / "runs"
    old = [] if replace or not runs_dir.is_dir() else _finished([runs_dir])
    if not page.split:  # before duplicates are dropped: variants look like repeated seeds
        page.split = auto_split(_finished(run_dirs) + old)
    env = environment()
    kept = {(*group_key(r, page.split), r["seed"]): compact(r, None) for r in old}
    for run in collect(run_dirs, split=page.split):  # one per (variant, seed): the newest
        kept[(*group_key(run, page.split), run["seed"])] = compact(run, env)
    if runs_dir.exists():
        shutil.rmtree(runs_dir)
    for run in kept.values():
        text = json.dumps(run, indent=1, sort_keys=True) + "\n"
        atomic_write_text(runs_dir / run_name(run, page.split) / "results.json", text)
    return len(kept)


def page_runs(page_dir: Path, split: Sequence[str]) -> list[dict]:
    """The page's summaries, each shown as ``docs/results/PAGE/runs/<name>`` whatever the
    working directory."""
    if not (page_dir / "runs").is_dir():
        raise ReportError(f"{page_dir} has no runs/ folder; publish runs into it first")
    runs = collect([page_dir / "runs"], split=split)
    for run in runs:
        run["dir"] = f"{shown_dir(page_dir)}/runs/{Path(run['dir']).name}"
    return runs


def _per_seed(runs: list[dict], pair: Sequence[str]) -> str:
    """Last, BWT and MIF per seed for the pair, and where the method is ahead of the baseline."""
    base, method = pair
    by = {(r["method"], r["seed"]): r["metrics"] for r in runs}
    head = " | ".join(f"{name} {m}" for name, _ in SHOWN for m in pair)
    lines = [
        f"| seed | {head} | {method} ahead on |",
        "| --: |" + " --: |" * (2 * len(SHOWN)) + " --- |",
    ]
    for s in sorted({s for _, s in by}):
        a, b = by.get((base, s)), by.get((method, s))
        if not a or not b:
            continue
        ahead = [n for n, k in SHOWN if None not in (a.get(k), b.get(k)) and b[k] > a[k]]
        cells = [_cell(m.get(k)) for _, k in SHOWN for m in (a, b)]
        lines.append(f"| {s} | {' | '.join(cells)} | {', '.join(ahead) or 'none'} |")
    return "\n".join(lines)


def _counted(values: list[str]) -> list[str]:
    """Each distinct value, with how many runs it covers where they differ."""
    distinct = list(dict.fromkeys(values))
    if len(distinct) == 1:
        return distinct
    return [f"{v} ({values.count(v)} runs)" for v in distinct]


def _hardware(h: dict | None) -> str:
    if not h:
        return "not recorded"
    gpus = ", ".join(h.get("gpus") or []) or "no GPU"
    return f"{h.get('cpu', '?')}, {h.get('cores', '?')} cores, {gpus}"


def environment_section(runs: Sequence[dict]) -> str:
    """Hardware, package versions and code version of the runs, as their summaries record."""
    devices = [
        ", ".join(sorted({d for ds in (r.get("devices") or {}).values() for d in ds})) or "?"
        for r in runs
    ]
    versions = [
        ", ".join(f"{k} {v}" for k, v in (r.get("versions") or {}).items()) or "not recorded"
        for r in runs
    ]
    rows = (
        ("Hardware", _counted([_hardware(r.get("hardware")) for r in runs])),
        ("Devices the runs used", _counted(devices)),
        ("Packages", _counted(versions)),
        ("Code", _counted([r.get("code_version") or "not recorded" for r in runs])),
    )
    lines = ["## Hardware, packages and code", ""]
    lines += [f"- {name}: {'; '.join(values)}" for name, values in rows]
    lines += [
        "",
        "(as each run recorded them in its results.json; for a run made before runs recorded",
        "them, the publisher's machine and checkout when it was published.)",
    ]
    return "\n".join(lines) + "\n"


def _groups(page: Page, runs: list[dict]) -> list[dict]:
    return order_groups(aggregate(runs, page.split), "last", page.order)


def markdown(page_dir: Path, page: Page | None = None) -> str:
    """The page's Markdown, from its summaries and page.json alone."""
    page = page or Page.load(page_dir)
    runs = page_runs(page_dir, page.split)
    groups = _groups(page, runs)
    seeds = len({r["seed"] for r in runs})
    commands = "\n".join(page.commands) or "# (the commands were not recorded)"
    text = (
        f"# {page.title or page.name}\n\n"
        f"Generated by `{publish_command(page_dir)}` from the compact run\n"
        f"summaries in `{shown_dir(page_dir)}/runs/` (`tests/test_published.py` regenerates it\n"
        f"and fails on any difference). {page.about}\n\n"
        f"The runs were made by:\n\n```bash\n{commands}\n```\n\n"
    )
    found = [claim_sentence(c, groups, runs) for c in page.claims] + page.findings
    if found:
        text += "## Findings\n\n" + "\n\n".join(found) + "\n\n"
    text += (
        f"## Mean ± std over seeds ({seeds} seed{'s' if seeds > 1 else ''})\n\n"
        f"{markdown_table(groups, bold=True)}\n"
    )
    if page.pair:
        text += f"## Per seed\n\n{_per_seed(runs, page.pair)}\n\n"
    text += "## Figures\n\n" + "".join(
        # "./": a page named like a top-level folder (mcl) must not read as a repository path
        f"![{alt}](./{page.name}/{file})\n\n"
        for file, alt, _ in FIGURES
    )
    return text + environment_section(runs)


def readme_block(page_dir: Path, page: Page | None = None) -> str:
    """The README's headline: the page's Last / BWT / Plasticity / MIF table and its figure."""
    page = page or Page.load(page_dir)
    runs = page_runs(page_dir, page.split)
    groups = _groups(page, runs)
    cols = (("Last", "last"), ("BWT", "bwt"), ("Plasticity", "plasticity"), ("MIF", "MIF"))
    lines = ["| method | " + " | ".join(c for c, _ in cols) + " |", "| --- |" + " --: |" * 4]
    for g in groups:
        stats = [g["metrics"].get(k, {"mean": None, "std": None}) for _, k in cols]
        cells = [
            _cell(s["mean"]) + ("" if s["std"] is None else f" ± {s['std']:.1f}") for s in stats
        ]
        lines.append(f"| `{g['label']}` | " + " | ".join(cells) + " |")
    seeds = len({r["seed"] for r in runs})
    where = shown_dir(page_dir)
    return (
        f"{BEGIN}\n"
        f"Mean ± std over {seeds} seeds, generated from committed runs "
        f"([the full page, per seed and per task]({where}.md)):\n\n"
        + "\n".join(lines)
        + f"\n\n![Last, MAA and BWT]({where}/metrics.png)\n"
        + END
    )


def readme_with(block: str, text: str) -> str:
    if BEGIN not in text or END not in text:
        raise ReportError(f"README.md has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    return head + block + rest.split(END, 1)[1]


def readme_path(page_dir: Path) -> Path:
    """The checkout's README.md (the page folder is ``docs/results/PAGE``)."""
    return page_dir.resolve().parents[2] / "README.md"


def write_page(page_dir: Path) -> list[Path]:
    """Write PAGE.md, its figures and (for the headline page) the README block from the
    committed summaries; returns the files written."""
    page = Page.load(page_dir)
    groups = _groups(page, page_runs(page_dir, page.split))
    md = page_dir.parent / f"{page.name}.md"
    atomic_write_text(md, markdown(page_dir, page))
    written = [md]
    for file, _, plot in FIGURES:
        plot(page_dir / file, groups)
        written.append(page_dir / file)
    if page.readme:
        readme = readme_path(page_dir)
        atomic_write_text(readme, readme_with(readme_block(page_dir, page), readme.read_text()))
        written.append(readme)
    return written


def publish(
    page_dir: str | os.PathLike,
    run_dirs: Sequence[str] = (),
    replace: bool = False,
    **spec,
) -> list[Path]:
    """Add the finished runs below `run_dirs` to the page's summaries (`replace`: instead of
    the committed ones; no runs: keep those), update page.json with the `spec` fields given
    (title, about, commands, order, split, pair), and write the page."""
    page_dir = Path(page_dir)
    page = Page.load(page_dir)
    for key, value in spec.items():
        if value:
            setattr(page, key, value)
    if run_dirs:
        if not page.commands:
            page.commands = [f"python -m mcl.train -m experiment=results/{page.name}"]
        store_summaries(run_dirs, page_dir, page, replace)
        page.save(page_dir)
    elif spec and any(spec.values()):
        page.save(page_dir)
    return write_page(page_dir)
