"""A benchmark on disk: ``bench.json`` + shards, and how the config finds or makes one.

``bench.json`` holds the name, the tasks in order and the unseen tasks; per task its modality,
answer type, scorer, generation settings, chance level and, per split, the shard files and the
sample count. ``bench.source`` picks real shards (``bench.root``) or the synthetic twin.
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

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.tasks]

    @property
    def unseen_names(self) -> list[str]:
        return [t["name"] for t in self.unseen]

    def task(self, name: str) -> dict:
        return self._by_name[name]

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
    if syn.get("instructions"):
        extra["instructions"] = int(syn.instructions)
    key = synth.spec_hash(**kw, **extra)
    out = Path(data_dir).expanduser() / "synthetic" / f"{cfg.name}-{key}"
    synth.generate(out, **kw, progress=progress, **extra)
    return Benchmark(out, list(cfg.tasks), list(cfg.get("unseen") or []), "synthetic")
