"""The LLaVA-JSON converter: round trip, skips by reason, path safety, determinism, bench.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcl.data.bench import Benchmark
from mcl.data.convert import (
    InstructionFinder,
    bench_choices,
    convert,
    load_records,
    main,
    split_questions,
)
from mcl.data.schema import sample_instruction
from mcl.data.shards import read_shards
from mcl.methods.smolora import route_text

FIXTURE = Path(__file__).parent / "fixtures" / "llava" / "train.json"
# CVIT's published annotation files (HF zackie29/SMoLoRA, CVIT_benchmark/Instructions_Single/
# <Task>/train.json), a few records each, with the real instruction strings
CVIT = Path(__file__).parent / "fixtures" / "llava" / "cvit"
FOLDERS = {
    "scienceqa": "ScienceQA",
    "textvqa": "TextVQA",
    "flickr30k": "Flickr30k",
    "imagenet": "ImageNet",
    "gqa": "GQA",
    "places365": "Places365",
}
_VQA = "Answer the question using a single word or phrase."
# SMoLoRA's single-type instruction table (scripts/SMoLoRA/ins_gen.py), one row per task type
TYPE_TABLE = {
    "scienceqa": "Answer with the option's letter from the given choices directly.",
    "textvqa": _VQA,
    "flickr30k": "What is happening in the presented picture?\nPlease describe it in one "
    "complete sentence.",
    "imagenet": "What is the object in the image?\n" + _VQA,
    "gqa": _VQA,
    "places365": "What is the background of the image?\n" + _VQA,
}
SCORERS = {"vqa", "exact", "mc", "iou", "cider"}

_OPENED: list[str] | None = None  # paths opened while a test records them (audit hook below)
_HOOKED = False


def _audit(event, args):
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


@pytest.fixture
def llava(tmp_path):
    """The fixture JSON with its images: root/, an outside dir with a secret, a symlink out."""
    root, outside = tmp_path / "images", tmp_path / "outside"
    (root / "coco").mkdir(parents=True)
    outside.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(root / "coco/a.png")
    Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(
        root / "coco/b.jpg", quality=90
    )
    Image.new("P", (8, 8), 3).save(root / "coco/c.gif")
    (root / "coco/corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    Image.new("RGB", (4, 4), "white").save(outside / "secret.png")
    (root / "link.png").symlink_to(outside / "secret.png")
    text = FIXTURE.read_text().replace("@OUTSIDE@", str(outside))
    ann = tmp_path / "train.json"
    ann.write_text(text)
    return {"json": ann, "root": root, "outside": outside, "tmp": tmp_path}


def _convert(llava, out, task="textvqa", split="train", **kw):
    kw.setdefault("progress", False)
    return convert("cvit", task, split, llava["json"], llava["root"], out, **kw)


def _tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers()}


def test_round_trip(llava, tmp_path):
    out = tmp_path / "bench"
    summary = _convert(llava, out)
    spec = json.loads((out / "bench.json").read_text())
    entry = next(t for t in spec["tasks"] if t["name"] == "textvqa")
    samples = read_shards([out / s for s in entry["train"]["shards"]])
    assert len(samples) == summary["written"] == entry["train"]["samples"] == 5
    by_id = {(s["meta"]["id"], s["meta"].get("turn", 0)): s for s in samples}

    s = by_id[("png-1", 0)]
    assert (s["task"], s["question"], s["answer"]) == (
        "textvqa",
        "What colour is the square?",
        "red",
    )
    assert s["answers"] == ["red"] and s["answer_type"] == "word"
    assert s["meta"] == {"id": "png-1", "index": 0, "image": "coco/a.png"}
    src = np.asarray(Image.open(llava["root"] / "coco/a.png").convert("RGB"))
    assert np.array_equal(np.asarray(s["image"]), src)

    s = by_id[("jpg-answers", 0)]
    assert s["answer"] == "two" and len(s["answers"]) == 10 and "three" in s["answers"]
    src = np.asarray(Image.open(llava["root"] / "coco/b.jpg").convert("RGB"))
    assert np.array_equal(np.asarray(s["image"]), src)

    # multi-turn: one sample per QA pair, each with the image token and its own answer
    assert by_id[("multi-turn", 0)]["answer"] == "square"
    assert (by_id[("multi-turn", 1)]["question"], by_id[("multi-turn", 1)]["answer"]) == (
        "Where is it?",
        "top left",
    )
    # "<image>" at the end of the prompt is moved to the front; GIF becomes PNG
    assert by_id[("image-last", 0)]["question"] == "Describe the image briefly."
    assert summary["reencoded"] == 1

    # the payload is the source file's bytes, unchanged, under its real type
    members = _tar_members(out / entry["train"]["shards"][0])
    jpg = [v for k, v in members.items() if k.endswith(".jpg")]
    assert jpg == [(llava["root"] / "coco/b.jpg").read_bytes()]
    pngs = [v for k, v in members.items() if k.endswith(".png")]
    assert (llava["root"] / "coco/a.png").read_bytes() in pngs
    for k, v in members.items():
        if k.endswith(".json"):
            conv = json.loads(v)["conversations"]
            assert len(conv) == 2 and conv[0]["value"].startswith("<image>\n")


def test_multi_turn_first(llava, tmp_path):
    summary = _convert(llava, tmp_path / "b", multi_turn="first")
    assert summary["written"] == 4


def test_skip_counts_in_summary_file(llava, tmp_path):
    out = tmp_path / "bench"
    _convert(llava, out)
    summary = json.loads((out / "textvqa" / "train.convert.json").read_text())
    skipped = {k: v["count"] for k, v in summary["skipped"].items()}
    assert skipped == {
        "malformed": 1,
        "path_escape": 3,
        "missing_image": 1,
        "text_only": 1,
        "unreadable_image": 1,
        "empty_answer": 1,
    }
    assert summary["skipped"]["path_escape"]["examples"] == ["dotdot", "absolute", "symlink-out"]
    # a record without an image field is text-only, not a missing image
    assert summary["skipped"]["missing_image"]["examples"] == ["missing-file"]
    assert summary["skipped"]["text_only"]["examples"] == ["text-only"]
    assert summary["records"] == 12 and summary["written"] == 5


def test_path_escape_never_opened(llava, tmp_path):
    global _OPENED, _HOOKED
    if not _HOOKED:  # audit hooks cannot be removed: install once, only when this test runs
        sys.addaudithook(_audit)
        _HOOKED = True
    _OPENED = []
    try:
        _convert(llava, tmp_path / "bench")
        opened = list(_OPENED)
    finally:
        _OPENED = None
    outside = os.path.realpath(llava["outside"])
    assert any(p.endswith("a.png") for p in opened)  # the hook does see image reads
    assert not [p for p in opened if os.path.realpath(p).startswith(outside)]


def test_deterministic(llava, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _convert(llava, a, shard_size=2)
    _convert(llava, b, shard_size=2)
    shards = sorted(p.relative_to(a) for p in a.rglob("*.tar"))
    assert len(shards) == 3
    assert shards == sorted(p.relative_to(b) for p in b.rglob("*.tar"))
    for rel in shards:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / "bench.json").read_bytes() == (b / "bench.json").read_bytes()
    # JSONL input gives the same shards
    jsonl = tmp_path / "train.jsonl"
    records = json.loads(llava["json"].read_text())
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    c = tmp_path / "c"
    convert("cvit", "textvqa", "train", jsonl, llava["root"], c, shard_size=2, progress=False)
    for rel in shards:
        assert (a / rel).read_bytes() == (c / rel).read_bytes()


def test_reconvert_replaces_old_shards(llava, tmp_path):
    out = tmp_path / "bench"
    _convert(llava, out, shard_size=2)
    assert len(list((out / "textvqa").glob("train-*.tar"))) == 3
    _convert(llava, out, shard_size=2, limit=2)
    assert sorted(p.name for p in (out / "textvqa").glob("*.tar")) == ["train-000000.tar"]
    entry = json.loads((out / "bench.json").read_text())["tasks"][1]
    assert entry["train"]["samples"] == 2 and entry["train"]["shards"] == [
        "textvqa/train-000000.tar"
    ]
    assert not [p for p in (out / "textvqa").iterdir() if p.name.startswith(".")]


def test_bench_json_created_then_updated(llava, tmp_path):
    out = tmp_path / "bench"
    _convert(llava, out, "textvqa", "train")
    spec = json.loads((out / "bench.json").read_text())
    assert spec["name"] == "cvit" and spec["source"] == "real"
    assert [t["name"] for t in spec["tasks"]] == [
        "scienceqa",
        "textvqa",
        "flickr30k",
        "imagenet",
        "gqa",
        "vqav2",
    ]
    assert [t["name"] for t in spec["unseen"]] == ["vizwiz", "textcaps", "ocrvqa"]
    by_name = {t["name"]: t for t in spec["tasks"] + spec["unseen"]}
    assert "train" in by_name["textvqa"] and "test" not in by_name["textvqa"]
    assert not {"train", "test"} & set(by_name["gqa"])  # not converted yet: no split keys
    assert by_name["scienceqa"]["scorer"] == "mc" and by_name["textvqa"]["scorer"] == "vqa"
    shard = by_name["textvqa"]["train"]["shards"][0]
    assert len(by_name["textvqa"]["train"]["sha256"][shard]) == 64

    _convert(llava, out, "textvqa", "test", limit=3)
    _convert(llava, out, "gqa", "train", limit=2)
    spec = json.loads((out / "bench.json").read_text())
    by_name = {t["name"]: t for t in spec["tasks"] + spec["unseen"]}
    assert by_name["textvqa"]["train"]["samples"] == 5  # kept from the first conversion
    assert by_name["textvqa"]["test"]["samples"] == 4  # 3 records, one of them two-turn
    assert by_name["gqa"]["train"]["samples"] == 2 and "test" not in by_name["gqa"]

    bench = Benchmark(out, order=["textvqa", "gqa"], unseen=[])
    assert bench.task_names == ["textvqa", "gqa"]
    paths = bench.shard_paths(bench.task("textvqa"), "test")
    assert [p.name for p in paths] == ["test-000000.tar"]
    assert len(read_shards(paths)) == 4
    assert len(read_shards(bench.shard_paths(bench.task("gqa"), "train"))) == 2


def test_other_benchmark_in_out_dir_refused(llava, tmp_path, capsys):
    out = tmp_path / "bench"
    _convert(llava, out)
    with pytest.raises(SystemExit) as e:
        main(
            ["--bench", "coin", "--task", "textvqa", "--split", "train", "--json"]
            + [str(llava["json"]), "--images", str(llava["root"]), "--out", str(out), "--quiet"]
        )
    assert e.value.code == 2
    assert "belongs to benchmark 'cvit'" in capsys.readouterr().err


def _args(llava, out, **over):
    a = {
        "--bench": "cvit",
        "--task": "textvqa",
        "--split": "train",
        "--json": str(llava["json"]),
        "--images": str(llava["root"]),
        "--out": str(out),
    }
    a.update(over)
    return [x for kv in a.items() for x in kv] + ["--quiet"]


@pytest.mark.parametrize(
    "over, message",
    [
        ({"--bench": "nope"}, "unknown --bench 'nope'; choose one of: "),
        ({"--task": "nope"}, "unknown --task 'nope' for bench cvit; choose one of: scienceqa"),
        ({"--split": "val"}, "unknown --split 'val'; choose one of: train, test"),
        ({"--json": "/no/such/file.json"}, "annotation file not found: /no/such/file.json"),
        ({"--images": "/no/such/dir"}, "image root is not a directory"),
        ({"--bench": "mcl", "--task": "video"}, "writes image tasks only"),
    ],
)
def test_cli_user_errors(llava, tmp_path, capsys, over, message):
    with pytest.raises(SystemExit) as e:
        main(_args(llava, tmp_path / "out", **over))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "bench.json").exists()


def test_cli_bad_bench_lists_all_choices(llava, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(_args(llava, tmp_path / "out", **{"--bench": "nope"}))
    err = capsys.readouterr().err
    for name in ("cvit", "dmole", "clmm", "mcl", "coin", "ucit", "mllm_dcl"):
        assert name in err


def test_cli_success_and_nothing_written(llava, tmp_path, capsys):
    assert main(_args(llava, tmp_path / "out")) == 0
    text = capsys.readouterr().out
    assert "wrote 5 samples from 12 records" in text and "path_escape" in text
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "conversations": []}\nnot json\n')
    with pytest.raises(SystemExit) as e:
        main(_args(llava, tmp_path / "out2", **{"--json": str(bad)}))
    assert e.value.code == 1
    assert not (tmp_path / "out2" / "bench.json").exists()
    assert (tmp_path / "out2" / "textvqa" / "train.convert.json").exists()


@pytest.mark.slow
def test_cli_subprocess_no_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "mcl.data.convert", "--bench", "cvit", "--task", "nope"]
        + ["--split", "train", "--json", "x", "--images", "y", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "choose one of: scienceqa, textvqa, flickr30k" in r.stderr


def test_bench_configs_describe_every_task():
    """Every benchmark with real data has task_info for each task and unseen task."""
    from omegaconf import OmegaConf

    from mcl.config import CONF_DIR

    assert set(bench_choices()) >= {"cvit", "dmole", "clmm", "mcl", "coin", "ucit", "mllm_dcl"}
    for name in bench_choices():
        cfg = OmegaConf.load(CONF_DIR / "bench" / f"{name}.yaml")
        assert set(cfg.task_info) == set(cfg.tasks) | set(cfg.unseen), name
        for task, info in cfg.task_info.items():
            assert info.scorer in SCORERS, (name, task)
            assert info.modality in {"image", "video", "audio", "depth", "points"}, (name, task)
            assert isinstance(info.answer_type, str) and int(info.max_new_tokens) > 0


@pytest.mark.parametrize("bench", ["coin", "ucit", "mllm_dcl", "cvit", "dmole", "clmm", "mcl"])
def test_bench_configs_compose(tmp_path, bench):
    from tests.conftest import compose_cfg

    cfg = compose_cfg(tmp_path, [f"bench={bench}"])
    assert cfg.bench.name == bench and "task_info" in cfg.bench
    if bench in ("coin", "ucit", "mllm_dcl"):
        assert cfg.bench.synthetic.twin is None
        assert {"seed", "train", "test", "shard_size", "instructions"} <= set(cfg.bench.synthetic)


def _cvit_images(ann: Path, root: Path) -> None:
    for rec in json.loads(ann.read_text()):
        path = root / rec["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), "white").save(path)


def test_cvit_data_records_the_instructions_of_smoloras_type_table(tmp_path):
    """Issue 26.5: converted data had no meta.instruction, so SMoLoRA's oracle type table fell
    back to each question's last sentence and ImageNet, TextVQA and Places365 were one type.
    The converter records each task's instruction: routed whole (oracle_type), it is the
    official table's row for the task."""
    out, root = tmp_path / "bench", tmp_path / "images"
    by_task = {}
    for task in ("scienceqa", "textvqa", "flickr30k", "imagenet", "gqa"):
        ann = CVIT / FOLDERS[task] / "train.json"
        _cvit_images(ann, root)
        summary = convert("cvit", task, "train", ann, root, out, progress=False)
        assert summary["written"] > 0
        assert summary["instructions"] == {TYPE_TABLE[task]: summary["written"]}, task
        spec = json.loads((out / "bench.json").read_text())
        entry = next(t for t in spec["tasks"] if t["name"] == task)
        by_task[task] = read_shards([out / s for s in entry["train"]["shards"]])
    for task, samples in by_task.items():
        assert {sample_instruction(s) for s in samples} == {TYPE_TABLE[task]}, task
        # what SMoLoRA's oracle_type embeds for the task's type (route_text, whole)
        routed = {route_text(s["question"], sample_instruction(s), whole=True) for s in samples}
        assert routed == {TYPE_TABLE[task]}, task
    # without the record, every VQA-format task's last sentence was the same type
    last = {route_text(s["question"], None, whole=True) for s in by_task["imagenet"]}
    assert last == {_VQA}
    # Places365, CVIT's downstream task (not in conf/bench/cvit.yaml), under the same rule
    questions = split_questions(list(load_records(CVIT / "Places365" / "train.json")), "split")
    finder = InstructionFinder(questions)
    assert {finder(q) for q in questions} == {TYPE_TABLE["places365"]}
    rows = {TYPE_TABLE[t] for t in ("imagenet", "textvqa", "places365")}
    assert len(rows) == 3  # three distinct types, as in the table
    # a record's own "instruction" field is taken as it is
    recs = json.loads((CVIT / "ImageNet" / "train.json").read_text())
    recs[0]["instruction"] = "Name the object."
    ann = tmp_path / "own.json"
    ann.write_text(json.dumps(recs))
    summary = convert("cvit", "imagenet", "train", ann, root, out, progress=False)
    assert summary["instructions"] == {TYPE_TABLE["imagenet"]: 3, "Name the object.": 1}


def test_instructions_are_the_recurring_last_lines_of_the_questions():
    # CVIT's multi-type ImageNet: five paraphrases (ins_gen.py), each recorded whole
    para = [
        "What is the main object present in the image?\nProvide your answer using a word or "
        "brief phrase.",
        "Which specific object does the image depict?\nGive your answer in one word or a "
        "short phrase.",
        "What category does the object in the image belong to?\nAnswer using a single word "
        "or phrase.",
        "What is the primary object visible in the image?\nAnswer using a brief phrase or "
        "single word.",
        "What is the object in the image?\nAnswer briefly with a word or a short phrase.",
    ]
    questions = [p for p in para for _ in range(3)]
    finder = InstructionFinder(questions)
    assert [finder(q) for q in questions] == questions
    # a per-sample line before the instruction stays out, even a frequent one (ScienceQA's
    # "B. no"), unless it comes with it in at least half of the questions
    qs = [f"q{i}?\nA. yes\nB. no\nPick one." for i in range(3)]
    qs += [f"q{i}?\nA. {i}\nB. {i + 1}\nPick one." for i in range(5)]
    assert {InstructionFinder(qs)(q) for q in qs} == {"Pick one."}
    assert InstructionFinder(qs[:3])(qs[0]) == "A. yes\nB. no\nPick one."
    # nothing recurs (free-form questions), or too rarely: no instruction
    assert InstructionFinder(["what is it?", "where is it?"])("what is it?") is None
    assert InstructionFinder(["what is it?"] * 2 + ["x"] * 48)("what is it?") is None  # < 5%


# ------------------------------------------------------------ issue 27, item 9: one-line errors
GOOD_PAIR = [{"from": "human", "value": "<image>\nwhat?"}, {"from": "gpt", "value": "red"}]


def _records_file(tmp_path, text: str, name="ann.json") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_lone_surrogates_are_malformed_records_not_a_traceback(llava, tmp_path, capsys):
    good = {"id": "ok", "image": "coco/a.png", "conversations": GOOD_PAIR}
    # the JSON escape \ud800 parses to a string no UTF-8 file, path or shard can hold
    bad = [
        '{"id": "q", "image": "coco/a.png", "conversations": [{"from": "human", "value": '
        '"<image>\\nwh\\ud800at?"}, {"from": "gpt", "value": "red"}]}',
        '{"id": "a", "image": "coco/a.png", "conversations": [{"from": "human", "value": "q?"},'
        ' {"from": "gpt", "value": "r\\udc00ed"}]}',
        '{"id": "i", "image": "coco/a\\ud800.png", "conversations": ' + json.dumps(GOOD_PAIR) + "}",
        '{"id": "\\ud800", "image": "coco/a.png", "conversations": ' + json.dumps(GOOD_PAIR) + "}",
    ]
    ann = _records_file(tmp_path, "[" + ", ".join([json.dumps(good), *bad]) + "]")
    assert main(_args(llava, tmp_path / "out", **{"--json": str(ann)})) == 0
    out = capsys.readouterr().out
    assert "wrote 1 samples from 5 records" in out and "malformed" in out
    summary = json.loads((tmp_path / "out" / "textvqa" / "train.convert.json").read_text())
    assert summary["skipped"]["malformed"]["count"] == 4


def test_deeply_nested_json_is_one_line_or_a_skipped_line(llava, tmp_path, capsys):
    deep = "[" * 50_000 + "]" * 50_000
    good = json.dumps({"id": "ok", "image": "coco/a.png", "conversations": GOOD_PAIR})
    # a JSON list file cannot be parsed at all: one line, exit 2, nothing written
    ann = _records_file(tmp_path, f'[{good}, {{"x": {deep}}}]')
    with pytest.raises(SystemExit) as e:
        main(_args(llava, tmp_path / "out", **{"--json": str(ann)}))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "nested too deeply" in err and err.count("\n") == 1
    # JSONL: that line alone is malformed; a record nested past MAX_DEPTH is too
    mid = "[" * 200 + "]" * 200
    lines = [good, '{"x": ' + deep + "}", '{"id": "m", "image": "coco/a.png", "conversations": '
             + json.dumps(GOOD_PAIR) + ', "extra": ' + mid + "}"]  # fmt: skip
    ann = _records_file(tmp_path, "\n".join(lines) + "\n", "ann.jsonl")
    assert main(_args(llava, tmp_path / "out", **{"--json": str(ann)})) == 0
    summary = json.loads((tmp_path / "out" / "textvqa" / "train.convert.json").read_text())
    assert summary["written"] == 1 and summary["skipped"]["malformed"]["count"] == 2


def test_null_answers_are_empty_answers_and_null_references_are_dropped(llava, tmp_path):
    recs = [
        {"id": "n", "image": "coco/a.png",
         "conversations": [GOOD_PAIR[0], {"from": "gpt", "value": None}]},
        {"id": "r", "image": "coco/a.png", "conversations": GOOD_PAIR, "answers": [None, "red"]},
        {"id": "t", "image": "coco/a.png",
         "conversations": [*GOOD_PAIR, {"from": "human", "value": "and?"},
                           {"from": "gpt", "value": None}]},
    ]  # fmt: skip
    ann = _records_file(tmp_path, json.dumps(recs))
    summary = convert("cvit", "textvqa", "train", ann, llava["root"], tmp_path / "out",
                      progress=False)  # fmt: skip
    assert summary["skipped"] == {"empty_answer": {"count": 2, "examples": ["n", "t"]}}
    samples = read_shards([tmp_path / "out" / s for s in summary["shards"]])
    assert [s["answers"] for s in samples] == [["red"], ["red"]]  # never the text "None"
