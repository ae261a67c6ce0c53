"""``python -m mcl.report RUN_DIRS --publish PAGE``: finished runs become compact summaries and
a page; ``--from-summaries`` rewrites the same page from the summaries alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcl.report.aggregate import setting, short_number
from mcl.report.cli import main
from mcl.report.publish import FIGURES, Page, auto_split, markdown, run_name
from mcl.report.summary import KEEP

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "docs" / "results" / "cvit_fwd_prompt" / "runs"


def _sweep(tmp_path: Path, lam: bool = False) -> Path:
    """A fake sweep: the committed fwd_prompt summaries as full runs (with the bulky fields a
    run writes and a summary drops); `lam` turns the two fwd_prompt variants into a numeric
    setting, as the lambda sweep's."""
    sweep = tmp_path / "logs" / "multirun" / "sweep"
    for i, path in enumerate(sorted(SOURCE.glob("*/results.json"))):
        run = json.loads(path.read_text())
        run |= {"if_scores": [[1.0]], "per_stage": [{"x": 1}], "host": {"hostname": "vm"}}
        if lam and run["method"] == "fwd_prompt":
            run["config"]["method"]["projection"] = 1e6 if "none" in path.parent.name else 1e4
        for key in ("versions", "code_version", "hardware"):
            run.pop(key, None)
        job = sweep / f"{i}_{path.parent.name}"
        job.mkdir(parents=True)
        (job / "results.json").write_text(json.dumps(run))
        (job / "predictions.jsonl").write_text("{}\n")
    return sweep


def _page(tmp_path: Path) -> Path:
    return tmp_path / "docs" / "results" / "demo"


def test_publish_stores_compact_summaries_and_writes_the_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = _page(tmp_path)
    args = [str(_sweep(tmp_path)), "--publish", str(page), "--title", "Demo", "--order", "seq_lora"]
    assert main(args) == 0
    names = sorted(p.parent.name for p in (page / "runs").glob("*/results.json"))
    labels = ("fwd_prompt_interference", "fwd_prompt_none", "seq_lora")
    assert names == [f"{m}_s{s}" for m in labels for s in (0, 1, 2)]
    assert not list((page / "runs").rglob("*.jsonl"))
    run = json.loads((page / "runs" / "seq_lora_s0" / "results.json").read_text())
    assert set(run) <= set(KEEP) | {"versions", "code_version", "hardware"}
    assert run["versions"]["python"] and run["code_version"] and run["hardware"]["cores"]
    spec = Page.load(page)
    assert spec.split == ["method.projection"]  # found: the variants of one method
    assert spec.commands == ["python -m mcl.train -m experiment=results/demo"]
    text = (page.parent / "demo.md").read_text()
    assert text.startswith("# Demo\n") and "## Hardware, packages and code" in text
    assert "fwd_prompt (projection=none)" in text and "BWT per task" in text
    assert "python -m mcl.report --publish docs/results/demo --from-summaries" in text
    figures = {f: (page / f).read_bytes() for f, _, _ in FIGURES}
    assert all(figures.values())

    # the summaries alone make the same page, byte for byte, from any working directory
    monkeypatch.chdir(ROOT)
    (page.parent / "demo.md").unlink()
    assert main(["--publish", str(page), "--from-summaries"]) == 0
    assert (page.parent / "demo.md").read_text() == text == markdown(page)
    assert {f: (page / f).read_bytes() for f, _, _ in FIGURES} == figures


def test_a_numeric_setting_draws_a_tradeoff_curve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = _page(tmp_path)
    assert main([str(_sweep(tmp_path, lam=True)), "--publish", str(page)]) == 0
    text = (page.parent / "demo.md").read_text()
    # rows by the setting (the higher Last is the larger one here), labelled compactly
    assert 0 < text.index("fwd_prompt (projection=1e4)") < text.index("(projection=1e6)")
    assert "1000000.0" not in text
    assert (page / "tradeoff.png").stat().st_size > 0


def test_only_a_lone_numeric_setting_places_a_group_on_a_curve():
    """A sweep over one number is a curve; variants set apart by two settings, a number among
    them (SMoLoRA's routing and instruction count), are separate points."""

    def group(*values):
        return {"split_values": [json.dumps(v) for v in values]}

    assert setting(group(1e4)) == 1e4
    assert setting(group(None, 5)) == 5.0  # the other key unset for this method
    assert setting(group("oracle_type", 5)) is None
    assert setting(group("oracle_type")) is None and setting(group(True)) is None


@pytest.mark.parametrize("page", ["cvit", "lambda"])
def test_the_tradeoff_figures_labels_do_not_print_over_each_other(page):
    """The published pages with the tightest clusters: SMoLoRA's four long variant labels among
    the LoRA baselines (cvit), twelve λ values crowded at low BWT (lambda)."""
    from matplotlib.text import Text

    from mcl.report.curves import tradeoff_figure
    from mcl.report.publish import _groups, page_runs

    page_dir = Path(__file__).resolve().parent.parent / "docs" / "results" / page
    loaded = Page.load(page_dir)
    fig = tradeoff_figure(_groups(loaded, page_runs(page_dir, loaded.split)))
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    frame = ax.get_window_extent(renderer)
    assert len(ax.texts) >= 18
    names = [t.get_text() for t in ax.texts]
    for i, a in enumerate(ax.texts):
        box = Text.get_window_extent(a, renderer)
        assert frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1), names[i]
        for b in ax.texts[:i]:
            assert not box.overlaps(Text.get_window_extent(b, renderer)), (names[i], b.get_text())


@pytest.mark.parametrize(
    "value,text",
    [(1e4, "1e4"), (3e5, "3e5"), (1000000.0, "1e6"), (2.5e-4, "2.5e-4"), (0.01, "0.01"),
     (100.0, "100"), (5, "5"), (0, "0"), (True, "True"), ("none", "none"),
     (["image"], "[image]"), (["image", "video"], "[image,video]"), ([], "[]")],
)  # fmt: skip
def test_a_setting_shows_compactly_in_labels(value, text):
    assert short_number(value) == text


@pytest.mark.parametrize(
    "value,name",
    [(["image"], "pathweave_image_s1"), (["image", "video"], "pathweave_image+video_s1"),
     ([], "pathweave_empty_s1"), ("a/b c", "pathweave_a-bc_s1"), (1e5, "pathweave_1e5_s1")],
)  # fmt: skip
def test_a_summary_folder_name_needs_no_quoting_in_a_shell(value, name):
    run = {"method": "pathweave", "seed": 1, "config": {"method": {"base_modalities": value}}}
    assert run_name(run, ["method.base_modalities"]) == name


def test_auto_split_finds_nothing_when_one_config_per_method():
    runs = [json.loads(p.read_text()) for p in SOURCE.glob("seq_lora_s*/results.json")]
    assert auto_split(runs) == []


def test_a_key_that_newer_code_added_sets_no_variant():
    """Summaries published over weeks: a run from newer code has config keys the older ones
    lack (here a benchmark's real-data file list). They used to split one method into two rows
    and name its folder after every new key's value."""
    runs = [json.loads(p.read_text()) for p in SOURCE.glob("seq_lora_s*/results.json")]
    newer = json.loads(json.dumps(runs[0]))
    newer["seed"] = 7
    newer["config"]["bench"]["files"] = {"format": "coin", "images": "dataset"}
    newer["config"]["model"]["new_option"] = "on"
    assert auto_split([*runs, newer]) == []
    changed = json.loads(json.dumps(newer))
    changed["config"]["method"]["lr"] = 0.5  # a key every run has, set apart: a variant
    assert auto_split([*runs, newer, changed]) == ["method.lr"]


@pytest.mark.parametrize(
    "argv",
    [["--from-summaries"], ["--publish", "x"], ["runs", "--publish", "x", "--from-summaries"]],
)
def test_publish_arguments_that_cannot_work_are_one_line_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_a_page_without_runs_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--publish", str(tmp_path / "empty"), "--from-summaries"])
    assert "no runs/" in capsys.readouterr().err


def test_publishing_more_runs_adds_to_the_page_and_replace_starts_over(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page, sweep = _page(tmp_path), _sweep(tmp_path)
    first = tmp_path / "first"
    first.mkdir()
    for job in sweep.glob("*seq_lora_s*"):
        job.rename(first / job.name)
    assert main([str(first), "--publish", str(page)]) == 0
    assert main([str(sweep), "--publish", str(page)]) == 0  # the fwd_prompt runs, later
    names = {p.parent.name for p in (page / "runs").glob("*/results.json")}
    assert {"seq_lora_s0", "fwd_prompt_none_s2", "fwd_prompt_interference_s1"} <= names
    assert len(names) == 9
    assert main([str(first), "--publish", str(page), "--replace"]) == 0
    names = {p.parent.name for p in (page / "runs").glob("*/results.json")}
    assert names == {"seq_lora_s0", "seq_lora_s1", "seq_lora_s2"}
