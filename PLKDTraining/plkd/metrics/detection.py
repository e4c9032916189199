"""The paper's Table 2 metrics and the VALDO rule for one subject, and their pooling.

Table 2 of the paper: TPR = TP/(TP+FN), PPV = TP/(TP+FP), FPavg = FP/N subjects,
F1 = 2·TPR·PPV/(TPR+PPV) and Dice = 2TP/(2TP+FP+FN) over voxels. The paper does not say how
a detection is counted; here TP/FP/FN come from the same component matching as the VALDO
rule (:mod:`plkd.metrics.valdo`), so both reports agree on what a hit is:

- TP = references detected (each reference counts once, unweighted),
- FN = references not detected,
- FP = predicted components the rule calls false positives.

A prediction that ties exactly with the nearest one for the same reference is a true
positive for VALDO but adds no second TP here (TPR stays the fraction of references found).
The paper reports pooled figures: detection counts and Dice voxel counts are summed over
subjects before the ratios are taken. VALDO reports per-subject medians; both are given.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from plkd.errors import InputError
from plkd.metrics.components import CONNECTIVITY, binarise_prediction, binarise_reference, find_components
from plkd.metrics.valdo import MAX_DISTANCE_MM, valdo_subject


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def table2(tp: float, fp: float, fn: float, n_subjects: int = 1) -> dict[str, float]:
    """TPR, PPV, FPavg and F1 of the paper from detection counts (NaN where undefined).

    F1 is computed as 2TP/(2TP+FP+FN), which equals 2·TPR·PPV/(TPR+PPV) wherever that is
    defined and is 0 (not undefined) when there are references or predictions but no hit.
    """
    return {
        "TPR": _ratio(tp, tp + fn),
        "PPV": _ratio(tp, tp + fp),
        "FPavg": _ratio(fp, n_subjects),
        "F1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def evaluate_subject(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: np.ndarray | tuple[float, float, float],
    *,
    threshold: float = 0.5,
    max_distance_mm: float = MAX_DISTANCE_MM,
    connectivity: int = CONNECTIVITY,
) -> dict:
    """All per-subject metrics for a prediction and a reference on the same voxel grid.

    ``pred`` may be probabilities, a binary mask or an instance map (foreground at
    ``>= threshold``); ``truth`` is the reference (foreground where non-zero; values in (0, 1]
    are rater-agreement weights); ``spacing`` is the voxel size in mm along each array axis
    (the affine's column norms, :func:`plkd.metrics.evaluation.voxel_size_mm`).
    Returns the keys of one ``"subjects"`` entry of the ``plkd evaluate`` JSON.
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise InputError(f"prediction shape {pred.shape} differs from reference shape {truth.shape}; resample first")
    pred_mask = binarise_prediction(pred, threshold)
    ref_mask = binarise_reference(truth)
    pred_c = find_components(pred_mask, connectivity)
    ref_c = find_components(ref_mask, connectivity)
    valdo = valdo_subject(pred_c, ref_c, truth, spacing, max_distance_mm)

    tp = valdo["detected"]
    fn = ref_c.n - tp
    fp = valdo["FP"]
    v_tp = int(np.count_nonzero(pred_mask & ref_mask))
    v_fp = int(np.count_nonzero(pred_mask)) - v_tp
    v_fn = int(np.count_nonzero(ref_mask)) - v_tp
    scores = table2(tp, fp, fn)
    return {
        "TP": int(tp),
        "FP": int(fp),
        "FN": int(fn),
        "TPR": scores["TPR"],
        "PPV": scores["PPV"],
        "F1": scores["F1"],
        "Dice": _ratio(2 * v_tp, 2 * v_tp + v_fp + v_fn),
        "voxel_TP": v_tp,
        "voxel_FP": v_fp,
        "voxel_FN": v_fn,
        "valdo_F1": valdo["F1"],
        "valdo_count_difference": int(valdo["count_difference"]),
        "valdo_Dice": valdo["Dice"],
        "valdo_Dice_all": valdo["Dice_all"],
        "valdo_TP": valdo["TP"],
        "valdo_FN": valdo["FN"],
        "valdo_FP": int(valdo["FP"]),
        "n_reference": int(ref_c.n),
        "n_predicted": int(pred_c.n),
    }


def _nan_stat(values: list[float], fn) -> float:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    return float(fn(arr)) if arr.size else float("nan")


def pool_results(per_subject: Mapping[str, Mapping]) -> dict:
    """Pool per-subject results (from :func:`evaluate_subject`) into the two summaries.

    Returns ``{"pooled": ..., "valdo": ...}``. ``pooled`` holds the paper's figures from counts
    summed over subjects (detections for TPR/PPV/F1/FPavg, voxels for Dice). ``valdo`` holds
    the median and mean over subjects of F1 (subjects with an empty reference, F1 NaN, are left
    out), of the count difference (all subjects), of Dice over found references (subjects with
    a detection) and of Dice over all references (a missed one counts 0), plus
    the F1 of the weighted counts summed over all subjects (false positives of subjects
    without microbleeds included).
    """
    subs = list(per_subject.values())
    n = len(subs)
    tp = sum(int(s["TP"]) for s in subs)
    fp = sum(int(s["FP"]) for s in subs)
    fn = sum(int(s["FN"]) for s in subs)
    v_tp = sum(int(s["voxel_TP"]) for s in subs)
    v_fp = sum(int(s["voxel_FP"]) for s in subs)
    v_fn = sum(int(s["voxel_FN"]) for s in subs)
    pooled = {**table2(tp, fp, fn, n), "Dice": _ratio(2 * v_tp, 2 * v_tp + v_fp + v_fn)}
    pooled.update({"TP": tp, "FP": fp, "FN": fn, "voxel_TP": v_tp, "voxel_FP": v_fp, "voxel_FN": v_fn})
    pooled["n_subjects"] = n

    f1 = [s["valdo_F1"] for s in subs]
    cd = [float(s["valdo_count_difference"]) for s in subs]
    dice = [s["valdo_Dice"] for s in subs]
    dice_all = [s.get("valdo_Dice_all", float("nan")) for s in subs]
    w_tp = sum(float(s["valdo_TP"]) for s in subs)
    w_fn = sum(float(s["valdo_FN"]) for s in subs)
    w_fp = sum(int(s["valdo_FP"]) for s in subs)
    valdo = {
        "F1_median": _nan_stat(f1, np.median),
        "F1_mean": _nan_stat(f1, np.mean),
        "count_difference_median": _nan_stat(cd, np.median),
        "count_difference_mean": _nan_stat(cd, np.mean),
        "Dice_median": _nan_stat(dice, np.median),
        "Dice_mean": _nan_stat(dice, np.mean),
        "Dice_all_median": _nan_stat(dice_all, np.median),
        "Dice_all_mean": _nan_stat(dice_all, np.mean),
        "F1_pooled": _ratio(2 * w_tp, 2 * w_tp + w_fn + w_fp),
        "n_subjects_with_reference": sum(1 for s in subs if int(s["n_reference"]) > 0),
        "n_subjects": n,
    }
    return {"pooled": pooled, "valdo": valdo}
