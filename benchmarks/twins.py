"""Every synthetic twin: generation time, and one seq_lora run on the tiny model.

    python benchmarks/twins.py                      # all twins, each task's default budget
    python benchmarks/twins.py --twins cvit --steps 50

For each twin it (1) generates the benchmark into a fresh temporary directory and times it,
(2) runs ``python -m mcl.train bench=<twin> method=seq_lora`` in-process and (3) prints one
Markdown table: per task the diagonal A[t][t] against chance, and the run's Last / BWT.
Results go to ``benchmarks/results/twins.md`` (appended, with the date).
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from mcl.config import CONF_DIR
from mcl.data.synthetic import synth

HERE = Path(__file__).parent


def gen_seconds(bench_cfg) -> float:
    syn = bench_cfg.synthetic
    with tempfile.TemporaryDirectory() as d:
        t0 = time.time()
        synth.generate(
            Path(d) / bench_cfg.name, bench_cfg.name, list(bench_cfg.tasks),
            list(bench_cfg.unseen or []), seed=syn.seed, train=syn.train, test=syn.test,
            shard_size=syn.shard_size, progress=False, twin=syn.twin,
            instructions=syn.get("instructions"),
        )  # fmt: skip
        return time.time() - t0


def compose_cfg(work: Path, overrides: list[str]):
    """The train config with outputs and data under ``work`` (the tiny base stays cached)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(
            config_name="train",
            overrides=[
                f"paths.output_dir={work}/run", f"paths.log_dir={work}/logs",
                f"paths.data_dir={work}/data", "progress=false", *overrides,
            ],
        )  # fmt: skip


def main() -> None:
    from mcl.train import run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--twins", nargs="+", default=["synth", "cvit", "dmole", "mcl", "clmm"])
    p.add_argument("--steps", type=int, default=None, help="per-task steps (default: config)")
    a = p.parse_args()
    lines = [f"\n## {datetime.date.today()} (steps: {a.steps or 'default'})\n"]
    for twin in a.twins:
        work = Path(tempfile.mkdtemp(prefix=f"mcl-{twin}-"))
        over = [f"bench={twin}", "method=seq_lora", "bench.source=synthetic"]
        over += [f"train.steps={a.steps}"] if a.steps else []
        cfg = compose_cfg(work, over)
        gen = gen_seconds(cfg.bench)
        t0 = time.time()
        res = run(cfg, Path(cfg.paths.output_dir))
        wall = time.time() - t0
        # per task, whatever its eval sets: stage_matrix (a run with one set per task has the
        # matrix itself there)
        m, chance = res.get("stage_matrix") or res["matrix"], res["chance"]
        diag = ", ".join(
            f"{t} {m[i + 1][i]:.0f} ({chance[t]:.0f})" for i, t in enumerate(res["tasks"])
        )
        met = res["metrics"]
        lines.append(
            f"| {twin} | {gen:.1f} s | {wall / 60:.1f} min | {diag} | {met['last']:.1f} | "
            f"{met['bwt']:.1f} | {met.get('unseen') or float('nan'):.1f} |"
        )
        print(lines[-1], flush=True)
    header = (
        "| twin | generation | run | A[t][t] (chance) per task | Last | BWT | Unseen |\n"
        "|---|---|---|---|---|---|---|"
    )
    text = lines[0] + header + "\n" + "\n".join(lines[1:]) + "\n"
    print(text)
    out = HERE / "results" / "twins.md"
    out.parent.mkdir(exist_ok=True)
    with out.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
