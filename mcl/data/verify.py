"""Check an unpacked benchmark before converting it: what each split holds, nothing written.

    python -m mcl.data.verify --bench coin --root /data/CoIN [--tasks a,b] [--images DIR]

Per task and split (the files ``conf/bench/<bench>.yaml`` names, as :mod:`mcl.data.prepare`
plans them): the records found, the records the reader could not use (by reason, with the first
one's one-line explanation), text-only records, the images that are missing or escape the image
folder, and the references per question (min / mean / max: 10 for VQA answer files, 5 for
caption references, 1 for exact-match tasks). A count the benchmark publishes, when its config
gives it (``files.tasks.<task>.expect: {train: n, test: n}``, each sourced in that config), is
printed next to the count found, and a split whose count differs from it is flagged: a partial
download or another release of the files scores a different benchmark. Images are only looked up,
never decoded, so this is quick on a full release.

Exit status: 0 every split usable and as published, 1 some record or image is missing or a count
differs from the published one, 2 a usage error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mcl.data.convert import OneLineParser, UserError, load_bench, read_input, resolve_image
from mcl.data.prepare import plan

IMAGE_PROBLEMS = ("malformed", "missing_image", "path_escape")  # found by looking the path up


def verify_split(job: dict) -> dict:
    """The counts of one planned split (see the module doc)."""
    records, problems = read_input(
        job["format"],
        job["file"],
        job.get("answers"),
        job.get("refs"),
        job.get("kind"),
        job.get("prompt"),
    )
    root_real = Path(os.path.realpath(job["images"]))
    by_reason: dict[str, int] = {}
    first: dict[str, str] = {}
    for p in problems:  # the reader's: these records never reach the image check
        by_reason[p.reason] = by_reason.get(p.reason, 0) + 1
        first.setdefault(p.reason, str(p))
    text_only = 0
    refs = []
    for _, rec in records:
        if not isinstance(rec, dict):
            continue
        rel = rec.get("image")
        if rel is None:
            text_only += 1
            continue
        reason = resolve_image(root_real, rel)[0] if isinstance(rel, str) else "malformed"
        if reason:
            by_reason[reason] = by_reason.get(reason, 0) + 1
            first.setdefault(reason, f"{job['images']}: {rel}")
        answers = rec.get("answers")
        refs.append(len(answers) if isinstance(answers, list) and answers else 1)
    return {
        "task": job["task"],
        "split": job["split"],
        "file": str(job["file"]),
        "records": len(records) + len(problems),
        "usable": len(refs) - sum(by_reason.get(r, 0) for r in IMAGE_PROBLEMS),
        "text_only": text_only,
        "problems": by_reason,
        "first": first,
        "references": [min(refs), round(sum(refs) / len(refs), 2), max(refs)] if refs else None,
        "expect": job.get("expect"),
    }


def verify(bench, root, tasks=None, images=None) -> list[dict]:
    cfg, jobs = plan(bench, root, tasks, images)
    table = (cfg.get("files") or {}).get("tasks") or {}
    out = []
    for job in jobs:
        expect = (table.get(job["task"]) or {}).get("expect") or {}
        out.append(verify_split({**job, "expect": expect.get(job["split"])}))
    return out


def differs(row: dict) -> bool:
    """Whether the split's record count differs from the count the benchmark publishes."""
    return row["expect"] is not None and row["records"] != row["expect"]


def format_report(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        expect = f" (published: {r['expect']})" if r["expect"] is not None else ""
        if differs(r):
            expect = f" (published: {r['expect']}; DIFFERS by {r['records'] - r['expect']:+d})"
        refs = "-" if r["references"] is None else "/".join(map(str, r["references"]))
        head = f"{r['task']:<20}{r['split']:<6}{r['records']:>8} records{expect}, "
        head += f"{r['usable']} usable, {r['text_only']} text-only, refs min/mean/max {refs}"
        lines.append(head)
        for reason, n in r["problems"].items():
            lines.append(f"    {reason:<17}{n:>7}   e.g. {r['first'][reason]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(
        prog="python -m mcl.data.verify",
        description="Count what an unpacked benchmark holds, per task and split.",
    )
    p.add_argument("--bench", required=True, help="benchmark config under conf/bench")
    p.add_argument("--root", required=True, help="the folder the benchmark was unpacked into")
    p.add_argument("--tasks", default=None, help="comma-separated subset of the tasks")
    p.add_argument("--images", default=None, help="image root, if not where the config says")
    a = p.parse_args(argv)
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()] if a.tasks else None
    try:
        load_bench(a.bench)
        rows = verify(a.bench, a.root, tasks, a.images)
    except UserError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_report(rows))
    off = [f"{r['task']} {r['split']}" for r in rows if differs(r)]
    if off:
        print(f"{len(off)} split(s) differ from the published counts: {', '.join(off)}")
    if off or any(r["problems"] for r in rows):
        raise SystemExit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
