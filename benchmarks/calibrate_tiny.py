"""Calibrate the tiny world: pretrain a base with given settings, then LoRA-train each synth task
alone and report its test score vs chance. Used to size the default base (README numbers).

    python benchmarks/calibrate_tiny.py [--steps 2000] [--lr 1e-3] [--pos-std 1.0] [--tag name]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from peft import LoraConfig, inject_adapter_in_model

from mcl.data.synthetic import tasks as T
from mcl.data.synthetic import world as W
from mcl.eval.scorers import build_scorer
from mcl.models import tiny


def lora_task_score(base, task: str, steps: int, lr: float, seed: int = 0) -> float:
    mllm = copy.deepcopy(base)
    mllm.model.requires_grad_(False)
    cfg = LoraConfig(
        r=8, lora_alpha=16, target_modules=mllm.lm_targets(["q_proj", "k_proj", "v_proj", "o_proj"])
    )
    inject_adapter_in_model(cfg, mllm.model)
    params = [p for n, p in mllm.model.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad = True
    opt = torch.optim.AdamW(params, lr=lr)
    recipe = T.RECIPES[task]
    mllm.model.train()
    for i in range(steps):
        ss = [recipe.sample(W.sample_rng(seed, task, "train", i * 32 + k)) for k in range(32)]
        b = mllm.collator.train_batch([vars(s) for s in ss])
        loss = mllm.model(**b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    mllm.model.eval()
    test = [recipe.sample(W.sample_rng(seed, task, "test", i)) for i in range(128)]
    preds = mllm.generate(
        mllm.collator.prompt_batch([vars(s) for s in test]), recipe.max_new_tokens
    )
    sc = build_scorer(recipe.scorer)
    sc.update(preds, [s.refs for s in test])
    return float(sc.compute())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vlayers", type=int, default=2)
    p.add_argument("--task-steps", type=int, default=250)
    p.add_argument("--task-lr", type=float, default=1e-3)
    p.add_argument("--tasks", nargs="+", default=list(T.RECIPES))
    p.add_argument("--pos-std", type=float, default=1.0)
    p.add_argument("--bucket", type=int, default=1)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    a = p.parse_args()
    text = dict(
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=2 * a.hidden,
    )
    vision = dict(
        hidden_size=a.hidden,
        num_hidden_layers=a.vlayers,
        num_attention_heads=4,
        intermediate_size=2 * a.hidden,
        image_size=48,
        patch_size=16,
    )
    base = tiny.build_tiny(text, vision, seed=a.seed, pos_init_std=a.pos_std)
    t0 = time.time()
    stats = tiny.pretrain(
        base,
        steps=a.steps,
        batch_size=32,
        lr=a.lr,
        warmup=a.warmup,
        seed=a.seed,
        bucket=a.bucket,
        min_lr_ratio=a.min_lr_ratio,
        progress=False,
    )
    out = {"tag": a.tag, "args": vars(a), "pretrain": stats, "pretrain_s": time.time() - t0}
    for task in a.tasks:
        t1 = time.time()
        out[task] = {
            "score": lora_task_score(base, task, a.task_steps, a.task_lr),
            "chance": T.RECIPES[task].chance,
            "s": round(time.time() - t1, 1),
        }
        print(task, out[task], flush=True)
    print("RESULT", json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
