"""A benchmark on disk: ``bench.json`` + shards, and how the config finds or makes one.

``bench.json`` holds the name, the tasks in order and the unseen tasks; per task its modality,
answer type, scorer, generation settings, chance level and, per split, the shard files and the
sample count. ``bench.source`` picks real shards (``bench.root``) or the synthetic twin.

A task is evaluated on its eval sets: by default one, its ``test`` split, named after the task;
a task whose entry holds ``eval_sets`` (``{set: {shards, samples, scorer, answer_type,
max_new_tokens}}``) is evaluated on each of them instead, each a column of the accuracy matrix
named ``<task>/<set>`` (:meth:`Benchmark.columns`). Such a column reads like a task of its own
(:meth:`Benchmark.task` gives its scorer and its shards as the ``test`` split), so evaluation
and fault counting need not know whether a task has one set or several.
"""

from __future__ import annotations

import json
from pathlib import Path


class BenchmarkError(RuntimeError):
    """Missing or malformed benchmark data; the message says how to fix it."""


class Benchmark:
    def __init__(
        self,
        root: str | Path,
        order: list[str] | None = None,
        unseen: list[str] | None = None,
        source: str = "real",
    ):
        self.root = Path(root)
        path = self.root / "bench.json"
        if not path.exists():
            raise BenchmarkError(
                f"no bench.json under {self.root}; generate the synthetic twin with "
                "`python -m mcl.data.synthetic.synth` or convert real data first"
            )
        self.spec = json.loads(path.read_text())
        self.name = self.spec["name"]
        self.source = source
        by_name = {t["name"]: t for t in self.spec["tasks"] + self.spec.get("unseen", [])}
        self._by_name = by_name
        order = order or [t["name"] for t in self.spec["tasks"]]
        unseen = unseen if unseen is not None else [t["name"] for t in self.spec.get("unseen", [])]
        missing = [n for n in order + unseen if n not in by_name]
        if missing:
            raise BenchmarkError(
                f"tasks {missing} are not in {path} (it has {sorted(by_name)}); "
                "fix bench.tasks/bench.unseen or regenerate the data"
            )
        self.tasks = [by_name[n] for n in order]
        self.unseen = [by_name[n] for n in unseen]
        for spec in self.tasks + self.unseen:
            for col in eval_columns(spec):
                if col["name"] != spec["name"]:
                    by_name[col["name"]] = set_spec(spec, col["set"])

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.tasks]

    @property
    def unseen_names(self) -> list[str]:
        return [t["name"] for t in self.unseen]

    def task(self, name: str) -> dict:
        """A task's entry, or an eval set's (``<task>/<set>``: the task's entry with the set's
        scorer and generation settings and its shards as the ``test`` split)."""
        return self._by_name[name]

    @property
    def columns(self) -> list[dict]:
        """The accuracy matrix's columns: per trained task, one per eval set."""
        return [c for t in self.tasks for c in eval_columns(t)]

    @property
    def unseen_columns(self) -> list[dict]:
        """The unseen matrix's columns: per unseen task, one per eval set."""
        return [c for t in self.unseen for c in eval_columns(t)]

    def shard_paths(self, spec: dict, split: str) -> list[Path]:
        if split not in spec:
            raise BenchmarkError(
                f"task '{spec['name']}' has no {split} shards under {self.root}; run "
                f"`python -m mcl.data.convert --bench {self.name} --task {spec['name']} "
                f"--split {split} ...` first"
            )
        files = [self.root / f for f in spec[split]["shards"]]
        absent = [str(f) for f in files if not f.exists()]
        if absent:
            raise BenchmarkError(
                f"{len(absent)} shard(s) of task '{spec['name']}' ({split}) are missing, "
                f"e.g. {absent[0]}; regenerate or re-convert the benchmark"
            )
        return files


def eval_columns(spec: dict) -> list[dict]:
    """A task's matrix columns, ``{"name", "task", "set"}`` each: its ``test`` split alone
    (named after the task) when its entry declares no ``eval_sets``, else one per set."""
    task = spec["name"]
    sets = spec.get("eval_sets") or {}
    if not sets:
        return [{"name": task, "task": task, "set": task}]
    return [{"name": f"{task}/{s}", "task": task, "set": s} for s in sets]


def set_spec(spec: dict, name: str) -> dict:
    """Eval set ``name`` of a task as a task entry of its own (see :meth:`Benchmark.task`)."""
    entry = spec["eval_sets"][name]
    keys = ("scorer", "answer_type", "max_new_tokens")
    out = {k: v for k, v in spec.items() if k not in ("train", "test", "eval_sets")}
    out |= {k: entry[k] for k in keys if entry.get(k) is not None}
    split = {k: entry[k] for k in ("shards", "samples", "sha256") if k in entry}
    return out | {
        "name": f"{spec['name']}/{name}",
        "task": spec["name"],
        "set": name,
        "test": split,
    }


def declared_eval_sets(cfg) -> dict[str, list[dict]]:
    """The eval sets a bench config declares per task (``task_info.<task>.eval_sets``, or
    ``eval_sets.<task>``, each a list of ``{name, scorer, answer_type, max_new_tokens}``): what
    the synthetic twin writes. Tasks without any are left out."""
    out: dict[str, list[dict]] = {}
    info = cfg.get("task_info") or {}
    for task in list(cfg.tasks) + list(cfg.get("unseen") or []):
        sets = (cfg.get("eval_sets") or {}).get(task) or (info.get(task) or {}).get("eval_sets")
        if sets:
            out[task] = [{k: v for k, v in dict(s).items() if v is not None} for s in sets]
    return out


def prepare(cfg, data_dir: str | Path, progress: bool = True) -> Benchmark:
    """The benchmark a config asks for (``bench.source``: auto | real | synthetic).

    ``auto`` uses real shards when ``bench.root`` holds a ``bench.json`` and otherwise the
    synthetic twin, printing one banner that says so; the result records which source ran.
    """
    source = cfg.get("source", "auto")
    if source not in ("auto", "real", "synthetic"):
        raise BenchmarkError(f"bench.source={source!r}; choose auto, real or synthetic")
    root = cfg.get("root")
    has_real = bool(root) and (Path(root).expanduser() / "bench.json").exists()
    if source == "real" or (source == "auto" and has_real):
        if not root:
            raise BenchmarkError(
                f"bench.source=real but bench.root is not set; pass bench.root=/path/to/{cfg.name}"
            )
        return Benchmark(Path(root).expanduser(), cfg.tasks, cfg.get("unseen") or [], "real")
    if source == "auto" and cfg.synthetic.get("twin", "synth") is not None:
        print(
            f"[mcl] bench={cfg.name}: no real data under bench.root={root}; running its "
            "SYNTHETIC twin (results are marked data_source=synthetic). To use real data, "
            "convert it to shards and pass bench.root=<dir with bench.json>."
        )
    from mcl.data.synthetic import synth  # the generator, only when no real data is used

    syn = cfg.synthetic
    twin = syn.get("twin", "synth")
    if twin is None:
        raise BenchmarkError(
            f"bench={cfg.name} has no synthetic twin; convert the real data with "
            f"`python -m mcl.data.convert --bench {cfg.name} ...` and pass bench.root=<dir>"
        )
    kw = dict(
        name=cfg.name,
        tasks=list(cfg.tasks),
        unseen=list(cfg.get("unseen") or []),
        seed=syn.seed,
        train=syn.train,
        test=syn.test,
        shard_size=syn.shard_size,
    )
    extra = {"twin": twin} if twin != "synth" else {}
    sets = declared_eval_sets(cfg)
    if sets:
        extra["eval_sets"] = sets
    if syn.get("instructions"):
        extra["instructions"] = int(syn.instructions)
    key = synth.spec_hash(**kw, **extra)
    out = Path(data_dir).expanduser() / "synthetic" / f"{cfg.name}-{key}"
    synth.generate(out, **kw, progress=progress, **extra)
    return Benchmark(out, list(cfg.tasks), list(cfg.get("unseen") or []), "synthetic")
