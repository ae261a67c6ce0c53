"""GPU smoke check: every method through the whole loop on the micro model, on one GPU.

    python benchmarks/gpu_smoke.py [--precision bf16-mixed] [--methods seq_lora,ewc,...]

For a lent GPU machine: finds device-placement and mixed-precision bugs that the CPU tests can't
(a tensor left on the CPU, a dtype mismatch under autocast). Prints one line per method.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import MICRO, compose_cfg  # noqa: E402

ALL = (
    "zero_shot,seq_lora,seq_ft,replay,ewc,mas,lwf,moelora,olora,joint,eproj,tir_ewc,smolora,"
    "dmole,fwd_prompt,pathweave"
)
# methods that need another benchmark than MICRO's image tasks (x-modal inputs: bench=mcl)
BENCH = {
    "pathweave": [
        "bench=mcl", "bench.tasks=[image,video,audio,depth,3d]", "bench.synthetic.train=64",
        "bench.synthetic.test=16",
        "bench.synthetic.shard_size=64", "bench.unseen=[]",
    ],
}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--methods", default=ALL)
    a = p.parse_args()
    from mcl.train import run

    failed = 0
    tmp = Path(tempfile.mkdtemp())
    for m in a.methods.split(","):
        over = [*MICRO, *BENCH.get(m, []), f"method={m}", "hardware.accelerator=gpu"]
        over += [f"hardware.precision={a.precision}"]
        over += [f"paths.cache_dir={tmp}/cache", f"paths.data_dir={tmp}/data"]
        t0 = time.time()
        try:
            cfg = compose_cfg(tmp / m, over)
            res = run(cfg, Path(cfg.paths.output_dir))
            print(f"OK   {m:10s} {time.time() - t0:6.1f}s last={res['metrics']['last']:.1f}")
        except Exception as e:  # report every method, not just the first failure
            failed += 1
            where = traceback.extract_tb(e.__traceback__)[-1]
            at = f"{where.filename}:{where.lineno}"
            print(f"FAIL {m:10s} {type(e).__name__}: {str(e)[:300]} @ {at}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
