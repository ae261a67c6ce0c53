"""ContinualDataModule: streams one task's training shards at a time; indexable test sets.

Training reads tar shards with ``webdataset``: split by node and worker, shards and samples
shuffled with seeds derived from (seed, task, epoch, worker) — deterministic, yet different every
epoch — and ``with_epoch`` so an epoch has a known length. Evaluation reads a task's test shards
whole, in order, in one process, so every test sample counts exactly once.

Data faults are skipped and counted, per task and split, as *distinct samples* (``skipped``, which
results.json records): before a task streams, every shard's tar headers are scanned
(:func:`~mcl.data.shards.scan_shard`), so a truncated, broken-off, empty or non-tar shard counts
the samples it loses against ``bench.json``'s count; a sample that does not decode (bad JSON, an
undecodable image, a malformed payload) becomes a marker record that the collator drops, and the
training loader counts it, once, in the main process (a counter inside a worker would never reach
us); test sets count both when read. Above ``max_bad_share`` of a task's samples the run stops with
a one-line :class:`DataError` naming a bad shard, and so does a task with no readable sample or an
epoch that yields none: the training stream never loops without progress.

A method may train on a *mixture* of tasks (``set_task(t, mix={task: share})``): joint training,
replay. A share of 1 streams the whole task from its own pipeline; a smaller share is a buffer of
that many of its training samples, drawn once with a fixed seed and held in memory (replay's 1%).
The mixture behaves like the concatenation of its parts: samples are interleaved at random with
weights proportional to each part's size, so every batch mixes tasks.
"""

from __future__ import annotations

import itertools
import math
import random
import zlib
from collections import Counter
from dataclasses import dataclass

import lightning as L
import torch
import webdataset as wds
from torch.utils.data import DataLoader, get_worker_info

from mcl.data.bench import Benchmark
from mcl.data.shards import BadSample, decode_sample, read_shards, scan_shard, tar_error_text


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


class _RestOfEpoch(torch.utils.data.IterableDataset):
    """An epoch-limited pipeline whose first epoch yields only ``first`` samples: the rest of
    the epoch a resumed run had begun (after :class:`_Skip`), so it ends where the interrupted
    run's did and every later epoch starts as it would have; without it the resumed epoch ran a
    whole epoch's length into the next pass."""

    def __init__(self, pipeline, first: int):
        self.pipeline, self.first = pipeline, first

    def __iter__(self):
        it = iter(self.pipeline)
        if self.first is None:
            return it
        n, self.first = self.first, None
        return itertools.islice(it, max(0, n))


class DataError(RuntimeError):
    """Too much unreadable data; the message names a bad shard and the fix."""


def _decode_or_mark(raw):
    # webdataset's map drops None results, so a corrupt sample travels as a marker record that
    # the collator counts (a counter in a worker process would never reach the trainer)
    url = str(raw.get("__url__", "?"))
    try:
        sample = decode_sample(raw)
    except BadSample as e:
        return {"corrupt": str(e), "shard": url, "key": str(raw.get("__key__", "?")),
                "cause": e.cause}  # fmt: skip
    sample["shard"] = url  # which task's stream drew it (a mixture counts per task)
    return sample


_TOLD: set[str] = set()  # tar errors already printed by this process


def _skip_tar_errors(exn) -> bool:
    # a truncated or unreadable tar: the rest of that shard is lost, keep streaming. The scan
    # before streaming counted what it loses; say so once per shard, not once per epoch
    text = tar_error_text(exn)
    where = text.split(": ")[0]
    if where not in _TOLD:
        _TOLD.add(where)
        print(f"[mcl] unreadable shard data, skipped (counted in results.json): {text}")
    return True


FAULTS = "_mcl_faults"  # the batch key carrying a batch's draws and bad samples to the loader


class _FaultCollate:
    """The collator's ``train_batch``, plus what the data module counts: the streamed samples
    drawn per shard and each undecodable one (``(shard, key, cause, reason)``). Runs in the
    worker; :class:`_TrainLoader` takes the record out of the batch in the main process."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, samples):
        batch = self.fn(samples)
        drawn = Counter(s["shard"] for s in samples if s and "shard" in s)
        bad = [
            (s["shard"], s.get("key", "?"), s.get("cause", "bad_record"), s["corrupt"])
            for s in samples
            if s and "corrupt" in s
        ]
        batch[FAULTS] = (dict(drawn), bad)
        return batch


class _TrainLoader(DataLoader):
    """The training DataLoader. In the main process it takes each batch's fault record out,
    has the data module count distinct bad samples per task (stopping the run above
    ``max_bad_share``), and stops a pass that yields no readable sample at all instead of
    letting the trainer start empty epochs forever."""

    def __init__(self, *args, datamodule=None, tasks=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.datamodule, self.tasks = datamodule, list(tasks)

    def __iter__(self):
        good = batches = 0
        for batch in super().__iter__():
            record = batch.pop(FAULTS, None)
            if record is not None and self.datamodule is not None:
                self.datamodule._note_train(*record)
            good += len(batch.get("input_ids", ()))
            batches += 1
            yield batch
        if not good and self.datamodule is not None:
            self.datamodule._no_progress(self.tasks, batches)


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
        # data faults (see ``skipped``): distinct undecodable samples per (task, split), samples
        # lost in damaged shards per (task, split) and shard, training draws per task
        self._bad: dict[tuple[str, str], dict[tuple[str, str], str]] = {}
        self._lost: dict[tuple[str, str], dict[str, tuple[int, str, str]]] = {}
        self._draws: Counter = Counter()
        self._examples: dict[str, list[str]] = {}
        self._added: Counter = Counter()  # count_skipped() from outside the loaders
        self._restored: dict[str, dict] = {}  # ``skipped`` as a checkpoint saved it
        self._scans: dict[tuple[str, int, int], object] = {}
        self._url_task: dict[str, str] = {}
        self._loader_counts = False
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
        self.resumed_at: tuple[int, int] = (0, 0)  # what the last train_dataloader() began at
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
        name = self.bench.tasks[j]["name"]
        for f in bad:
            if getattr(f, "sample", None):
                self._record_bad(name, "train", f.sample, f.cause, str(f))
        if not samples:
            raise DataError(
                f"task '{name}' (train): no readable sample among the {len(chosen)} drawn for "
                f"its buffer, e.g. {bad[0] if bad else '?'}; regenerate or re-convert its shards"
            )
        if keep:
            self._buffers[key] = samples
        return samples

    def sample_task(self, j: int, n: int, seed: int = 0) -> list[dict]:
        """Up to ``n`` training samples of task ``j``, a fixed-seed draw (not kept in memory)."""
        total = self.bench.tasks[j]["train"]["samples"]
        return self.buffer(j, Share(min(1.0, n / total), seed), keep=False)

    # ------------------------------------------------------------------ data faults
    @property
    def skipped(self) -> dict[str, dict]:
        """Per task with a data fault: ``{"train": n, "test": n, "examples": [...], "causes":
        {split: {cause: n}}, "damaged_shards": [...]}``. ``n`` counts distinct unreadable
        samples (each once, however many epochs draw it): those lost in damaged shards and those
        that do not decode; ``causes`` splits them by :data:`~mcl.data.shards.CAUSES`. Setting it
        (a checkpoint's counts on resume) keeps those numbers as a floor, never adding twice."""
        names = [t for t, _ in [*self._bad, *self._lost, *self._added]] + list(self._restored)
        out = {}
        for task in dict.fromkeys(names):
            old = self._restored.get(task) or {}
            entry = {"train": 0, "test": 0, "examples": [], "causes": {}, "damaged_shards": []}
            shards = list(old.get("damaged_shards") or [])
            for split in ("train", "test"):
                causes = Counter(self._bad.get((task, split), {}).values())
                for n, cause, desc in self._lost.get((task, split), {}).values():
                    causes[cause] += n
                    shards.append(desc)
                causes["other"] += self._added[(task, split)]
                for cause, n in ((old.get("causes") or {}).get(split) or {}).items():
                    causes[cause] = max(causes[cause], int(n))
                causes = {c: n for c, n in sorted(causes.items()) if n}
                entry[split] = max(sum(causes.values()), int(old.get(split) or 0))
                if causes:
                    entry["causes"][split] = causes
            examples = [*(old.get("examples") or []), *self._examples.get(task, [])]
            entry["examples"] = list(dict.fromkeys(examples))[:3]
            entry["damaged_shards"] = list(dict.fromkeys(shards))
            if entry["train"] or entry["test"] or entry["damaged_shards"]:
                out[task] = entry
        return out

    @skipped.setter
    def skipped(self, value: dict) -> None:
        self._restored = {t: dict(e) for t, e in (value or {}).items() if isinstance(e, dict)}

    def count_skipped(self, task: str, split: str, n: int, example: str | None = None) -> None:
        """Add ``n`` unreadable samples a caller met outside the data module's own readers. The
        training loader counts distinct samples itself, so calls for ``train`` are ignored once
        it runs (a per-batch count would count a bad sample again every epoch)."""
        if split == "train" and self._loader_counts:
            return
        self._added[(task, split)] += n
        if example:
            self._example(task, example)

    def _example(self, task: str, text: str) -> None:
        examples = self._examples.setdefault(task, [])
        if len(examples) < 3 and text not in examples:
            examples.append(text)

    def _record_bad(self, task: str, split: str, sample: tuple, cause: str, text: str) -> None:
        seen = self._bad.setdefault((task, split), {})
        if sample in seen:
            return
        if not seen:
            print(f"[mcl] {task} ({split}): skipping unreadable samples (counted), e.g. {text}")
        seen[sample] = cause
        self._example(task, text)

    def _declared(self, task: str, split: str) -> int | None:
        """The split's sample count in bench.json (None when it does not say)."""
        n = (self.bench.task(task).get(split) or {}).get("samples")
        return int(n) if isinstance(n, int) and n > 0 else None

    def _scan(self, task: str, split: str) -> int:
        """Scan a split's shards (tar headers only, cached per file version) and record what
        damaged ones lose against bench.json's count; returns the readable samples found."""
        paths = self.bench.shard_paths(self.bench.task(task), split)
        found, scans = 0, []
        for path in paths:
            st = path.stat()
            key = (str(path), st.st_size, st.st_mtime_ns)
            if key not in self._scans:
                self._scans[key] = scan_shard(path)
            scans.append((path, self._scans[key]))
            found += self._scans[key].samples
        declared = self._declared(task, split) or found
        lost = max(0, declared - found)
        nominal = max([sc.samples for _, sc in scans if not sc.problem] or [1])
        record: dict[str, tuple[int, str, str]] = {}
        damaged = [(p, sc) for p, sc in scans if sc.problem]
        # unreadable shards lose about a sound shard's worth each, cut ones the rest
        damaged.sort(key=lambda ps: ps[1].cause != "unreadable_shard")
        left = lost
        for i, (path, sc) in enumerate(damaged):
            last = i == len(damaged) - 1
            n = left if last else min(left, nominal if sc.cause == "unreadable_shard" else 0)
            if sc.cause == "truncated_shard" and not last:
                n = 0  # several cut shards: the loss is told once, on the last of them
            left -= n
            record[str(path)] = (n, sc.cause, f"{path}: {sc.problem} ({n} sample(s) lost)")
        if left > 0:  # no damage seen, yet fewer samples than bench.json says
            where = f"{task}/{split}"
            desc = f"{where}: bench.json says {declared} samples, the shards hold {found}"
            record[where] = (left, "missing_samples", desc)
        if record != self._lost.get((task, split), {}):
            for _, _, desc in record.values():
                print(f"[mcl] {task} ({split}): damaged data, skipped and counted: {desc}")
                self._example(task, desc)
        self._lost[(task, split)] = record
        return declared - lost

    def check_bad_share(self, task: str, split: str, seen: int = 0) -> None:
        """Stop the run when more than ``max_bad_share`` of a task's samples are unreadable:
        those damaged shards lose (known exactly from the scan) plus the undecodable share of
        the samples read so far (``seen``: readable samples read; for training the loader's own
        draw count is used)."""
        lost = sum(n for n, _, _ in self._lost.get((task, split), {}).values())
        bad = len(self._bad.get((task, split), {})) + self._added[(task, split)]
        if not (lost or bad):
            return
        declared = self._declared(task, split)
        drawn = self._draws[task] if split == "train" and self._draws[task] else seen + bad
        if declared:
            readable = max(0, declared - lost)
            part = min(readable, drawn) if readable else drawn
            share = (lost + min(1.0, bad / max(1, part)) * readable) / declared
            total = f"of its {declared}"
        else:
            share, total = (lost + bad) / max(1, lost + drawn), f"of {lost + drawn} read"
        if share > self.max_bad_share:
            self._too_many(task, split, lost + bad, f"{share:.1%} {total}")

    def _too_many(self, task: str, split: str, n: int, share: str) -> None:
        where = (self._examples.get(task) or ["?"])[0]
        raise DataError(
            f"task '{task}' ({split}): {n} unreadable samples so far ({share} > "
            f"data.max_bad_share={self.max_bad_share}), e.g. {where}; regenerate or re-convert "
            "that shard, or raise data.max_bad_share"
        )

    def _check_readable(self, task: str, split: str) -> None:
        """Scan a split and stop at once when none of it can be read, or too much is lost."""
        if self._scan(task, split) <= 0:
            where = (self._examples.get(task) or ["?"])[0]
            raise DataError(
                f"task '{task}' ({split}) has no readable sample: {where}; regenerate or "
                "re-convert its shards (or fix the shard list in bench.json)"
            )
        lost = sum(n for n, _, _ in self._lost.get((task, split), {}).values())
        declared = self._declared(task, split)
        if declared and lost / declared > self.max_bad_share:
            self._too_many(task, split, lost, f"{lost / declared:.1%} of its {declared}")

    def _note_train(self, drawn: dict[str, int], bad: list[tuple]) -> None:
        """One training batch's fault record (main process): count draws and distinct bad
        samples per task; check the share once 100 samples (or a whole task) were drawn."""
        self._loader_counts = True
        current = self.bench.task_names[self.task] if self.task is not None else "?"
        touched = set()
        for url, n in drawn.items():
            task = self._url_task.get(url, current)
            self._draws[task] += n
            touched.add(task)
        for url, key, cause, text in bad:
            task = self._url_task.get(url, current)
            self._record_bad(task, "train", (url, key), cause, f"{url}: {text}")
        for task in touched:
            readable = (self._declared(task, "train") or 100) - sum(
                n for n, _, _ in self._lost.get((task, "train"), {}).values()
            )
            if self._draws[task] >= min(100, max(1, readable)):
                self.check_bad_share(task, "train")

    def _no_progress(self, tasks: list[str], batches: int) -> None:
        """A whole pass of the training stream gave no readable sample: stop (the trainer would
        otherwise start empty epochs for ever)."""
        where = next((e for t in tasks for e in self._examples.get(t, [])), "?")
        raise DataError(
            f"task(s) {', '.join(tasks)}: a whole pass over the training shards gave no readable "
            f"sample ({batches} batch(es), all unreadable), e.g. {where}; regenerate or "
            "re-convert the data"
        )

    def train_urls(self, t: int) -> list[str]:
        urls = [str(p) for p in self.bench.shard_paths(self.bench.tasks[t], "train")]
        self._url_task.update(dict.fromkeys(urls, self.bench.tasks[t]["name"]))
        return urls

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
        streamed = [self.bench.tasks[j]["name"] for j, part in mix.items() if part.share >= 1]
        for name in streamed:  # damaged shards counted, hopeless data stopped, before streaming
            self._check_readable(name, "train")
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
        if skip >= per_worker > 0:  # saved at an epoch's last batch: the next pass, from its start
            epoch, skip = epoch + skip // per_worker, skip % per_worker
        if (epoch or skip) and (workers or len(mix) > 1 or world > 1):
            # the position is one stream's in one process: elsewhere, start that epoch afresh
            skip = 0
            print(
                "[mcl] resuming inside a task: with workers, several processes or a task "
                "mixture the remaining batches differ from an uninterrupted run's"
            )
        # (data pass, samples already drawn in it) where this loader's first epoch begins
        self.resumed_at = (epoch, skip)
        if len(mix) == 1:
            (j,) = mix
            stream = self._stream(self.train_urls(j), seed, epoch, skip, split=split)
            pipeline = stream.with_epoch(per_worker)
            if skip:  # resumed inside an epoch: only what was left of it
                pipeline = _RestOfEpoch(pipeline, per_worker - skip)
        else:
            streams = [
                self._stream(self.train_urls(j), seed + 10 * (j + 1), split=split)
                if part.share >= 1
                else _Buffer(self.buffer(j, part), seed + 10 * (j + 1))
                for j, part in mix.items()
            ]
            pipeline = wds.DataPipeline(_Mix(streams, sizes, seed)).with_epoch(per_worker)
        return _TrainLoader(
            pipeline,
            batch_size=self.batch_size,
            num_workers=workers,
            collate_fn=_FaultCollate(self.collator.train_batch),
            persistent_workers=workers > 0,
            datamodule=self,
            tasks=streamed or [self.bench.task_names[self.task]],
        )

    # ------------------------------------------------------------------ evaluation
    def test_samples(self, task_name: str) -> list[dict]:
        """All test samples of a task (sequence or unseen), or of one of its eval sets
        (``<task>/<set>``, which the benchmark describes like a task whose ``test`` split is the
        set's shards; its faults are counted under that name), decoded once and cached."""
        if task_name not in self._test_cache:
            spec = self.bench.task(task_name)
            bad: list[str] = []
            good = read_shards(self.bench.shard_paths(spec, "test"), bad=bad)
            self._bad.pop((task_name, "test"), None)  # a re-read recounts, never adds twice
            for f in bad:
                if getattr(f, "sample", None):
                    self._record_bad(task_name, "test", f.sample, f.cause, str(f))
            self._check_readable(task_name, "test")
            self.check_bad_share(task_name, "test", len(good))
            if not good:
                raise DataError(
                    f"task '{task_name}' (test): no readable sample, e.g. "
                    f"{(self._examples.get(task_name) or ['?'])[0]}; regenerate or re-convert it"
                )
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
