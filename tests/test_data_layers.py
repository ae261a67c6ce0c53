"""The data layer's layering: real data stands on schema, canvas, render and shards alone.

The synthetic world (``mcl.data.synthetic``) is needed only to make a twin when no real data
exists; a run on converted shards must not load it. Checked in a fresh interpreter, since this
test session has long imported the generators through other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# the real-data path: decoding and rendering, the datamodule, the models and methods that read
# sample fields (modality, payload, instruction)
REAL_PATH = [
    "mcl.data.schema",
    "mcl.data.canvas",
    "mcl.data.render",
    "mcl.data.shards",
    "mcl.data.convert",
    "mcl.data.bench",
    "mcl.data.datamodule",
    "mcl.models.xmodal",
    "mcl.models.mllm",
    "mcl.adapters.ana",
    "mcl.methods.smolora",
]

REAL_DATA = [m for m in REAL_PATH if m.startswith("mcl.data.")]

# writes one shard of every modality from hand-made payloads, decodes it back (rendering each
# view) and reports which synthetic modules got loaded on the way
_PROBE = """
import importlib, json, sys, tempfile
import numpy as np
from PIL import Image

for name in {modules!r}:
    importlib.import_module(name)
from mcl.data.schema import MODALITIES, RGBD
from mcl.data.shards import make_record, read_shards, write_shards

t = np.arange(12000) / 16000
payloads = {{
    "image": Image.new("RGB", (48, 48), (255, 255, 255)),
    "video": np.full((4, 48, 48, 3), 255, np.uint8),
    "audio": (0.4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32),
    "depth": RGBD(None, np.full((48, 48), 160, np.uint8)),
    "points": np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32),
}}
assert set(payloads) == set(MODALITIES)
with tempfile.TemporaryDirectory() as d:
    recs = [make_record(f"k{{i}}", m, "q?", "a", ["a"], p, "word") for i, (m, p) in
            enumerate(payloads.items())]
    files = write_shards(d + "/s-%06d.tar", recs, 8)
    views = [(s["modality"], s["image"].size) for s in read_shards([d + "/" + f for f in files])]
loaded = sorted(m for m in sys.modules if m.startswith("mcl.data."))
print(json.dumps({{"views": views, "loaded": loaded}}))
"""


def test_real_path_never_loads_the_synthetic_world():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(modules=REAL_PATH)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [m for m, _ in out["views"]] == ["image", "video", "audio", "depth", "points"]
    assert all(size == [48, 48] for _, size in out["views"])
    synthetic = [m for m in out["loaded"] if m.split(".")[:3] == ["mcl", "data", "synthetic"]]
    assert synthetic == [], f"the real-data path loaded {synthetic}"
    # a new data module on the real path joins this list deliberately, not by accident
    assert set(out["loaded"]) <= set(REAL_DATA), sorted(set(out["loaded"]) - set(REAL_DATA))
