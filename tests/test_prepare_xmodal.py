"""``python -m mcl.data.prepare --bench mcl``: PathWeave's released files for every modality
(a real encoded mp4, wav files, 16-bit depth PNGs beside RGB jpgs, npz point clouds) become
shards with the payloads the twin writes; damaged media are skipped, counted and named."""

from __future__ import annotations

import csv
import json
import os
import string
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mcl.data.convert import UserError, load_bench
from mcl.data.prepare import prepare
from mcl.data.prepare_xmodal import DEFAULT_MEDIA
from mcl.data.readers import audio, depth, video
from mcl.data.readers.media import MediaError
from mcl.data.schema import RGBD, SAMPLE_RATE
from mcl.data.shards import read_shards

EXT = {"video": ".mp4", "audio": ".wav", "depth": ".jpg", "points": ".npz"}
N_VIDEO_FRAMES = 12


def write_mp4(path: Path, n: int = N_VIDEO_FRAMES, size: int = 32) -> None:
    """An mpeg4 clip whose frame k is one flat grey level, 20 * k (so a frame tells its index)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(n):
            img = np.full((size, size, 3), 20 * k, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_wav(path: Path, seed: int, rate: int = 8000, seconds: float = 0.5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    sf.write(str(path), 0.5 * np.sin(2 * np.pi * (200 + 50 * seed) * t), rate)


def write_media(modality: str, job: dict, root: Path, rel: str, i: int) -> None:
    base = root / job.get("images", ".")
    if modality == "video":
        write_mp4(base / rel)
    elif modality == "audio":
        write_wav(base / rel, i)
    elif modality == "depth":
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((12, 16, 3), (10 * i) % 256, np.uint8)).save(base / rel)
        dmap = np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300 + i
        dpath = root / job["depth"] / depth.depth_path(rel)
        dpath.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(dmap).save(dpath)  # mode I;16
    else:
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        np.savez(base / rel, rng.normal(size=(8192, 6)).astype(np.float32))


def _record(kind: str, modality: str, template: str, i: int, first: int) -> tuple[dict, str]:
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    bare = template == "{" + fields[0] + "}"
    rec = {f: f"s{i}{EXT[modality] if bare else ''}" for f in fields}
    rel = template.format(**rec)
    if kind == "qa":
        rec |= {"question_id": f"q{i}", "question": f"what is in clip {i}?", "answer": f"a{i % 3}"}
    elif kind == "caption":
        rec["caption"] = f"a clip of thing {i}"
    elif kind == "label":
        rec["label"] = ["kitchen", "office"][i % 2]
    else:
        rec["conversations"] = [
            {"from": "human", "value": f"<image>\nhow far is thing {i}?"},
            {"from": "gpt", "value": "near"},
            {"from": "human", "value": "and its colour?"},
            {"from": "gpt", "value": "grey"},
        ][: 2 if first else 4]
    return rec, rel


def write_release(root: Path, n_train: int = 3, n_test: int = 2) -> Path:
    """PathWeave's release in the layout ``files:`` of conf/bench/mcl.yaml names: COCO caption
    references for the image stage; per x-modal stage its annotation files (JSON lists or CSV,
    in the file's own field names) and the media they name. Caption test files have two rows
    per clip (AudioCaps' CSVs do), merged into one sample with both references."""
    cfg = load_bench("mcl")
    for task, entry in cfg["files"]["tasks"].items():
        modality = cfg["task_info"][task]["modality"]
        for split in ("train", "test", *(entry.get("eval_sets") or {})):
            spec = entry.get(split) or entry["eval_sets"][split]
            spec = {"file": spec} if isinstance(spec, str) else spec
            job = {k: v for k, v in entry.items() if k not in ("train", "test", "eval_sets")}
            job |= spec
            path = root / job["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            first = 0 if split == "train" else 100
            n = n_train if split == "train" else n_test
            if modality == "image":
                images = []
                for i in range(first, first + n):
                    rel = f"img{i}.png"
                    (root / job["images"]).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.full((16, 16, 3), i, np.uint8)).save(
                        root / job["images"] / rel
                    )
                    images.append({"id": i, "file_name": rel})
                anns = [{"image_id": im["id"], "caption": f"thing {im['id']}"} for im in images]
                path.write_text(json.dumps({"images": images, "annotations": anns}))
                continue
            kind, template = job.get("kind", "qa"), job.get("media", DEFAULT_MEDIA[modality])
            back = {ours: theirs for theirs, ours in (job.get("rename") or {}).items()}
            rows = []
            for i in range(first, first + n):
                rec, rel = _record(kind, modality, template, i, first)
                write_media(modality, job, root, rel, i)
                rows += [{back.get(k, k): v for k, v in rec.items()}]
                if kind == "caption" and split != "train":
                    rows.append(rows[-1] | {"caption": f"another clip of thing {i}"})
            if path.suffix == ".csv":
                with open(path, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                    writer.writeheader()
                    writer.writerows(rows)
            else:
                path.write_text(json.dumps(rows, indent=1))
    return root


def damage(root: Path) -> None:
    """A truncated mp4 in the video training set and a zero-length wav in the audio one."""
    cfg = load_bench("mcl")["files"]["tasks"]
    for task, bad in (("video", "cut.mp4"), ("audio", "empty")):
        entry = cfg[task]
        ann = root / entry["train"]
        rows = json.loads(ann.read_text())
        if task == "video":
            write_mp4(root / entry["images"] / bad)
            data = (root / entry["images"] / bad).read_bytes()
            (root / entry["images"] / bad).write_bytes(data[: len(data) // 2])
            rows.append(rows[0] | {"video": bad, "question_id": "cut"})
        else:
            (root / entry["images"] / f"{bad}.wav").write_bytes(b"")
            rows.append(rows[0] | {"youtube_id": bad, "question_id": "empty"})
        ann.write_text(json.dumps(rows))


# ---------------------------------------------------------------- loaders


def test_frames_first_and_last_always():
    assert video.frame_indices(12, 5) == [0, 2, 4, 6, 11]
    assert video.frame_indices(3, 5) == [0, 1, 2, 2, 2]
    assert video.frame_indices(1, 5) == [0] * 5
    for total in range(2, 40):
        idx = video.frame_indices(total, 5)
        assert idx[0] == 0 and idx[-1] == total - 1 and idx == sorted(idx)


def test_video_decodes_the_sampled_frames(tmp_path):
    write_mp4(tmp_path / "v.mp4")
    frames = video.load(tmp_path / "v.mp4", n_frames=5, size=24)
    assert frames.shape == (5, 24, 24, 3) and frames.dtype == np.uint8
    want = [20 * k for k in video.frame_indices(N_VIDEO_FRAMES, 5)]
    assert np.allclose(frames.reshape(5, -1).mean(1), want, atol=6)


def test_damaged_video_and_audio_are_media_errors(tmp_path):
    write_mp4(tmp_path / "v.mp4")
    data = (tmp_path / "v.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really")
    for bad, load in (("cut.mp4", video.load), ("empty.wav", audio.load), ("junk.wav", audio.load)):
        with pytest.raises(MediaError) as e:
            load(tmp_path / bad)
        assert e.value.reason == f"unreadable_{'video' if bad.endswith('mp4') else 'audio'}"


def test_audio_is_mono_16khz(tmp_path):
    t = np.arange(4410) / 44100
    sf.write(str(tmp_path / "s.wav"), np.stack([np.sin(t * 2000), np.zeros_like(t)], 1), 44100)
    wave = audio.load(tmp_path / "s.wav")
    assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) == 1600


def test_16bit_depth_keeps_its_order_in_8_bits(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(np.array([[0, 257, 65535, 30000]] * 4, np.uint16)).save(tmp_path / "a.png")
    rgbd = depth.load(tmp_path / "a.jpg", tmp_path / "a.png")
    assert isinstance(rgbd, RGBD) and rgbd.depth.dtype == np.uint8
    assert rgbd.depth[0].tolist() == [0, 1, 255, 117]


# ---------------------------------------------------------------- prepare


def test_every_modality_prepares_with_its_native_payload(tmp_path):
    root, out = write_release(tmp_path / "release"), tmp_path / "mcl"
    damage(root)
    summaries = prepare("mcl", root, out, progress=False)
    spec = json.loads((out / "bench.json").read_text())
    cfg = load_bench("mcl")
    tasks = {t["name"]: t for t in spec["tasks"]}
    assert list(tasks) == cfg["tasks"]
    for name, t in tasks.items():
        assert t["train"]["samples"] >= 3 and t["test"]["samples"] == 2
        sets = cfg["files"]["tasks"][name].get("eval_sets") or {}
        assert list(t.get("eval_sets", {})) == list(sets)
        for set_name, s in t.get("eval_sets", {}).items():
            assert s["samples"] == 2 and s["scorer"] == sets[set_name]["scorer"]
            assert s["shards"] == [f"{name}/eval-{set_name}-000000.tar"]
            assert (out / s["shards"][0]).is_file()
    by = {(s["task"], s["split"]): s for s in summaries}
    assert by["video", "train"]["skipped"]["unreadable_video"]["count"] == 1
    assert by["video", "train"]["skipped"]["unreadable_video"]["examples"] == ["cut"]
    assert by["audio", "train"]["skipped"]["unreadable_audio"]["examples"] == ["empty"]
    assert tasks["video"]["train"]["samples"] == 3 and tasks["audio"]["train"]["samples"] == 3
    assert tasks["depth"]["train"]["samples"] == 6  # two QA pairs a record, split

    def first(task, split="test"):
        return read_shards([out / s for s in tasks[task][split]["shards"]])[0]

    v = first("video")
    assert v["modality"] == "video" and v["payload"].shape == (5, 224, 224, 3)
    assert v["answers"] == ["a clip of thing 100", "another clip of thing 100"]
    a = first("audio", "train")
    assert a["modality"] == "audio" and len(a["payload"]) == SAMPLE_RATE // 2
    d = first("depth", "train")
    assert d["modality"] == "depth" and d["payload"].shape == (12, 16) and d["rgb"] is not None
    assert d["payload"][0, :3].tolist() == [0, 1, 2]  # (k * 300) / 257, rounded
    p = first("3d")
    assert p["modality"] == "points" and p["payload"].shape == (8192, 3)
    esc = read_shards([out / s for s in tasks["audio"]["eval_sets"]["esc50"]["shards"]])
    assert [s["answer"] for s in esc] == ["kitchen", "office"]
    assert esc[0]["meta"]["set"] == "esc50" and esc[0]["answer_type"] == "word"


def test_a_missing_video_is_counted(tmp_path):
    root, out = write_release(tmp_path / "release"), tmp_path / "mcl"
    (root / "MSRVTT/videos/s1.mp4").unlink()
    prepare("mcl", root, out, tasks=["video"], progress=False)
    got = json.loads((out / "video/train.convert.json").read_text())["skipped"]
    assert got["missing_video"]["examples"] == ["q1"]


def test_cli_stops_in_one_line_when_a_file_is_absent(tmp_path):
    root = write_release(tmp_path / "release")
    (root / "AudioCaps/annotations/test.csv").unlink()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mcl.data.prepare", "--quiet", "--bench", "mcl"]
    cmd += ["--root", str(root), "--out", str(tmp_path / "out")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2 and "test.csv not found" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "bench.json").exists()


def test_a_bad_record_in_the_last_eval_set_stops_before_anything_is_written(tmp_path):
    """The last task's last eval set lacks an answer: the preparation stops in one line naming
    it before the earlier tasks' shards are written (not after hours of conversion)."""
    root, out = write_release(tmp_path / "release"), tmp_path / "mcl"
    ann = root / "Cap3D/annotations/CAP3DQA_final_val.csv"
    with open(ann, newline="") as f:
        rows = list(csv.DictReader(f))
    rows[1]["answer"] = ""
    with open(ann, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(UserError, match="answer") as e:
        prepare("mcl", root, out, progress=False)
    assert "\n" not in str(e.value)
    assert not out.exists() or not list(out.rglob("*.tar"))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pathweave", "seq_lora"])
def test_end_to_end_from_the_released_files(method, tmp_path):
    """Released files -> prepare (with a cut mp4 and an empty wav) -> a real run of every stage
    to a results.json; the x-modal data path is not PathWeave's alone."""
    root, out = write_release(tmp_path / "release", 4, 2), tmp_path / "mcl"
    damage(root)
    env = {
        **os.environ,
        "MCL_LOGS": str(tmp_path / "logs"),
        "MCL_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "mcl.data.prepare", "--quiet", "--bench", "mcl"]
    cmd += ["--root", str(root), "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "unreadable_video" in p.stdout and "unreadable_audio" in p.stdout
    cfg, runs = load_bench("mcl"), tmp_path / "runs"
    cmd = [sys.executable, "-m", "mcl.train", f"method={method}", "bench=mcl", "bench.source=real"]
    cmd += [f"bench.root={out}", "experiment=smoke", "train.steps=2", "bench.unseen=[]"]
    cmd += [f"bench.tasks=[{','.join(cfg['tasks'])}]", f"paths.output_dir={runs}"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads(next(runs.rglob("results.json")).read_text())
    assert results["data_source"] == "real"
    matrix, n = results["matrix"], len(cfg["tasks"])
    columns = results["columns"]  # one per eval set
    names = {c["name"] for c in columns}
    for task, entry in cfg["files"]["tasks"].items():
        sets = entry.get("eval_sets") or {}
        assert all(f"{task}/{s}" in names for s in sets) or (not sets and task in names)
    assert len(columns) > n  # some stage has several eval sets
    assert all(len(row) == len(columns) for row in matrix)
    assert all(len(row) == n for row in results["stage_matrix"])
    assert len(matrix) == n + 1 and None not in matrix[0] and None not in matrix[-1]
