"""What the false positives are: each kept candidate that is no microbleed, named by the nearest mimic.

For ``plkd predict`` outputs (``PRED``: folders with ``*_cmb.json``) of a ``plkd synth`` data set
(``DATA``, whose manifest lists every microbleed and mimic), each kept candidate is a true
positive when its centre lies within max(3 mm, the reference blob's radius) of a labelled
microbleed (:func:`plkd.tuning.is_microbleed`, the rule ``plkd tune`` uses); otherwise a false
positive, attributed to the nearest named mimic within ``--near-mm`` (a vein by the nearest point
of its path; a calcification also by its site: pineal, choroid plexus, globus pallidus) or to
``other`` (nothing named nearby: texture, partial volume, noise).

    python scripts/false_positives_by_kind.py DATA PRED [PRED ...] [--near-mm 3]

Prints one Markdown row per PRED folder: subjects scored, true and false positives, and the false positives per
kind. Subjects without a label or a prediction, and predictions of no subject, are left out and said in one
warning line per PRED; nothing to score is an error (``plkd: error: …``, exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from plkd.cli import exit_code_of
from plkd.data.datasets import find_subjects, load_subject
from plkd.metrics.scored import ScoredSubjects, candidate_files
from plkd.tuning import is_microbleed, truth_microbleeds


def mimic_points(mimic: dict) -> np.ndarray:
    """RAS points ``(n, 3)`` of a manifest mimic: a vein's path, else its centre."""
    return np.asarray(mimic.get("path_ras") or [mimic["center_ras"]], dtype=float).reshape(-1, 3)


def kind_of(centre: np.ndarray, mimics: list[dict], near_mm: float) -> str:
    """Name of the nearest mimic within ``near_mm`` of ``centre`` (RAS mm), or ``other``."""
    best, name = near_mm, "other"
    for m in mimics:
        d = float(np.min(np.linalg.norm(mimic_points(m) - centre, axis=1)))
        if d <= best:
            site = m.get("site") or m.get("structure")
            best, name = d, f"{m['kind']} ({site})" if m["kind"] == "calcification" and site else m["kind"]
    return name


def count(data: Path, pred: Path, near_mm: float) -> tuple[int, Counter, ScoredSubjects]:
    """True positives and false positives per kind over every labelled subject with a prediction, and the
    record of the subjects scored and left out (said in one warning line; none is an error)."""
    subjects = json.loads((data / "manifest.json").read_text(encoding="utf-8"))["subjects"]
    tp, fp = 0, Counter()
    pairs, scored = candidate_files(find_subjects(data), pred, f"false_positives_by_kind {pred}")
    scored.require_any()
    scored.warn()
    for subject, path in pairs:
        refs = truth_microbleeds(load_subject(subject)[1])
        mimics = subjects.get(subject.id, {}).get("mimics", [])
        for cand in json.loads(path.read_text(encoding="utf-8"))["candidates"]:
            if not cand["kept"]:
                continue
            centre = np.asarray(cand["center_ras"], dtype=float)
            if is_microbleed(centre, refs):
                tp += 1
            else:
                fp[kind_of(centre, mimics, near_mm)] += 1
    return tp, fp, scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="plkd synth data set (manifest.json with mimics)")
    parser.add_argument("pred", type=Path, nargs="+", help="plkd predict output folder(s)")
    parser.add_argument("--near-mm", type=float, default=3.0, help="a mimic this close names a false positive")
    args = parser.parse_args()
    print("| predictions | subjects | true positives | false positives | by kind |")
    print("|---|---:|---:|---:|---|")
    for pred in args.pred:
        tp, fp, scored = count(args.data, pred, args.near_mm)
        kinds = ", ".join(f"{k} {n}" for k, n in fp.most_common())
        print(f"| {pred} | {len(scored.scored)} | {tp} | {sum(fp.values())} | {kinds or '-'} |", flush=True)


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
