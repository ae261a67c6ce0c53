"""ContinualDataModule: streams one task's training shards at a time; indexable test sets.

Training reads tar shards with ``webdataset``: split by node and worker, shards and samples
shuffled with seeds derived from (seed, task, epoch, worker) — deterministic, yet different every
epoch — and ``with_epoch`` so an epoch has a known length. Evaluation reads a task's test shards
whole, in order, in one process, so every test sample counts exactly once.

Corrupt samples are skipped and counted: the decoder turns them into marker records, the collator
drops them and reports the count in the batch (a counter inside a worker would never reach us);
test sets skip and count them when read. Above ``max_bad_share`` of a task's samples the run stops
with a :class:`DataError` naming a bad shard.

A method may train on a *mixture* of tasks (``set_task(t, mix={task: share})``): joint training,
replay. A share of 1 streams the whole task from its own pipeline; a smaller share is a buffer of
that many of its training samples, drawn once with a fixed seed and held in memory (replay's 1%).
The mixture behaves like the concatenation of its parts: samples are interleaved at random with
weights proportional to each part's size, so every batch mixes tasks.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass

import lightning as L
import torch
import webdataset as wds
from torch.utils.data import DataLoader, get_worker_info

from mcl.data.bench import Benchmark
from mcl.data.shards import BadSample, decode_sample, read_shards


class _EpochShuffle:
    """A pipeline stage shuffling with a seed that changes every epoch (webdataset's own
    ``shuffle(seed=)`` repeats the same order each epoch). Needs persistent workers to count
    epochs inside worker processes."""

    def __init__(self, seed: int, bufsize: int = 0, start_epoch: int = 0):
        self.seed, self.bufsize, self.epoch = seed, bufsize, start_epoch - 1

    def _rng(self) -> random.Random:
        info = get_worker_info()
        worker = info.id if info else 0
        return random.Random(zlib.crc32(f"{self.seed}/{self.epoch}/{worker}".encode()))

    def __call__(self, src):
        self.epoch += 1
        rng = self._rng()
        if self.bufsize == 0:  # shard list: shuffle the whole (small) list
            items = list(src)
            rng.shuffle(items)
            yield from items
            return
        buf = []
        for item in src:
            buf.append(item)
            if len(buf) >= self.bufsize:
                k = rng.randrange(len(buf))
                buf[k], buf[-1] = buf[-1], buf[k]
                yield buf.pop()
        rng.shuffle(buf)
        yield from buf


class _Skip:
    """Drop the first ``n`` samples of the first pass only (a run resumed inside an epoch
    continues where it stopped; undecoded, so skipping is cheap)."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, src):
        n, self.n = self.n, 0
        for i, item in enumerate(src):
            if i >= n:
                yield item


class DataError(RuntimeError):
    """Too much unreadable data; the message names a bad shard and the fix."""


def _decode_or_mark(raw):
    # webdataset's map drops None results, so a corrupt sample travels as a marker record that
    # the collator counts (a counter in a worker process would never reach the trainer)
    try:
        return decode_sample(raw)
    except BadSample as e:
        return {"corrupt": str(e), "shard": str(raw.get("__url__", "?"))}


def _skip_tar_errors(exn) -> bool:
    # a truncated or unreadable tar: the rest of that shard is lost, keep streaming; the
    # epoch's missing samples show up as a short task (logged), the warning names the shard
    print(f"[mcl] skipped unreadable shard data: {exn}")
    return True


@dataclass(frozen=True)
class Share:
    """A part of a task's training set in a mixture: ``share`` of it (0 < share <= 1), drawn
    once with ``seed`` (a plain float in a mixture means ``Share(float, seed=0)``)."""

    share: float = 1.0
    seed: int = 0

    def size(self, n: int) -> int:
        """How many of a task's ``n`` training samples this part holds (at least one)."""
        return n if self.share >= 1 else max(1, min(n, round(self.share * n)))


class _Buffer(torch.utils.data.IterableDataset):
    """An in-memory list of samples, endlessly reshuffled (a replay buffer's stream)."""

    def __init__(self, samples: list[dict], seed: int):
        self.samples, self.seed = samples, seed

    def __iter__(self):
        info = get_worker_info()
        rng = random.Random(zlib.crc32(f"buffer/{self.seed}/{info.id if info else 0}".encode()))
        while True:
            order = list(range(len(self.samples)))
            rng.shuffle(order)
            for i in order:
                yield self.samples[i]


class _Mix(torch.utils.data.IterableDataset):
    """Interleave several endless sample streams, choosing one per sample by weight."""

    def __init__(self, sources: list, weights: list[float], seed: int):
        self.sources, self.seed = sources, seed
        total = sum(weights)
        self.weights = [w / total for w in weights]

    def __iter__(self):
        info = get_worker_info()
        rng = random.Random(zlib.crc32(f"mix/{self.seed}/{info.id if info else 0}".encode()))
        its = [iter(s) for s in self.sources]
        while True:
            k = rng.choices(range(len(its)), self.weights)[0]
            try:
                yield next(its[k])
            except StopIteration:  # a stream ran dry: start its next pass
                its[k] = iter(self.sources[k])
                yield next(its[k])


class ContinualDataModule(L.LightningDataModule):
    def __init__(
        self,
        bench: Benchmark,
        collator,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        shuffle_buffer: int = 512,
        eval_batch_size: int = 64,
        max_bad_share: float = 0.01,
    ):
        super().__init__()
        self.max_bad_share = max_bad_share
        # per task: {"train": n, "test": n, "examples": [...]} of skipped (unreadable) samples
        self.skipped: dict[str, dict] = {}
        self.mix: dict[int, Share] | None = None
        self._buffers: dict[tuple[int, Share], list[dict]] = {}
        self.bench, self.collator = bench, collator
        self.batch_size, self.num_workers = batch_size, num_workers
        self.eval_batch_size = eval_batch_size
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.task: int | None = None
        # (epoch, samples already drawn in it): where the next train_dataloader() starts, set
        # by a mid-task checkpoint's restore; used once
        self.resume_at: tuple[int, int] | None = None
        self._test_cache: dict[str, list[dict]] = {}

    # ------------------------------------------------------------------ training
    def set_task(self, t: int, mix: dict[int, float | Share] | None = None) -> None:
        """Swap to task ``t``'s training shards (0-based index into ``bench.tasks``), or to a
        mixture ``{task index: share}`` of whole tasks (share 1) and buffers (share < 1)."""
        T = len(self.bench.tasks)
        if not 0 <= t < T:
            raise IndexError(f"task index {t} out of range 0..{T - 1}")
        if mix is not None:
            mix = {j: v if isinstance(v, Share) else Share(float(v)) for j, v in mix.items()}
            if not mix or any(not 0 <= j < T or not 0 < v.share <= 1 for j, v in mix.items()):
                raise ValueError(
                    f"bad task mixture {mix}: task indices 0..{T - 1}, shares in (0, 1]"
                )
        self.task, self.mix = t, mix

    def part_size(self, j: int, part: Share) -> int:
        return part.size(self.bench.tasks[j]["train"]["samples"])

    def buffer(self, j: int, part: Share, keep: bool = True) -> list[dict]:
        """The samples of task ``j`` that a share < 1 keeps: a fixed-seed draw, decoded once
        (and kept in memory unless ``keep=False``, e.g. a one-off task embedding)."""
        key = (j, part)
        if key in self._buffers:
            return self._buffers[key]
        n = self.bench.tasks[j]["train"]["samples"]
        rng = random.Random(zlib.crc32(f"buffer/{part.seed}/{j}".encode()))
        chosen = set(rng.sample(range(n), self.part_size(j, part)))
        bad: list[str] = []
        samples = read_shards(self.train_urls(j), bad=bad, indices=chosen)
        if not samples:
            raise DataError(f"no readable training sample drawn from task {j}: {bad[:1]}")
        if keep:
            self._buffers[key] = samples
        return samples

    def sample_task(self, j: int, n: int, seed: int = 0) -> list[dict]:
        """Up to ``n`` training samples of task ``j``, a fixed-seed draw (not kept in memory)."""
        total = self.bench.tasks[j]["train"]["samples"]
        return self.buffer(j, Share(min(1.0, n / total), seed), keep=False)

    def count_skipped(self, task: str, split: str, n: int, example: str | None = None) -> None:
        entry = self.skipped.setdefault(task, {"train": 0, "test": 0, "examples": []})
        entry[split] += n
        if example and len(entry["examples"]) < 3:
            entry["examples"].append(example)

    def check_bad_share(self, task: str, split: str, seen: int) -> None:
        """Stop the run when more than ``max_bad_share`` of a task's samples were unreadable."""
        entry = self.skipped.get(task)
        if not entry or not entry[split]:
            return
        share = entry[split] / max(1, seen + entry[split])
        if share > self.max_bad_share:
            where = entry["examples"][0] if entry["examples"] else "?"
            raise DataError(
                f"task '{task}' ({split}): {entry[split]} of {seen + entry[split]} samples "
                f"unreadable ({share:.1%} > data.max_bad_share={self.max_bad_share}), e.g. "
                f"{where}; regenerate or re-convert that shard, or raise data.max_bad_share"
            )

    def train_urls(self, t: int) -> list[str]:
        return [str(p) for p in self.bench.shard_paths(self.bench.tasks[t], "train")]

    def _stream(self, urls: list[str], seed: int, epoch: int = 0, skip: int = 0, split=True):
        return wds.DataPipeline(
            wds.SimpleShardList(urls),
            *([wds.split_by_node] if split else []),
            wds.split_by_worker,
            _EpochShuffle(seed, start_epoch=epoch),
            wds.tarfile_to_samples(handler=_skip_tar_errors),
            _EpochShuffle(seed + 1, self.shuffle_buffer, start_epoch=epoch),
            _Skip(skip),
            wds.map(_decode_or_mark),
        )

    def train_dataloader(self, split: bool = True) -> DataLoader:
        """The current task's (or mixture's) training stream. With several processes each rank
        reads its own shards; ``split=False`` gives every rank the whole stream (task-boundary
        passes, e.g. importance, that must agree across ranks)."""
        if self.task is None:
            raise RuntimeError("call set_task(t) before training")
        mix = self.mix or {self.task: Share()}
        distributed = split and torch.distributed.is_initialized()
        world = torch.distributed.get_world_size() if distributed else 1
        # every worker needs at least one shard of every stream (webdataset dies on an empty one)
        fewest = min(
            (len(self.train_urls(j)) for j, part in mix.items() if part.share >= 1), default=1
        )
        workers = max(0, min(self.num_workers, fewest // world))
        sizes = [self.part_size(j, part) for j, part in mix.items()]
        per_worker = math.ceil(sum(sizes) / world / max(1, workers))
        seed = self.seed * 1000 + self.task
        epoch, skip = self.resume_at or (0, 0)
        self.resume_at = None
        if (epoch or skip) and (workers or len(mix) > 1 or world > 1):
            # the position is one stream's in one process: elsewhere, start that epoch afresh
            skip = 0
            print(
                "[mcl] resuming inside a task: with workers, several processes or a task "
                "mixture the remaining batches differ from an uninterrupted run's"
            )
        if len(mix) == 1:
            (j,) = mix
            stream = self._stream(self.train_urls(j), seed, epoch, skip, split=split)
            pipeline = stream.with_epoch(per_worker)
        else:
            streams = [
                self._stream(self.train_urls(j), seed + 10 * (j + 1), split=split)
                if part.share >= 1
                else _Buffer(self.buffer(j, part), seed + 10 * (j + 1))
                for j, part in mix.items()
            ]
            pipeline = wds.DataPipeline(_Mix(streams, sizes, seed)).with_epoch(per_worker)
        return DataLoader(
            pipeline,
            batch_size=self.batch_size,
            num_workers=workers,
            collate_fn=self.collator.train_batch,
            persistent_workers=workers > 0,
        )

    # ------------------------------------------------------------------ evaluation
    def test_samples(self, task_name: str) -> list[dict]:
        """All test samples of a task (sequence or unseen), decoded once and cached."""
        if task_name not in self._test_cache:
            spec = self.bench.task(task_name)
            bad: list[str] = []
            good = read_shards(self.bench.shard_paths(spec, "test"), bad=bad)
            if bad:
                self.count_skipped(task_name, "test", len(bad), bad[0])
                print(f"[mcl] {task_name}: skipped {len(bad)} unreadable test sample(s): {bad[0]}")
                self.check_bad_share(task_name, "test", len(good))
            self._test_cache[task_name] = good
        return self._test_cache[task_name]

    def test_batches(self, task_name: str, rank: int = 0, world: int = 1):
        """``(samples, prompt batch)`` over the task's test set; with several processes, rank
        ``rank`` gets every ``world``-th batch (the runner gathers the answers)."""
        samples = self.test_samples(task_name)
        for b, i in enumerate(range(0, len(samples), self.eval_batch_size)):
            if b % world == rank:
                chunk = samples[i : i + self.eval_batch_size]
                yield chunk, self.collator.prompt_batch(chunk)
