"""Stage 1 recall per microbleed size: does the screening stage propose every microbleed?

For each labelled subject and input condition (1 mm, cubic LR@2/4/8, 3 and 4 mm thick slabs on
the 1 mm grid) it takes the candidates the predictor would segment, capped at ``--budget`` per
subject (default 50: every blob candidate plus the strongest FCN candidates above a loose
screening threshold of 0.3), and counts the microbleeds with a candidate within ``--hit-mm``
(default 3 mm) of their centre, per size bin of the sphere-equivalent diameter of the labelled
blob at 1 mm (:mod:`plkd.metrics.sizes`: < 3, 3-5, 5-10 and > 10 mm, lower edges included).
A microbleed the screening stage misses is lost whatever the segmenter does. Target (issue 11):
≥ 98 % in every bin at 1 mm, ≥ 95 % on 3-4 mm slices.

    python scripts/screening_recall.py DATA BUNDLE [BUNDLE ...] [--subjects N] [--json OUT]

Subjects without a label are left out, said in one warning line and recorded in the JSON (``scored``,
``notes``; ``rows`` holds the numbers); none labelled is an error (``plkd: error: …``, exit 2).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from plkd.atomic import write_json_atomic
from plkd.cli import exit_code_of
from plkd.data.datasets import find_subjects, load_subject
from plkd.inference.brainmask import resolve_brain_mask
from plkd.inference.predictor import Predictor
from plkd.lowres import simulate_lowres
from plkd.metrics.scored import scored_labelled_subjects
from plkd.metrics.sizes import SIZE_NAMES, size_bin
from plkd.tuning import truth_microbleeds

CONDITIONS = (("hr", 1), ("interp", 2), ("interp", 4), ("interp", 8), ("slab", 3), ("slab", 4))


def condition_name(mode: str, factor: int) -> str:
    """``1 mm``, ``LR@k`` (cubic) or ``k mm slab``."""
    if factor == 1:
        return "1 mm"
    return f"LR@{factor}" if mode == "interp" else f"{factor} mm slab"


def recall(predictor: Predictor, subjects: list, mode: str, factor: int, budget: int, hit_mm: float) -> dict:
    """Found / total per size bin and candidates per subject for one condition."""
    found = dict.fromkeys(SIZE_NAMES, 0)
    total = dict(found)
    n_cands = 0
    for subject in subjects:
        image, label, mask = load_subject(subject)
        if mask is None:
            # The brain of the 1 mm image: LR simulated on the 1 mm grid smears the background,
            # which a real thick-slice scan (resampled by the predictor) does not have.
            mask = image.with_data(resolve_brain_mask(image)[0].astype(np.uint8))
        data = image.data if factor == 1 else simulate_lowres(image.data, factor, axis=2, mode=mode)
        centres = predictor.screen(image.with_data(data.astype(np.float32)), mask, 0.3, budget).centres_ras
        n_cands += len(centres)
        for ref, radius in truth_microbleeds(label):
            name = size_bin(2.0 * radius)
            dist = np.linalg.norm(centres - ref, axis=1) if len(centres) else np.full(1, np.inf)
            total[name] += 1
            found[name] += bool(dist.min() <= hit_mm)
    return {"found": found, "total": total, "candidates_per_subject": n_cands / max(len(subjects), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--subjects", type=int, default=0, help="first N labelled subjects (default: all)")
    parser.add_argument("--budget", type=int, default=50, help="candidates per subject at most (default 50)")
    parser.add_argument("--hit-mm", type=float, default=3.0, help="a candidate this close finds it (default 3)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args()
    subjects, scored = scored_labelled_subjects(find_subjects(args.data), "screening_recall", first=args.subjects)
    bins = list(SIZE_NAMES)
    print(f"| bundle | input | candidates/subject | {' | '.join(bins)} | all |")
    print("|---|---|---:|" + "---:|" * (len(bins) + 1))
    out = []
    for bundle in args.bundles:
        predictor = Predictor(bundle, device="cpu")
        for mode, factor in CONDITIONS:
            r = recall(predictor, subjects, mode, factor, args.budget, args.hit_mm)
            cells = [f"{r['found'][b]}/{r['total'][b]}" for b in bins]
            all_found, all_total = sum(r["found"].values()), sum(r["total"].values())
            name = condition_name(mode, factor)
            print(
                f"| {bundle} | {name} | {r['candidates_per_subject']:.0f} | {' | '.join(cells)} "
                f"| {all_found}/{all_total} |",
                flush=True,
            )
            out.append({"bundle": str(bundle), "input": name, **r})
    if args.json:
        notes = [n for n in [scored.sentence()] if n]
        write_json_atomic(args.json, {"scored": scored.to_dict(), "notes": notes, "rows": out})


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
