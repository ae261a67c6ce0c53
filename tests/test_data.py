"""Synthetic shards: determinism, round trip, streaming DataModule and corrupt-data handling."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from mcl.data.bench import Benchmark, BenchmarkError
from mcl.data.datamodule import ContinualDataModule
from mcl.data.shards import BadSample, decode_sample, read_shards
from mcl.data.synthetic import synth
from mcl.data.synthetic.tasks import RECIPES
from mcl.models.tiny import build_tiny
from tests.test_collate import TEXT, VISION

TASKS, UNSEEN = ["color", "count", "ocr"], ["compose"]


def _gen(path, seed=0, train=40, test=12, shard_size=16):
    return synth.generate(
        path,
        "t",
        TASKS,
        UNSEEN,
        seed=seed,
        train=train,
        test=test,
        shard_size=shard_size,
        progress=False,
    )


def _digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.tar"))
    }


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    return _gen(tmp_path_factory.mktemp("bench") / "t")


def test_same_seed_gives_identical_shards_other_seed_differs(tmp_path, bench_dir):
    again = _gen(tmp_path / "again")
    assert _digest(again) == _digest(bench_dir)
    other = _gen(tmp_path / "other", seed=1)
    assert _digest(other) != _digest(bench_dir)


def test_round_trip_matches_the_generator(bench_dir):
    bench = Benchmark(bench_dir)
    assert bench.task_names == TASKS and bench.unseen_names == UNSEEN
    spec = bench.task("count")
    assert spec["train"]["samples"] == 40 and len(spec["train"]["shards"]) == 3  # 16+16+8
    samples = read_shards(bench.shard_paths(spec, "train"))
    assert len(samples) == 40
    assert [s["key"] for s in samples] == [f"count-train-{i:06d}" for i in range(40)]
    from mcl.data.synthetic import world as W

    for i in (0, 17, 39):  # decoded sample == regenerated sample, pixel for pixel
        ref = RECIPES["count"].sample(W.sample_rng(0, "count", "train", i))
        assert samples[i]["question"] == ref.question and samples[i]["answer"] == ref.answer
        assert list(samples[i]["image"].getdata()) == list(ref.image.getdata())
    test = read_shards(bench.shard_paths(spec, "test"))
    templates = [s["meta"]["template"] for s in test]
    assert templates.count("heldout") == 4 and templates.count("train") == 8
    heldout_q = {
        q.format(colour="", shape="", pos="", options="")
        for q in RECIPES["count"].heldout_templates
    }
    assert all(s["question"] in heldout_q for s in test if s["meta"]["template"] == "heldout")


def test_train_and_test_never_share_samples(bench_dir):
    bench = Benchmark(bench_dir)
    spec = bench.task("ocr")
    train = read_shards(bench.shard_paths(spec, "train"))
    test = read_shards(bench.shard_paths(spec, "test"))
    assert {s["key"] for s in train}.isdisjoint({s["key"] for s in test})


def test_datamodule_streams_known_epochs_in_new_orders(bench_dir):
    mllm = build_tiny(TEXT, VISION)
    dm = ContinualDataModule(Benchmark(bench_dir), mllm.collator, batch_size=8, seed=3)
    with pytest.raises(RuntimeError, match="set_task"):
        dm.train_dataloader()
    dm.set_task(1)
    loader = dm.train_dataloader()
    epochs = []
    for _ in range(2):
        seen = []
        for batch in loader:
            assert batch["pixel_values"].shape[1:] == (3, 48, 48)
            seen.append(batch["input_ids"].shape[0])
        epochs.append(seen)
    assert sum(epochs[0]) == 40 and sum(epochs[1]) == 40  # the known epoch length
    # same seed -> same order; a second epoch is reshuffled
    keys = lambda dm_: [s["key"] for s in dm_.train_dataloader().dataset]  # noqa: E731
    dm2 = ContinualDataModule(Benchmark(bench_dir), mllm.collator, batch_size=8, seed=3)
    dm2.set_task(1)
    first = keys(dm2)
    assert sorted(first) == [f"count-train-{i:06d}" for i in range(40)]
    dm3 = ContinualDataModule(Benchmark(bench_dir), mllm.collator, batch_size=8, seed=3)
    dm3.set_task(1)
    ds = dm3.train_dataloader().dataset
    assert [s["key"] for s in ds] == first
    assert [s["key"] for s in ds] != first  # epoch 2 of the same pipeline
    with pytest.raises(IndexError):
        dm.set_task(7)


def test_test_batches_cover_every_sample_once(bench_dir):
    mllm = build_tiny(TEXT, VISION)
    dm = ContinualDataModule(Benchmark(bench_dir), mllm.collator, eval_batch_size=5)
    keys = [s["key"] for chunk, _ in dm.test_batches("compose") for s in chunk]
    assert len(keys) == 12 and len(set(keys)) == 12


def test_decoder_rejects_bad_samples_with_the_key():
    with pytest.raises(BadSample, match="k1"):
        decode_sample({"__key__": "k1", "json": b"{not json"})
    good = json.dumps({"conversations": [{"value": "<image>\nq"}, {"value": "a"}]}).encode()
    with pytest.raises(BadSample, match="no image"):
        decode_sample({"__key__": "k2", "json": good})
    with pytest.raises(BadSample, match="k3"):
        decode_sample({"__key__": "k3", "json": good, "png": b"\x89PNG truncated"})


def corrupt_copy(bench_dir, out, task="color", split="train", n_bad=1):
    """A copy of the benchmark whose first ``task``/``split`` shard has ``n_bad`` broken PNGs."""
    import shutil

    bench = Benchmark(bench_dir)
    src = bench.shard_paths(bench.task(task), split)[0]
    shutil.copytree(bench_dir, out)
    dst = out / bench.task(task)[split]["shards"][0]
    pngs = 0
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()
            if m.name.endswith(".png"):
                pngs += 1
                if 2 <= pngs < 2 + n_bad:  # from the second sample on, images cut short
                    data = data[:20]
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
    return dst


def test_corrupt_sample_in_a_shard_is_skipped_and_counted(tmp_path, bench_dir):
    out = tmp_path / "t"
    corrupt_copy(bench_dir, out)
    mllm = build_tiny(TEXT, VISION)
    dm = ContinualDataModule(Benchmark(out), mllm.collator, batch_size=8, max_bad_share=0.05)
    dm.set_task(0)
    loader = dm.train_dataloader()
    batches = list(loader)
    # an epoch is 40 records; the corrupt one is counted, never trained on
    assert sum(int(b["n_skipped"]) for b in batches) == 1
    assert sum(b["input_ids"].shape[0] for b in batches) == 39
    # a second epoch draws it again: still one unreadable sample, not two (issue 27, item 8)
    assert sum(int(b["n_skipped"]) for b in loader) == 1
    assert dm.skipped["color"]["train"] == 1
    assert dm.skipped["color"]["causes"] == {"train": {"undecodable_image": 1}}


def test_missing_shards_and_tasks_give_clear_errors(tmp_path, bench_dir):
    with pytest.raises(BenchmarkError, match="no bench.json"):
        Benchmark(tmp_path / "nowhere")
    with pytest.raises(BenchmarkError, match="not in"):
        Benchmark(bench_dir, order=["color", "nope"])
    import shutil

    shutil.copytree(bench_dir, tmp_path / "t")
    b = Benchmark(tmp_path / "t")
    next((tmp_path / "t" / "ocr").glob("train-*.tar")).unlink()
    with pytest.raises(BenchmarkError, match="missing"):
        b.shard_paths(b.task("ocr"), "train")


def test_source_auto_falls_back_to_the_synthetic_twin_with_a_banner(tmp_path, capsys):
    from mcl.data.bench import prepare
    from tests.conftest import MICRO, compose_cfg

    cfg = compose_cfg(tmp_path, [*MICRO, "bench.source=auto", f"bench.root={tmp_path}/none"])
    bench = prepare(cfg.bench, cfg.paths.data_dir, progress=False)
    assert bench.source == "synthetic" and bench.task_names == ["color", "position"]
    banner = capsys.readouterr().out
    assert "SYNTHETIC twin" in banner and "bench.root" in banner
    # real data present: auto uses it and says so in data_source
    real = prepare(
        compose_cfg(tmp_path, [*MICRO, "bench.source=auto", f"bench.root={bench.root}"]).bench,
        cfg.paths.data_dir,
    )
    assert real.source == "real" and real.root == bench.root
    with pytest.raises(BenchmarkError, match="bench.root is not set"):
        prepare(compose_cfg(tmp_path, [*MICRO, "bench.source=real"]).bench, cfg.paths.data_dir)


def test_corrupt_test_samples_are_skipped_counted_and_named(tmp_path, bench_dir):
    from mcl.data.datamodule import DataError

    out = tmp_path / "t"
    shard = corrupt_copy(bench_dir, out, task="compose", split="test", n_bad=1)
    mllm = build_tiny(TEXT, VISION)
    dm = ContinualDataModule(Benchmark(out), mllm.collator, max_bad_share=0.2)
    assert len(dm.test_samples("compose")) == 11  # 12 written, 1 unreadable
    entry = dm.skipped["compose"]
    assert entry["test"] == 1 and shard.name in entry["examples"][0]
    # above the allowed share: one line naming the shard and the fix
    dm = ContinualDataModule(Benchmark(out), mllm.collator, max_bad_share=0.05)
    with pytest.raises(DataError, match=rf"compose.*{shard.name}.*max_bad_share") as e:
        dm.test_samples("compose")
    assert "\n" not in str(e.value)


def test_a_task_mixture_interleaves_tasks_by_size(bench_dir):
    from collections import Counter

    mllm = build_tiny(TEXT, VISION)
    dm = ContinualDataModule(Benchmark(bench_dir), mllm.collator, batch_size=8, seed=0)
    dm.set_task(2, mix={0: 1.0, 2: 1.0})
    ds = dm.train_dataloader().dataset
    tasks = [s["task"] for s in ds]
    assert len(tasks) == 80  # the epoch covers both tasks' sizes
    c = Counter(tasks)
    assert set(c) == {"color", "ocr"} and 0.3 < c["color"] / 80 < 0.7
    # interleaved, not task after task: the first 16 samples already hold both
    assert len(set(tasks[:16])) == 2
    assert [s["key"] for s in dm.train_dataloader().dataset][:16] != []
    with pytest.raises(ValueError, match="mixture"):
        dm.set_task(0, mix={5: 1.0})
    with pytest.raises(ValueError, match="shares in"):
        dm.set_task(0, mix={0: 3.0})


def test_shards_carry_plain_ustar_headers(bench_dir):
    """No pax header per member (a float mtime forced one): half the readers' header parsing."""
    shard = next(bench_dir.rglob("*.tar"))
    with tarfile.open(shard) as tf:
        members = tf.getmembers()
    assert members and all(not m.pax_headers for m in members)
    assert all(m.mtime == synth_mtime() for m in members)


def synth_mtime() -> int:
    from mcl.data.shards import FIXED_MTIME

    return FIXED_MTIME


def test_fast_pixel_values_are_the_processors_bits():
    import numpy as np
    import torch
    from PIL import Image

    from mcl.models.fast_pixels import fast_pixel_values

    ip = build_tiny(TEXT, VISION).processor.image_processor
    rng = np.random.default_rng(0)
    side = ip.crop_size["height"] if isinstance(ip.crop_size, dict) else ip.crop_size.height
    rgb = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(9)]
    gray = Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8))  # converted to RGB
    for images in (rgb, [*rgb[:2], gray]):
        ref = ip(images=images, return_tensors="pt")["pixel_values"]
        fast = fast_pixel_values(ip, images)
        assert fast is not None and fast.dtype == ref.dtype and torch.equal(fast, ref)
    # another size needs the processor's resize: no fast path
    assert fast_pixel_values(ip, [Image.new("RGB", (side + 8, side))]) is None
