"""Write a synthetic benchmark as real WebDataset shards + ``bench.json``.

    python -m mcl.data.synthetic.synth --out data/synth --tasks color count position ocr ground \
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

from mcl.data.shards import make_record, private_tmp, write_shards
from mcl.data.synthetic import twins
from mcl.data.synthetic import world as W
from mcl.data.synthetic.tasks import Recipe
from mcl.utils.io import atomic_write_json

SYNTH_VERSION = 1  # bump when recipes change: cached benchmarks are regenerated


def _records(
    recipe: Recipe, task: str, split: str, n: int, seed: int, n_templates=None, eval_set=None
):
    """A split's samples; an eval set's are test samples from a stream of their own (the
    task's test generator, seeded with the set's name too)."""
    stream = f"{task}/{eval_set}" if eval_set else task
    for i in range(n):
        rng = W.sample_rng(seed, stream, split, i)
        s = recipe.sample(rng, heldout=(split == "test" and i % 3 == 2), n_templates=n_templates)
        yield make_record(
            f"{task}-{eval_set}-{i:06d}" if eval_set else f"{task}-{split}-{i:06d}",
            task,
            s.question,
            s.answer,
            s.refs,
            s.image,
            recipe.answer_type,
            s.meta,
            modality=recipe.modality,
        )


def _counted(items, bar):
    for item in items:
        bar.update(1)
        yield item


def _task_entry(task: str, r: Recipe) -> dict:
    return {
        "name": task,
        "modality": r.modality,
        "answer_type": r.answer_type,
        "scorer": r.scorer,
        "max_new_tokens": r.max_new_tokens,
        "chance": round(r.chance, 2),
    }


def spec_hash(**kw) -> str:
    """The benchmark's identity: its arguments plus a fingerprint of what its recipes produce
    (two samples per task), so editing a recipe regenerates the data instead of reusing it."""
    twin = kw.get("twin", "synth")
    recipes = twins.recipes(twin)
    names = [t for t in kw.get("tasks", []) + kw.get("unseen", []) if t in recipes]
    fp = hashlib.sha256()
    for task in names:
        train = next(_records(recipes[task], task, "train", 1, kw.get("seed", 0)))
        # the test stream's third sample uses a held-out template
        heldout = list(_records(recipes[task], task, "test", 3, kw.get("seed", 0)))[2]
        for rec in (train, heldout):
            for k in sorted(rec):
                fp.update(k.encode() + (rec[k] if isinstance(rec[k], bytes) else rec[k].encode()))
    blob = json.dumps({"v": SYNTH_VERSION, **kw, "recipes": fp.hexdigest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    twin: str = "synth",
    instructions: int | None = None,
    eval_sets: dict[str, list[dict]] | None = None,
) -> Path:
    """Generate (or reuse, if an identical one exists) a synthetic benchmark at ``out``.

    ``twin`` picks the recipe family (``mcl.data.synthetic.twins``); ``instructions`` limits each
    task's training templates to the first n (CVIT's single-type = 1, multi-type = 5; None = all).
    ``eval_sets`` (``{task: [{name, scorer, answer_type, max_new_tokens}]}``) gives those tasks
    one test set per declared set (``eval-<set>-*.tar``, ``test`` samples each) in bench.json's
    ``eval_sets``, scored by the set's scorer (the task's where it names none).
    """
    recipes = twins.recipes(twin)
    unknown = [t for t in tasks + unseen if t not in recipes]
    if unknown:
        raise ValueError(
            f"unknown task(s) {unknown} for the '{twin}' twin; it has: {', '.join(recipes)}"
        )
    out = Path(out)
    key = spec_hash(
        name=name,
        tasks=tasks,
        unseen=unseen,
        seed=seed,
        train=train,
        test=test,
        shard_size=shard_size,
        **({"twin": twin} if twin != "synth" else {}),
        **({"instructions": instructions} if instructions else {}),
        **({"eval_sets": eval_sets} if eval_sets else {}),
    )
    if existing_hash(out) == key:
        return out
    # write into a private temp dir and rename: concurrent sweep jobs never see half a benchmark;
    # removed on any failure (and, if this process is killed, by the next generate() here)
    final, out = out, private_tmp(out)
    try:
        return _write(out, final, key, name, tasks, unseen, seed, train, test, shard_size,
                      progress, twin, instructions, recipes, eval_sets or {})  # fmt: skip
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def _write(out, final, key, name, tasks, unseen, seed, train, test, shard_size, progress, twin,
           instructions, recipes, eval_sets) -> Path:  # fmt: skip
    jobs = [(t, "train", train, None) for t in tasks] + [
        (t, s, test, None) for t in tasks + unseen for s in ["test"]
    ]
    jobs += [(t, "test", test, d) for t in tasks + unseen for d in eval_sets.get(t, [])]
    entries = {t: _task_entry(t, recipes[t]) for t in tasks + unseen}
    bar = tqdm(
        total=sum(job[2] for job in jobs),
        desc=f"writing {name} shards",
        disable=not progress,
        unit="sample",
        mininterval=1,
    )
    for task, split, n, declared in jobs:
        stem = f"eval-{declared['name']}" if declared else split
        pattern = str(out / task / f"{stem}-%06d.tar")
        records = _records(
            recipes[task], task, split, n, seed, instructions, declared and declared["name"]
        )
        names = write_shards(pattern, _counted(records, bar), shard_size)
        entry = {"shards": [f"{task}/{f}" for f in names], "samples": n}
        if declared:
            scoring = {k: v for k, v in declared.items() if k != "name"}
            entries[task].setdefault("eval_sets", {})[declared["name"]] = {
                **{k: entries[task][k] for k in ("scorer", "answer_type", "max_new_tokens")},
                **scoring,
                **entry,
            }
        else:
            entries[task][split] = entry
    bar.close()
    spec = {
        "name": name,
        "source": "synthetic",
        "seed": seed,
        "twin": twin,
        "instructions": instructions,
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
    p.add_argument("--twin", default="synth", help=f"recipe family: {', '.join(twins.TWINS)}")
    p.add_argument("--instructions", type=int, default=None, help="training templates per task")
    p.add_argument("--tasks", nargs="+", default=["color", "count", "position", "ocr", "ground"])
    p.add_argument("--unseen", nargs="*", default=["compose", "count_mcq"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=2000, help="training samples per task")
    p.add_argument("--test", type=int, default=192, help="test samples per task")
    p.add_argument("--shard-size", type=int, default=500)
    a = p.parse_args(argv)
    path = generate(
        a.out, a.name, a.tasks, a.unseen, a.seed, a.train, a.test, a.shard_size,
        twin=a.twin, instructions=a.instructions,
    )  # fmt: skip
    print(f"wrote {path / 'bench.json'}")


if __name__ == "__main__":
    main()
