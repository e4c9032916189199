"""How well a bundle's screening network (stage 1) finds microbleeds at each input resolution.

For each labelled subject and condition (1 mm, cubic LR@k, k-mm thick slabs) it lists the
screening candidates at a loose threshold (0.3, at most 300, strongest first, as
:meth:`plkd.inference.Predictor.screen` gives them) and counts the microbleeds with a candidate
within 4 mm: among all candidates, and among the 50 strongest. A microbleed the screening stage
misses, or ranks behind hundreds of mimics, is lost whatever the segmenter does.

    python scripts/screening_recall.py DATA BUNDLE [BUNDLE ...] [--subjects N]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage

from plkd.data.datasets import find_subjects, load_subject
from plkd.inference.predictor import Predictor
from plkd.lowres import simulate_lowres

CONDITIONS = (("hr", 1), ("interp", 4), ("interp", 8), ("slab", 4))
HIT_MM = 4.0
TOP = 50


def truth_centres(label) -> np.ndarray:  # noqa: ANN001 - a plkd Volume
    """RAS centres of the label's 26-connected components."""
    comps, n = ndimage.label(label.data > 0, structure=np.ones((3, 3, 3), dtype=bool))
    vox = np.array(ndimage.center_of_mass(comps > 0, comps, range(1, n + 1))).reshape(-1, 3)
    return vox @ label.affine[:3, :3].T + label.affine[:3, 3]


def recall(predictor: Predictor, subjects: list, mode: str, factor: int) -> tuple[float, int, int, int]:
    """(candidates per subject, microbleeds, found among all candidates, found among the TOP strongest)."""
    n_cands = total = found = found_top = 0
    for subject in subjects:
        image, label, mask = load_subject(subject)
        data = image.data if factor == 1 else simulate_lowres(image.data, factor, axis=2, mode=mode)
        centres, _scores = predictor.screen(image.with_data(data.astype(np.float32)), mask, threshold=0.3)
        n_cands += len(centres)
        for ref in truth_centres(label):
            dist = np.linalg.norm(centres - ref, axis=1) if len(centres) else np.full(1, np.inf)
            total += 1
            found += bool(dist.min() < HIT_MM)
            found_top += bool(dist[:TOP].min() < HIT_MM)
    return n_cands / max(len(subjects), 1), total, found, found_top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--subjects", type=int, default=0, help="first N labelled subjects (default: all)")
    args = parser.parse_args()
    subjects = [s for s in find_subjects(args.data) if s.label is not None]
    subjects = subjects[: args.subjects] if args.subjects else subjects
    print(f"| bundle | input | candidates/subject | found (all) | found (top {TOP}) |")
    print("|---|---|---:|---:|---:|")
    for bundle in args.bundles:
        predictor = Predictor(bundle, device="cpu")
        for mode, factor in CONDITIONS:
            per_subject, total, found, top = recall(predictor, subjects, mode, factor)
            name = "1 mm" if factor == 1 else f"{'LR' if mode == 'interp' else 'slab'}@{factor}"
            print(f"| {bundle} | {name} | {per_subject:.0f} | {found}/{total} | {top}/{total} |", flush=True)


if __name__ == "__main__":
    main()
