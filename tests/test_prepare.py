"""``python -m mcl.data.prepare``: a benchmark unpacked as its repository publishes it becomes
train and test shards plus ``bench.json`` in one command, and a real run goes end to end on it.

The fixtures are written in the published layouts (docs/data_formats.md): CoIN's
``Instructions_Original/<Task>/{train,test}.json`` with LLaVA conversations for training and
``question_id``/``image``/``text``/``answer`` test records (grounding with ``answer_bbox`` and
``size``), images under ``cl_dataset/``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcl.data.bench import Benchmark
from mcl.data.convert import load_bench
from mcl.data.prepare import main, plan, prepare
from mcl.data.shards import read_shards

COIN_DIRS = {
    "scienceqa": "ScienceQA",
    "textvqa": "TextVQA",
    "imagenet": "ImageNet",
    "gqa": "GQA",
    "vizwiz": "VizWiz",
    "grounding": "Grounding",
    "vqav2": "VQAv2",
    "ocrvqa": "OCRVQA",
}
_VQA = "Answer the question using a single word or phrase."
_MC = "Answer with the option's letter from the given choices directly."


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)


def _split(files: dict, entry: dict, split: str) -> dict:
    spec = entry[split] if isinstance(entry[split], dict) else {"file": entry[split]}
    keys = ("format", "images", "answers", "kind")
    inherited = {k: files[k] for k in keys if k in files} | {
        k: entry[k] for k in keys if k in entry
    }
    return inherited | spec


def write_release(bench: str, root: Path, n_train: int = 6, n_test: int = 4) -> Path:
    """A tiny release of ``bench`` in its published layout, where ``files:`` in its config says
    the files are: per task a train file of conversations, a test file of ``question_id`` /
    ``image`` / question / ``answer`` records (``answer_bbox`` + ``size`` for a box task, the
    option letter for a multiple-choice one; ``question`` for InternVL's evaluation lines,
    ``text`` for CoIN's; D-MoLE's grounding lines with ``sent``, a pixel ``bbox``, ``width``,
    ``height`` and ``knowledge``, its multiple-choice lines with ``choices`` and the index of the
    right one as ``answer``) or COCO-style caption references, and the images they name."""
    cfg = load_bench(bench)
    files = cfg["files"]
    for t, (task, entry) in enumerate(files["tasks"].items()):
        scorer = cfg["task_info"][task]["scorer"]
        for split, first in (("train", 0), ("test", n_train)):
            if split not in entry:
                continue
            spec = _split(files, entry, split)
            images, fmt = root / spec.get("images", "."), spec.get("format", "llava")
            records, answers = [], []
            for i in range(first, first + (n_train if split == "train" else n_test)):
                rel = f"{task}/images/{i}.png"
                _image(images / rel, 100 * t + i)
                answer = f"thing{i}"
                if scorer == "iou":
                    question = "Please provide the bounding box of: the left cat"
                    answer = f"[0.{i}0, 0.10, 0.5{i}, 0.90]"
                    if fmt == "internvl":  # InternVL trains boxes on a 0-1000 scale
                        answer = f"[[{10 * i}, 100, {500 + 10 * i}, 900]]"
                elif scorer == "mc":  # lettered options, the letter answers
                    question = f"Which is shown in picture {i}?\nA. cat\nB. dog\n{_MC}"
                    answer = "AB"[i % 2]
                else:
                    question = f"What is shown in picture {i}?\n{_VQA}"
                if fmt == "lavis":  # LAVIS VQA annotations, the same shape for both splits
                    rec = {"question_id": f"{task}-q{i}", "question": question, "image": rel}
                    records.append(rec | {"answer": [answer] * 3 + ["other"]})
                    continue
                if split == "train" and fmt != "coco_captions":
                    human = {"from": "human", "value": "<image>\n" + question}
                    conv = [human, {"from": "gpt", "value": answer}]
                    records.append({"id": f"{task}-{i}", "image": rel, "conversations": conv})
                    continue
                if fmt == "internvl" and scorer == "iou":  # D-MoLE's evaluate_grounding.py
                    box = [64 + 8 * i, 48, 320 + 8 * i, 432]
                    rec = {"image": rel, "sent": "the left cat", "bbox": box}
                    records.append(rec | {"width": 640, "height": 480, "knowledge": "cats sit"})
                    continue
                if fmt == "internvl" and scorer == "mc":  # D-MoLE's evaluate_multi_choice.py
                    rec = {"image": rel, "question": f"Which is shown in picture {i}?"}
                    records.append(rec | {"choices": ["cat", "dog"], "answer": i % 2})
                    continue
                rec = {"question_id": f"{task}-q{i}", "image": rel}
                rec["question" if fmt == "internvl" else "text"] = question
                if scorer == "iou" and fmt == "coin":
                    rec |= {"answer_bbox": answer, "size": [640, 480]}
                elif "answers" in spec:  # TextVQA's official file: ten answers a question
                    answers.append({"question_id": rec["question_id"], "question": question})
                    answers[-1]["answers"] = [answer] * 4 + ["other"] * 6
                else:
                    rec["answer"] = answer
                records.append(rec)
            if "answers" in spec:
                (root / spec["answers"]).parent.mkdir(parents=True, exist_ok=True)
                (root / spec["answers"]).write_text(json.dumps({"data": answers}))
            path = root / spec["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "coco_captions":  # images + annotations, five captions an image
                data = {
                    "images": [{"id": k, "file_name": r["image"]} for k, r in enumerate(records)],
                    "annotations": [
                        {"image_id": k, "caption": f"a picture of thing {k} number {c}"}
                        for k in range(len(records))
                        for c in range(5)
                    ],
                }
                path.write_text(json.dumps(data))
            elif path.suffix == ".jsonl":
                path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
            else:
                path.write_text(json.dumps(records, indent=1))
    return root


def write_coin(root: Path, n_train: int = 6, n_test: int = 4) -> Path:
    return write_release("coin", root, n_train, n_test)


def _env(tmp: Path) -> dict:
    return {
        **os.environ,
        "MCL_LOGS": str(tmp / "logs"),
        "MCL_CACHE": str(tmp / "cache"),
        "OMP_NUM_THREADS": "1",
    }


def _prepare_cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mcl.data.prepare", "--quiet", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp), timeout=120)


def test_coin_prepare_writes_every_split(tmp_path):
    root, out = write_coin(tmp_path / "CoIN"), tmp_path / "coin"
    summaries = prepare("coin", root, out, progress=False)
    assert [(s["task"], s["split"]) for s in summaries] == [
        (t, s) for t in COIN_DIRS for s in ("train", "test")
    ]
    spec = json.loads((out / "bench.json").read_text())
    assert [t["name"] for t in spec["tasks"]] == list(COIN_DIRS)
    assert all(t["train"]["samples"] == 6 and t["test"]["samples"] == 4 for t in spec["tasks"])
    bench = Benchmark(out, list(COIN_DIRS), [], "real")
    test = list(read_shards(bench.shard_paths(bench.task("grounding"), "test")))
    # the grounding box is the reference, and the box and image size are kept in meta
    assert test[0]["answer"] == "[0.60, 0.10, 0.56, 0.90]"
    assert test[0]["meta"]["bbox"] == [0.6, 0.1, 0.56, 0.9]
    assert test[0]["meta"]["image_size"] == [640, 480]
    vqa = list(read_shards(bench.shard_paths(bench.task("textvqa"), "test")))
    assert [s["answer"] for s in vqa] == ["thing6", "thing7", "thing8", "thing9"]


def test_tasks_subset_and_plan_checks_files_first(tmp_path):
    root = write_coin(tmp_path / "CoIN")
    _, jobs = plan("coin", root, ["gqa", "ocrvqa"])
    assert [(j["task"], j["split"]) for j in jobs] == [
        ("gqa", "train"),
        ("gqa", "test"),
        ("ocrvqa", "train"),
        ("ocrvqa", "test"),
    ]
    (root / "Instructions_Original" / "OCRVQA" / "test.json").unlink()
    p = _prepare_cli(tmp_path, "--bench", "coin", "--root", str(root), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "OCRVQA/test.json not found" in p.stderr
    assert not (tmp_path / "o" / "bench.json").exists()  # nothing half-written
    p = _prepare_cli(
        tmp_path, "--bench", "coin", "--root", str(root), "--out", "x", "--tasks", "no"
    )
    assert p.returncode == 2 and "--tasks: no not in bench coin" in p.stderr


def test_a_test_file_missing_answer_stops_in_one_line(tmp_path):
    root = write_coin(tmp_path / "CoIN")
    test = root / "Instructions_Original" / "GQA" / "test.json"
    records = json.loads(test.read_text())
    del records[1]["answer"]
    test.write_text(json.dumps(records))
    out = tmp_path / "o"
    p = _prepare_cli(tmp_path, "--bench", "coin", "--root", str(root), "--out", str(out))
    assert p.returncode == 2, p.stderr
    # before any work: every test file is read before the first split converts, so no task
    # has shards (a speed bound would belong in a benchmark, not here)
    assert not out.exists() or not list(out.rglob("*.tar"))
    line = p.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert f"{test}: record gqa-q7 has no 'answer'" in line
    assert "1 of 4 records: 1 missing_field" in line


def test_main_exit_codes(tmp_path, capsys):
    root = write_coin(tmp_path / "CoIN")
    out = tmp_path / "coin"
    assert main(["--bench", "coin", "--root", str(root), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "coin/ocrvqa test: wrote 4 samples from 4 records" in printed
    assert "bench.json" in printed


WIRED = ["coin", "ucit", "mllm_dcl", "cvit", "dmole", "clmm"]


@pytest.mark.parametrize("bench", WIRED)
def test_every_wired_bench_prepares_train_and_test(bench, tmp_path):
    root, out = write_release(bench, tmp_path / "release", 2, 2), tmp_path / bench
    prepare(bench, root, out, progress=False)
    cfg = load_bench(bench)
    spec = json.loads((out / "bench.json").read_text())
    assert [t["name"] for t in spec["tasks"]] == cfg["tasks"]
    assert all("train" in t and t["test"]["samples"] == 2 for t in spec["tasks"])
    assert all("train" not in t and t["test"]["samples"] == 2 for t in spec["unseen"])


@pytest.mark.slow
@pytest.mark.parametrize("bench", WIRED)
def test_end_to_end_from_the_published_layout(bench, tmp_path):
    root, out = write_release(bench, tmp_path / "release", 8, 4), tmp_path / bench
    p = _prepare_cli(tmp_path, "--bench", bench, "--root", str(root), "--out", str(out))
    assert p.returncode == 0, p.stderr
    cfg = load_bench(bench)
    # the command line, exactly: experiment=smoke keeps the benchmark's own tasks
    cmd = [sys.executable, "-m", "mcl.train", f"bench={bench}", "bench.source=real"]
    cmd += [f"bench.root={out}", "experiment=smoke"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    # the tiny base (cvit's default: tiny_it_cvit) says how much of the text it can read
    assert re.search(r"\[mcl\] model=tiny\w* knows \d+% of this benchmark's words", p.stdout)
    results = json.loads(next((tmp_path / "logs").rglob("results.json")).read_text())
    n = len(cfg["tasks"])
    matrix = results["matrix"]  # row 0: the base; row i: after task i, tasks 1..i scored
    assert len(matrix) == n + 1 and all(len(row) == n for row in matrix)
    assert None not in matrix[0] and None not in matrix[-1]
    assert all(None not in matrix[i][:i] for i in range(1, n + 1))
    assert results["data_source"] == "real"


def test_real_run_without_test_shards_stops_before_the_model_is_built(tmp_path):
    root, out = write_coin(tmp_path / "CoIN", n_train=2, n_test=1), tmp_path / "coin"
    prepare("coin", root, out, tasks=["gqa", "vizwiz"], progress=False)
    spec = json.loads((out / "bench.json").read_text())
    del spec["tasks"][3]["test"]  # gqa: train shards only
    (out / "bench.json").write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "mcl.train", "bench=coin", "bench.source=real"]
    cmd += [f"bench.root={out}", "bench.tasks=[gqa,vizwiz]", f"paths.output_dir={tmp_path / 'r'}"]
    start = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert time.monotonic() - start < 60  # a base model build takes minutes
    assert p.returncode == 2, p.stderr[-2000:]
    line = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(line) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "bench.json has no shards for gqa test" in line[0]
    command = f"python -m mcl.data.prepare --bench coin --root <the unpacked benchmark> --out {out}"
    assert command in line[0]


def test_dmole_test_files_keep_references_boxes_and_options(tmp_path):
    tasks = ["flickr30k", "skvg", "iconqa", "pmcvqa"]
    root, out = write_release("dmole", tmp_path / "release", 2, 2), tmp_path / "dmole"
    prepare("dmole", root, out, tasks=tasks, progress=False)
    bench = Benchmark(out, tasks, [], "real")

    def test_samples(task: str) -> list[dict]:
        return list(read_shards(bench.shard_paths(bench.task(task), "test")))

    assert [len(s["answers"]) for s in test_samples("flickr30k")] == [5, 5]
    # SK-VG: pixel box [80, 48, 336, 432] of a 640x480 image, asked with its knowledge; the
    # reference is InternVL's 0-1000 box, the pixel box and image size stay in meta
    box = test_samples("skvg")[0]
    assert box["answer"] == "[[125, 100, 525, 900]]"
    assert box["meta"]["bbox"] == [80, 48, 336, 432] and box["meta"]["image_size"] == [640, 480]
    assert box["question"].startswith("Based on the knowledge cats sit.\n")
    assert box["question"].endswith("describes: <ref>the left cat</ref>")
    for task in ("iconqa", "pmcvqa"):  # `answer` is an index into `choices`: 2 -> A, 3 -> B
        samples = test_samples(task)
        assert [s["answer"] for s in samples] == ["A", "B"]
        assert all(s["meta"]["options"] == ["cat", "dog"] for s in samples)
        assert "\nA. cat\nB. dog\nAnswer with the option's letter" in samples[0]["question"]


def test_clmm_lavis_answers_are_all_kept(tmp_path):
    root, out = write_release("clmm", tmp_path / "release", 2, 2), tmp_path / "clmm"
    prepare("clmm", root, out, tasks=["okvqa", "textcaps"], progress=False)
    bench = Benchmark(out, ["okvqa", "textcaps"], [], "real")
    vqa = list(read_shards(bench.shard_paths(bench.task("okvqa"), "test")))
    assert vqa[0]["answers"] == ["thing2"] * 3 + ["other"]
    captions = list(read_shards(bench.shard_paths(bench.task("textcaps"), "train")))
    assert [len(s["answers"]) for s in captions] == [5, 5]


def test_verify_counts_records_images_and_references(tmp_path):
    root = write_release("coin", tmp_path / "CoIN", 3, 2)
    env, cmd = _env(tmp_path), [sys.executable, "-m", "mcl.data.verify", "--bench", "coin"]
    cmd += ["--root", str(root), "--tasks", "gqa,grounding"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "gqa                 test         2 records, 2 usable, 0 text-only" in p.stdout
    assert "grounding           test         2 records" in p.stdout
    (root / "cl_dataset" / "gqa" / "images" / "4.png").unlink()
    test = root / "Instructions_Original" / "GQA" / "test.json"
    records = json.loads(test.read_text())
    del records[0]["answer"]
    test.write_text(json.dumps(records))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 1
    lines = [" ".join(line.split()) for line in p.stdout.splitlines()]
    assert "gqa test 2 records, 0 usable, 0 text-only, refs min/mean/max 1/1.0/1" in lines
    assert f"missing_field 1 e.g. {test}: record gqa-q3 has no 'answer'" in lines
    assert f"missing_image 1 e.g. {root / 'cl_dataset'}: gqa/images/4.png" in lines


def test_cvit_textvqa_is_scored_against_the_official_ten_answers(tmp_path):
    # SMoLoRA's eval_textvqa.py reads dataset/TextVQA/TextVQA_0.5.1_val.json, not the question file
    root, out = write_release("cvit", tmp_path / "release", 2, 2), tmp_path / "cvit"
    prepare("cvit", root, out, tasks=["textvqa"], progress=False)
    bench = Benchmark(out, ["textvqa"], [], "real")
    vqa = list(read_shards(bench.shard_paths(bench.task("textvqa"), "test")))
    assert [len(s["answers"]) for s in vqa] == [10, 10]
    assert vqa[0]["answers"].count("thing2") == 4
