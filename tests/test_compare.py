"""`python -m mcl.report`: comparing runs from their results.json files (no training here)."""

import csv
import json
import os

import numpy as np
import pytest

from mcl.eval.metrics import continual_metrics
from mcl.report import aggregate, collect, markdown_table
from mcl.report.cli import main
from mcl.report.render import format_stat, human_count

TASKS = ["color", "count", "position"]
UNSEEN = ["compose"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_matrices(seed: int, level: float, n_tasks: int) -> tuple[list, list]:
    """A plausible (T+1) x T matrix whose trained rows scale with `level` (after task i the
    runner evaluates tasks up to i+1) and its (T+1) x 1 unseen matrix."""
    rng = np.random.default_rng(seed)
    zero_shot = [round(float(v), 3) for v in rng.uniform(0, 10, n_tasks)]
    trained = [
        [
            round(level * float(rng.uniform()), 3) if j <= i + 1 else None
            for j in range(1, n_tasks + 1)
        ]
        for i in range(1, n_tasks + 1)
    ]
    unseen = [[round(float(rng.uniform(0, 30)), 3)] for _ in range(n_tasks + 1)]
    return [zero_shot, *trained], unseen


def make_run(
    root,
    method="seq_lora",
    seed=0,
    *,
    bench="synth",
    source="synthetic",
    level=50.0,
    complete=True,
    tasks=TASKS,
    run_dir=None,
    reference=None,
    mif=None,
):
    """Write a results.json like runner.write_report does; returns its run directory."""
    tasks = list(tasks)
    matrix, unseen = fake_matrices(seed, level, len(tasks))
    metrics = continual_metrics(matrix, unseen=unseen)
    metrics |= {"if_score": level / 2 + seed, "format_compliance": None}
    if mif is not None:  # a bench declaring the `mif` extra score
        metrics |= {"MIF": mif, "MIF_unseen": mif / 2}
    results = {
        "bench": bench,
        "data_source": source,
        "method": method,
        "reference": method in ("joint", "zero_shot") if reference is None else reference,
        "seed": seed,
        "complete": complete,
        "tasks": tasks,
        "unseen_tasks": UNSEEN,
        "matrix": matrix,
        "unseen_matrix": unseen,
        "metrics": metrics,
        "params": [
            {"task": t, "trainable": 28672 * i, "total": 10**6} for i, t in enumerate(tasks, 1)
        ],
        "timings": {"train_s": [1.0] * len(tasks), "eval_s": [0.5], "total_s": 100.0 + seed},
        "config": {"seed": seed, "method": {"name": method, "lr": 0.001}},
        "scorers": {},
    }
    run_dir = run_dir or root / bench / method / f"s{seed}" / "2026-11-27_10-00-00"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def load(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table in `text`: (header cells, body rows split into cells)."""
    blocks, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("| "):
            current.append([c.strip() for c in line.strip("|").split("|")])
        elif current:
            blocks.append((current[0], [r for r in current[1:] if r[0] != "---"]))
            current = []
    return blocks


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the comparison tables in `text` (not the per-task BWT tables)."""
    return [row for head, rows in tables(text) if head[1] == "n seeds" for row in rows]


def bwt_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    return [(head, rows) for head, rows in tables(text) if head[1] != "n seeds"]


def test_mean_and_std_over_three_seeds_match_numpy(tmp_path):
    dirs = [make_run(tmp_path, seed=s) for s in range(3)]
    (group,) = aggregate(collect([tmp_path]))
    assert group["method"] == "seq_lora" and group["seeds"] == [0, 1, 2]
    runs = [load(d) for d in dirs]
    for key in ("last", "maa", "bwt", "forgetting", "fwt", "plasticity", "unseen", "if_score"):
        values = [r["metrics"][key] for r in runs]
        assert group["metrics"][key]["mean"] == pytest.approx(np.mean(values))
        assert group["metrics"][key]["std"] == pytest.approx(np.std(values, ddof=1))
    assert group["metrics"]["format_compliance"] == {"mean": None, "std": None, "n": 0}
    cells = np.array([r["matrix"] for r in runs], dtype=float)  # None -> nan
    expected = np.ma.masked_invalid(cells).mean(0).filled(np.nan)  # nan where no seed has one
    got = np.array(group["matrix"], dtype=float)
    np.testing.assert_allclose(got, expected, equal_nan=True)
    assert group["matrix"][1][2] is None  # evaluated in no seed: stays missing, never 0
    last = group["metrics"]["last"]
    assert f"{last['mean']:.1f} ± {last['std']:.1f}" in markdown_table([group])


def test_format_of_cells():
    assert format_stat({"mean": 12.345, "std": None, "n": 1}, 1) == "12.3"
    assert format_stat({"mean": None, "std": None, "n": 0}, 3) == "n/a"
    assert format_stat({"mean": -0.04, "std": 1.26, "n": 2}, 3) == "0.0 ± 1.3 (n=2)"
    assert [human_count(n) for n in (512, 28672, 1_234_567)] == ["512", "28.7k", "1.2M"]


def test_groups_by_method_and_lists_the_runs(tmp_path, capsys):
    for seed in range(2):
        make_run(tmp_path, "seq_lora", seed, level=40)
        make_run(tmp_path, "ewc", seed, level=60)
    make_run(tmp_path, "joint", 0, level=90)
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert [r[0] for r in table_rows(out)] == ["joint", "ewc", "seq_lora"]  # by Last, best first
    assert [r[1] for r in table_rows(out)] == ["1", "2", "2"]
    assert "SYNTHETIC twin" in out
    assert "seq_lora/{s0/2026-11-27_10-00-00, s1/2026-11-27_10-00-00}" in out
    ewc = table_rows(out)[1]
    assert ewc[2].startswith("**") and ewc[-2] == "86.0k"  # best continual method is bold
    assert not table_rows(out)[0][2].startswith("**")  # joint is a bound, never bolded


def test_incomplete_runs_are_skipped_unless_asked(tmp_path, capsys):
    make_run(tmp_path, seed=0)
    crashed = make_run(tmp_path, seed=1, complete=False)
    (group,) = aggregate(collect([tmp_path]))
    assert group["seeds"] == [0]
    err = capsys.readouterr().err
    assert f"skipping unfinished run {crashed}" in err and len(err.splitlines()) == 1
    (group,) = aggregate(collect([tmp_path], include_incomplete=True))
    assert group["seeds"] == [0, 1] and group["n_incomplete"] == 1
    assert "2 (1 unfinished)" in markdown_table([group])


def test_duplicate_seed_keeps_the_newest(tmp_path, capsys):
    old = make_run(tmp_path, seed=0, level=10, run_dir=tmp_path / "a" / "s0")
    new = make_run(tmp_path, seed=0, level=80, run_dir=tmp_path / "b" / "s0")
    os.utime(old / "results.json", (1_000_000, 1_000_000))
    os.utime(new / "results.json", (2_000_000, 2_000_000))
    (group,) = aggregate(collect([tmp_path]))
    assert group["runs"] == [str(new)]
    assert group["metrics"]["last"]["mean"] == load(new)["metrics"]["last"]
    err = capsys.readouterr().err
    assert "appears twice" in err and f"keeping {new}" in err and f"ignoring {old}" in err


def test_mixed_data_sources_are_never_averaged(tmp_path, capsys):
    synthetic = make_run(tmp_path, seed=0, level=90, source="synthetic")
    real = make_run(tmp_path / "cluster", seed=0, level=20, source="real")
    groups = aggregate(collect([tmp_path]))
    by_label = {g["label"]: g for g in groups}
    assert set(by_label) == {"seq_lora [real]", "seq_lora [synthetic]"}
    for label, run_dir in (("seq_lora [real]", real), ("seq_lora [synthetic]", synthetic)):
        assert by_label[label]["n_seeds"] == 1
        assert by_label[label]["metrics"]["last"]["mean"] == load(run_dir)["metrics"]["last"]
    text = markdown_table(groups)  # one table per data source, each saying which it is
    assert "## synth: real data" in text and "## synth: **SYNTHETIC twin**" in text
    assert text.count("never averaged with these") == 2
    assert "kept apart" in capsys.readouterr().err


def test_different_task_lists_are_kept_apart(tmp_path):
    make_run(tmp_path, seed=0)
    make_run(tmp_path / "short", seed=1, tasks=["color", "count"])
    groups = aggregate(collect([tmp_path]))
    assert sorted(g["n_seeds"] for g in groups) == [1, 1]
    assert any("[tasks: color,count; unseen: compose]" in g["label"] for g in groups)


def test_sort_and_order(tmp_path, capsys):
    make_run(tmp_path, "a_low", level=20)
    make_run(tmp_path, "b_high", level=90)
    make_run(tmp_path, "c_mid", level=50)
    out_dir = str(tmp_path / "out")
    main([str(tmp_path), "--out", out_dir])
    assert [r[0] for r in table_rows(capsys.readouterr().out)] == ["b_high", "c_mid", "a_low"]
    main([str(tmp_path), "--out", out_dir, "--sort", "forgetting"])  # lower is better
    forgetting = [float(r[5].strip("*")) for r in table_rows(capsys.readouterr().out)]
    assert forgetting == sorted(forgetting)
    main([str(tmp_path), "--out", out_dir, "--order", "c_mid,a_low,nope"])
    captured = capsys.readouterr()
    assert [r[0] for r in table_rows(captured.out)] == ["c_mid", "a_low", "b_high"]
    assert "'nope'" in captured.err


def test_csv_and_markdown_files(tmp_path, monkeypatch):
    dirs = [make_run(tmp_path / "logs", seed=s) for s in range(3)]
    monkeypatch.chdir(tmp_path)
    assert main(["logs"]) == 0  # default --out: logs/report, beside the runs (issue 27, item 11)
    assert not (tmp_path / "report").exists()
    with open(tmp_path / "logs" / "report" / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == [
        "bench",
        "data_source",
        "method",
        "n_seeds",
        "last_mean",
        "last_std",
    ]
    (row,) = rows
    last = [load(d)["metrics"]["last"] for d in dirs]
    assert float(row["last_mean"]) == pytest.approx(np.mean(last))
    assert float(row["last_std"]) == pytest.approx(np.std(last, ddof=1))
    assert row["format_compliance_mean"] == "" and row["n_seeds"] == "3"
    assert row["data_source"] == "synthetic" and row["seeds"] == "0;1;2"
    assert row["runs"].split(";") == [str(d.relative_to(tmp_path)) for d in dirs]
    assert "| seq_lora | 3 |" in (tmp_path / "logs" / "report" / "report.md").read_text()


def test_figures_are_valid_pngs(tmp_path):
    for method in ("seq_lora", "joint"):
        for seed in range(2):
            make_run(tmp_path / "logs", method, seed)
    main([str(tmp_path / "logs"), "--out", str(tmp_path / "out")])
    for name in ("matrices.png", "metrics.png"):
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_multirun_layout_and_overlapping_arguments(tmp_path):
    sweep = tmp_path / "multirun" / "2026-11-27_10-00-00"
    for num, seed in enumerate(range(2)):
        make_run(tmp_path, seed=seed, run_dir=sweep / f"{num}_synth_seq_lora_s{seed}")
    (group,) = aggregate(collect([sweep, sweep / "0_synth_seq_lora_s0"]))  # the run counts once
    assert group["seeds"] == [0, 1]


@pytest.mark.parametrize("case", ["empty", "missing"])
def test_errors_are_one_line_and_exit_2(tmp_path, capsys, case):
    target = tmp_path / "empty"
    if case == "empty":
        target.mkdir()
    with pytest.raises(SystemExit) as exc:
        main([str(target), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    expected = "no results.json under" if case == "empty" else "no such path"
    assert expected in err and str(target) in err
    assert not (tmp_path / "out").exists()


def test_invalid_results_are_skipped_until_nothing_is_left(tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text('{"bench": "synth", "matr')
    make_run(tmp_path, seed=0)
    (group,) = aggregate(collect([tmp_path]))
    assert group["seeds"] == [0]
    assert f"skipping {broken / 'results.json'}: unreadable" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(broken)])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: none of the 1 results.json")


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "RUN_DIR" in capsys.readouterr().out


def test_split_by_keeps_ablations_apart_and_labels_them(tmp_path, capsys):
    runs = {}
    for value, level in (("zc", 60.0), ("fixed", 20.0)):
        d = make_run(tmp_path, "dmole", 0, level=level, run_dir=tmp_path / value / "s0")
        r = load(d)
        r["config"]["method"]["allocator"] = value
        (d / "results.json").write_text(json.dumps(r))
        runs[value] = d
    merged = aggregate(collect([tmp_path]))
    assert len(merged) == 1 and merged[0]["n_seeds"] == 1  # same seed: one was dropped
    assert "--split-by those keys keeps both" in capsys.readouterr().err
    split = ["method.allocator"]
    groups = aggregate(collect([tmp_path], split=split), split)
    labels = {g["label"]: g for g in groups}
    assert set(labels) == {"dmole (allocator=zc)", "dmole (allocator=fixed)"}
    zc = labels["dmole (allocator=zc)"]["metrics"]["last"]["mean"]
    assert zc == load(runs["zc"])["metrics"]["last"]
    assert (
        main([str(tmp_path), "--split-by", "method.allocator", "--out", str(tmp_path / "r")]) == 0
    )
    assert "dmole (allocator=fixed)" in (tmp_path / "r" / "report.md").read_text()


def test_bwt_per_task_table_and_dominance_note(tmp_path, capsys):
    # four tasks; the third is a caption task on a CIDEr-like scale that dominates BWT
    tasks = ["a", "b", "cap", "d"]
    for seed in range(2):
        run_dir = make_run(tmp_path, seed=seed, tasks=tasks)
        results = load(run_dir)
        A = [[None] * 4 for _ in range(5)]
        for i in range(1, 5):
            for j in range(1, i + 1):  # forgetting grows with distance; "cap" is scaled x10
                A[i][j - 1] = (80.0 - 5 * (i - j) - seed) * (10 if j == 3 else 1)
        results["matrix"] = A
        results["metrics"] = continual_metrics(A)
        (run_dir / "results.json").write_text(json.dumps(results))
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert bwt_tables(out) == [  # the three earlier tasks; the last cannot be forgotten yet
        (["method", "a", "b", "cap"], [["seq_lora", "-15.0 ± 0.0", "-10.0 ± 0.0", "-50.0 ± 0.0"]])
    ]
    # BWT is the mean of the per-task columns
    (group,) = aggregate(collect([tmp_path]))
    assert group["metrics"]["bwt"]["mean"] == pytest.approx((-15 - 10 - 50) / 3)
    assert "cap makes up 67% of seq_lora's" in out

    # balanced tasks: the table stays, the note does not
    for run_dir in (tmp_path / "synth" / "seq_lora").glob("s*/*"):
        results = load(run_dir)
        results["matrix"] = [
            [v / 10 if v and j == 2 else v for j, v in enumerate(row)] for row in results["matrix"]
        ]
        (run_dir / "results.json").write_text(json.dumps(results))
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert bwt_tables(out)[0][1] == [["seq_lora", "-15.0 ± 0.0", "-10.0 ± 0.0", "-5.0 ± 0.0"]]
    assert "dominates BWT" not in out


def test_no_per_task_table_with_two_tasks(tmp_path, capsys):
    make_run(tmp_path, tasks=["a", "b"])
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert "BWT per task" not in capsys.readouterr().out


def test_the_reference_field_not_the_name_says_what_is_never_bold(tmp_path, capsys):
    make_run(tmp_path, "oracle", 0, level=90, reference=True)
    make_run(tmp_path, "joint", 0, level=20, reference=False)
    make_run(tmp_path, "seq_lora", 0, level=60)
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    rows = {r[0]: r for r in table_rows(capsys.readouterr().out)}
    assert not rows["oracle"][2].startswith("**") and rows["seq_lora"][2].startswith("**")
    (group,) = [g for g in aggregate(collect([tmp_path])) if g["method"] == "oracle"]
    assert group["reference"] is True


def test_extra_scores_get_a_column_only_in_tables_whose_runs_have_them(tmp_path, capsys):
    for seed in range(2):
        make_run(tmp_path, "seq_lora", seed, mif=60.0 + seed)
        make_run(tmp_path, "ewc", seed, mif=70.0)
        make_run(tmp_path, "seq_lora", seed, bench="other")
    out_dir = tmp_path / "out"
    assert main([str(tmp_path), "--out", str(out_dir), "--sort", "MIF"]) == 0
    out = capsys.readouterr().out
    (other_head, _), (synth_head, synth_rows) = [  # tables by bench name
        (h, rows) for h, rows in tables(out) if h[1] == "n seeds"
    ]
    assert synth_head[-3:] == ["MIF", "trainable params", "time"] and "MIF" not in other_head
    assert [r[0] for r in synth_rows] == ["ewc", "seq_lora"]  # sorted by MIF
    assert synth_rows[0][-3] == "**70.0 ± 0.0**" and synth_rows[1][-3] == "60.5 ± 0.7"
    header = (out_dir / "report.csv").read_text().splitlines()[0].split(",")
    assert header.index("MIF_mean") > header.index("format_compliance_std")
    assert header.index("MIF_unseen_std") < header.index("trainable_mean")
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--sort", "LEN"])
    assert "--sort LEN: choose one of last, " in capsys.readouterr().err


def test_an_older_results_json_is_skipped_with_the_fix_named(tmp_path, capsys):
    run = make_run(tmp_path, seed=0)
    old = load(run)
    old.pop("reference")
    old["mif_scores"] = [{} for _ in old["matrix"]]
    (run / "results.json").write_text(json.dumps(old))
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path)])
    assert exc.value.code == 2
    warning = capsys.readouterr().err.splitlines()[0]
    assert warning.startswith(f"warning: skipping {run / 'results.json'}: written by an older")
    assert 'add "reference"' in warning and "rename 'mif_scores' to 'extra_scores'" in warning
