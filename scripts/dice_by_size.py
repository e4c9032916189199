"""Outline quality per microbleed size: how much of each labelled microbleed the prediction covers.

For every reference microbleed (a connected component of the label map, :mod:`plkd.metrics.components`) it gives
its sphere-equivalent diameter (:mod:`plkd.metrics.sizes`), whether the VALDO rule found it, its voxel count, the
voxels of the predictions matched to it (all of them, and those inside the microbleed) and their Dice with it
(:func:`plkd.metrics.valdo.per_reference_dice`, the per-microbleed Dice that ``plkd evaluate`` averages), then the
mean Dice of the found microbleeds per size bin. A mask that holds a rim beside a large microbleed is found by the
VALDO rule and has a low Dice here.

    python scripts/dice_by_size.py PRED REF [--min-mm D]

``PRED`` and ``REF`` are files or folders paired as ``plkd evaluate`` pairs them, and read as it reads them (a
reference that is no label map, such as a probability map, and a prediction with negative values are refused in one
line ``plkd: error: …``); predictions without a reference are left out and said in one warning line. ``--min-mm``
lists only the microbleeds of at least that diameter (default 0: all); the per-bin means always cover all of them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from plkd.cli import exit_code_of
from plkd.metrics.components import binarise_prediction, binarise_reference, find_components
from plkd.metrics.evaluation import (
    check_prediction_values,
    check_reference_values,
    labels_on_reference_grid,
    voxel_size_mm,
)
from plkd.metrics.pairing import pair_files
from plkd.metrics.scored import NO_REFERENCE, ScoredSubjects
from plkd.metrics.sizes import SIZE_NAMES, equivalent_diameter_mm, size_bin
from plkd.metrics.valdo import per_reference_dice, valdo_match
from plkd.volumes import load_label


def outline_rows(pred: str, ref: str) -> list[dict[str, Any]]:
    """One row per reference microbleed of the paired files or folders ``pred`` and ``ref``: ``subject``,
    ``diameter_mm``, ``found`` (VALDO rule), ``voxels`` (its own), ``predicted`` (voxels of the predictions matched
    to it), ``inside`` (those of them inside it) and ``dice`` (0-1)."""
    rows = []
    pairing = pair_files(pred, ref)
    # Said as plkd evaluate says it: the per-bin means cover the subjects scored, not the predictions given.
    scored = ScoredSubjects("dice_by_size", scored=list(pairing.pairs))
    for sid in pairing.unmatched_predictions:
        scored.skip(sid, pairing.reasons.get(sid, NO_REFERENCE))
    scored.warn()
    for sid, (pred_file, ref_file) in pairing.pairs.items():
        reference = load_label(ref_file, what="reference")
        check_reference_values(reference)  # a probability map as the reference was cut at 0.25 without a word
        zooms = voxel_size_mm(reference)
        ref_comps = find_components(binarise_reference(reference.data))
        if pred_file is None:
            values = np.zeros(reference.shape, dtype=np.float32)
        else:
            prediction = load_label(pred_file, what="prediction")
            check_prediction_values(prediction)
            values = labels_on_reference_grid(prediction, reference)
        pred_comps = find_components(binarise_prediction(values))
        match = valdo_match(pred_comps.centres_mm(zooms), ref_comps.centres_mm(zooms))
        dice = per_reference_dice(pred_comps, ref_comps, match)
        diameters = equivalent_diameter_mm(ref_comps.sizes, reference.affine)
        for r in range(ref_comps.n):
            matched = np.isin(pred_comps.labels, 1 + np.flatnonzero(match.choice == r))
            rows.append(
                {
                    "subject": sid,
                    "diameter_mm": float(diameters[r]),
                    "found": bool(match.detected[r]),
                    "voxels": int(ref_comps.sizes[r]),
                    "predicted": int(np.count_nonzero(matched)),
                    "inside": int(np.count_nonzero(matched & (ref_comps.labels == r + 1))),
                    "dice": float(dice[r]),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pred", help="prediction file or folder (plkd predict's NAME_cmb.nii.gz)")
    parser.add_argument("ref", help="reference label file or folder")
    parser.add_argument("--min-mm", type=float, default=0.0, help="list microbleeds of at least this diameter")
    args = parser.parse_args(argv)
    rows = outline_rows(args.pred, args.ref)
    print("subject  diameter_mm  found  voxels  predicted  inside  dice")
    for row in rows:
        if row["diameter_mm"] >= args.min_mm:
            print(
                f"{row['subject']}  {row['diameter_mm']:.1f}  {'yes' if row['found'] else 'no'}  {row['voxels']}  "
                f"{row['predicted']}  {row['inside']}  {100 * row['dice']:.1f}"
            )
    print("\nmean Dice of the found microbleeds (%), per size bin:")
    for name in SIZE_NAMES:
        if found := [row["dice"] for row in rows if row["found"] and size_bin(row["diameter_mm"]) == name]:
            print(f"  {name}: {100 * np.mean(found):.1f} ({len(found)} found)")
    return 0


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
