"""continual_metrics on hand-computed matrices (A[i][j]: row i = after task i, column = task j)."""

import math

import pytest

from mcl.eval.metrics import continual_metrics

# T = 3. Row 0 is zero-shot; it beats the trained rows on tasks 1 and 3, which separates
# BWT_max (row 0 included) from Forgetting (row 0 excluded).
FULL = [
    [95, 20, 100],  # 0 (zero-shot)
    [80, 25, 35],  # after task 1
    [60, 90, 40],  # after task 2
    [50, 70, 85],  # after task 3
]


def test_full_matrix_by_hand():
    m = continual_metrics(FULL)
    # Last = (50 + 70 + 85) / 3 = 205/3
    assert m["last"] == pytest.approx(205 / 3)
    # MAA = mean(80, (60+90)/2, 205/3) = (80 + 75 + 68.333) / 3 = 74.444
    assert m["maa"] == pytest.approx((80 + 75 + 205 / 3) / 3)
    # BWT = ((50-80) + (70-90)) / 2 = -25
    assert m["bwt"] == pytest.approx(-25)
    # BWT_max = ((50 - max(95,80,60,50)) + (70 - max(20,25,90,70)) + (85 - max(100,35,40,85))) / 3
    #         = (-45 - 20 - 15) / 3 = -80/3
    assert m["bwt_max"] == pytest.approx(-80 / 3)
    # Forgetting = ((max(80,60) - 50) + (max(25,90) - 70)) / 2 = (30 + 20) / 2 = 25
    assert m["forgetting"] == pytest.approx(25)
    # FWT = ((A[1][2] - A[0][2]) + (A[2][3] - A[0][3])) / 2 = ((25-20) + (40-100)) / 2 = -27.5
    assert m["fwt"] == pytest.approx(-27.5)
    # Plasticity = (80 + 90 + 85) / 3 = 85
    assert m["plasticity"] == pytest.approx(85)
    assert (m["MFT"], m["MFN"], m["MAA"], m["BWT"]) == (
        m["plasticity"],
        m["last"],
        m["maa"],
        m["bwt"],
    )
    assert (m["AP"], m["MAP"]) == (m["last"], m["maa"])  # an anchor's names, same numbers
    assert m["unseen"] is None
    assert {"last", "bwt_max", "forgetting", "fwt"} <= set(m["conventions"])
    assert "row 0 included" in m["conventions"]["bwt_max"]


def test_missing_cells_are_skipped_not_zero():
    matrix = [
        [95, 20, 100],
        [80, 25, None],  # task 3 not evaluated after task 1
        [60, None, 40],  # diagonal A[2][2] missing
        [50, 70, 85],
    ]
    m = continual_metrics(matrix)
    assert m["last"] == pytest.approx(205 / 3)
    # MAA = mean(80, mean(60), 205/3) = (80 + 60 + 68.333) / 3
    assert m["maa"] == pytest.approx((80 + 60 + 205 / 3) / 3)
    # BWT: j=1 -> 50-80 = -30; j=2 has no diagonal -> skipped
    assert m["bwt"] == pytest.approx(-30)
    # BWT_max = ((50-95) + (70-max(20,25,70)) + (85-max(100,40,85))) / 3 = (-45 + 0 - 15) / 3
    assert m["bwt_max"] == pytest.approx(-20)
    # Forgetting = ((max(80,60) - 50) + (max(25) - 70)) / 2 = (30 - 45) / 2
    assert m["forgetting"] == pytest.approx(-7.5)
    # FWT = ((25-20) + (40-100)) / 2
    assert m["fwt"] == pytest.approx(-27.5)
    # Plasticity = mean(80, 85), the missing diagonal skipped
    assert m["plasticity"] == pytest.approx(82.5)


def test_nan_counts_as_missing():
    with_nan = [[1.0, 2.0], [50.0, float("nan")], [40.0, 60.0]]
    with_none = [[1.0, 2.0], [50.0, None], [40.0, 60.0]]
    a, b = continual_metrics(with_nan), continual_metrics(with_none)
    a.pop("conventions"), b.pop("conventions")
    assert a == b
    # FWT: A[1][2] missing -> no terms -> None, not NaN
    assert a["fwt"] is None


def test_single_task():
    m = continual_metrics([[30], [90]])
    assert m["last"] == 90 and m["maa"] == 90 and m["plasticity"] == 90
    # BWT_max = 90 - max(30, 90) = 0
    assert m["bwt_max"] == 0
    # no j in 1..T-1 and no j in 2..T: undefined, so None (never NaN)
    assert m["bwt"] is None and m["BWT"] is None
    assert m["forgetting"] is None and m["fwt"] is None


def test_unseen_last_row_and_per_row():
    unseen = [[40, 10], [None, None], [30, None], [30, 20]]
    m = continual_metrics(FULL, unseen=unseen)
    assert m["unseen"] == pytest.approx(25)  # (30 + 20) / 2
    assert m["unseen_per_row"] == [pytest.approx(25), None, pytest.approx(30), pytest.approx(25)]
    assert continual_metrics([[30], [90]], unseen=[[], []])["unseen"] is None


def test_public_anchor_matrix():
    """MCITlib issue #6, LoRA-FT on UCIT: only the diagonal and the last row are published;
    reported MFT 70.60, MFN 56.73, BWT -16.65."""
    diag = [90.97, 92.60, 59.54, 53.30, 69.73, 57.47]
    last = [65.77, 71.27, 45.05, 51.20, 49.60, 57.47]
    T = len(diag)
    matrix = [[None] * T for _ in range(T + 1)]
    for j in range(T):
        matrix[j + 1][j] = diag[j]
    matrix[T] = last
    m = continual_metrics(matrix)
    assert round(m["MFT"], 2) == 70.60
    assert round(m["MFN"], 2) == 56.73
    assert round(m["BWT"], 2) == -16.65


def test_all_values_json_safe():
    m = continual_metrics([[None, None], [None, None], [None, None]])
    numbers = [v for k, v in m.items() if k not in ("conventions", "unseen_per_row")]
    assert all(v is None for v in numbers)
    assert not any(isinstance(v, float) and math.isnan(v) for v in numbers)


@pytest.mark.parametrize("bad", [[[1.0]], [[1.0, 2.0], [1.0, 2.0], [1.0]], []])
def test_bad_shapes_raise(bad):
    with pytest.raises(ValueError):
        continual_metrics(bad)


def test_stage_metrics_by_hand():
    from mcl.eval.metrics import stage_metrics

    m = [
        [0, 0, 0],
        [80, 10, None],  # stage 1: learns task 1
        [60, 90, 5],  # stage 2: task 1 drops 20
        [40, 70, 50],  # stage 3: task 1 drops 20, task 2 drops 20
    ]
    got = stage_metrics(m)
    assert [s["transfer"] for s in got] == [80, 90, 50]
    assert got[0]["forgetting"] is None
    assert got[1]["forgetting"] == pytest.approx(20) and got[2]["forgetting"] == pytest.approx(20)
    m[3][0] = None  # a missing cell is skipped, not read as 0
    assert stage_metrics(m)[2]["forgetting"] == pytest.approx(20)


def test_instruction_metrics_report_each_extra_score_found_and_no_other():
    from mcl.eval.metrics import extra_metric_keys, extra_names, instruction_metrics

    tasks, unseen = ["a", "b"], ["u"]
    held = [{}, {}, {"a": 50.0, "u": 30.0}]
    form = [{}, {}, {"a": 100.0, "b": 80.0}]
    extras = [{}, {"a": {"mif": 10.0}}, {"a": {"mif": 40.0, "len": 3.0}, "b": {"mif": 60.0}}]
    extras[2]["u"] = {"mif": 20.0}
    m = instruction_metrics(tasks, unseen, held, form, extras)
    assert extra_names(extras) == ["mif", "len"]
    assert extra_metric_keys(["mif", "len"]) == ["MIF", "MIF_unseen", "LEN", "LEN_unseen"]
    assert m == {
        "if_score": 40.0,
        "format_compliance": 90.0,
        "MIF": 50.0,  # last row only, trained tasks
        "MIF_unseen": 20.0,
        "LEN": 3.0,
        "LEN_unseen": None,  # no unseen task has it
    }
    # a benchmark that declares no extra score reports none (no MIF key at all)
    assert set(instruction_metrics(tasks, unseen, held, form, None)) == {
        "if_score",
        "format_compliance",
    }
