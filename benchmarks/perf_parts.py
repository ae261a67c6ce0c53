"""The measurements of benchmarks/perf.py, one function per part (overhead, methods, data, eval,
memory, growth); each returns a dict of numbers that perf_report renders."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from perf_harness import ROOT, StepTimer, build, fit_steps, median


def part_overhead(tmp: Path, steps: int, repeats: int) -> dict:
    runner, cfg = build(tmp / "overhead", ["method=seq_lora"])
    runner.dm.set_task(0)
    runner.method.on_task_start(0, runner.dm)
    batches = []
    for b in runner.dm.train_dataloader():
        batches.append(b)
        if len(batches) == steps:
            break
    from hydra.utils import instantiate
    from peft import LoraConfig, inject_adapter_in_model

    m = cfg.method
    raw = instantiate(cfg.model)
    raw.model.requires_grad_(False)
    lcfg = LoraConfig(r=m.r, lora_alpha=m.alpha, target_modules=raw.lm_targets(list(m.targets)))
    inject_adapter_in_model(lcfg, raw.model)
    # the same starting weights as mcl's adapters
    own = {k.split("mllm.model.", 1)[1]: v for k, v in runner.method.state_dict().items()}
    raw.model.load_state_dict({k: v for k, v in own.items() if "lora_" in k}, strict=False)
    params = [p for n, p in raw.model.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=m.lr, weight_decay=runner.method.weight_decay)
    raw.model.train()
    keys = ("input_ids", "attention_mask", "labels", "pixel_values")

    def raw_loop() -> list[float]:
        times = []
        for i, b in enumerate(batches):
            t0 = time.perf_counter()
            loss = raw.model(**{k: b[k] for k in keys}).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= 3:
                times.append(time.perf_counter() - t0)
        return times

    # interleaved, order alternating, and each ratio taken within its repeat: this machine's
    # speed drifts by tens of percent between minutes, so only paired numbers compare
    res = {"raw": [], "mcl_stream": [], "mcl_batches": []}
    runs = {
        "raw": raw_loop,
        "mcl_batches": lambda: fit_steps(runner, 0, steps, batches),
        "mcl_stream": lambda: fit_steps(runner, 0, steps),
    }
    for i in range(repeats):
        for k in list(runs) if i % 2 == 0 else list(runs)[::-1]:
            res[k].append(median(runs[k]()))
    out = {k: median(v) for k, v in res.items()}
    out["batch_size"] = cfg.train.batch_size
    for k in ("stream", "batches"):
        out[f"ratio_{k}"] = median([m / r for m, r in zip(res[f"mcl_{k}"], res["raw"])])
    out["repeats"] = repeats
    return out


def part_methods(tmp: Path, methods: list[str], steps: int) -> dict:
    """Two tasks per method: step time (median over task 2's steps) and the boundary work
    (on_task_start + on_task_end, both tasks) as a share of the training time."""
    out = {}
    for name in methods:
        runner, _ = build(tmp / f"m_{name}", [f"method={name}", f"train.steps={steps}"])
        method, spent = runner.method, {"boundary": 0.0}

        def timed(fn, spent=spent):
            def wrapper(*a, **kw):
                t0 = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    spent["boundary"] += time.perf_counter() - t0

            return wrapper

        method.on_task_start, method.on_task_end = (
            timed(method.on_task_start),
            timed(method.on_task_end),
        )
        timer = StepTimer()
        own = method.callbacks
        method.callbacks = lambda own=own, timer=timer: [*own(), timer]
        t0 = time.perf_counter()
        for t in range(2):
            timer.marks = []
            runner.train_task(t)
        total = time.perf_counter() - t0
        train = total - spent["boundary"]
        out[name] = {
            "step_s": median(timer.steps),
            "boundary_s": spent["boundary"],
            "train_s": train,
            "boundary_share": spent["boundary"] / train if train > 0 else float("nan"),
        }
        print(f"[perf] {name}: {out[name]}", flush=True)
    base = out.get("seq_lora", {}).get("step_s")
    for r in out.values():
        r["step_ratio"] = r["step_s"] / base if base else float("nan")
    return out


def part_data(tmp: Path, n_batches: int, step_s: float | None) -> dict:
    runner, cfg = build(tmp / "data", [])
    dm = runner.dm
    dm.set_task(0)
    out = {"batch_size": cfg.train.batch_size}
    for workers in (0, 2):
        dm.num_workers = workers
        loader = dm.train_dataloader()
        it, n, t0 = iter(loader), 0, None
        for i, b in enumerate(it):
            if i == 2:  # worker start-up is a one-off per task
                t0 = time.perf_counter()
            elif i > 2:
                n += len(b["input_ids"])
            if i == n_batches + 2:
                break
        out[f"samples_per_s_{workers}w"] = n / (time.perf_counter() - t0)
        del it, loader
    dm.num_workers = cfg.train.num_workers
    # where one sample's time goes (one process): tar members -> samples, decode, collate
    import webdataset as wds

    from mcl.data.datamodule import _decode_or_mark

    urls = dm.train_urls(0)
    raw = list(wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()))
    t0 = time.perf_counter()
    raw = list(wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()))
    out["read_ms"] = 1e3 * (time.perf_counter() - t0) / len(raw)
    t0 = time.perf_counter()
    decoded = [_decode_or_mark(r) for r in raw]
    out["decode_ms"] = 1e3 * (time.perf_counter() - t0) / len(raw)
    bs = cfg.train.batch_size
    t0 = time.perf_counter()
    for i in range(0, len(decoded) - bs + 1, bs):
        dm.collator.train_batch(decoded[i : i + bs])
    out["collate_ms"] = 1e3 * (time.perf_counter() - t0) / (len(decoded) // bs * bs)
    if step_s:
        out["consumption_per_s"] = cfg.train.batch_size / step_s
        out["ratio_0w"] = out["samples_per_s_0w"] / out["consumption_per_s"]
        out["ratio_2w"] = out["samples_per_s_2w"] / out["consumption_per_s"]
    return out


def part_eval(tmp: Path, n: int, repeats: int) -> dict:
    runner, cfg = build(tmp / "eval", [])
    method, dm = runner.method, runner.dm
    method.eval()
    name = runner.bench.task_names[0]
    samples = dm.test_samples(name)[:n]
    max_new = runner.bench.task(name).get("max_new_tokens", 8)
    collate = runner.method.mllm.collator.prompt_batch
    batched, single = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(samples), cfg.eval.batch_size):
            method.generate(collate(samples[i : i + cfg.eval.batch_size]), max_new_tokens=max_new)
        batched.append(len(samples) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for s in samples:
            method.generate(collate([s]), max_new_tokens=max_new)
        single.append(len(samples) / (time.perf_counter() - t0))
    out = {"samples": len(samples), "eval_batch_size": cfg.eval.batch_size}
    out["batched_per_s"], out["single_per_s"] = median(batched), median(single)
    out["ratio"] = out["batched_per_s"] / out["single_per_s"]
    return out


def part_memory(tmp: Path, quick: bool) -> dict:
    cmd = [sys.executable, "-m", "mcl.train", "progress=false", f"hydra.run.dir={tmp}/mem"]
    if quick:
        cmd.append("experiment=smoke")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return {"command": " ".join(["python -m mcl.train", *cmd[3:-1]]), "peak_rss_mib": peak / 1024,
            "earlier_child_peak_mib": before / 1024, "wall_s": wall}  # fmt: skip


def part_growth(tmp: Path, methods: list[str], steps: int, points: list[int]) -> dict:
    """Grow each expanding method task by task (``steps`` steps each, no evaluation); after
    ``points`` tasks, time a training step and greedy inference per sample on task 0's test set."""
    out = {}
    for name in methods:
        bench = ["bench=mcl"] if name == "pathweave" else ["bench=clmm"]
        runner, cfg = build(tmp / f"g_{name}", [*bench, f"method={name}", f"train.steps={steps}"])
        T = len(runner.bench.tasks)
        rows = {}
        done = 0
        for k in [p for p in points if p <= T] or [T]:
            while done < k:
                runner.train_task(done)
                done += 1
            # a step on the latest task, and inference on the first task's test samples
            step = median(fit_steps(runner, done - 1, 12))
            runner.method.eval()
            samples = runner.dm.test_samples(runner.bench.task_names[0])[:32]
            collate = runner.method.mllm.collator.prompt_batch
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                runner.method.generate(collate(samples), max_new_tokens=8)
                times.append((time.perf_counter() - t0) / len(samples))
            rows[k] = {"step_s": step, "infer_s_per_sample": median(times)}
            print(f"[perf] growth {name} after {k} tasks: {rows[k]}", flush=True)
        first = rows[min(rows)]
        for r in rows.values():
            r["infer_ratio"] = r["infer_s_per_sample"] / first["infer_s_per_sample"]
            r["step_ratio"] = r["step_s"] / first["step_s"]
        out[name] = {"bench": bench[0].split("=")[1], "tasks": T, "points": rows}
    return out
