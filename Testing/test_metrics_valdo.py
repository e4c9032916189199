"""The VALDO matching rule, branch by branch, on hand-built tiny volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plkd.metrics import evaluate_subject, pool_results, valdo_match

SHAPE = (20, 20, 20)
ISO = (1.0, 1.0, 1.0)


def vol(*points: tuple[int, int, int], value: float = 1.0, base: np.ndarray | None = None) -> np.ndarray:
    """A volume with ``value`` at each voxel in ``points`` (added to ``base`` if given)."""
    out = np.zeros(SHAPE, dtype=np.float32) if base is None else base.copy()
    for p in points:
        out[p] = value
    return out


def test_exact_match_is_one_tp() -> None:
    r = evaluate_subject(vol((5, 5, 5)), vol((5, 5, 5)), ISO)
    assert (r["TP"], r["FP"], r["FN"]) == (1, 0, 0)
    assert r["valdo_F1"] == 1.0
    assert r["valdo_Dice"] == 1.0
    assert r["valdo_count_difference"] == 0


def test_prediction_beyond_5mm_is_false_positive() -> None:
    r = evaluate_subject(vol((5, 5, 12)), vol((5, 5, 5)), ISO)  # 7 mm away
    assert (r["TP"], r["FP"], r["FN"]) == (0, 1, 1)
    assert r["valdo_F1"] == 0.0
    assert r["valdo_Dice"] == 0.0  # the released code: microbleeds but none found -> 0, not NaN


def test_distance_limit_is_strict_as_in_the_released_valdo_code_and_configurable() -> None:
    # The released code (WhereIsValdo/valdo-eval-2021) matches at distance < the limit: a centre exactly
    # 5 mm away is a false positive. On a 1 mm grid that is a single-voxel prediction five voxels off.
    m = valdo_match(np.array([[0.0, 0.0, 4.99], [0.0, 0.0, 5.0]]), np.array([[0.0, 0.0, 0.0], [0.0, 9.0, 9.0]]))
    assert m.choice.tolist() == [0, -1]
    r = evaluate_subject(vol((5, 5, 10)), vol((5, 5, 5)), ISO)
    assert (r["TP"], r["FP"], r["FN"]) == (0, 1, 1)
    m = valdo_match(np.array([[0.0, 0.0, 3.5]]), np.array([[0.0, 0.0, 0.0]]), max_distance_mm=4.0)
    assert m.is_tp.tolist() == [True]
    m = valdo_match(np.array([[0.0, 0.0, 4.0]]), np.array([[0.0, 0.0, 0.0]]), max_distance_mm=4.0)
    assert m.is_fp.tolist() == [True]


def test_two_predictions_for_one_reference_nearest_is_tp_other_fp() -> None:
    pred = vol((10, 10, 12), (10, 10, 7))  # 2 mm and 3 mm from the reference
    r = evaluate_subject(pred, vol((10, 10, 10)), ISO)
    assert (r["TP"], r["FP"], r["FN"]) == (1, 1, 0)
    assert r["valdo_F1"] == pytest.approx(2 / 3)
    m = valdo_match(np.array([[10, 10, 12], [10, 10, 7]]), np.array([[10, 10, 10]]))
    assert m.is_tp.tolist() == [True, False]


def test_exact_tie_makes_both_predictions_tp() -> None:
    pred = vol((10, 10, 12), (10, 10, 8))  # both exactly 2 mm away
    r = evaluate_subject(pred, vol((10, 10, 10)), ISO)
    assert r["valdo_TP"] == 2.0 and r["valdo_FP"] == 0
    assert r["valdo_F1"] == 1.0
    # The paper's counts: the reference is found once, the tied duplicate is not a FP.
    assert (r["TP"], r["FP"], r["FN"]) == (1, 0, 0)


def test_prediction_near_two_references_picks_nearest_not_optimal() -> None:
    refs = vol((10, 10, 6), (10, 10, 12))
    # Alone, a prediction at z=10 (4 mm / 2 mm) picks the nearer reference at z=12.
    r = evaluate_subject(vol((10, 10, 10)), refs, ISO)
    assert (r["TP"], r["FP"], r["FN"]) == (1, 0, 1)
    m = valdo_match(np.array([[10, 10, 10]]), np.array([[10, 10, 6], [10, 10, 12]]))
    assert m.choice.tolist() == [1]
    # A closer prediction takes that reference; the first becomes FP although the other
    # reference is within 5 mm: the rule is not an optimal one-to-one assignment.
    r = evaluate_subject(vol((10, 10, 10), (10, 10, 13)), refs, ISO)
    assert (r["TP"], r["FP"], r["FN"]) == (1, 1, 1)


def test_anisotropic_zooms_change_the_decision() -> None:
    pred, ref = vol((10, 10, 12)), vol((10, 10, 10))
    assert evaluate_subject(pred, ref, (1.0, 1.0, 1.0))["TP"] == 1  # 2 mm
    assert evaluate_subject(pred, ref, (1.0, 1.0, 3.0))["FP"] == 1  # 6 mm
    assert evaluate_subject(pred, ref, (3.0, 3.0, 1.0))["TP"] == 1  # in-plane zooms do not matter here


def test_voxels_touching_at_a_corner_are_one_microbleed() -> None:
    # 26-connectivity (the released VALDO code's default): a prediction stepping one voxel diagonally is one
    # detection, not a TP plus a FP one voxel away.
    pred = vol((5, 5, 5), (6, 6, 6))
    ref = vol((5, 5, 5))
    r = evaluate_subject(pred, ref, ISO)
    assert r["n_predicted"] == 1
    assert (r["TP"], r["FP"], r["FN"]) == (1, 0, 0)
    assert r["valdo_count_difference"] == 0
    r6 = evaluate_subject(pred, ref, ISO, connectivity=6)  # still available to the API, for comparison
    assert r6["n_predicted"] == 2 and (r6["TP"], r6["FP"]) == (1, 1)


def test_empty_reference_gives_nan_f1_but_counts_false_positives() -> None:
    empty = evaluate_subject(vol((3, 3, 3), (15, 15, 15)), np.zeros(SHAPE), ISO)
    assert math.isnan(empty["valdo_F1"])
    assert empty["FP"] == 2 and empty["valdo_count_difference"] == 2
    assert math.isnan(empty["TPR"])
    good = evaluate_subject(vol((5, 5, 5)), vol((5, 5, 5)), ISO)
    half = evaluate_subject(vol((5, 5, 5)), vol((5, 5, 5), (12, 12, 12)), ISO)  # F1 = 2/3
    summary = pool_results({"a": empty, "b": good, "c": half})
    assert summary["valdo"]["F1_median"] == pytest.approx((1 + 2 / 3) / 2)  # NaN left out
    assert summary["valdo"]["n_subjects_with_reference"] == 2
    assert summary["pooled"]["FP"] == 2
    assert summary["pooled"]["FPavg"] == pytest.approx(2 / 3)


def test_empty_prediction_is_all_false_negatives() -> None:
    r = evaluate_subject(np.zeros(SHAPE), vol((5, 5, 5), (12, 12, 12)), ISO)
    assert (r["TP"], r["FP"], r["FN"]) == (0, 0, 2)
    assert r["valdo_F1"] == 0.0
    assert r["valdo_count_difference"] == 2
    assert r["valdo_Dice"] == 0.0 and r["Dice"] == 0.0


def test_rater_weight_half_counts_half() -> None:
    ref = vol((12, 12, 12), value=0.5, base=vol((5, 5, 5), value=1.0))
    # The certain microbleed found, the uncertain one missed, one false positive.
    r = evaluate_subject(vol((5, 5, 5), (17, 3, 3)), ref, ISO)
    assert (r["valdo_TP"], r["valdo_FN"], r["valdo_FP"]) == (1.0, 0.5, 1)
    assert r["valdo_F1"] == pytest.approx(2 / 3.5)
    # The paper's counts are unweighted.
    assert (r["TP"], r["FN"]) == (1, 1)
    # The other way round.
    r = evaluate_subject(vol((12, 12, 12)), ref, ISO)
    assert (r["valdo_TP"], r["valdo_FN"]) == (0.5, 1.0)
    assert r["valdo_F1"] == pytest.approx(1 / 2)


def test_component_weight_is_its_max_and_instance_maps_weigh_one() -> None:
    ref = vol((5, 5, 5), value=0.5)
    ref[5, 5, 6] = 1.0  # a 0.5 rim on a 1.0 core: one component of weight 1
    r = evaluate_subject(np.zeros(SHAPE), ref, ISO)
    assert r["valdo_FN"] == 1.0
    instances = vol((12, 12, 12), value=2.0, base=vol((5, 5, 5), value=1.0))
    r = evaluate_subject(np.zeros(SHAPE), instances, ISO)
    assert r["valdo_FN"] == 2.0


def test_dice_per_matched_reference_averaged() -> None:
    ref = vol((5, 5, 5), (5, 5, 6), (14, 14, 14))
    pred = vol((5, 5, 6), (5, 5, 7), (14, 14, 14))  # half overlap on the first, exact on the second
    r = evaluate_subject(pred, ref, ISO)
    assert r["valdo_Dice"] == pytest.approx((0.5 + 1.0) / 2)


def test_dice_uses_union_of_all_predictions_that_picked_the_reference() -> None:
    ref = vol((5, 5, 4), (5, 5, 5), (5, 5, 6))
    pred = vol((5, 5, 5), (5, 5, 8))  # both pick the reference; the second is a FP
    r = evaluate_subject(pred, ref, ISO)
    assert (r["TP"], r["FP"]) == (1, 1)
    assert r["valdo_Dice"] == pytest.approx(2 * 1 / (3 + 2))


def test_count_difference_counts_components() -> None:
    ref = vol((3, 3, 3), (9, 9, 9), (15, 15, 15))
    r = evaluate_subject(vol((3, 3, 3)), ref, ISO)
    assert r["valdo_count_difference"] == 2
    assert r["n_reference"] == 3 and r["n_predicted"] == 1


def test_probabilities_and_instance_maps_binarise_at_half() -> None:
    ref = vol((5, 5, 5), (12, 12, 12))
    prob = vol((12, 12, 12), value=0.49, base=vol((5, 5, 5), value=0.5))
    assert evaluate_subject(prob, ref, ISO)["TP"] == 1
    inst = vol((12, 12, 12), value=7.0, base=vol((5, 5, 5), value=3.0))
    assert evaluate_subject(inst, ref, ISO)["TP"] == 2


def test_v_dice_ignores_missed_microbleeds_and_dice_all_does_not() -> None:
    # Issue 15: "V-Dice 100 with 1 of 6 found". Six references, one found and outlined exactly.
    ref = vol((2, 2, 2), (2, 2, 10), (2, 2, 17), (10, 10, 2), (10, 10, 10), (17, 17, 17))
    r = evaluate_subject(vol((2, 2, 2)), ref, ISO)
    assert (r["TP"], r["FN"]) == (1, 5)
    assert r["valdo_Dice"] == 1.0  # VALDO: matched references only
    assert r["valdo_Dice_all"] == pytest.approx(1 / 6)  # every reference, missed = 0
    assert math.isnan(evaluate_subject(vol((2, 2, 2)), np.zeros(SHAPE), ISO)["valdo_Dice_all"])


def test_hand_built_cohort_exact_valdo_and_pooled_values() -> None:
    """Ties, two predictions picking one reference, rater weight 0.5, an empty reference."""
    # a: exact tie (both 2 mm) on reference 1 -> 2 TP; reference 2 (weight 0.5) missed.
    ref_a = vol((15, 15, 15), value=0.5, base=vol((10, 10, 10)))
    a = evaluate_subject(vol((10, 10, 12), (10, 10, 8)), ref_a, ISO)
    assert (a["valdo_TP"], a["valdo_FN"], a["valdo_FP"]) == (2.0, 0.5, 0)
    assert a["valdo_F1"] == pytest.approx(4 / 4.5)
    # b: two predictions pick one reference at 1 mm and 3 mm -> 1 TP + 1 FP; a far one is FP.
    b = evaluate_subject(vol((5, 5, 6), (5, 5, 8), (17, 17, 17)), vol((5, 5, 5)), ISO)
    assert (b["valdo_TP"], b["valdo_FN"], b["valdo_FP"]) == (1.0, 0.0, 2)
    assert b["valdo_F1"] == pytest.approx(2 / 4)
    # c: empty reference, one false positive: F1 NaN, left out of the median.
    c = evaluate_subject(vol((3, 3, 3)), np.zeros(SHAPE), ISO)
    assert math.isnan(c["valdo_F1"]) and c["valdo_FP"] == 1
    s = pool_results({"a": a, "b": b, "c": c})
    assert s["valdo"]["F1_median"] == pytest.approx((4 / 4.5 + 0.5) / 2)
    assert s["valdo"]["F1_pooled"] == pytest.approx(2 * 3.0 / (2 * 3.0 + 0.5 + 3))
    assert s["valdo"]["count_difference_median"] == 1.0  # |2-2|, |1-3|, |0-1|
    # The paper's pooled counts: references found once each, the tie adds no FP.
    assert (s["pooled"]["TP"], s["pooled"]["FP"], s["pooled"]["FN"]) == (2, 3, 1)
    assert s["pooled"]["FPavg"] == pytest.approx(1.0)


def test_a_tie_does_not_hide_a_missed_reference() -> None:
    # Two predictions exactly 2 mm either side of reference A, reference B far away and missed. The released
    # VALDO code takes FN = #references - #TP predictions = 2 - 2 = 0 and reports F1 1.0; B is missed, so here
    # FN = 1: V-F1 = 2·2 / (2·2 + 1 + 0) = 0.8, and the paper's counts find A once: F1 = 2/(2 + 0 + 1).
    r = evaluate_subject(vol((10, 10, 8), (10, 10, 12)), vol((10, 10, 10), (3, 3, 3)), ISO)
    assert (r["valdo_TP"], r["valdo_FN"], r["valdo_FP"]) == (2.0, 1.0, 0)
    assert r["valdo_F1"] == pytest.approx(0.8)
    assert (r["TP"], r["FP"], r["FN"]) == (1, 0, 1) and r["F1"] == pytest.approx(2 / 3)
