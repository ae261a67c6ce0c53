"""A two-job Hydra multirun through ``hydra/launcher=slurm`` (submitit) on a real SLURM cluster,
started on this machine by ``scripts/slurm_local.sh``.

Skipped where SLURM cannot run (no slurm-wlm/munge, not root, no submitit launcher), unless
``MCL_REQUIRE_SLURM=1`` (set by ``.ci/run``, which installs the packages) turns that into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import MICRO

pytestmark = pytest.mark.slow  # a local SLURM cluster

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "slurm_local.sh"


def _missing() -> str | None:
    for tool in ("slurmctld", "slurmd", "munged", "sbatch"):
        if shutil.which(tool) is None:
            return f"{tool} not found (scripts/slurm_local.sh install)"
    if os.geteuid() != 0:
        return "a local slurmd needs root"
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
    except ImportError:
        return "hydra-submitit-launcher is not installed (pip install -e '.[slurm]')"
    return None


@pytest.fixture(scope="module")
def cluster():
    why = _missing()
    if why:
        if os.environ.get("MCL_REQUIRE_SLURM") == "1":
            pytest.fail(f"MCL_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)
    # a short path (the munge socket path has a length limit) and ports of its own, so a cluster
    # the user already runs with the script's defaults is left alone
    d = tempfile.mkdtemp(prefix="mcl-slurm-")
    env = {**os.environ, "MCL_SLURM_DIR": d, "MCL_SLURM_PORT": "16817"}
    out = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    env["SLURM_CONF"] = f"{d}/slurm.conf"
    try:
        yield env
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def test_srun_runs_on_the_local_cluster(cluster):
    out = subprocess.run(["srun", "hostname"], env=cluster, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == subprocess.check_output(["hostname"], text=True).strip()


def test_a_two_job_sweep_through_submitit_slurm(cluster, tmp_path):
    cmd = [
        sys.executable, "-m", "mcl.train", "-m", "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
        "hydra.launcher.timeout_min=15", "hydra.launcher.partition=debug",
        *MICRO, "method=seq_lora,ewc", "progress=false",
        f"paths.log_dir={tmp_path}/logs", f"paths.data_dir={tmp_path}/data",
        f"paths.cache_dir={tmp_path}/cache", f"hydra.sweep.dir={tmp_path}/sweep",
    ]  # fmt: skip
    out = subprocess.run(cmd, env=cluster, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]

    runs = sorted((tmp_path / "sweep").glob("*/results.json"))
    assert [r.parent.name for r in runs] == ["0_synth_seq_lora_s0", "1_synth_ewc_s0"]
    job_ids = set()
    for r in runs:
        res = json.loads(r.read_text())
        assert res["complete"] is True
        assert res["config"]["method"]["name"] in r.parent.name
        n = len(res["tasks"])
        assert len(res["matrix"]) == n + 1 and all(len(row) == n for row in res["matrix"])
        slurm = res["host"]["slurm"]  # it ran inside a SLURM job of the array
        assert slurm["job_partition"] == "debug"
        job_ids.add(slurm["array_job_id"])
        assert slurm["array_task_id"] in {"0", "1"}
    assert len(job_ids) == 1  # one array for the sweep
    # submitit kept each job's log where the sweep is
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))) == 2
