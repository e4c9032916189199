"""The VALDO 2021 challenge rule for scoring microbleed detection (Task 2).

The rule, reproduced as published (see ``docs/cmb-domain.md``, "How detection is scored"):

1. the prediction is binarised at >= 0.5 and split into 26-connected components
   (:data:`plkd.metrics.components.CONNECTIVITY`: the released evaluation code,
   WhereIsValdo/valdo-eval-2021, labels with ``-c 3``, all neighbours, unless told otherwise);
   so is the reference (every non-zero voxel);
2. each component is summarised by its centre of mass in voxel indices times the voxel size
   (mm) — a rotation of the grid changes no distance (the released code leaves the voxel size
   out and measures in voxels: the same on a 1 mm grid). ``plkd evaluate`` takes the voxel
   size from the affine it places the voxels with (sform, else qform), not from a pixdim that
   disagrees with it (:func:`plkd.metrics.evaluation.voxel_size_mm`), as ``plkd tune``/``cv`` do;
3. each predicted component picks its nearest reference component if that lies closer than
   5 mm (strictly, ``<`` as in the released code: a centre exactly 5 mm away, as two
   single-voxel microbleeds five 1 mm voxels apart are, is a false positive), otherwise it is
   a false positive;
4. for each reference, among the predictions that picked it, the nearest is a true
   positive — exact distance ties are all true positives — and the others are false
   positives; a reference picked by none is a false negative. This is *not* an optimal
   one-to-one assignment: a prediction whose nearest reference is taken by a closer
   prediction becomes a false positive even if another reference lies within 5 mm;
5. F1 = 2·ΣTP / (2·ΣTP + ΣFN + nFP) where each TP and FN counts with its reference's
   rater-agreement weight (:func:`plkd.metrics.components.reference_weights`); F1 is NaN for
   an empty reference; count difference = |#reference − #predicted| components;
6. Dice of each detected reference against the union of every prediction that picked it
   (nearest or not), averaged over detected references: 0 when the subject has microbleeds but
   none is detected, NaN for an empty reference (as the released code; NaN for "none detected"
   dropped such subjects from the median and raised it). This
   "V-Dice" ignores missed microbleeds (1 of 6 found, perfectly outlined, gives 100 %), so
   ``Dice_all`` is reported beside it: the same per-reference Dice averaged over *every*
   reference, a missed one counting 0 (NaN for an empty reference).

When two references are exactly equally near a prediction, the one with the lower
component label (first in array order) is picked.

Where this differs from the released code (WhereIsValdo/valdo-eval-2021,
``evaluation_comparison/pairwise_measures.py``, read 2026-11): (a) it measures centre distances in
voxel indices, without the zooms (plkd: mm, as the rule is stated in ``docs/cmb-domain.md``; equal on
a 1 mm grid); (b) it rounds the reference (``np.around``: 0.5 becomes 0) and counts every component
once, while plkd keeps 0.5 voxels as half-weight microbleeds (step 5); (c) it takes FN as
#references − #TP predictions, so two tied predictions on one reference hide a missed one (2
references, both predictions tied on the first: FN 0, F1 1.0); plkd counts the references nobody
detected (FN 1, F1 0.8); (d) it refuses predictions outside 0..1 (the challenge's rule), while plkd
also reads label maps (``plkd predict``'s microbleed numbers 1..N, 0/255 masks): every voxel >= the
threshold (0.5) is foreground.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plkd.metrics.components import Components, pairwise_distances, reference_weights

#: A predicted centre must lie closer than this distance (mm) to a reference centre to match it.
MAX_DISTANCE_MM = 5.0


@dataclass
class ValdoMatch:
    """Outcome of the matching for one subject.

    ``choice[i]`` is the reference index picked by prediction ``i`` (-1: none within reach),
    ``distance[i]`` its distance in mm (inf when none), ``is_tp``/``is_fp`` classify each
    prediction and ``detected[r]`` says whether reference ``r`` has a true positive.
    """

    choice: np.ndarray
    distance: np.ndarray
    is_tp: np.ndarray
    is_fp: np.ndarray
    detected: np.ndarray


def valdo_match(
    pred_centres: np.ndarray, ref_centres: np.ndarray, max_distance_mm: float = MAX_DISTANCE_MM
) -> ValdoMatch:
    """Match predicted component centres to reference centres (both ``(n, 3)`` in mm) by the VALDO rule."""
    pred = np.asarray(pred_centres, dtype=np.float64).reshape(-1, 3)
    ref = np.asarray(ref_centres, dtype=np.float64).reshape(-1, 3)
    n_pred, n_ref = len(pred), len(ref)
    choice = np.full(n_pred, -1, dtype=np.int64)
    distance = np.full(n_pred, np.inf)
    if n_pred and n_ref:
        dist = pairwise_distances(pred, ref)
        nearest = np.argmin(dist, axis=1)
        near_dist = dist[np.arange(n_pred), nearest]
        within = near_dist < max_distance_mm  # strictly: the released VALDO code's `<`
        choice[within] = nearest[within]
        distance[within] = near_dist[within]
    picked = choice >= 0
    # Distance of the closest prediction that picked each reference (inf: picked by none).
    closest = np.full(n_ref, np.inf)
    np.minimum.at(closest, choice[picked], distance[picked])
    is_tp = np.zeros(n_pred, dtype=bool)
    is_tp[picked] = distance[picked] == closest[choice[picked]]
    return ValdoMatch(choice=choice, distance=distance, is_tp=is_tp, is_fp=~is_tp, detected=np.isfinite(closest))


def per_reference_dice(pred: Components, ref: Components, match: ValdoMatch) -> np.ndarray:
    """Dice of each reference ``(m,)`` against the union of the predictions that picked it (0 if none)."""
    if ref.n == 0:
        return np.zeros(0, dtype=np.float64)
    # Relabel every predicted voxel with (1 + the reference its component picked), 0 for none.
    lut = np.zeros(pred.n + 1, dtype=np.int64)
    lut[1:] = match.choice + 1
    pred_ref = lut[pred.labels]
    inter = np.bincount(ref.labels[(ref.labels > 0) & (ref.labels == pred_ref)], minlength=ref.n + 1)[1:]
    pred_sizes = np.bincount(pred_ref.ravel(), minlength=ref.n + 1)[1:]
    return 2.0 * inter / (ref.sizes + pred_sizes)


def valdo_subject(
    pred: Components,
    ref: Components,
    reference_values: np.ndarray,
    zooms: np.ndarray | tuple[float, float, float],
    max_distance_mm: float = MAX_DISTANCE_MM,
) -> dict:
    """Score one subject by the VALDO rule from the components of its prediction and reference.

    ``reference_values`` is the reference map itself (for rater-agreement weights); ``zooms``
    the voxel size of the common grid in mm. Returns the match and a dict with ``F1``,
    ``count_difference``, ``Dice`` (detected references; 0 when none is, NaN without references),
    ``Dice_all`` (every reference),
    weighted ``TP``/``FN``, ``FP`` (a count), ``n_reference``,
    ``n_predicted``, and the unweighted ``detected`` reference count.
    """
    match = valdo_match(pred.centres_mm(zooms), ref.centres_mm(zooms), max_distance_mm)
    dice = per_reference_dice(pred, ref, match)
    weights = reference_weights(reference_values, ref)
    tp = float(weights[match.choice[match.is_tp]].sum())
    fn = float(weights[~match.detected].sum())
    fp = int(match.is_fp.sum())
    f1 = float("nan") if ref.n == 0 else 2.0 * tp / (2.0 * tp + fn + fp)
    return {
        "match": match,
        "F1": f1,
        "count_difference": abs(ref.n - pred.n),
        # A subject whose microbleeds are all missed scores 0 (released code), not NaN: NaN left it out of the median.
        "Dice": float(np.mean(dice[match.detected])) if np.any(match.detected) else (0.0 if ref.n else float("nan")),
        "Dice_all": float(np.mean(dice)) if ref.n else float("nan"),
        "TP": tp,
        "FN": fn,
        "FP": fp,
        "detected": int(match.detected.sum()),
        "n_reference": ref.n,
        "n_predicted": pred.n,
    }
