"""Convert a LLaVA-style annotation file + image folder into mcl shards and ``bench.json``.

    python -m mcl.data.convert --bench cvit --task textvqa --split train \\
        --json /path/train.json --images /path/image_root --out /data/cvit [--limit N]

Input: a JSON list (or JSONL, one record a line) of ``{"id", "image", "conversations":
[{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...],
"answers": [...] (optional)}``; ``image`` is a path relative to ``--images``. Any other layout a
benchmark publishes is read by its reader of :mod:`mcl.data.readers`, named by ``--format``
(``--answers``/``--refs`` for the separate answer or caption-reference file), which keeps every
reference and puts ``options``, ``bbox`` and ``image_size`` into the sample's ``meta``. A whole
benchmark is converted by ``python -m mcl.data.prepare``.

Output: ``<out>/<task>/<split>-%06d.tar`` in the sample schema of :mod:`mcl.data.shards`
(``json`` = task, modality, one human/gpt ``conversations`` pair, answer_type, answers, meta;
the image file's bytes unchanged under ``jpg`` or ``png``), a summary
``<out>/<task>/<split>.convert.json``, and ``<out>/bench.json`` created or updated.

Rules:

- **Multi-turn records** (``--multi-turn split``, the default): each human/gpt pair becomes its own
  sample (key suffix ``-01``, ``-02``, ...) with the same image, the question prefixed with
  ``<image>\\n``; this fits LLaVA data that packs several independent questions about one image
  into one record. ``--multi-turn first`` keeps only the first pair. A record's ``answers`` list
  belongs to its first pair; later pairs get ``[their gpt answer]``.
- **Skips** (counted by reason, up to 3 example ids each, in the summary): ``missing_field`` (a
  field the benchmark's loader reads is absent: no ``conversations``, as in a test file read
  without its ``--format``; an ``<image>`` conversation without ``image``; a reader's missing
  ``answer``), ``no_reference`` / ``unsupported`` (the reader's), ``text_only`` (no ``image``
  field and no ``<image>``: shards hold image samples), ``malformed`` (not an
  object, bad JSON line, conversations not alternating human/gpt, non-string image path, empty
  question), ``path_escape`` (absolute path, ``..``, or a symlink resolving outside the image
  root; such files are never opened), ``missing_image`` (no such file),
  ``unreadable_image`` (PIL cannot decode the bytes), ``empty_answer`` (an empty or null answer).
  ``empty_answer`` counts QA pairs (the other pairs of the record are kept); every other reason
  counts records. A record holding text that is not valid Unicode (a lone surrogate such as
  ``"\\ud800"``) or nested too deeply for Python's JSON reader is ``malformed`` (in a JSON list
  file the whole file cannot be parsed: a one-line error). ``null`` entries of ``answers`` are
  dropped, never written as the text "None".
- **Instructions** (``meta.instruction``): the part of a question that is the task's
  instruction, not the sample's -- what SMoLoRA's instruction-type table embeds (CVIT's ImageNet
  "What is the object in the image?\nAnswer the question using a single word or phrase.",
  TextVQA's last line "Answer the question using a single word or phrase."). A record's own
  string ``"instruction"`` field is taken as it is. Otherwise it is found from the split's
  questions, whose instruction is always their last line(s): the longest run of last lines
  (the last one, then the two last, ...) that recurs, i.e. the last line is shared by at least
  ``max(2, 5%)`` of the split's questions and each longer run by at least half of the questions
  sharing the shorter one (so ScienceQA's "B. no" before its instruction, in a tenth of the
  records, stays out, while ImageNet's and Places365's fixed question lines go in). A question
  whose last line recurs in no other question has none; the summary lists what was found
  (``instructions``: text and count). Without it, a method falls back to the last sentence,
  which makes ImageNet, TextVQA and Places365 one instruction type.
- **Image bytes** are copied unchanged as ``png`` or ``jpg`` by the decoded format (not the file
  extension); other formats (GIF, BMP, WebP, ...) are re-encoded losslessly to PNG as RGB and
  counted as ``reencoded`` in the summary.
- **bench.json**: every task and unseen task of ``conf/bench/<bench>.yaml`` is listed in the
  yaml's order with its ``task_info`` (modality, answer_type, scorer, max_new_tokens, optional
  chance/budget). A split is available iff the task's entry has that key (``"train"`` /
  ``"test"``: ``{"shards": [...], "samples": n, "sha256": {shard: hash}}``); a task not yet
  converted has no split keys. Re-converting a split replaces its old shards.
- Output is deterministic: the same input gives byte-identical shards and bench.json.

Exit status: 0 done, 1 nothing could be converted, 2 a usage error (one line, no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from PIL import Image
from tqdm.auto import tqdm

from mcl.config import CONF_DIR
from mcl.data.shards import encode_image, private_tmp, write_shards
from mcl.utils.io import atomic_write_json

if TYPE_CHECKING:  # the readers load only when a --format needs them (a run never does)
    from mcl.data.readers import Problem

SPLITS = ("train", "test")
# skip reasons: the reader's (a field the benchmark's loader reads is absent or malformed, the
# separate answer file has no entry, an unsupported layout), then the converter's own
REASONS = (
    "missing_field",
    "no_reference",
    "unsupported",
    "malformed",
    "text_only",
    "path_escape",
    "missing_image",
    "unreadable_image",
    "empty_answer",
)
IMAGE_REASONS = ("path_escape", "missing_image", "unreadable_image")
META_KEYS = ("options", "bbox", "image_size")  # a record's ``meta`` fields kept in the sample
CONVERTIBLE = ("image",)  # modalities this converter writes (payload png/jpg)
MAX_EXAMPLES = 3
# instructions found from the questions (module doc): the last line must be shared by this share
# of the split's questions (and by two at least); a longer run of last lines by this share of
# those sharing the shorter one
INSTRUCTION_MIN_SHARE = 0.05
INSTRUCTION_KEEP = 0.5
_FORMATS = {"PNG": "png", "JPEG": "jpg", "MPO": "jpg"}  # MPO = multi-picture JPEG from phones


class UserError(Exception):
    """A usage mistake: reported in one line, exit status 2."""


# ------------------------------------------------------------------------------ bench configs
def bench_choices(conf_dir: Path = CONF_DIR) -> list[str]:
    """Benchmarks whose yaml has a ``task_info`` block (the real-data description)."""
    from omegaconf import OmegaConf

    out = []
    for p in sorted((conf_dir / "bench").glob("*.yaml")):
        if "task_info" in (OmegaConf.load(p) or {}):
            out.append(p.stem)
    return out


def load_bench(name: str, conf_dir: Path = CONF_DIR) -> dict:
    """``conf/bench/<name>.yaml`` as a dict, checked to describe every task."""
    from omegaconf import OmegaConf

    valid = bench_choices(conf_dir)
    if name not in valid:
        raise UserError(f"unknown --bench '{name}'; choose one of: {', '.join(valid)}")
    cfg = OmegaConf.to_container(OmegaConf.load(conf_dir / "bench" / f"{name}.yaml"))
    info = cfg.get("task_info") or {}
    names = list(cfg.get("tasks") or []) + list(cfg.get("unseen") or [])
    lacking = [t for t in names if t not in info]
    if lacking:
        raise UserError(f"conf/bench/{name}.yaml has no task_info for {', '.join(lacking)}")
    return cfg


def _task_entry(name: str, info: dict) -> dict:
    entry = {
        "name": name,
        "modality": info["modality"],
        "answer_type": info["answer_type"],
        "scorer": info["scorer"],
        "max_new_tokens": int(info["max_new_tokens"]),
        "chance": info.get("chance"),
    }
    if info.get("budget"):
        entry["budget"] = dict(info["budget"])
    return entry


# ------------------------------------------------------------------------------ reading input
def load_records(path: Path) -> Iterator[tuple[int, object]]:
    """``(index, record)`` pairs from a JSON list or JSONL; a bad JSONL line yields ``None``."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e.reason})") from None
    head = text.lstrip()[:1]
    if head == "[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON: {e}") from None
        except RecursionError:
            raise UserError(
                f"{path} is nested too deeply for Python's JSON reader; flatten the records "
                "(or write them as JSONL: a line nested too deeply is skipped as malformed)"
            ) from None
        yield from enumerate(data)
        return
    if head == "{":
        with contextlib.suppress(json.JSONDecodeError, RecursionError):
            if isinstance(json.loads(text), dict):
                raise UserError(
                    f"{path} holds one JSON object; expected a list of records or JSONL"
                )
    elif head:
        raise UserError(f"{path} is neither a JSON list nor JSONL (starts with {head!r})")
    index = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            yield index, json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            yield index, None
        index += 1


# --format choices, one per reader of mcl.data.readers (checked by a test); "llava" reads the
# file as load_records does
FORMATS = ("llava", "question_answers", "coco_captions", "internvl", "lavis", "coin")


def read_input(
    fmt: str,
    path: Path,
    answers: Path | None = None,
    refs: Path | None = None,
    kind: str | None = None,
    prompt: str | None = None,
) -> tuple[list[tuple[int, object]], list[Problem]]:
    """``(index, LLaVA record)`` pairs and the reader's problems for one input file.

    ``llava`` is read record by record (:func:`load_records`, the converter's own checks apply);
    every other format goes through its reader in :mod:`mcl.data.readers`, whose records become
    LLaVA dicts with every reference kept (:func:`~mcl.data.readers.to_llava`).
    """
    from mcl.data.readers import READERS, ReadError, split_items, to_llava

    if fmt not in READERS:
        raise UserError(f"unknown --format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    needs = {"question_answers": ("--answers", answers)}
    for name, (flag, value) in needs.items():
        if fmt == name and value is None:
            raise UserError(f"--format {fmt} needs {flag} FILE (the separate answer file)")
    for flag, value in (("--answers", answers), ("--refs", refs)):
        if value is not None and not Path(value).is_file():
            raise UserError(f"{flag} file not found: {value}")
    if fmt == "llava":
        if answers or refs:
            raise UserError("--format llava takes no --answers/--refs; use --format coin")
        return list(load_records(path)), []
    opts: dict = {}
    if fmt == "question_answers":
        items = READERS[fmt](path, answers, kind=kind)
    elif fmt == "coco_captions":  # the references file, with or without a question file
        if prompt:
            opts["prompt"] = prompt
        items = READERS[fmt](refs, path, **opts) if refs else READERS[fmt](path, **opts)
    elif fmt == "coin":
        items = READERS[fmt](path, answers=answers, kind=kind)
    else:  # internvl, lavis
        items = READERS[fmt](path, prompt=prompt) if prompt else READERS[fmt](path)
    try:
        records, problems = split_items(items)
    except ReadError as e:
        raise UserError(str(e)) from None
    return [(i, to_llava(r)) for i, r in enumerate(records)], problems


def qa_pairs(conversations: object) -> list[tuple[str, str]]:
    """(question without ``<image>``, answer) per human/gpt pair; ``ValueError`` if malformed."""
    if not isinstance(conversations, list) or len(conversations) < 2:
        raise ValueError("conversations must be a list of at least one human/gpt pair")
    if len(conversations) % 2:
        raise ValueError("odd number of turns")
    pairs = []
    for i in range(0, len(conversations), 2):
        turns = conversations[i : i + 2]
        if isinstance(turns[1], dict) and "value" in turns[1] and turns[1]["value"] is None:
            turns = [turns[0], {**turns[1], "value": ""}]  # a null answer is an empty one
        if not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns):
            raise ValueError(f"turn {i} has no string 'value'")
        if (turns[0].get("from"), turns[1].get("from")) != ("human", "gpt"):
            raise ValueError(f"turns {i}, {i + 1} are not a human/gpt pair")
        question = turns[0]["value"].replace("<image>", "").strip()
        if not question:
            raise ValueError(f"turn {i} has an empty question")
        pairs.append((question, turns[1]["value"].strip()))
    return pairs


def _lines(question: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in question.split("\n") if line.strip())


class InstructionFinder:
    """The instruction of each question of a split: its longest recurring run of last lines
    (module doc), ``"\n"``-joined; None when its last line recurs in no other question."""

    def __init__(
        self,
        questions: list[str],
        min_share: float = INSTRUCTION_MIN_SHARE,
        keep: float = INSTRUCTION_KEEP,
    ):
        self.count: dict[tuple[str, ...], int] = {}
        for q in questions:
            lines = _lines(q)
            for k in range(1, len(lines) + 1):
                self.count[lines[-k:]] = self.count.get(lines[-k:], 0) + 1
        self.least = max(2, min_share * len(questions))
        self.keep = keep

    def __call__(self, question: str) -> str | None:
        lines = _lines(question)
        if not lines or self.count.get(lines[-1:], 0) < self.least:
            return None
        k = 1
        while k < len(lines) and self.count[lines[-k - 1 :]] >= self.keep * self.count[lines[-k:]]:
            k += 1
        return "\n".join(lines[-k:])


def split_questions(records: list[tuple[int, object]], multi_turn: str) -> list[str]:
    """Every question the split would convert (text only: images are not looked at)."""
    out = []
    for _, rec in records:
        if not isinstance(rec, dict) or not well_formed(rec):
            continue
        try:
            pairs = qa_pairs(rec.get("conversations"))
        except ValueError:
            continue
        out += [q for q, _ in (pairs[:1] if multi_turn == "first" else pairs)]
    return out


MAX_DEPTH = 32  # a LLaVA record nests 4 deep; far deeper ones are malformed, not a crash


def well_formed(rec: object) -> bool:
    """Whether every string of a record is valid Unicode (no lone surrogate such as the JSON
    escape ``"\\ud800"``, which no UTF-8 file, path or shard can hold) and it nests at most
    :data:`MAX_DEPTH` deep. Iterative: a deep record cannot exhaust the stack here."""
    stack = [(rec, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(value, dict):
            stack += [(k, depth + 1) for k in value] + [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            stack += [(v, depth + 1) for v in value]
    return True


def resolve_image(root_real: Path, rel: str) -> tuple[str | None, Path | None]:
    """``(skip reason, None)`` or ``(None, resolved path inside the root)``.

    Nothing outside the root is opened: absolute paths and ``..`` are refused from the string
    alone, symlinks by comparing the resolved path with the resolved root (``realpath`` only
    lstat()s the link chain).
    """
    if not rel or "\x00" in rel:
        return "malformed", None
    if (
        PurePosixPath(rel).is_absolute()
        or PureWindowsPath(rel).is_absolute()
        or PureWindowsPath(rel).drive
    ):
        return "path_escape", None
    if ".." in rel.replace("\\", "/").split("/"):
        return "path_escape", None
    real = Path(os.path.realpath(root_real / rel))
    if real != root_real and not real.is_relative_to(root_real):
        return "path_escape", None
    if not real.is_file():
        return "missing_image", None
    return None, real


def read_image(path: Path) -> tuple[bytes, str, bool]:
    """``(payload bytes, "png"|"jpg", reencoded)``; raises on bytes PIL cannot decode."""
    with open(path, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        ext = _FORMATS.get(img.format or "")
        if ext is not None:
            return data, ext, False
        return encode_image(img.convert("RGB")), "png", True


# ------------------------------------------------------------------------------ conversion
class Skips:
    """Skipped records (QA pairs for ``empty_answer``) by reason, with a few example ids and the
    first one-line explanation of each reason that has one."""

    def __init__(self) -> None:
        self.count = {r: 0 for r in REASONS}
        self.examples: dict[str, list[str]] = {r: [] for r in REASONS}
        self.first: dict[str, str] = {}

    def add(self, reason: str, example: str, line: str | None = None) -> None:
        self.count[reason] += 1
        if len(self.examples[reason]) < MAX_EXAMPLES:
            self.examples[reason].append(example)
        if line and reason not in self.first:
            self.first[reason] = line

    def add_problem(self, problem: Problem) -> None:
        self.add(problem.reason, problem.record, str(problem))

    def as_dict(self) -> dict:
        out = {}
        for r in REASONS:
            if self.count[r]:
                out[r] = {"count": self.count[r], "examples": self.examples[r]}
                if r in self.first:
                    out[r]["first"] = self.first[r]
        return out


def _samples(records, task, split, info, root_real, multi_turn, skips, stats, bar, finder):
    """Shard records (dicts of bytes) for every convertible QA pair, in input order."""
    for index, rec in records:
        bar.update(1)
        if not isinstance(rec, dict) or not well_formed(rec):
            skips.add("malformed", f"#{index}")
            continue
        rid = str(rec.get("id", rec.get("question_id", f"#{index}")))
        if "conversations" not in rec:  # e.g. a test file of question_id/text/answer records
            skips.add("missing_field", rid, f"record {rid} has no 'conversations'")
            continue
        try:
            pairs = qa_pairs(rec.get("conversations"))
        except ValueError:
            skips.add("malformed", rid)
            continue
        rel = rec.get("image")
        if rel is None:  # no image field: text-only unless the conversation shows <image>
            shown = _mentions_image(rec.get("conversations"))
            skips.add("missing_field" if shown else "text_only", rid)
            continue
        if not isinstance(rel, str):
            skips.add("malformed", rid)
            continue
        reason, path = resolve_image(root_real, rel)
        if reason:
            skips.add(reason, rid)
            continue
        if multi_turn == "first":
            pairs = pairs[:1]
        kept = [(turn, q, a) for turn, (q, a) in enumerate(pairs) if a]
        for _ in range(len(pairs) - len(kept)):
            skips.add("empty_answer", rid)
        if not kept:
            continue
        try:
            payload, ext, reencoded = read_image(path)
        except Exception:  # any decoder failure means an unusable image
            skips.add("unreadable_image", rid)
            continue
        stats["reencoded"] += reencoded
        refs = rec.get("answers")
        if isinstance(refs, str):
            refs = [refs]
        refs = [str(r).strip() for r in refs if r is not None] if isinstance(refs, list) else []
        refs = [r for r in refs if r]
        given = rec.get("instruction")
        kept_meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
        kept_meta = {k: kept_meta[k] for k in META_KEYS if kept_meta.get(k) is not None}
        for turn, question, answer in kept:
            meta = {"id": rec.get("id", index), "index": index, "image": rel, **kept_meta}
            if len(pairs) > 1:
                meta["turn"] = turn
            instruction = given.strip() if isinstance(given, str) and given.strip() else None
            instruction = instruction or finder(question)
            if instruction:
                meta["instruction"] = instruction
                stats["instructions"][instruction] = stats["instructions"].get(instruction, 0) + 1
            sample = {
                "task": task,
                "modality": info["modality"],
                "conversations": [
                    {"from": "human", "value": "<image>\n" + question},
                    {"from": "gpt", "value": answer},
                ],
                "answer_type": info["answer_type"],
                "answers": refs if (turn == 0 and refs) else [answer],
                "meta": meta,
            }
            stats["samples"] += 1
            yield {
                "__key__": f"{task}-{split}-{index:08d}-{turn:02d}",
                "json": json.dumps(sample, ensure_ascii=False).encode("utf-8"),
                ext: payload,
            }
        if index % 500 == 0:
            bar.set_postfix(written=stats["samples"], refresh=False)


def _mentions_image(conversations: object) -> bool:
    return isinstance(conversations, list) and any(
        isinstance(t, dict) and isinstance(t.get("value"), str) and "<image>" in t["value"]
        for t in conversations
    )


def problem_counts(problems: list[Problem], usable: int) -> str:
    """``"2 of 5 records: 2 missing_field"`` for a reader's problems."""
    by: dict[str, int] = {}
    for p in problems:
        by[p.reason] = by.get(p.reason, 0) + 1
    detail = ", ".join(f"{n} {r}" for r, n in by.items())
    return f"{len(problems)} of {len(problems) + usable} records: {detail}"


def refuse_problems(problems: list[Problem], usable: int) -> None:
    """A test split must be whole: its first unusable record, with the counts, stops the work."""
    if problems:
        raise UserError(f"{problems[0]} ({problem_counts(problems, usable)})")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(out: Path):
    """An exclusive lock on ``out`` so concurrent conversions update bench.json one at a time."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".bench.lock", "a+") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX: no locking
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def publish_shards(out: Path, task: str, split: str, tmp: Path, names, samples: int) -> dict:
    """Move a split's freshly written shards from ``tmp`` into ``<out>/<task>/``, replacing the
    split's old ones, and return its bench.json entry (shards, sample count, hashes). Call it
    holding the output's lock."""
    task_dir = out / task
    for old in task_dir.glob(f"{split}-*.tar"):
        old.unlink()
    shards = []
    for name in names:
        os.replace(tmp / name, task_dir / name)
        shards.append(f"{task}/{name}")
    return {"shards": shards, "samples": samples, "sha256": {s: _sha256(out / s) for s in shards}}


def update_bench_json(out: Path, cfg: dict, task: str, split: str, split_entry: dict) -> dict:
    """Create or update ``out/bench.json`` with one converted split; returns the new spec."""
    path = out / "bench.json"
    old: dict = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            raise UserError(f"{path} is not valid JSON; remove it and re-convert") from None
        if old.get("source") != "real" or old.get("name") != cfg["name"]:
            raise UserError(
                f"{path} belongs to benchmark '{old.get('name')}' (source "
                f"{old.get('source')}); choose another --out for '{cfg['name']}'"
            )
    old_by_name = {t["name"]: t for t in old.get("tasks", []) + old.get("unseen", [])}

    def entry(name: str) -> dict:
        e = _task_entry(name, cfg["task_info"][name])
        for s in (*SPLITS, "eval_sets"):  # a task's several test sets (mcl.data.prepare_xmodal)
            if s in old_by_name.get(name, {}):
                e[s] = old_by_name[name][s]
        if name == task:
            e[split] = split_entry
        return e

    spec = {
        "name": cfg["name"],
        "source": "real",
        "tasks": [entry(t) for t in cfg.get("tasks") or []],
        "unseen": [entry(t) for t in cfg.get("unseen") or []],
    }
    atomic_write_json(path, spec)
    return spec


def convert(
    bench: str,
    task: str,
    split: str,
    json_path: str | Path,
    images: str | Path,
    out: str | Path,
    limit: int | None = None,
    shard_size: int = 1000,
    multi_turn: str = "split",
    progress: bool = True,
    conf_dir: Path = CONF_DIR,
    fmt: str = "llava",
    answers: str | Path | None = None,
    refs: str | Path | None = None,
    kind: str | None = None,
    prompt: str | None = None,
    strict: bool = False,
) -> dict:
    """Convert one (task, split); returns the summary (also written next to the shards).

    ``strict``: a record the reader cannot use (a missing ``answer``, an unmatched reference)
    stops the conversion with that record's one-line problem instead of being skipped -- what a
    test split needs, since a test set missing questions is not the benchmark any more.
    """
    cfg = load_bench(bench, conf_dir)
    names = list(cfg.get("tasks") or []) + list(cfg.get("unseen") or [])
    if task not in names:
        raise UserError(
            f"unknown --task '{task}' for bench {bench}; choose one of: {', '.join(names)}"
        )
    info = cfg["task_info"][task]
    if info["modality"] not in CONVERTIBLE:
        raise UserError(
            f"task '{task}' has modality {info['modality']}; this converter writes image tasks only"
        )
    if split not in SPLITS:
        raise UserError(f"unknown --split '{split}'; choose one of: {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1 (got {limit})")
    if shard_size < 1:
        raise UserError(f"--shard-size must be >= 1 (got {shard_size})")
    if multi_turn not in ("split", "first"):
        raise UserError(f"unknown --multi-turn '{multi_turn}'; choose one of: split, first")
    json_path, images, out = Path(json_path), Path(images), Path(out)
    if not json_path.is_file():
        raise UserError(f"annotation file not found: {json_path}")
    if not images.is_dir():
        raise UserError(f"image root is not a directory: {images}")
    root_real = Path(os.path.realpath(images))

    records, problems = read_input(
        fmt,
        json_path,
        Path(answers) if answers else None,
        Path(refs) if refs else None,
        kind,
        prompt,
    )
    if strict:
        refuse_problems(problems, len(records))
    if not records and not problems:
        raise UserError(f"{json_path} holds no records")
    if limit is not None:
        records = records[:limit]
    task_dir = out / task
    task_dir.mkdir(parents=True, exist_ok=True)
    tmp = private_tmp(task_dir / split)  # removed below, even on failure
    skips, stats = Skips(), {"samples": 0, "reencoded": 0, "instructions": {}}
    for problem in problems:
        skips.add_problem(problem)
    finder = InstructionFinder(split_questions(records, multi_turn))
    bar = tqdm(
        total=len(records),
        desc=f"{bench}/{task} {split}",
        unit="rec",
        disable=not progress,
        mininterval=1,
    )
    try:
        gen = _samples(records, task, split, info, root_real, multi_turn, skips, stats, bar, finder)
        names_written = write_shards(str(tmp / f"{split}-%06d.tar"), gen, shard_size)
        bar.set_postfix(written=stats["samples"], refresh=False)
        bar.close()
        summary = {
            "bench": bench,
            "task": task,
            "split": split,
            "json": str(json_path),
            "json_sha256": _sha256(json_path),
            "format": fmt,
            "answers": str(answers) if answers else None,
            "refs": str(refs) if refs else None,
            "images": str(images),
            "limit": limit,
            "multi_turn": multi_turn,
            "records": len(records) + len(problems),
            "written": stats["samples"],
            "reencoded": stats["reencoded"],
            # meta.instruction as written, most frequent first (samples per text)
            "instructions": dict(
                sorted(stats["instructions"].items(), key=lambda kv: (-kv[1], kv[0]))
            ),
            "skipped": skips.as_dict(),
            "shards": [],
        }
        if stats["samples"] == 0:
            atomic_write_json(task_dir / f"{split}.convert.json", summary)
            return summary
        with _locked(out):
            split_entry = publish_shards(out, task, split, tmp, names_written, stats["samples"])
            summary["shards"] = split_entry["shards"]
            atomic_write_json(task_dir / f"{split}.convert.json", summary)
            update_bench_json(out, cfg, task, split, split_entry)
    finally:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def skip_hint(skipped: dict) -> str:
    """What to do about the most frequent skip reason, naming its real cause."""
    reasons = [r for r in skipped if r != "empty_answer"]
    top = max(reasons, key=lambda r: skipped[r]["count"])
    first = skipped[top].get("first")
    if top in IMAGE_REASONS:
        return f"{top}: check --images (the folder the records' image paths are relative to)"
    if top == "text_only":
        return "text_only: records without an image; mcl shards hold image samples only"
    if first and "has no 'conversations'" in first:
        return (
            f"{first}: not a LLaVA conversations file (a test file?); pick its reader with "
            f"--format ({', '.join(FORMATS)})"
        )
    return first or f"{top}: see the examples above"


def format_summary(summary: dict, out: Path) -> str:
    s = summary
    lines = [
        f"{s['bench']}/{s['task']} {s['split']}: wrote {s['written']} samples from "
        f"{s['records']} records into {len(s['shards'])} shard(s) under {out / s['task']}"
    ]
    skipped = s["skipped"]
    if skipped:
        lines.append("skipped (empty_answer counts QA pairs, the others records):")
        for reason, v in skipped.items():
            lines.append(f"  {reason:<17}{v['count']:>8}   e.g. {', '.join(v['examples'])}")
    else:
        lines.append("skipped: none")
    if s["reencoded"]:
        lines.append(f"re-encoded to PNG (not PNG/JPEG): {s['reencoded']} images")
    found = s.get("instructions") or {}
    if found:
        top = next(iter(found))
        lines.append(
            f"instructions (meta.instruction): {len(found)} distinct on "
            f"{sum(found.values())} samples, most often {top!r}"
        )
    elif s["written"]:
        lines.append(
            "instructions (meta.instruction): none found (no last line recurs); methods that "
            "route by instruction fall back to each question's last sentence"
        )
    n_skip = sum(v["count"] for k, v in skipped.items() if k != "empty_answer")
    if s["records"] and n_skip / s["records"] > 0.05:
        causes = ", ".join(f"{v['count']} {k}" for k, v in skipped.items() if k != "empty_answer")
        lines.append(
            f"WARNING: {n_skip / s['records']:.0%} of the records were skipped ({causes}); "
            + skip_hint(skipped)
        )
    lines.append(f"summary: {out / s['task'] / (s['split'] + '.convert.json')}")
    if s["written"]:
        lines.append(f"benchmark: {out / 'bench.json'}")
    else:
        lines.append("nothing written; bench.json left unchanged")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ CLI
class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and exit status 2."""

    def error(self, message: str):  # one line, exit 2 (argparse prints usage + message)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(
        prog="python -m mcl.data.convert",
        description="Convert one published annotation file + an image folder into mcl shards.",
    )
    p.add_argument("--bench", required=True, help="benchmark config under conf/bench")
    p.add_argument("--task", required=True, help="a task or unseen task of that benchmark")
    p.add_argument("--split", required=True, help="train | test")
    p.add_argument("--json", required=True, help="LLaVA-style annotation file (.json or .jsonl)")
    p.add_argument("--images", required=True, help="root folder the records' image paths are in")
    p.add_argument("--out", required=True, help="benchmark directory (bench.json + <task>/ shards)")
    p.add_argument("--limit", type=int, default=None, help="convert only the first N records")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    p.add_argument(
        "--multi-turn",
        default="split",
        help="split: one sample per QA pair (default); first: keep the first pair only",
    )
    p.add_argument(
        "--format",
        default="llava",
        choices=FORMATS,
        help="the file's layout, read by mcl.data.readers (docs/data_formats.md); default llava",
    )
    p.add_argument("--answers", default=None, help="separate answer file (question_answers, coin)")
    p.add_argument("--refs", default=None, help="COCO-style caption references (coco_captions)")
    p.add_argument("--kind", default=None, help="answer file kind: textvqa | vqa | gqa | scienceqa")
    p.add_argument("--prompt", default=None, help="prompt a caption/InternVL/LAVIS reader appends")
    p.add_argument(
        "--strict", action="store_true", help="stop at the first record the reader cannot use"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    try:
        summary = convert(
            a.bench,
            a.task,
            a.split,
            a.json,
            a.images,
            a.out,
            limit=a.limit,
            shard_size=a.shard_size,
            multi_turn=a.multi_turn,
            progress=not a.quiet,
            fmt=a.format,
            answers=a.answers,
            refs=a.refs,
            kind=a.kind,
            prompt=a.prompt,
            strict=a.strict,
        )
    except UserError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_summary(summary, Path(a.out)))
    if summary["written"] == 0:
        raise SystemExit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
