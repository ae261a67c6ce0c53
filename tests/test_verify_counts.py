"""``mcl.data.verify`` holds each split against the count its benchmark publishes (the ``expect:``
blocks of ``conf/bench/<bench>.yaml``): a split that differs is flagged and the command exits 1."""

from __future__ import annotations

import pytest

from mcl.data.convert import load_bench
from mcl.data.verify import main

from .test_prepare import write_release


@pytest.mark.parametrize("bench", ["coin", "ucit", "mllm_dcl", "cvit", "dmole", "clmm"])
def test_published_counts_are_whole_numbers_of_known_splits(bench):
    for task, entry in load_bench(bench)["files"]["tasks"].items():
        for split, n in (entry.get("expect") or {}).items():
            assert split in entry and isinstance(n, int) and n > 0, (task, split)


def test_a_count_that_differs_from_the_published_one_is_flagged(tmp_path, capsys):
    # UCIT publishes 3000 test questions a task (conf/bench/ucit.yaml); the fixture has 2
    root = write_release("ucit", tmp_path / "UCIT", 3, 2)
    with pytest.raises(SystemExit) as stop:
        main(["--bench", "ucit", "--root", str(root), "--tasks", "imagenet_r"])
    assert stop.value.code == 1
    out = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert out[0].startswith("imagenet_r train 3 records, 3 usable, 0 text-only")
    assert out[1].startswith("imagenet_r test 2 records (published: 3000; DIFFERS by -2998), 2")
    assert out[-1] == "1 split(s) differ from the published counts: imagenet_r test"
