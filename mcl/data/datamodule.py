"""ContinualDataModule: streams one task's training shards at a time; indexable test sets.

Training reads tar shards with ``webdataset``: split by node and worker, shards and samples
shuffled with seeds derived from (seed, task, epoch, worker) — deterministic, yet different every
epoch — and ``with_epoch`` so an epoch has a known length. Evaluation reads a task's test shards
whole, in order, in one process, so every test sample counts exactly once.

Corrupt samples are skipped and counted: the decoder turns them into marker records, the collator
drops them and reports the count in the batch (a counter inside a worker would never reach us).
"""

from __future__ import annotations

import math
import random
import zlib

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

    def __init__(self, seed: int, bufsize: int = 0):
        self.seed, self.bufsize, self.epoch = seed, bufsize, -1

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


def _decode_or_mark(raw):
    # webdataset's map drops None results, so a corrupt sample travels as a marker record that
    # the collator counts (a counter in a worker process would never reach the trainer)
    try:
        return decode_sample(raw)
    except BadSample as e:
        return {"corrupt": str(e)}


def _skip_tar_errors(exn) -> bool:
    # a truncated or unreadable tar member: keep streaming (counted via None samples is not
    # possible here, so the warning names it)
    print(f"[mcl] skipped unreadable shard data: {exn}")
    return True


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
    ):
        super().__init__()
        self.bench, self.collator = bench, collator
        self.batch_size, self.num_workers = batch_size, num_workers
        self.eval_batch_size = eval_batch_size
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.task: int | None = None
        self._test_cache: dict[str, list[dict]] = {}

    # ------------------------------------------------------------------ training
    def set_task(self, t: int) -> None:
        """Swap to task ``t``'s training shards (0-based index into ``bench.tasks``)."""
        if not 0 <= t < len(self.bench.tasks):
            raise IndexError(f"task index {t} out of range 0..{len(self.bench.tasks) - 1}")
        self.task = t

    def train_urls(self, t: int) -> list[str]:
        return [str(p) for p in self.bench.shard_paths(self.bench.tasks[t], "train")]

    def train_dataloader(self) -> DataLoader:
        if self.task is None:
            raise RuntimeError("call set_task(t) before training")
        urls = self.train_urls(self.task)
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        # every worker needs at least one shard (webdataset dies on an empty worker)
        workers = max(0, min(self.num_workers, len(urls) // world))
        n = self.bench.tasks[self.task]["train"]["samples"]
        per_worker = math.ceil(n / world / max(1, workers))
        seed = self.seed * 1000 + self.task
        pipeline = wds.DataPipeline(
            wds.SimpleShardList(urls),
            wds.split_by_node,
            wds.split_by_worker,
            _EpochShuffle(seed),
            wds.tarfile_to_samples(handler=_skip_tar_errors),
            _EpochShuffle(seed + 1, self.shuffle_buffer),
            wds.map(_decode_or_mark),
        ).with_epoch(per_worker)
        return DataLoader(
            pipeline,
            batch_size=self.batch_size,
            num_workers=workers,
            collate_fn=self.collator.train_batch,
            persistent_workers=workers > 0,
        )

    def steps_per_epoch(self, t: int) -> int:
        return math.ceil(self.bench.tasks[t]["train"]["samples"] / self.batch_size)

    # ------------------------------------------------------------------ evaluation
    def test_samples(self, task_name: str) -> list[dict]:
        """All test samples of a task (sequence or unseen), decoded once and cached."""
        if task_name not in self._test_cache:
            spec = self.bench.task(task_name)
            self._test_cache[task_name] = read_shards(self.bench.shard_paths(spec, "test"))
        return self._test_cache[task_name]

    def test_batches(self, task_name: str):
        samples = self.test_samples(task_name)
        for i in range(0, len(samples), self.eval_batch_size):
            chunk = samples[i : i + self.eval_batch_size]
            yield chunk, self.collator.prompt_batch(chunk)
