"""Report outputs (table, CSV, PNG) and the atomic writers they rely on."""

import csv
import errno
import json
import os

import pytest

from mcl.eval.metrics import continual_metrics
from mcl.eval.report import matrix_table, plot_matrix, row_labels, write_matrix_csv
from mcl.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text, to_jsonable

TASKS = ["vqa_color", "count", "grounding"]
UNSEEN = ["vizwiz"]
MATRIX = [
    [95.0, 20.0, 100.0],
    [80.0, 25.0, None],
    [60.0, float("nan"), 40.0],
    [50.0, 70.0, 85.25],
]
UNSEEN_MATRIX = [[40.0], [None], [None], [30.5]]


def test_row_labels():
    assert row_labels(["a", "b"]) == ["0 (zero-shot)", "1 after a", "2 after b"]


def test_table_lists_tasks_rows_and_metrics():
    metrics = continual_metrics(MATRIX, unseen=UNSEEN_MATRIX)
    table = matrix_table(TASKS, MATRIX, metrics, UNSEEN, UNSEEN_MATRIX)
    for name in TASKS + ["*vizwiz", "0 (zero-shot)", "3 after grounding"]:
        assert name in table
    for label in ("Last", "MAA", "BWT", "Forgetting", "FWT", "Plasticity", "Unseen"):
        assert label in table
    row1 = next(line for line in table.splitlines() if line.startswith("1 after vqa_color"))
    assert row1.split()[3:] == ["80.0", "25.0", "-", "-"]  # missing shown as '-', never 0
    assert "85.2" in table or "85.3" in table  # one decimal
    unseen_line = next(line for line in table.splitlines() if line.startswith("Unseen"))
    assert unseen_line.split()[-1] == "30.50"
    assert len({len(line) for line in table.splitlines()[2:6]}) == 1  # fixed width rows


def test_table_without_unseen_says_na():
    table = matrix_table(TASKS, MATRIX, continual_metrics(MATRIX))
    assert "*" not in table
    assert next(x for x in table.splitlines() if x.startswith("Unseen")).split()[-1] == "n/a"


def test_csv_round_trip(tmp_path):
    path = tmp_path / "out" / "matrix.csv"
    write_matrix_csv(path, TASKS, MATRIX, UNSEEN, UNSEEN_MATRIX)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["after_task", *TASKS, "unseen:vizwiz"]
    assert [r[0] for r in rows[1:]] == ["zero-shot", *TASKS]
    parsed = [[float(c) if c else None for c in r[1:]] for r in rows[1:]]
    expected = [
        [95.0, 20.0, 100.0, 40.0],
        [80.0, 25.0, None, None],
        [60.0, None, 40.0, None],  # NaN written as an empty cell
        [50.0, 70.0, 85.25, 30.5],
    ]
    assert parsed == expected
    assert os.listdir(path.parent) == ["matrix.csv"]  # no temp file left behind


def test_csv_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError):
        write_matrix_csv(tmp_path / "m.csv", TASKS, MATRIX[:3])
    with pytest.raises(ValueError):
        write_matrix_csv(tmp_path / "m.csv", TASKS, MATRIX, UNSEEN, [[1.0]])
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize("unseen", [True, False])
def test_plot_writes_png(tmp_path, unseen):
    path = tmp_path / "plots" / "matrix.png"
    args = (UNSEEN, UNSEEN_MATRIX) if unseen else ()
    plot_matrix(path, TASKS, MATRIX, *args, title="seq_lora on synth")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    assert data[12:16] == b"IHDR"
    assert os.listdir(path.parent) == ["matrix.png"]


def test_atomic_writes_and_json_nan(tmp_path):
    path = tmp_path / "a" / "b" / "results.json"
    atomic_write_json(path, {"x": float("nan"), "y": [1.5, float("inf")], "z": (1, 2)})
    assert json.loads(path.read_text()) == {"x": None, "y": [1.5, None], "z": [1, 2]}
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    atomic_write_bytes(tmp_path / "t.txt", b"\x00\x01")
    assert (tmp_path / "t.txt").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["a", "t.txt"]
    assert sorted(os.listdir(path.parent)) == ["results.json"]
    assert to_jsonable({1: {2.0}}) == {"1": [2.0]}
    with pytest.raises(TypeError):
        to_jsonable(object())


def test_failed_replace_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"version": 1})

    def broken_replace(src, dst):
        raise OSError(errno.EIO, "simulated I/O error")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_json(path, {"version": 2})
    assert json.loads(path.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["results.json"]  # temp file removed


def test_disk_full_message(tmp_path, monkeypatch):
    path = tmp_path / "matrix.csv"
    atomic_write_text(path, "old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as info:
        write_matrix_csv(path, TASKS, MATRIX)
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert str(path) in message and "free disk space or choose another output dir" in message
    assert "\n" not in message
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["matrix.csv"]


# ------------------------------------------------------------------ issue 27, item 11
CIDER_MATRIX = [  # a caption task scored CIDEr x100 next to accuracies
    [10.0, 80.0],
    [90.0, 578.0],
    [60.0, 420.5],
]


def test_the_colour_scale_covers_cider_cells_above_100():
    from mcl.eval.report import matrix_figure

    fig = matrix_figure(["vqa", "caption"], CIDER_MATRIX, title="seq_lora on cvit")
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(bars) == 2  # 0-100 for accuracies, its own scale for the CIDEr column
    tops = sorted(max(b.get_ylim()) for b in bars)
    assert tops[0] == 100 and tops[1] >= 578
    assert "caption" in bars[1].get_ylabel()
    # accuracies alone: one bar, 0-100, as before
    fig = matrix_figure(["a", "b"], [[1.0, 2.0], [50.0, 3.0], [40.0, 100.0]])
    assert [max(a.get_ylim()) for a in fig.axes if a.get_label() == "<colorbar>"] == [100]


def test_matrix_png_says_when_the_data_is_synthetic(tmp_path, monkeypatch):
    from mcl.eval import report

    fig = report.matrix_figure(TASKS, MATRIX, title="seq_lora on synth", data_source="synthetic")
    assert "SYNTHETIC" in fig.axes[0].get_title()
    fig = report.matrix_figure(TASKS, MATRIX, title="seq_lora on synth", data_source="real")
    assert "SYNTHETIC" not in fig.axes[0].get_title()
    # the runner's call names no source: the run's results.json beside the PNG says it
    atomic_write_json(tmp_path / "results.json", {"data_source": "synthetic"})
    seen = []
    real = report.matrix_figure
    monkeypatch.setattr(report, "matrix_figure", lambda *a: seen.append(a[-1]) or real(*a))
    plot_matrix(tmp_path / "matrix.png", TASKS, MATRIX, title="seq_lora on synth")
    assert seen == ["synthetic"] and (tmp_path / "matrix.png").stat().st_size > 1000


def test_data_faults_are_worded_per_task_and_split():
    from mcl.eval.report import data_faults

    skipped = {
        "color": {
            "train": 7,
            "test": 1,
            "causes": {
                "train": {"truncated_shard": 6, "undecodable_image": 1},
                "test": {"bad_record": 1},
            },
        },  # fmt: skip
        "count": {"train": 0, "test": 0, "examples": []},
    }
    lines = data_faults(skipped)
    assert lines == [
        "color: train 7 (truncated_shard 6, undecodable_image 1); test 1 (bad_record 1) "
        "unreadable sample(s) skipped"
    ]
    assert data_faults(None) == [] and data_faults({"x": {"train": 3}}) == [
        "x: train 3 unreadable sample(s) skipped"
    ]


def test_the_comparison_report_lists_each_runs_data_faults(tmp_path, capsys):
    from mcl.report.cli import main
    from tests.test_compare import make_run

    run = make_run(tmp_path / "logs", seed=0)
    make_run(tmp_path / "logs", seed=1)
    r = json.loads((run / "results.json").read_text())
    r["skipped"] = {"count": {"train": 6, "test": 0, "causes": {"train": {"truncated_shard": 6}}}}
    (run / "results.json").write_text(json.dumps(r))
    assert main([str(tmp_path / "logs")]) == 0
    md = (tmp_path / "logs" / "report" / "report.md").read_text()
    assert "Data faults" in md
    assert "- seq_lora seed 0: count: train 6 (truncated_shard 6) unreadable" in md
    assert "seed 1:" not in md.split("Data faults")[1].split("Runs:")[0]
