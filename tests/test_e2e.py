"""The whole loop on the micro model: outputs, schedule of evaluated cells, determinism, resume."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mcl.train import run
from tests.conftest import MICRO, compose_cfg

pytestmark = pytest.mark.slow  # whole runs on the micro model, CLI sweeps included

THREE = ["bench.tasks=[color,position,count]"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    cfg = compose_cfg(tmp, MICRO + THREE)
    results = run(cfg, Path(cfg.paths.output_dir))
    return tmp, cfg, results


def test_results_files_and_schedule(first_run):
    tmp, _, results = first_run
    out = tmp / "run"
    r = json.loads((out / "results.json").read_text())
    assert r == json.loads(json.dumps(results))
    assert r["tasks"] == ["color", "position", "count"] and r["unseen_tasks"] == ["compose"]
    assert r["data_source"] == "synthetic" and r["complete"] is True
    hparams = next((out / "logs").rglob("hparams.yaml")).read_text()
    assert "data_source: synthetic" in hparams  # the logger records the source too
    assert r["scorers"]["color"] == {"scorer": "vqa", "mode": "strict"}
    assert r["skipped"] == {}
    # answer-format compliance for every evaluated task, in the report's metrics too
    assert set(r["format_scores"][3]) == {"color", "position", "count", "compose"}
    assert all(0 <= v <= 100 for row in r["format_scores"] for v in row.values())
    assert r["metrics"]["format_compliance"] is not None

    m = r["matrix"]
    assert len(m) == 4 and all(len(row) == 3 for row in m)
    # row 0 and row T are full; after task 1: tasks 1-2 (forward transfer), task 3 not evaluated
    assert all(v is not None for v in m[0] + m[3])
    assert m[1][2] is None and m[1][0] is not None and m[1][1] is not None
    assert all(v is not None for v in m[2])
    assert all(0 <= v <= 100 for row in m for v in row if v is not None)
    assert len(r["unseen_matrix"]) == 4 and all(row[0] is not None for row in r["unseen_matrix"])
    assert set(r["metrics"]) >= {"last", "maa", "bwt", "forgetting", "fwt", "plasticity"}
    # parameters per task: LoRA only, a small share of the model
    assert len(r["params"]) == 3
    for p in r["params"]:
        assert 0 < p["trainable"] < p["total"] / 5
    assert len(r["timings"]["train_s"]) == 3 and r["timings"]["total_s"] > 0
    # what made these numbers: the checkout's commit, the packages, the machine
    assert r["code_version"].startswith("git ") and r["versions"]["torch"] == torch.__version__
    assert r["hardware"]["cores"] >= 1 and r["hardware"]["cpu"]
    # matrix.csv mirrors the matrix, missing cells empty
    rows = list(csv.reader((out / "matrix.csv").open()))
    assert rows[0][1:4] == ["color", "position", "count"]
    assert rows[2][3] == "" and float(rows[4][1]) == pytest.approx(m[3][0], abs=1e-6)
    assert (out / "matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "logs").exists()  # the CSV logger wrote its metrics
    preds = (out / "predictions" / "row3" / "count.jsonl").read_text().splitlines()
    assert len(preds) == 24 and "pred" in json.loads(preds[0])


def test_checkpoints_hold_only_adapters(first_run):
    tmp, _, results = first_run
    state = load_file(str(tmp / "run" / "checkpoints" / "task02" / "adapters.safetensors"))
    assert state and all("lora_" in k for k in state)
    assert sum(v.numel() for v in state.values()) == results["params"][-1]["trainable"]


def test_same_seed_same_predictions_other_seed_differs(first_run, tmp_path, micro_overrides):
    tmp, _, _ = first_run
    again = compose_cfg(tmp_path / "a", micro_overrides + THREE)
    run(again, Path(again.paths.output_dir))
    ref = tmp / "run"
    new = tmp_path / "a" / "run"
    a = load_file(str(ref / "checkpoints" / "task02" / "adapters.safetensors"))
    b = load_file(str(new / "checkpoints" / "task02" / "adapters.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)
    assert (
        json.loads((ref / "results.json").read_text())["matrix"]
        == json.loads((new / "results.json").read_text())["matrix"]
    )
    for row in ("row0", "row3"):
        for f in (ref / "predictions" / row).iterdir():
            assert f.read_text() == (new / "predictions" / row / f.name).read_text()
    other = compose_cfg(tmp_path / "b", micro_overrides + THREE + ["seed=1"])
    run(other, Path(other.paths.output_dir))
    c = load_file(str(tmp_path / "b" / "run" / "checkpoints" / "task02" / "adapters.safetensors"))
    assert any((a[k] != c[k]).any() for k in a)


def test_resume_after_a_crash_gives_the_same_matrix(first_run, tmp_path, micro_overrides):
    tmp, _, results = first_run
    crashed = tmp_path / "run"
    shutil.copytree(tmp / "run", crashed)
    # simulate a crash during task 3: its checkpoint and the final report never got written
    shutil.rmtree(crashed / "checkpoints" / "task02")
    state = json.loads((crashed / "checkpoints" / "task01" / "state.json").read_text())
    partial = json.loads((crashed / "results.json").read_text())
    partial.update(complete=False, matrix=state["matrix"])
    (crashed / "results.json").write_text(json.dumps(partial))
    cfg = compose_cfg(tmp_path, micro_overrides + THREE + ["resume=true"])
    resumed = run(cfg, Path(cfg.paths.output_dir))
    assert resumed["matrix"] == json.loads(json.dumps(results["matrix"]))
    assert len(resumed["params"]) == 3 and len(resumed["timings"]["train_s"]) == 3


def test_wandb_logger_runs_offline_without_an_api_key(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials either
    cfg = compose_cfg(tmp_path, [*MICRO, "logger=wandb", "bench.tasks=[color]", "bench.unseen=[]"])
    import wandb

    summaries = []
    finish = wandb.finish

    def read_summary_then_finish(*a, **kw):  # the run's summary, as it is synced
        if wandb.run is not None:
            summaries.append(dict(wandb.run.summary._as_dict()))
            names.append((wandb.run.group, wandb.run.job_type, set(wandb.run.tags)))
            configs.append(dict(wandb.run.config))
        return finish(*a, **kw)

    names, configs = [], []
    monkeypatch.setattr(wandb, "finish", read_summary_then_finish)
    import mcl.train

    assert mcl.train._sweep_name() is None  # not a Hydra multirun
    monkeypatch.setattr(mcl.train, "_sweep_name", lambda: "2026-11-27_20-00-00")  # as in one
    run(cfg, Path(cfg.paths.output_dir))
    offline = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    # what a comparison dashboard reads: final metrics and the matrix in the run's summary
    (summary,) = summaries
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert summary["final/last"] == pytest.approx(results["metrics"]["last"])
    assert summary["matrix"]["_type"] == "table-file" and summary["matrix"]["nrows"] == 2
    assert summary["matrix_heatmap"]["_type"] == "image-file"
    # the dashboard's grouping: bench + sweep, method as job type, data source etc. as tags
    ((group, job_type, tags),) = names
    assert group == "synth/2026-11-27_20-00-00" and job_type == "seq_lora"
    assert {"seq_lora", "synth", "micro", "cpu", "data:synthetic"} <= tags
    assert configs[0]["config"]["train"]["steps"] == cfg.train.steps  # the resolved config


def test_cli_multirun_sweep_writes_one_result_per_job(tmp_path):
    import subprocess
    import sys

    from mcl.config import CONF_DIR

    cmd = [sys.executable, "-m", "mcl.train", "-m", "seed=0,1", "train.steps=2",
           f"hydra.sweep.dir={tmp_path}/sweep", f"paths.log_dir={tmp_path}/logs",
           f"paths.cache_dir={tmp_path}/cache", "progress=false",
           *[o for o in MICRO if not o.startswith("train.steps")]]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=CONF_DIR.parent, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    results = sorted((tmp_path / "sweep").glob("*/results.json"))
    assert [r.parent.name for r in results] == ["0_synth_seq_lora_s0", "1_synth_seq_lora_s1"]
    seeds = [json.loads(r.read_text())["seed"] for r in results]
    assert seeds == [0, 1]


def test_unreadable_training_data_stops_the_run_keeping_finished_tasks(tmp_path):
    from mcl.data.bench import prepare
    from mcl.data.datamodule import DataError
    from tests.test_data import corrupt_copy

    cfg = compose_cfg(tmp_path, MICRO)
    clean = prepare(cfg.bench, cfg.paths.data_dir, progress=False).root
    bad_root = tmp_path / "bad"
    shard = corrupt_copy(clean, bad_root, task="position", split="train", n_bad=60)
    cfg = compose_cfg(tmp_path, [*MICRO, "bench.source=real", f"bench.root={bad_root}"])
    with pytest.raises(DataError, match=rf"position.*{shard.name}"):
        run(cfg, Path(cfg.paths.output_dir))
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert r["complete"] is False and r["data_source"] == "real"
    assert r["matrix"][1][0] is not None  # task 1 finished before the bad data was met
    assert (tmp_path / "run" / "checkpoints" / "task00" / "adapters.safetensors").exists()
    # tolerated below the threshold: the run completes and results.json has the count
    cfg = compose_cfg(
        tmp_path / "ok",
        [*MICRO, "bench.source=real", f"bench.root={bad_root}", "data.max_bad_share=0.9"],
    )
    res = run(cfg, Path(cfg.paths.output_dir))
    assert res["complete"] and res["skipped"]["position"]["train"] > 0
    assert shard.name in res["skipped"]["position"]["examples"][0]


def test_joint_trains_on_a_growing_mixture(tmp_path):
    cfg = compose_cfg(tmp_path, [*MICRO, "method=joint"])
    res = run(cfg, Path(cfg.paths.output_dir))
    assert res["method"] == "joint" and res["complete"]
    assert res["reference"] is True  # the upper bound: a report never marks it best
    from mcl.methods.joint import Joint

    class B:
        tasks = [{"train": {"samples": 10}}, {"train": {"samples": 30}}, {"train": {"samples": 5}}]

    assert Joint().train_mixture(1, B) == {0: 1.0, 1: 1.0}  # whole tasks 1..t
    assert Joint(cumulative=False).train_mixture(0, B) == {0: 1.0, 1: 1.0, 2: 1.0}


def test_console_summary_names_the_data_source(first_run):
    from mcl.runner import ContinualRunner

    _, _, results = first_run
    text = ContinualRunner.summary(None, results)
    assert text.startswith("seq_lora on synth (SYNTHETIC twin), seed 0")
    assert "Last (MFN)" in text and "Answer format ok %" in text


BASELINES = ["zero_shot", "seq_ft", "replay", "ewc", "mas", "lwf", "moelora", "olora"]


@pytest.mark.parametrize("method", BASELINES)
def test_every_baseline_runs_end_to_end(tmp_path, method):
    cfg = compose_cfg(tmp_path, [*MICRO, f"method={method}", "++method.lr=1e-2"])
    res = run(cfg, Path(cfg.paths.output_dir))
    assert res["complete"] and res["method"] == method
    assert res["reference"] is (method == "zero_shot")  # the lower bound
    trainable = [p["trainable"] for p in res["params"]]
    if method == "zero_shot":  # nothing trains: every row is the zero-shot row
        assert trainable == [0, 0]
        assert res["matrix"][2] == res["matrix"][0] and res["timings"]["train_s"][0] < 1
    else:
        assert all(n > 0 for n in trainable)
        a = load_file(str(tmp_path / "run" / "checkpoints" / "task00" / "adapters.safetensors"))
        b = load_file(str(tmp_path / "run" / "checkpoints" / "task01" / "adapters.safetensors"))
        changed = [k for k in a if k in b and not (a[k] == b[k]).all()]
        if method == "olora":  # task 0's adapter frozen; a new one, of the same size, trained
            assert not changed and any(".task1." in k and b[k].any() for k in b)
            assert res["params"][1]["total"] > res["params"][0]["total"]
            assert trainable[0] == trainable[1]
        else:
            assert changed  # the second task trained the same tensors


@pytest.mark.parametrize("method", ["olora", "ewc", "dmole", "fwd_prompt"])
def test_methods_with_task_state_resume_to_the_same_matrix(tmp_path, method):
    """O-LoRA grows an adapter per task, EWC keeps importance, D-MoLE grows experts where its
    allocator chose and an autoencoder per task: all must survive a crash."""
    over = [*MICRO, f"method={method}", "++method.lr=1e-2"]
    cfg = compose_cfg(tmp_path / "a", over)
    full = run(cfg, Path(cfg.paths.output_dir))
    crashed = tmp_path / "b" / "run"
    shutil.copytree(tmp_path / "a" / "run", crashed)
    shutil.rmtree(crashed / "checkpoints" / "task01")  # died during the second task
    partial = json.loads((crashed / "results.json").read_text())
    partial.update(complete=False)
    (crashed / "results.json").write_text(json.dumps(partial))
    cfg = compose_cfg(tmp_path / "b", [*over, "resume=true"])
    resumed = run(cfg, Path(cfg.paths.output_dir))
    assert resumed["matrix"] == json.loads(json.dumps(full["matrix"]))


def test_extra_scores_per_task_and_rescoring_a_finished_run(first_run, tmp_path):
    from mcl.eval.rescore import main as rescore_main
    from mcl.eval.rescore import rescore_run
    from mcl.report.cli import main as report_main

    tmp, _, results = first_run
    out = tmp_path / "run"  # a copy: this test edits the run's config
    shutil.copytree(tmp / "run", out)
    r = json.loads((out / "results.json").read_text())
    # the synth bench declares no extra score: none is computed or reported
    assert len(r["extra_scores"]) == 4 and not any(any(row.values()) for row in r["extra_scores"])
    assert "MIF" not in r["metrics"] and r["reference"] is False
    assert r["scorer_mode"] == "strict"
    # re-scoring under the same convention reproduces the run's numbers exactly
    same = rescore_run(out, "strict")
    assert same["matrix"] == r["matrix"] and same["unseen_matrix"] == r["unseen_matrix"]
    assert same["if_scores"] == r["if_scores"] and "MIF" not in same["metrics"]
    # a benchmark that declares `mif` gets it per task from the saved answers
    r["config"]["bench"]["extra_scores"] = ["mif"]
    (out / "results.json").write_text(json.dumps(r))
    before = (out / "results.json").read_bytes()
    assert rescore_main([str(out), "--scorer-mode", "lower_exact"]) == 0
    low = json.loads((out / "results.lower_exact.json").read_text())
    assert set(low["extra_scores"][3]) == {"color", "position", "count", "compose"}
    assert all(set(v) == {"mif"} for v in low["extra_scores"][3].values())
    assert 0 <= low["metrics"]["MIF"] <= 100 and "MIF_unseen" in low["metrics"]
    assert low["scorers"]["color"] == {"scorer": "vqa", "mode": "lower_exact"}
    assert low["rescored_from"] == "results.json" and low["scorer_mode"] == "lower_exact"
    assert (out / "results.json").read_bytes() == before
    for row_low, row in zip(low["matrix"], r["matrix"]):
        # lower-case exact match never scores above VQA soft accuracy's normalised match
        assert all((a is None) == (b is None) for a, b in zip(row_low, row))
    assert report_main([str(out), "--scoring", "lower_exact", "--out", str(tmp_path / "rep")]) == 0
    assert "| MIF |" in (tmp_path / "rep" / "report.md").read_text()
    assert rescore_main([str(out), "--scorer-mode", "best_ref_cider_typo"]) == 2


def test_bad_scorer_mode_fails_before_the_model_is_built(tmp_path, micro_overrides):
    from mcl.config import ConfigError
    from mcl.train import build

    cfg = compose_cfg(tmp_path, micro_overrides + ["bench.scorer_mode={color: best_ref_cider}"])
    with pytest.raises(
        ConfigError,
        match="bench.scorer_mode: scorer mode 'best_ref_cider' does not apply to task color",
    ) as e:
        build(cfg, tmp_path / "run")
    assert "\n" not in str(e.value)


def test_the_seed_draws_the_methods_initialisation(tmp_path, micro_overrides):
    """Adapters (and SMoLoRA's frozen routers) are drawn from the run's seed, whatever the model
    loader did to the global RNG: the same seed gives the same draw, from a cold model cache
    (the first build) or a warm one, and another seed another."""
    from mcl.train import build

    def init(seed, sub):
        over = [*micro_overrides, "method=smolora", "method.r=8", "method.experts=4"]
        cfg = compose_cfg(tmp_path, [*over, "method.n_vu=2", f"seed={seed}"])
        method = build(cfg, tmp_path / sub).method
        return {n: p.detach().clone() for n, p in method.named_parameters() if "lora_" in n}

    a, again, other = init(0, "a"), init(0, "b"), init(1, "c")
    drawn = [n for n in a if n.endswith(("lora_A", "_gate.weight"))]
    assert drawn and all(torch.equal(a[n], again[n]) for n in a)
    assert all(not torch.equal(a[n], other[n]) for n in drawn)
