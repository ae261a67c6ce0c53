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
from mcl.data.convert import bench_choices, convert, main
from mcl.data.shards import read_shards

FIXTURE = Path(__file__).parent / "fixtures" / "llava" / "train.json"
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
        "missing_image": 2,
        "unreadable_image": 1,
        "empty_answer": 1,
    }
    assert summary["skipped"]["path_escape"]["examples"] == ["dotdot", "absolute", "symlink-out"]
    assert summary["skipped"]["missing_image"]["examples"] == ["missing-file", "text-only"]
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
