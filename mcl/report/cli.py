"""Compare runs: a Markdown table of mean ± std over seeds per benchmark, plus CSV and figures.

    python -m mcl.report logs/synth                       # every run below a directory
    python -m mcl.report logs/multirun/2026-11-27_10-00-00 logs/synth/joint/s0/<timestamp>
    python -m mcl.report logs --sort maa --order zero_shot,seq_lora,joint --out my_report/

Each `results.json` below an argument is one run. Runs are grouped by (bench, method); runs of
one bench that differ in data source or task list go to separate groups and tables (the method
is then labelled e.g. `seq_lora [real]`) and are never averaged together. Unfinished runs are
skipped unless --include-incomplete; when a (bench, method, seed) appears twice the newest run
is kept. Runs of one group whose configs differ (e.g. a learning-rate sweep) are averaged with
a warning naming the differing keys.

The table goes to stdout (warnings to stderr); --out (default: a `report` folder in the directory
given, or in the deepest directory holding all of them; never the current directory) receives
report.md, report.csv (one row per group), matrices.png (mean accuracy matrix per group) and
metrics.png (Last / MAA / BWT bars). Below each table, BWT task by task, with a note where one task
(often a CIDEr-scored caption task) makes up most of it, and the data faults: every run's
unreadable samples per task, as its results.json `skipped` counts them.
From Python: `print(markdown_table(aggregate(collect(paths))))`.

Results pages (docs/results/index.md):

    python -m mcl.report logs/multirun/<sweep> --publish docs/results/cvit   # store + write
    python -m mcl.report --publish docs/results/cvit --from-summaries        # rewrite only

--publish adds each finished run's compact summary to PAGE/runs/ (replacing the summary of the
same method, variant and seed; --replace drops the others) and writes PAGE.md, its figures and
PAGE/page.json (--title, --about, --command, --order, --split-by, --pair, when given; without
--split-by, the config keys that differ between runs of one method). --from-summaries rewrites
the page from the committed summaries alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mcl.report.aggregate import STATS, aggregate, order_groups, stat_names
from mcl.report.collect import ReportError, collect, warn
from mcl.report.plots import plot_matrices, plot_metrics
from mcl.report.render import csv_text, markdown_table
from mcl.utils.io import atomic_write_text

OUTPUTS = ("report.md", "report.csv", "matrices.png", "metrics.png")


def write_outputs(out: str | os.PathLike, groups: Sequence[dict], markdown: str) -> None:
    out = Path(out)
    try:
        atomic_write_text(out / "report.md", markdown)
        atomic_write_text(out / "report.csv", csv_text(groups))
        plot_matrices(out / "matrices.png", groups)
        plot_metrics(out / "metrics.png", groups)
    except OSError as e:
        raise ReportError(f"cannot write to {out}: {e.strerror or e}; choose another --out") from e


def default_out(paths: Sequence[str | os.PathLike]) -> Path:
    """Where the report goes without --out: ``report/`` in the one directory given, or in the
    deepest directory holding all of them (the first one's when they share only the root) --
    beside the runs it describes, never the current directory."""
    dirs = [Path(p).resolve() for p in paths]
    dirs = [d if d.is_dir() else d.parent for d in dirs]
    common = Path(os.path.commonpath(dirs))
    return (dirs[0] if common == Path(common.anchor) else common) / "report"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mcl.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="*", metavar="RUN_DIR", help="run, sweep or parent directories"
    )
    page = parser.add_argument_group("results pages")
    page.add_argument("--publish", metavar="PAGE_DIR", help="write a results page (see above)")
    page.add_argument(
        "--from-summaries",
        action="store_true",
        help="with --publish and no RUN_DIR: rewrite the page from its committed summaries",
    )
    page.add_argument(
        "--replace",
        action="store_true",
        help="with --publish RUN_DIRs: drop the page's other summaries (default: keep them)",
    )
    page.add_argument("--title", default="", help="the page's title (page.json)")
    page.add_argument("--about", default="", help="a paragraph on what the runs are (page.json)")
    page.add_argument(
        "--command",
        action="append",
        default=[],
        help="a command that made the runs (repeatable; default: the results preset's)",
    )
    page.add_argument(
        "--pair", default="", metavar="BASE,METHOD", help="a per-seed comparison table"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default: RUN_DIR/report for one RUN_DIR, else a report folder in "
        "the deepest directory holding them all)",
    )
    parser.add_argument(
        "--sort",
        default="last",
        metavar="STAT",
        help=f"order rows by this stat, best first (default: last): {', '.join(STATS)}, or an "
        "extra score the runs have (its metrics key)",
    )
    parser.add_argument(
        "--order",
        default="",
        help="comma-separated methods to list first, in this order (e.g. zero_shot,seq_lora)",
    )
    parser.add_argument(
        "--include-incomplete",
        action="store_true",
        help="keep runs whose results.json says complete: false (running or crashed)",
    )
    parser.add_argument(
        "--scoring",
        default=None,
        metavar="NAME",
        help="report results.NAME.json, written by `python -m mcl.eval.rescore --scorer-mode "
        "NAME` (a scorer mode or benchmark preset), instead of results.json",
    )
    parser.add_argument(
        "--split-by",
        default="",
        metavar="KEYS",
        help="comma-separated dotted config keys whose values keep runs apart (ablations, "
        "settings), e.g. method.allocator,bench.synthetic.instructions",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.publish or args.from_summaries:
        return _publish(args)
    if not args.paths:
        print("error: pass at least one RUN_DIR (or --publish PAGE_DIR)", file=sys.stderr)
        raise SystemExit(2)
    order = [name.strip() for name in args.order.split(",") if name.strip()]
    try:
        split = [k.strip() for k in args.split_by.split(",") if k.strip()]
        runs = collect(args.paths, args.include_incomplete, args.scoring, split)
        groups = aggregate(runs, split)
        known_stats = stat_names(groups)
        if args.sort not in known_stats:
            raise ReportError(f"--sort {args.sort}: choose one of {', '.join(known_stats)}")
        known = {g["method"] for g in groups} | {g["label"] for g in groups}
        for name in order:
            if name not in known:
                warn(f"--order names {name!r}, which matches no method found")
        groups = order_groups(groups, args.sort, order)
        markdown = markdown_table(groups)
        print(markdown, end="")
        out = args.out or default_out(args.paths)
        write_outputs(out, groups, markdown)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {', '.join(OUTPUTS)} to {out}", file=sys.stderr)
    return 0


def _publish(args: argparse.Namespace) -> int:
    from mcl.report.publish import publish

    try:
        if not args.publish:
            raise ReportError("--from-summaries needs --publish PAGE_DIR")
        if args.from_summaries == bool(args.paths):
            raise ReportError(
                "--publish takes RUN_DIRs (store their summaries) or --from-summaries, not both"
                if args.paths
                else "--publish needs RUN_DIRs, or --from-summaries to rewrite the page"
            )
        written = publish(
            args.publish,
            args.paths,
            args.replace,
            title=args.title,
            about=args.about,
            commands=args.command,
            order=[n.strip() for n in args.order.split(",") if n.strip()],
            split=[k.strip() for k in args.split_by.split(",") if k.strip()],
            pair=[n.strip() for n in args.pair.split(",") if n.strip()] or None,
        )
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
