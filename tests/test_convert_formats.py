"""``python -m mcl.data.convert --format``: each published layout converts through its reader with
every reference kept, and each skip is named by its real cause (a missing field, a missing image,
a text-only record), never all as "check --images"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from mcl.data.convert import convert, format_summary
from mcl.data.shards import read_shards

ROOT = Path(__file__).resolve().parents[1]
TEN = ["nikon"] * 4 + ["canon"] * 3 + ["sony"] + ["leica", "pentax"]
CAPTIONS = [f"a dog runs on the grass {i}" for i in range(5)]


def _write(path: Path, data, jsonl: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(json.dumps(r) for r in data) if jsonl else json.dumps(data)
    path.write_text(text)
    return path


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "white").save(path)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mcl.data.convert", "--quiet", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def _samples(out: Path, task: str, split: str) -> list[dict]:
    return list(read_shards(sorted((out / task).glob(f"{split}-*.tar"))))


def test_question_file_with_separate_answer_file_keeps_ten_answers(tmp_path):
    questions = _write(
        tmp_path / "llava_textvqa_val_v051_ocr.jsonl",
        [{"question_id": 34602, "image": "a.jpg", "text": "what brand?\nAnswer briefly."}],
        jsonl=True,
    )
    answers = _write(
        tmp_path / "TextVQA_0.5.1_val.json",
        {"data": [{"question_id": 34602, "image_id": "a", "question": "q", "answers": TEN}]},
    )
    _image(tmp_path / "images" / "a.jpg")
    out = tmp_path / "out"
    p = _cli("--bench", "cvit", "--task", "textvqa", "--split", "test")
    assert p.returncode == 2 and "--bench" not in p.stderr  # the required --json etc. named
    args = ["--bench", "cvit", "--task", "textvqa", "--split", "test", "--json", questions]
    args += ["--images", tmp_path / "images", "--out", out, "--format", "question_answers"]
    p = _cli(*args)
    assert p.returncode == 2 and "needs --answers FILE" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    p = _cli(*args, "--answers", answers)
    assert p.returncode == 0, p.stderr
    (sample,) = _samples(out, "textvqa", "test")
    assert sample["answers"] == TEN and sample["question"] == "what brand?\nAnswer briefly."


def test_coco_style_references_keep_every_caption(tmp_path):
    refs = _write(
        tmp_path / "flickr30k_test_karpathy.json",
        {
            "images": [{"id": 1, "file_name": "Images/1.jpg"}],
            "annotations": [{"image_id": 1, "caption": c} for c in CAPTIONS],
        },
    )
    _image(tmp_path / "flickr" / "Images" / "1.jpg")
    out = tmp_path / "out"
    summary = convert(
        "cvit",
        "flickr30k",
        "test",
        refs,
        tmp_path / "flickr",
        out,
        progress=False,
        fmt="coco_captions",
    )
    assert summary["written"] == 1 and summary["format"] == "coco_captions"
    (sample,) = _samples(out, "flickr30k", "test")
    assert sample["answers"] == CAPTIONS


def _coin_test_file(tmp_path: Path) -> Path:
    _image(tmp_path / "images" / "a.png")
    return _write(
        tmp_path / "GQA" / "test.json",
        [{"question_id": f"q{i}", "image": "a.png", "text": "what?", "answer": "x"} for i in (1, 2)]
        + [{"question_id": "q3", "image": "a.png", "text": "what?"}],
    )


def test_a_test_file_read_as_llava_names_the_missing_conversations(tmp_path):
    test = _coin_test_file(tmp_path)
    out = tmp_path / "out"
    args = ["--bench", "coin", "--task", "gqa", "--split", "test", "--json", test]
    p = _cli(*args, "--images", tmp_path / "images", "--out", out)
    assert p.returncode == 1
    warning = next(ln for ln in p.stdout.splitlines() if ln.startswith("WARNING"))
    assert "3 missing_field" in warning and "has no 'conversations'" in warning
    assert "--format" in warning and "check --images" not in warning
    # read with its own reader, the record without its answer is counted and named
    p = _cli(*args, "--images", tmp_path / "images", "--out", out, "--format", "coin")
    assert p.returncode == 0, p.stderr
    summary = json.loads((out / "gqa" / "test.convert.json").read_text())
    assert summary["written"] == 2 and summary["records"] == 3
    assert summary["skipped"]["missing_field"]["first"] == f"{test}: record q3 has no 'answer'"
    # --strict stops on it in one line naming the record, the field and the file
    p = _cli(*args, "--images", tmp_path / "images", "--out", out, "--format", "coin", "--strict")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert f"{test}: record q3 has no 'answer' (1 of 3 records: 1 missing_field)" in p.stderr


def test_missing_images_and_text_only_records_are_told_apart(tmp_path):
    _image(tmp_path / "images" / "a.png")
    conv = [{"from": "human", "value": "<image>\nq?"}, {"from": "gpt", "value": "a"}]
    text_conv = [{"from": "human", "value": "two plus two?"}, {"from": "gpt", "value": "four"}]
    src = _write(
        tmp_path / "mix.json",
        [{"id": "ok", "image": "a.png", "conversations": conv}]
        + [{"id": f"chat{i}", "conversations": text_conv} for i in range(3)]
        + [{"id": "gone", "image": "nope.png", "conversations": conv}]
        + [{"id": "no-image-field", "conversations": conv}],
    )
    out = tmp_path / "out"
    summary = convert("cvit", "gqa", "train", src, tmp_path / "images", out, progress=False)
    skipped = {k: v["count"] for k, v in summary["skipped"].items()}
    assert skipped == {"text_only": 3, "missing_image": 1, "missing_field": 1}
    text = format_summary(summary, out)
    assert "skipped (1 missing_field, 3 text_only, 1 missing_image)" in text
    assert "text_only: records without an image" in text and "check --images" not in text


def test_a_file_no_reader_can_use_is_one_line(tmp_path):
    bad = _write(tmp_path / "test.json", {"questions": []})
    _image(tmp_path / "images" / "a.png")
    args = ["--bench", "coin", "--task", "gqa", "--split", "test", "--json", bad, "--format"]
    p = _cli(*args, "coin", "--images", tmp_path / "images", "--out", tmp_path / "o")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "holds one JSON object" in p.stderr and "Traceback" not in p.stderr


def test_every_reader_is_a_format():
    from mcl.data.convert import FORMATS
    from mcl.data.readers import READERS

    assert tuple(READERS) == FORMATS
