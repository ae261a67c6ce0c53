"""``python -m mcl.data.prepare`` for benchmarks with video, audio, depth or point-cloud stages.

``mcl.data.convert`` writes image samples; this module writes the others from PathWeave's
released files, read by :mod:`mcl.data.readers.xmodal` and loaded by the modality's loader
(:mod:`~mcl.data.readers.video`, :mod:`~mcl.data.readers.audio`,
:mod:`~mcl.data.readers.depth`, :mod:`~mcl.data.readers.points`). Image tasks of the same
benchmark still go through ``mcl.data.convert``. A task's ``files`` entry in
``conf/bench/<bench>.yaml``::

    video:
      kind: qa                  # qa | caption | label | conversations (readers.xmodal)
      media: "{video}"          # the sample's file, a template over the record's fields
      images: MSRVTT/videos     # media root, relative to --root
      frames: 5                 # video only: frames per clip (and size: 224, the square side)
      train: MSRVTT/annotations/qa_train.json
      test: MSRVTT/annotations/qa_test.json
      eval_sets:                # several test sets, each with its own scorer (bench.json)
        msrvtt_qa: {file: ..., scorer: vqa, answer_type: word, max_new_tokens: 10}
        msrvtt_caption: {file: ..., kind: caption, prompt: "...", scorer: cider, ...}

A split or set may override ``kind``, ``media``, ``images``, ``depth`` (depth maps' root),
``prompt``, ``rename`` (a file's field names, :mod:`~mcl.data.readers.xmodal`). Depth samples
pair ``images/<image>`` with ``depth/<image stem>.png``.

Output, as ``mcl.data.convert``: ``<out>/<task>/{train,test}-%06d.tar``, each eval set's
``<out>/<task>/eval-<set>-%06d.tar``, a ``.convert.json`` summary beside them, and
``bench.json`` (a task's sets under ``"eval_sets"``). A file that is absent or does not decode
(a truncated mp4, an empty wav) skips its sample, counted by reason (``missing_<modality>``,
``unreadable_<modality>``, ``path_escape``); an annotation record the reader cannot use stops a
test split or eval set (a test set silently missing questions is not the benchmark), as in
``mcl.data.convert``. Every test file and eval set is read before anything is written, so that
stop costs one line, not the earlier tasks' conversion.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from mcl.config import CONF_DIR
from mcl.data.convert import (
    SPLITS,
    UserError,
    _locked,
    _sha256,
    _task_entry,
    convert,
    load_bench,
    publish_shards,
    refuse_problems,
    update_bench_json,
)
from mcl.data.readers import audio, depth, points, video, xmodal
from mcl.data.readers.files import ReadError
from mcl.data.readers.media import MediaError, resolve
from mcl.data.readers.record import split_items
from mcl.data.shards import make_record, private_tmp, write_shards
from mcl.utils.io import atomic_write_json

JOB_KEYS = ("file", "kind", "media", "images", "depth", "prompt", "rename", "frames", "size")
SET_KEYS = ("scorer", "answer_type", "max_new_tokens")
ROOT_KEYS = ("file", "images", "depth")  # paths, relative to --root
MAX_EXAMPLES = 3
DEFAULT_MEDIA = {
    "video": "{video}",
    "audio": "{audio}",
    "depth": "{image}",
    "points": "{sample_id}_8192.npz",
}


def handles(cfg: dict) -> bool:
    """Whether a bench config has a non-image task to prepare (then this module runs it)."""
    info = cfg.get("task_info") or {}
    return any(info[t]["modality"] != "image" for t in (cfg.get("files") or {}).get("tasks", {}))


def plan(cfg: dict, root: Path, task: str) -> list[dict]:
    """One job per split and eval set of a non-image task, paths resolved and checked."""
    bench = cfg["name"]
    modality = cfg["task_info"][task]["modality"]
    entry = (cfg.get("files") or {}).get("tasks", {}).get(task)
    if entry is None:
        raise UserError(f"conf/bench/{bench}.yaml: files.tasks has no entry for '{task}'")
    base = {"kind": "qa", "media": DEFAULT_MEDIA[modality], "images": "."}
    base.update({k: entry[k] for k in JOB_KEYS if k in entry and k != "file"})
    specs = [(s, s, entry[s]) for s in SPLITS if entry.get(s) is not None]
    specs += [(f"eval-{n}", n, v) for n, v in (entry.get("eval_sets") or {}).items()]
    jobs = []
    for split, name, spec in specs:
        spec = {"file": spec} if isinstance(spec, str) else dict(spec)
        job = {**base, **{k: spec[k] for k in JOB_KEYS if k in spec}}
        where = f"{bench}/{task} {split}"
        if job.get("file") is None:
            raise UserError(f"{where}: no file (files.tasks.{task} in conf/bench/{bench}.yaml)")
        for key in ROOT_KEYS:
            if job.get(key) is not None:
                job[key] = root / job[key]
        if not job["file"].is_file():
            raise UserError(f"{where}: {job['file']} not found (relative to --root {root})")
        if modality == "depth" and job.get("depth") is None:
            raise UserError(
                f"{where}: depth samples need a depth-map root (files.tasks.{task}.depth)"
            )
        for key in ("images", "depth"):
            if job.get(key) is not None and not job[key].is_dir():
                raise UserError(
                    f"{where}: {key} folder {job[key]} not found (relative to --root {root})"
                )
        if split.startswith("eval-"):
            info = cfg["task_info"][task]
            job["set"] = {k: spec.get(k, info[k]) for k in SET_KEYS}
            job["set_name"] = name
        jobs.append({"task": task, "split": split, "modality": modality, **job})
    if not jobs:
        raise UserError(f"conf/bench/{bench}.yaml: files.tasks.{task} names no split")
    return jobs


def load_payload(modality: str, job: dict, rel: str):
    """The native payload of one record's media file; raises :class:`MediaError`."""
    if modality == "video":
        path = resolve(job["images"], rel, "video")
        return video.load(
            path, int(job.get("frames", video.N_FRAMES)), int(job.get("size", video.FRAME_SIZE))
        )
    if modality == "audio":
        return audio.load(resolve(job["images"], rel, "audio"))
    if modality == "depth":
        rgb = resolve(job["images"], rel, "image")
        return depth.load(rgb, resolve(job["depth"], depth.depth_path(rel), "depth"))
    if modality == "points":
        return points.load(resolve(job["images"], rel, "points"))
    raise ValueError(f"no loader for modality {modality!r}")


class Skips:
    """Skipped records by reason, a few example ids and the first line of each reason."""

    def __init__(self) -> None:
        self.by: dict[str, dict] = {}

    def add(self, reason: str, example: str, line: str) -> None:
        e = self.by.setdefault(reason, {"count": 0, "examples": [], "first": line})
        e["count"] += 1
        if len(e["examples"]) < MAX_EXAMPLES:
            e["examples"].append(example)


def read_job(cfg: dict, job: dict) -> tuple[list, list]:
    """One split or eval set's annotation records and the problems of those it cannot use."""
    try:
        items = list(
            xmodal.read(
                job["file"],
                media=job["media"],
                kind=job["kind"],
                prompt=job.get("prompt"),
                rename=job.get("rename"),
                merge=job["split"] != "train" and job["kind"] == "caption",
            )
        )
    except (ReadError, ValueError) as e:
        raise UserError(f"{cfg['name']}/{job['task']} {job['split']}: {e}") from None
    return split_items(items)


def check_test_files(cfg: dict, jobs: list[dict]) -> None:
    """Read every test split's and eval set's annotations (no media) before anything is
    written: a record the reader cannot use stops the whole preparation in one line."""
    for job in jobs:
        if job["split"] != "train":
            records, problems = read_job(cfg, job)
            refuse_problems(problems, len(records))


def convert_job(cfg: dict, job: dict, out: Path, limit: int | None, progress: bool) -> dict:
    """Write one split or eval set's shards and summary; update ``bench.json``."""
    task, split, modality = job["task"], job["split"], job["modality"]
    info = {**cfg["task_info"][task], **job.get("set", {})}
    records, problems = read_job(cfg, job)
    if split != "train":
        refuse_problems(problems, len(records))
    if limit is not None:
        records = records[:limit]
    skips = Skips()
    for p in problems:
        skips.add(p.reason, p.record, str(p))
    written = [0]
    bar = tqdm(
        total=len(records),
        desc=f"{cfg['name']}/{task} {split}",
        unit="rec",
        disable=not progress,
        mininterval=1,
    )

    def samples():
        for index, rec in enumerate(records):
            bar.update(1)
            try:
                payload = load_payload(modality, job, rec.image)
            except MediaError as e:
                skips.add(e.reason, rec.id, f"{job['file'].name}: record {rec.id}: {e}")
                continue
            written[0] += 1
            meta = {"id": rec.id, "index": index, "media": rec.image}
            if rec.instruction:
                meta["instruction"] = rec.instruction
            if split.startswith("eval-"):
                meta["set"] = job["set_name"]
            key = f"{task}-{split}-{index:08d}".replace(".", "_")
            yield make_record(
                key,
                task,
                rec.question,
                rec.answers[0],
                list(rec.answers),
                payload,
                info["answer_type"],
                meta,
                modality,
            )

    task_dir = out / task
    task_dir.mkdir(parents=True, exist_ok=True)
    tmp = private_tmp(task_dir / split)
    summary = {
        "bench": cfg["name"], "task": task, "split": split, "json": str(job["file"]),
        "json_sha256": _sha256(job["file"]), "format": f"xmodal/{job['kind']}",
        "media": str(job["images"]), "limit": limit, "records": len(records) + len(problems),
        "written": 0, "reencoded": 0, "instructions": {}, "skipped": {}, "shards": [],
    }  # fmt: skip
    try:
        names = write_shards(str(tmp / f"{split}-%06d.tar"), samples(), 1000)
        bar.close()
        summary["written"], summary["skipped"] = written[0], skips.by
        if not written[0]:
            atomic_write_json(task_dir / f"{split}.convert.json", summary)
            return summary
        with _locked(out):
            entry = publish_shards(out, task, split, tmp, names, written[0])
            summary["shards"] = entry["shards"]
            atomic_write_json(task_dir / f"{split}.convert.json", summary)
            if split in SPLITS:
                update_bench_json(out, cfg, task, split, entry)
            else:
                add_eval_set(out, cfg, task, job["set_name"], {**entry, **job["set"]})
    finally:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def add_eval_set(out: Path, cfg: dict, task: str, name: str, entry: dict) -> None:
    """Record one eval set of ``task`` in ``out/bench.json`` (created if absent), keeping
    everything else; the caller holds the lock."""
    path = out / "bench.json"
    if path.exists():
        spec = json.loads(path.read_text())
    else:
        spec = {
            "name": cfg["name"],
            "source": "real",
            "tasks": [_task_entry(t, cfg["task_info"][t]) for t in cfg.get("tasks") or []],
            "unseen": [_task_entry(t, cfg["task_info"][t]) for t in cfg.get("unseen") or []],
        }
    for t in spec["tasks"] + spec["unseen"]:
        if t["name"] == task:
            sets = t.setdefault("eval_sets", {})
            sets[name] = {k: entry[k] for k in ("shards", "samples", "sha256", *SET_KEYS)}
    atomic_write_json(path, spec)


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
    """Every chosen task: image tasks through ``mcl.data.prepare``'s jobs, the others here.
    All files are checked to exist, and every test file is read, before anything is written."""
    from mcl.data import prepare as image_prepare

    cfg = load_bench(bench, conf_dir)
    names = list(cfg.get("tasks") or []) + list(cfg.get("unseen") or [])
    chosen = tasks or names
    unknown = [t for t in chosen if t not in names]
    if unknown:
        raise UserError(
            f"--tasks: {', '.join(unknown)} not in bench {bench}; choose from {', '.join(names)}"
        )
    root, out = Path(root).expanduser(), Path(out)
    if not root.is_dir():
        raise UserError(f"--root is not a directory: {root}")
    pictures = [t for t in chosen if cfg["task_info"][t]["modality"] == "image"]
    image_jobs = image_prepare.plan(bench, root, pictures, images, conf_dir)[1] if pictures else []
    jobs = {t: plan(cfg, root, t) for t in chosen if t not in pictures}
    image_prepare.check_test_files(image_jobs)
    for task_jobs in jobs.values():
        check_test_files(cfg, task_jobs)
    summaries = []
    for task in chosen:
        if task in jobs:
            summaries += [convert_job(cfg, j, out, limit, progress) for j in jobs[task]]
            continue
        for job in (j for j in image_jobs if j["task"] == task):
            summaries.append(
                convert(
                    bench, task, job["split"], job["file"], job["images"], out, limit=limit,
                    progress=progress, conf_dir=conf_dir, fmt=job["format"],
                    answers=job.get("answers"), refs=job.get("refs"), kind=job.get("kind"),
                    prompt=job.get("prompt"), strict=job["split"] == "test",
                )
            )  # fmt: skip
    return summaries
