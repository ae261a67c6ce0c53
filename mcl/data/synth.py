"""Write a synthetic benchmark as real WebDataset shards + ``bench.json``.

    python -m mcl.data.synth --out data/synth --tasks color count position ocr ground \
        --unseen compose count_mcq --seed 0 --train 2000 --test 192

Deterministic: every sample comes from (seed, task, split, index) alone, and tar headers carry a
fixed mtime, so the same arguments give byte-identical shards. Test sets mix training templates
(the main score) with held-out templates (every third sample: the instruction-following score).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from mcl.data import world as W
from mcl.data.shards import make_record, write_shards
from mcl.data.tasks import RECIPES
from mcl.utils.io import atomic_write_json

SYNTH_VERSION = 1  # bump when recipes change: cached benchmarks are regenerated


def _records(task: str, split: str, n: int, seed: int):
    recipe = RECIPES[task]
    for i in range(n):
        rng = W.sample_rng(seed, task, split, i)
        s = recipe.sample(rng, heldout=(split == "test" and i % 3 == 2))
        yield make_record(
            f"{task}-{split}-{i:06d}",
            task,
            s.question,
            s.answer,
            s.refs,
            s.image,
            recipe.answer_type,
            s.meta,
        )


def _counted(items, bar):
    for item in items:
        bar.update(1)
        yield item


def _task_entry(task: str) -> dict:
    r = RECIPES[task]
    return {
        "name": task,
        "modality": "image",
        "answer_type": r.answer_type,
        "scorer": r.scorer,
        "max_new_tokens": r.max_new_tokens,
        "chance": round(r.chance, 2),
    }


def spec_hash(**kw) -> str:
    return hashlib.sha256(
        json.dumps({"v": SYNTH_VERSION, **kw}, sort_keys=True).encode()
    ).hexdigest()[:16]


def generate(
    out: str | Path,
    name: str,
    tasks: list[str],
    unseen: list[str],
    seed: int = 0,
    train: int = 2000,
    test: int = 192,
    shard_size: int = 500,
    progress: bool = True,
) -> Path:
    """Generate (or reuse, if an identical one exists) a synthetic benchmark at ``out``."""
    unknown = [t for t in tasks + unseen if t not in RECIPES]
    if unknown:
        raise ValueError(f"unknown synthetic task(s) {unknown}; known: {sorted(RECIPES)}")
    out = Path(out)
    key = spec_hash(
        name=name,
        tasks=tasks,
        unseen=unseen,
        seed=seed,
        train=train,
        test=test,
        shard_size=shard_size,
    )
    if existing_hash(out) == key:
        return out
    # write into a private temp dir and rename: concurrent sweep jobs never see half a benchmark
    final, out = out, out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    jobs = [(t, "train", train) for t in tasks] + [
        (t, s, test) for t in tasks + unseen for s in ["test"]
    ]
    entries = {t: _task_entry(t) for t in tasks + unseen}
    bar = tqdm(
        total=sum(n for *_, n in jobs),
        desc=f"writing {name} shards",
        disable=not progress,
        unit="sample",
        mininterval=1,
    )
    for task, split, n in jobs:
        pattern = str(out / task / f"{split}-%06d.tar")
        names = write_shards(pattern, _counted(_records(task, split, n, seed), bar), shard_size)
        entries[task][split] = {"shards": [f"{task}/{f}" for f in names], "samples": n}
    bar.close()
    spec = {
        "name": name,
        "source": "synthetic",
        "seed": seed,
        "hash": key,
        "tasks": [entries[t] for t in tasks],
        "unseen": [entries[t] for t in unseen],
    }
    atomic_write_json(out / "bench.json", spec)
    if existing_hash(final) == key:  # another process finished the same benchmark first
        shutil.rmtree(out)
    else:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(out, final)
    return final


def existing_hash(out: Path) -> str | None:
    try:
        return json.loads((out / "bench.json").read_text()).get("hash")
    except (OSError, ValueError):
        return None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--name", default="synth")
    p.add_argument("--tasks", nargs="+", default=["color", "count", "position", "ocr", "ground"])
    p.add_argument("--unseen", nargs="*", default=["compose", "count_mcq"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=2000, help="training samples per task")
    p.add_argument("--test", type=int, default=192, help="test samples per task")
    p.add_argument("--shard-size", type=int, default=500)
    a = p.parse_args(argv)
    path = generate(a.out, a.name, a.tasks, a.unseen, a.seed, a.train, a.test, a.shard_size)
    print(f"wrote {path / 'bench.json'}")


if __name__ == "__main__":
    main()
