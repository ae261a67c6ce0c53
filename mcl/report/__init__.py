"""Compare runs from their results.json: `python -m mcl.report RUN_DIRS` (see `cli`).

The steps, one module each: `collect` finds and loads runs (checked against `schema`),
`aggregate` groups them and takes mean ± std over seeds, `render` writes the Markdown tables
and CSV, `plots` the figures. Results pages (`--publish`): `summary` keeps a run's compact
summary, `publish` writes a page from the summaries, `curves` its own figures. From Python
(a notebook, the results pages)::

    from mcl.report import aggregate, collect, markdown_table
    print(markdown_table(aggregate(collect(paths))))
"""

from mcl.report.aggregate import aggregate, order_groups
from mcl.report.collect import ReportError, collect, latest_run, latest_sweep
from mcl.report.plots import plot_matrices, plot_metrics
from mcl.report.render import csv_text, markdown_table

__all__ = [
    "ReportError",
    "aggregate",
    "collect",
    "csv_text",
    "latest_run",
    "latest_sweep",
    "markdown_table",
    "order_groups",
    "plot_matrices",
    "plot_metrics",
]
