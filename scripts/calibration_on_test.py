"""Expected calibration error of a prediction folder's candidate probabilities against labels.

Every candidate in ``PRED/*_cmb.json`` (kept or not) counts as a microbleed when its centre lies
within max(3 mm, the reference blob's radius) of one (:func:`plkd.tuning.is_microbleed`); the
reference is the label of the same subject in DATA (``plkd synth``/VALDO layout). Prints the ECE
(10 bins) and the candidates per probability bin with the share that are microbleeds.

    python scripts/calibration_on_test.py PRED DATA

Subjects without a label or a prediction, and predictions of no subject in DATA, are left out and said in
one warning line (the count is printed with the ECE); nothing to score is an error (``plkd: error: …``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from plkd.calibration import N_BINS, expected_calibration_error, probability_bins
from plkd.cli import exit_code_of
from plkd.data.datasets import find_subjects, load_subject
from plkd.metrics.scored import candidate_files
from plkd.tuning import is_microbleed, truth_microbleeds


def main() -> None:
    pred, data = Path(sys.argv[1]), Path(sys.argv[2])
    probs, truth = [], []
    pairs, scored = candidate_files(find_subjects(data), pred, "calibration_on_test")
    for subject, path in pairs:
        refs = truth_microbleeds(load_subject(subject)[1])
        for c in json.loads(path.read_text(encoding="utf-8"))["candidates"]:
            if c.get("probability") is not None:
                probs.append(float(c["probability"]))
                truth.append(is_microbleed(c["center_ras"], refs))
    scored.require_any()
    scored.warn()
    p, y = np.asarray(probs), np.asarray(truth, dtype=bool)
    ece = expected_calibration_error(p, y)
    print(f"{len(scored.scored)} subject(s), {len(p)} candidates, {int(y.sum())} on a microbleed; ECE {ece:.3f}")
    # The ECE's own bins: np.arange(0, 1, 0.1) edges (0.30000000000000004, ...) put p = 0.3, 0.6 and 0.7 a row low.
    bins = probability_bins(p)
    for k in range(N_BINS):
        sel = bins == k
        if sel.any():
            share = 100 * y[sel].mean()
            span = f"{k / N_BINS:.1f}-{(k + 1) / N_BINS:.1f}"
            print(f"  p {span}: {int(sel.sum()):4d} candidates, {share:5.1f} % microbleeds")


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
