"""Performance of mcl against the physical floor on this machine: ratios measured in one process.

    python benchmarks/perf.py                    # everything (about 35 min on 2 CPU cores)
    python benchmarks/perf.py --parts overhead,data,eval --repeats 5
    python benchmarks/perf.py --quick            # small budgets: checks the script, not the machine

Writes ``benchmarks/results.md`` (machine, date, medians over repeats, every ratio against its
target, and a verdict per target). Parts:

  overhead  seq_lora's training step in mcl (Lightning + method hooks, own data stream, and the
            same in-memory batches) vs a hand-written torch + peft loop, same model/batch/optimizer
  methods   every method's step vs seq_lora's; its task-boundary work as a share of task time
  data      shards -> collated batches per second (0 and 2 workers) vs the model's consumption
  eval      batched greedy generation vs a per-sample ``generate`` loop
  memory    peak RSS of the default run (``python -m mcl.train``), in a subprocess
  growth    expanding methods: step and inference time per sample after 2, 5 and 9 tasks

This file is the command line; the timing harness is ``perf_harness.py``, the parts
``perf_parts.py``, and the rendering of results.md (``--render``) ``perf_report.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

from perf_harness import EXPANDING, METHODS, ROOT
from perf_parts import part_data, part_eval, part_growth, part_memory, part_methods, part_overhead
from perf_report import render


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="overhead,methods,data,eval,memory,growth")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=40, help="steps per overhead measurement")
    p.add_argument("--method-steps", type=int, default=250, help="the default train.steps")
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--growth-steps", type=int, default=5)
    p.add_argument("--growth-methods", default=",".join(EXPANDING))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results.md"))
    p.add_argument("--quick", action="store_true", help="tiny budgets: a check of the script")
    p.add_argument("--render", metavar="JSON", help="only re-render a saved results .json")
    args = p.parse_args()
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        for k, v in saved.pop("args").items():
            if k not in ("render", "out"):
                setattr(args, k, v)
        for g in saved.get("growth", {}).values():  # JSON keys are strings
            g["points"] = {int(k): v for k, v in g["points"].items()}
        Path(args.out).write_text(render(saved, args) + "\n")
        return 0
    if args.quick:
        args.repeats, args.steps, args.method_steps, args.growth_steps = 1, 8, 6, 1
    parts = args.parts.split(",")
    from mcl.train import quiet_libraries

    quiet_libraries()
    r: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "overhead" in parts:
            r["overhead"] = part_overhead(tmp, args.steps, args.repeats)
            print("[perf] overhead", r["overhead"], flush=True)
        if "eval" in parts:
            r["eval"] = part_eval(tmp, 64 if not args.quick else 16, args.repeats)
            print("[perf] eval", r["eval"], flush=True)
        if "data" in parts:
            step = r.get("overhead", {}).get("mcl_batches")
            r["data"] = part_data(tmp, 20 if not args.quick else 4, step)
            print("[perf] data", r["data"], flush=True)
        if "methods" in parts:
            r["methods"] = part_methods(tmp, args.methods.split(","), args.method_steps)
        if "growth" in parts:
            points = [2, 5, 9] if not args.quick else [1, 2]
            r["growth"] = part_growth(
                tmp, args.growth_methods.split(","), args.growth_steps, points
            )
        if "memory" in parts:
            r["memory"] = part_memory(tmp, args.quick)
            print("[perf] memory", r["memory"], flush=True)
    r["measured"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    r["command"] = " ".join(["python benchmarks/perf.py", *sys.argv[1:]])
    text = render(r, args)
    Path(args.out).write_text(text + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps({"args": vars(args), **r}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
