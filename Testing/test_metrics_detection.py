"""The paper's Table 2 metrics and the VALDO summaries, hand-computed on three subjects."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plkd.metrics import evaluate_subject, pool_results, table2

SHAPE = (16, 16, 16)
ISO = (1.0, 1.0, 1.0)


def vol(*points: tuple[int, int, int]) -> np.ndarray:
    out = np.zeros(SHAPE, dtype=np.float32)
    for p in points:
        out[p] = 1.0
    return out


@pytest.fixture
def three_subjects() -> dict[str, dict]:
    # A: two microbleeds, one found, one false positive far away.
    a = evaluate_subject(vol((3, 3, 3), (10, 10, 10)), vol((3, 3, 3), (10, 3, 10)), ISO)
    # B: one two-voxel microbleed, found with one voxel.
    b = evaluate_subject(vol((8, 8, 8)), vol((8, 8, 8), (8, 8, 9)), ISO)
    # C: no microbleed, two false positives.
    c = evaluate_subject(vol((2, 2, 2), (13, 13, 13)), np.zeros(SHAPE), ISO)
    return {"A": a, "B": b, "C": c}


def test_per_subject_counts(three_subjects: dict[str, dict]) -> None:
    a, b, c = three_subjects["A"], three_subjects["B"], three_subjects["C"]
    assert (a["TP"], a["FP"], a["FN"]) == (1, 1, 1)
    assert a["TPR"] == 0.5 and a["PPV"] == 0.5 and a["F1"] == 0.5
    assert a["Dice"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert (b["TP"], b["FP"], b["FN"]) == (1, 0, 0)
    assert b["Dice"] == pytest.approx(2 / 3)
    assert (c["TP"], c["FP"], c["FN"]) == (0, 2, 0)
    assert math.isnan(c["TPR"]) and c["PPV"] == 0.0 and c["F1"] == 0.0


def test_pooled_table2_sums_counts_over_subjects(three_subjects: dict[str, dict]) -> None:
    pooled = pool_results(three_subjects)["pooled"]
    assert (pooled["TP"], pooled["FP"], pooled["FN"], pooled["n_subjects"]) == (2, 3, 1, 3)
    assert pooled["TPR"] == pytest.approx(2 / 3)
    assert pooled["PPV"] == pytest.approx(2 / 5)
    assert pooled["FPavg"] == pytest.approx(1.0)
    tpr, ppv = 2 / 3, 2 / 5
    assert pooled["F1"] == pytest.approx(2 * tpr * ppv / (tpr + ppv))
    # Voxels: A 1 TP, 1 FP, 1 FN; B 1 TP, 1 FN; C 2 FP.
    assert (pooled["voxel_TP"], pooled["voxel_FP"], pooled["voxel_FN"]) == (2, 3, 2)
    assert pooled["Dice"] == pytest.approx(4 / 9)


def test_valdo_summary_is_per_subject_median(three_subjects: dict[str, dict]) -> None:
    valdo = pool_results(three_subjects)["valdo"]
    assert valdo["F1_median"] == pytest.approx(0.75)  # A 0.5, B 1.0, C NaN (left out)
    assert valdo["F1_mean"] == pytest.approx(0.75)
    assert valdo["count_difference_median"] == 0.0  # 0, 0, 2
    assert valdo["count_difference_mean"] == pytest.approx(2 / 3)
    assert valdo["Dice_median"] == pytest.approx((1.0 + 2 / 3) / 2)  # A 1, B 2/3, C NaN
    assert valdo["F1_pooled"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 3))


def test_valdo_dice_median_counts_subjects_whose_microbleeds_were_all_missed() -> None:
    # Hand count: A found exactly (V-Dice 1), B and C each miss their only microbleed (0), D has none (NaN, out).
    # Median over A, B, C = 0. With "none found" as NaN the median was 1.0, over A alone.
    subs = {
        "A": evaluate_subject(vol((3, 3, 3)), vol((3, 3, 3)), ISO),
        "B": evaluate_subject(np.zeros(SHAPE), vol((8, 8, 8)), ISO),
        "C": evaluate_subject(vol((1, 1, 1)), vol((12, 12, 12)), ISO),
        "D": evaluate_subject(vol((5, 5, 5)), np.zeros(SHAPE), ISO),
    }
    assert [subs[k]["valdo_Dice"] for k in "ABC"] == [1.0, 0.0, 0.0] and math.isnan(subs["D"]["valdo_Dice"])
    valdo = pool_results(subs)["valdo"]
    assert valdo["Dice_median"] == 0.0
    assert valdo["Dice_mean"] == pytest.approx(1 / 3)


def test_table2_matches_the_paper_formulas() -> None:
    s = table2(tp=636, fp=298, fn=364, n_subjects=229)
    tpr, ppv = 636 / 1000, 636 / 934
    assert s["TPR"] == pytest.approx(tpr)
    assert s["PPV"] == pytest.approx(ppv)
    assert s["FPavg"] == pytest.approx(298 / 229)
    assert s["F1"] == pytest.approx(2 * tpr * ppv / (tpr + ppv))


def test_shape_mismatch_of_arrays_is_refused() -> None:
    from plkd.errors import InputError

    with pytest.raises(InputError, match="resample"):
        evaluate_subject(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), ISO)
