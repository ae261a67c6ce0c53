"""What a new user meets first (issue 27, item 11): ``--help`` that describes mcl and its config
tree, a ``train.log`` that holds the run's console, and the extras the README's commands need."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mcl.config import CONF_DIR, GROUPS, choices
from mcl.console import tee_console
from mcl.help import help_text

ROOT = Path(__file__).resolve().parent.parent


def test_help_lists_every_group_option_default_and_setting():
    text = help_text(width=100)
    assert text.startswith("mcl - multimodal continual instruction tuning")
    for group in GROUPS:
        for option in choices(group):
            assert f" {option} " in text, (group, option)
    assert "   * seq_lora" in text and "   * synth" in text and "   * tiny " in text
    for key in ("train.steps=250", "resume=false", "data.max_bad_share=0.01", "seed=0"):
        assert key in text
    assert "--hydra-help" in text and "README.md" in text and "mcl.report" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_help_reads_the_config_tree_so_a_new_option_shows(tmp_path):
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "method" / "mine.yaml").write_text("# My method: does something new.\nname: mine\n")
    line = next(x for x in help_text(conf, width=100).splitlines() if " mine " in x)
    assert line.split() == ["mine", "My", "method:", "does", "something", "new."]


def test_python_m_mcl_help_prints_it():
    r = subprocess.run([sys.executable, "-m", "mcl.help"], capture_output=True, text=True)
    assert r.returncode == 0 and "Config groups" in r.stdout and "seq_lora" in r.stdout


def test_train_help_is_mcls_not_hydras():
    r = subprocess.run(
        [sys.executable, "-m", "mcl.train", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0 and "Config groups" in r.stdout
    assert "Powered by Hydra" not in r.stdout


def test_tee_console_keeps_the_console_in_the_log(tmp_path, capsys):
    log = tmp_path / "run" / "train.log"
    restore = tee_console(log)
    try:
        print("[mcl] resuming after task 1")
        sys.stderr.write("task 2:  10%|#  | 1/10\rtask 2:  50%|#####  | 5/10\r")
        sys.stderr.write("task 2: 100%|##########| 10/10\n")
        print("error: something", file=sys.stderr)
        sys.stderr.write("row 1:  40%\r" + " " * 20 + "\r")  # a bar that clears itself
        sys.stderr.write("eval:  30%\r")  # a bar cut off by the end of the run
    finally:
        restore()
    assert log.read_text().splitlines() == [
        "[mcl] resuming after task 1",
        "task 2: 100%|##########| 10/10",
        "error: something",
        "eval:  30%",
    ]
    out, err = capsys.readouterr()
    assert "resuming" in out and "50%" in err  # the console itself still gets everything
    print("restored-now")
    assert "restored-now" not in log.read_text()


def test_extras_declare_what_the_readme_and_the_notebooks_need():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = {k: {d.split(">")[0].split("=")[0].split("[")[0] for d in v} for k, v in extras.items()}
    assert "wandb" in names["wandb"] and "wandb" in names["dev"]
    assert {"nbclient", "ipykernel", "nbformat"} <= names["dev"]
    assert {"jupyterlab", "ipykernel"} <= names["notebooks"]


@pytest.mark.slow
def test_a_run_keeps_its_console_in_train_log(tmp_path):
    from mcl.train import run
    from tests.conftest import MICRO, compose_cfg

    cfg = compose_cfg(tmp_path, [*MICRO, "method=seq_lora"])
    run(cfg, Path(cfg.paths.output_dir))
    log = (Path(cfg.paths.output_dir) / "train.log").read_text()
    assert "[mcl] results in" in log and "Last" in log  # the summary and the matrix
