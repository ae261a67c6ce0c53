"""Convert a whole benchmark, every task's train and test split, from the folder a user unpacked.

    python -m mcl.data.prepare --bench coin --root /data/CoIN --out /data/coin [--tasks a,b]

Which files make each split is the benchmark's business, so it lives in its config:
``conf/bench/<bench>.yaml`` has a ``files:`` block, e.g. (CoIN)::

    files:
      format: coin            # reader of mcl.data.readers (docs/data_formats.md)
      images: cl_dataset      # image root, relative to --root
      tasks:
        scienceqa: {train: Instructions_Original/ScienceQA/train.json,
                    test: Instructions_Original/ScienceQA/test.json}

A task's split is a path relative to ``--root`` or a dict ``{file, format, images, answers, refs,
kind, prompt}`` (``answers``/``refs`` relative to ``--root`` too); a key given on the task applies
to both its splits, one given at the top to every task. Each split goes through
:func:`mcl.data.convert.convert` (the same skips, summaries and ``bench.json``); a test split is
converted strictly: a test record the reader cannot use (no ``answer``, no reference entry) stops
the command in one line naming the record, the field and the file, because a test set with
questions silently dropped is not the published benchmark.

Every file is checked to exist before anything is converted, so a wrong ``--root`` costs one line,
not a half-written benchmark. Exit status: 0 done, 1 a split wrote nothing, 2 a usage or data
error (one line).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mcl.config import CONF_DIR
from mcl.data.convert import (
    SPLITS,
    OneLineParser,
    UserError,
    convert,
    format_summary,
    load_bench,
    read_input,
    refuse_problems,
)

SPLIT_KEYS = ("file", "format", "images", "answers", "refs", "kind", "prompt")
ROOT_KEYS = ("file", "images", "answers", "refs")  # paths, relative to --root


def plan(
    bench: str,
    root: str | Path,
    tasks: list[str] | None = None,
    images: str | Path | None = None,
    conf_dir: Path = CONF_DIR,
) -> tuple[dict, list[dict]]:
    """The bench config and one job per (task, split): ``{task, split, file, format, images,
    answers, refs, kind, prompt}`` with paths resolved under ``root``; every file checked."""
    cfg = load_bench(bench, conf_dir)
    files = cfg.get("files") or {}
    table = files.get("tasks") or {}
    if not table:
        raise UserError(f"conf/bench/{bench}.yaml has no files.tasks block; it cannot be prepared")
    names = list(cfg.get("tasks") or []) + list(cfg.get("unseen") or [])
    chosen = tasks or names
    unknown = [t for t in chosen if t not in names]
    if unknown:
        raise UserError(
            f"--tasks: {', '.join(unknown)} not in bench {bench}; choose from {', '.join(names)}"
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"--root is not a directory: {root}")
    defaults = {k: files[k] for k in SPLIT_KEYS if k in files}
    jobs = []
    for task in chosen:
        entry = table.get(task)
        if entry is None:
            raise UserError(f"conf/bench/{bench}.yaml: files.tasks has no entry for '{task}'")
        task_level = {k: entry[k] for k in SPLIT_KEYS if k in entry}
        for split in SPLITS:
            spec = entry.get(split)
            if spec is None:
                continue
            spec = {"file": spec} if isinstance(spec, str) else dict(spec)
            job = {"format": "llava", "images": ".", **defaults, **task_level, **spec}
            if images is not None:
                job["images"] = str(images)
            for key in ROOT_KEYS:
                if job.get(key) is not None:
                    job[key] = root / job[key]
            for key in ("file", "answers", "refs"):
                if job.get(key) is not None and not job[key].is_file():
                    raise UserError(
                        f"{bench}/{task} {split}: {job[key]} not found (files.tasks.{task} in "
                        f"conf/bench/{bench}.yaml, relative to --root {root})"
                    )
            if not job["images"].is_dir():
                raise UserError(
                    f"{bench}/{task} {split}: image folder {job['images']} not found (relative "
                    f"to --root {root}; pass --images DIR if the images sit elsewhere)"
                )
            jobs.append({"task": task, "split": split, **job})
    return cfg, jobs


def check_test_files(jobs: list[dict]) -> None:
    """Read every test file (annotations only, no images) before any split is converted: a test
    record the reader cannot use stops the whole preparation with its one-line problem, before
    hours of conversion rather than after."""
    for job in jobs:
        if job["split"] != "test":
            continue
        records, problems = read_input(
            job["format"],
            Path(job["file"]),
            Path(job["answers"]) if job.get("answers") else None,
            Path(job["refs"]) if job.get("refs") else None,
            job.get("kind"),
            job.get("prompt"),
        )
        refuse_problems(problems, len(records))


def prepare(
    bench: str,
    root: str | Path,
    out: str | Path,
    tasks: list[str] | None = None,
    images: str | Path | None = None,
    limit: int | None = None,
    progress: bool = True,
    conf_dir: Path = CONF_DIR,
) -> list[dict]:
    """Convert every planned split into ``out``; returns the convert summaries in order."""
    from mcl.data import prepare_xmodal  # video / audio / depth / points tasks (bench mcl)

    if prepare_xmodal.handles(load_bench(bench, conf_dir)):
        return prepare_xmodal.prepare(bench, root, out, tasks, images, limit, progress, conf_dir)
    _, jobs = plan(bench, root, tasks, images, conf_dir)
    check_test_files(jobs)
    summaries = []
    for job in jobs:
        summaries.append(
            convert(
                bench,
                job["task"],
                job["split"],
                job["file"],
                job["images"],
                out,
                limit=limit,
                progress=progress,
                conf_dir=conf_dir,
                fmt=job["format"],
                answers=job.get("answers"),
                refs=job.get("refs"),
                kind=job.get("kind"),
                prompt=job.get("prompt"),
                strict=job["split"] == "test",
            )
        )
    return summaries


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(
        prog="python -m mcl.data.prepare",
        description="Convert every task's train and test split of a benchmark, as published.",
    )
    p.add_argument("--bench", required=True, help="benchmark config under conf/bench")
    p.add_argument("--root", required=True, help="the folder the benchmark was unpacked into")
    p.add_argument("--out", required=True, help="benchmark directory (bench.json + shards)")
    p.add_argument("--tasks", default=None, help="comma-separated subset of the tasks")
    p.add_argument("--images", default=None, help="image root, if not where the config says")
    p.add_argument("--limit", type=int, default=None, help="convert only N records per split")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()] if a.tasks else None
    try:
        summaries = prepare(a.bench, a.root, a.out, tasks, a.images, a.limit, progress=not a.quiet)
    except UserError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    for s in summaries:
        print(format_summary(s, Path(a.out)))
    empty = [f"{s['task']}/{s['split']}" for s in summaries if not s["written"]]
    if empty:
        print(f"{p.prog}: nothing written for {', '.join(empty)}", file=sys.stderr)
        raise SystemExit(1)
    print(f"bench.json: {Path(a.out) / 'bench.json'} ({len(summaries)} splits)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
