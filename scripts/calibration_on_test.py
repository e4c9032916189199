"""Expected calibration error of a prediction folder's candidate probabilities against labels.

Every candidate in ``PRED/*_cmb.json`` (kept or not) counts as a microbleed when its centre lies
within max(3 mm, the reference blob's radius) of one (:func:`plkd.tuning.is_microbleed`); the
reference is the label of the same subject in DATA (``plkd synth``/VALDO layout). Prints the ECE
(10 bins) and the candidates per probability bin with the share that are microbleeds.

    python scripts/calibration_on_test.py PRED DATA
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from plkd.calibration import expected_calibration_error
from plkd.data.datasets import find_subjects, load_subject
from plkd.tuning import is_microbleed, truth_microbleeds


def main() -> None:
    pred, data = Path(sys.argv[1]), Path(sys.argv[2])
    probs, truth = [], []
    for subject in find_subjects(data):
        if subject.label is None:
            continue
        found = sorted(pred.glob(f"{subject.id}_*_cmb.json"))
        if not found:
            continue
        refs = truth_microbleeds(load_subject(subject)[1])
        for c in json.loads(found[0].read_text(encoding="utf-8"))["candidates"]:
            if c.get("probability") is not None:
                probs.append(float(c["probability"]))
                truth.append(is_microbleed(c["center_ras"], refs))
    p, y = np.asarray(probs), np.asarray(truth, dtype=bool)
    print(f"{len(p)} candidates, {int(y.sum())} on a microbleed; ECE {expected_calibration_error(p, y):.3f}")
    for lo in np.arange(0.0, 1.0, 0.1):
        sel = (p >= lo) & ((p < lo + 0.1) if lo < 0.9 else (p <= 1.0))
        if sel.any():
            share = 100 * y[sel].mean()
            print(f"  p {lo:.1f}-{lo + 0.1:.1f}: {int(sel.sum()):4d} candidates, {share:5.1f} % microbleeds")


if __name__ == "__main__":
    main()
