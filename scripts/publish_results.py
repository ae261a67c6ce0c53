"""Results pages, generated from committed run summaries (never pasted).

    python scripts/publish_results.py             # every page below, its figures, README block
    python scripts/publish_results.py cvit_headline

Each page has a folder ``docs/results/<page>/runs/<run>/results.json`` holding the finished runs of
the commands it shows (add or replace runs there, then rerun this). The page
``docs/results/<page>.md`` and its figures ``docs/results/<page>/{metrics,matrices}.png`` are
written from them through ``mcl.report``; the headline page also rewrites the README's block.
``tests/test_published.py`` regenerates the Markdown and fails if a committed page differs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcl.report import (  # noqa: E402
    aggregate,
    collect,
    markdown_table,
    order_groups,
    plot_matrices,
    plot_metrics,
)

RESULTS = ROOT / "docs" / "results"
README = ROOT / "README.md"


@dataclass
class Page:
    name: str
    title: str
    about: str  # what the runs are, in a sentence or two
    commands: list[str]
    order: list[str]  # methods (or labels), in table order
    split: list[str] = field(default_factory=list)  # config keys that make separate rows
    pair: tuple[str, str] | None = None  # (baseline, method): a per-seed comparison

    @property
    def runs(self) -> Path:
        return RESULTS / self.name / "runs"

    @property
    def path(self) -> Path:
        return RESULTS / f"{self.name}.md"


SEEDS = (0, 1, 2)
PAGES = {
    p.name: p
    for p in (
        Page(
            "cvit_headline",
            "SMoLoRA against sequential LoRA on CVIT",
            "Each run is one command with every other default: the `cvit` synthetic twin, the "
            "instruction-tuned tiny base `tiny_it_cvit`, SMoLoRA's official configuration "
            "(oracle instruction-type routing, all-MiniLM-L6-v2), 250 steps per task, on a CPU.",
            [
                f"python -m mcl.train method={m} bench=cvit seed={s}"
                for m in ("seq_lora", "smolora")
                for s in SEEDS
            ],
            ["seq_lora", "smolora"],
            pair=("seq_lora", "smolora"),
        ),
        Page(
            "cvit_fwd_prompt",
            "Fwd-Prompt's gradient projection on CVIT",
            "Fwd-Prompt with its default projection (the interference space, applied to the "
            "optimizer's update) and with `projection=none`, against sequential LoRA; every other "
            "setting is the default (the `cvit` twin from `tiny_it_cvit`).",
            [
                "python -m mcl.train method=fwd_prompt bench=cvit seed=SEED",
                "python -m mcl.train method=fwd_prompt bench=cvit seed=SEED method.projection=none",
                "python -m mcl.train method=seq_lora bench=cvit seed=SEED",
            ],
            ["seq_lora", "fwd_prompt"],
            split=["method.projection"],
            pair=None,
        ),
        Page(
            "dmole_twin",
            "D-MoLE on its benchmark's twin",
            "D-MoLE with its defaults (the code's batch routing, its curriculum and allocator) "
            "against sequential LoRA on the `dmole` synthetic twin (9 tasks).",
            [
                "python -m mcl.train method=dmole bench=dmole seed=SEED",
                "python -m mcl.train method=seq_lora bench=dmole seed=SEED",
            ],
            ["seq_lora", "dmole"],
            pair=("seq_lora", "dmole"),
        ),
    )
}
BEGIN, END = "<!-- cvit-headline:begin -->", "<!-- cvit-headline:end -->"
SHOWN = (("Last", "last"), ("BWT", "bwt"), ("MIF", "MIF"))


def _cell(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def _per_seed(runs: list[dict], pair: tuple[str, str]) -> str:
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


def _groups(page: Page, runs: list[dict]) -> list[dict]:
    return order_groups(aggregate(runs, page.split), "last", page.order)


def markdown(page: Page) -> str:
    runs = collect([str(page.runs)], split=page.split)
    groups = _groups(page, runs)
    seeds = len({r["seed"] for r in runs})
    commands = "\n".join(page.commands)
    text = (
        f"# {page.title}\n\n"
        f"Generated by `python scripts/publish_results.py {page.name}` from the runs'\n"
        f"`results.json` in `docs/results/{page.name}/runs/` (`tests/test_published.py` checks\n"
        f"it). {page.about}\n\n"
        f"```bash\n{commands}\n```\n\n"
        f"## Mean ± std over seeds ({seeds} seed{'s' if seeds > 1 else ''})\n\n"
        f"{markdown_table(groups, bold=True)}\n"
    )
    if page.pair:
        text += f"## Per seed\n\n{_per_seed(runs, page.pair)}\n\n"
    return text + (
        f"![Last, MAA and BWT]({page.name}/metrics.png)\n\n"
        f"![Accuracy matrices]({page.name}/matrices.png)\n"
    )


def readme_block() -> str:
    page = PAGES["cvit_headline"]
    runs = collect([str(page.runs)])
    groups = _groups(page, runs)
    cols = (("Last", "last"), ("BWT", "bwt"), ("Plasticity", "plasticity"), ("MIF", "MIF"))
    lines = ["| method | " + " | ".join(c for c, _ in cols) + " |", "| --- |" + " --: |" * 4]
    for g in groups:
        stats = [g["metrics"][k] for _, k in cols]
        cells = [
            _cell(s["mean"]) + ("" if s["std"] is None else f" ± {s['std']:.1f}") for s in stats
        ]
        lines.append(f"| `{g['label']}` | " + " | ".join(cells) + " |")
    seeds = len({r["seed"] for r in runs})
    return (
        f"{BEGIN}\n"
        f"Mean ± std over {seeds} seeds, generated from committed runs "
        f"([the full page, per seed and per task](docs/results/cvit_headline.md)):\n\n"
        + "\n".join(lines)
        + "\n\n![Last, MAA and BWT](docs/results/cvit_headline/metrics.png)\n"
        + END
    )


def readme_with(block: str, text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    return head + block + rest.split(END, 1)[1]


def publish(page: Page) -> None:
    page.path.write_text(markdown(page))
    groups = _groups(page, collect([str(page.runs)], split=page.split))
    plot_metrics(RESULTS / page.name / "metrics.png", groups)
    plot_matrices(RESULTS / page.name / "matrices.png", groups)
    if page.name == "cvit_headline":
        README.write_text(readme_with(readme_block(), README.read_text()))
    print(f"wrote {page.path.relative_to(ROOT)} and its figures")


def main(argv: list[str]) -> int:
    names = argv or [n for n in PAGES if PAGES[n].runs.is_dir()]
    unknown = [n for n in names if n not in PAGES]
    if unknown:
        print(f"error: no page {unknown[0]!r}; pages: {', '.join(PAGES)}", file=sys.stderr)
        return 2
    for name in names:
        publish(PAGES[name])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
