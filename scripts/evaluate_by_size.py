"""Detection per microbleed size and MARS location, at each input resolution, with the VALDO rule.

For each labelled subject of each DATA folder and each condition — ``hr`` (as is), ``x2``/``x4``/
``x8`` (the paper's LR@k: every k-th slice, cubic back to the subject's grid) and ``slab3``/``slab4``
(k slices averaged into one slab on the subject's grid: k mm on a 1 mm grid, 4.8 mm for ``slab4`` on
1.2 mm slices) — it predicts with BUNDLE (the ×k student for LR inputs), matches predicted components to
reference microbleeds by the VALDO rule (the components and matching of ``plkd evaluate``,
:func:`plkd.metrics.valdo.valdo_match`) and counts:

- per size bin of the reference blob's sphere-equivalent diameter (:mod:`plkd.metrics.sizes`:
  < 3, 3-5, 5-10, > 10 mm, lower edges included): found / total;
- per MARS class (the simulator's ``location`` of the nearest manifest microbleed within 3 mm, the class
  it was placed in; ``n/a`` without one, e.g. a data set without manifest);
- pooled TP, FP, FN, TPR, PPV, F1 and false positives per subject.

    python scripts/evaluate_by_size.py BUNDLE DATA [DATA ...] [--conditions hr,slab4] [--json OUT]

Subjects without a label are left out, said in one warning line and recorded in the JSON (``scored``,
``notes``); none labelled is an error (``plkd: error: …``, exit 2). Subjects without a brain mask file get the
automatic mask of their 1 mm image for every condition (LR simulated on the 1 mm grid smears the background,
which a real thick-slice scan lacks).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from plkd.atomic import write_json_atomic
from plkd.cli import exit_code_of
from plkd.data.datasets import Subject, find_subjects, load_subject
from plkd.inference.brainmask import resolve_brain_mask
from plkd.inference.predictor import Predictor
from plkd.lowres import simulate_lowres
from plkd.metrics.components import binarise_reference, find_components
from plkd.metrics.detection import table2
from plkd.metrics.scored import ScoredSubjects, scored_labelled_subjects
from plkd.metrics.sizes import SIZE_NAMES, equivalent_diameter_mm, size_bin
from plkd.metrics.valdo import valdo_match
from plkd.volumes import Volume, spacing_from_affine

LOCATIONS = ("lobar", "deep", "infratentorial", "n/a")


def degrade(data: np.ndarray, condition: str) -> tuple[np.ndarray, float | None]:
    """The image of ``condition`` on the 1 mm grid and the LR factor to choose the student with."""
    if condition == "hr":
        return data, None
    if condition.startswith("x"):
        k = int(condition[1:])
        return simulate_lowres(data, k, axis=2, mode="interp").astype(np.float32), float(k)
    if condition.startswith("slab"):
        k = int(condition[4:])
        return simulate_lowres(data, k, axis=2, mode="slab").astype(np.float32), float(k)
    raise SystemExit(f"unknown condition {condition!r}")


def manifest_locations(data_root: Path) -> dict[str, list[tuple[np.ndarray, str]]]:
    """``{subject: [(centre RAS, MARS class)]}`` from a ``plkd synth`` manifest (empty if none)."""
    path = data_root / "manifest.json"
    if not path.is_file():
        return {}
    subjects = json.loads(path.read_text(encoding="utf-8")).get("subjects", {})
    return {
        sid: [(np.asarray(m["center_ras"], dtype=float), m.get("location", "n/a")) for m in s.get("microbleeds", [])]
        for sid, s in subjects.items()
    }


def labelled(roots: list[Path]) -> tuple[list[tuple[Subject, dict]], ScoredSubjects]:
    """The labelled subjects of ``roots`` with their data set's manifest locations, and the record of those left
    out (no label), already said in one warning line; refuses when none is labelled."""
    found = [(subject, root) for root in roots for subject in find_subjects(root)]
    keep, scored = scored_labelled_subjects([s for s, _root in found], "evaluate_by_size")
    places = {root: manifest_locations(root) for root in roots}
    keep_ids = {id(s) for s in keep}
    chosen = [(s, places[root]) for s, root in found if id(s) in keep_ids]
    return chosen, scored


def count_subject(pred_labels: np.ndarray, label: Volume, places: list[tuple[np.ndarray, str]]) -> dict:
    """One subject's counts: ``TP``/``FN`` (references found/missed), ``FP`` and, per size bin and MARS class,
    ``found``/``total`` references. ``pred_labels`` is the predicted map on ``label``'s grid (foreground > 0),
    ``places`` the manifest's ``[(centre RAS, class)]`` (a reference takes the class of the nearest within 3 mm)."""
    zooms = spacing_from_affine(label.affine)  # the voxel size plkd evaluate measures with
    # Rounded to label values as plkd evaluate reads a reference (1e-6 noise made the whole scan one blob).
    ref = find_components(binarise_reference(label.data))
    pred = find_components(np.asarray(pred_labels) > 0)
    match = valdo_match(pred.centres_mm(zooms), ref.centres_mm(zooms))
    ref_ras = ref.centres_world(label.affine)
    diameters = equivalent_diameter_mm(ref.sizes, label.affine)
    found: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for r in range(ref.n):
        near = [(np.linalg.norm(c - ref_ras[r]), loc) for c, loc in places]
        loc = min(near)[1] if near and min(near)[0] <= 3.0 else "n/a"
        for key in (size_bin(diameters[r]), loc):
            total[key] += 1
            found[key] += bool(match.detected[r])
    tp = int(match.detected.sum())
    return {"TP": tp, "FN": ref.n - tp, "FP": int(match.is_fp.sum()), "found": found, "total": total}


def evaluate(predictor: Predictor, subjects: list[tuple[Subject, dict]], condition: str) -> dict:
    """Counts of one condition over ``subjects`` (labelled, with their manifest locations)."""
    found: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    tp = fp = fn = n_subjects = 0
    t0 = time.perf_counter()
    for subject, places in subjects:
        image, label, mask = load_subject(subject)
        if mask is None:
            mask = image.with_data(resolve_brain_mask(image)[0].astype(np.uint8))
        data, factor = degrade(image.data, condition)
        result = predictor.predict(image.with_data(data), mask, lr_factor=factor)
        counts = count_subject(result.label_map, label, places.get(subject.id, []))
        for key, n in counts["total"].items():
            total[key] += n
            found[key] += counts["found"][key]
        tp, fp, fn, n_subjects = tp + counts["TP"], fp + counts["FP"], fn + counts["FN"], n_subjects + 1
    # The formulas of plkd evaluate's pooled table: undefined (NaN, written null) where they divide by zero.
    scores = table2(tp, fp, fn, n_subjects)
    return {
        "condition": condition,
        "subjects": n_subjects,
        "TP": tp,
        "FP": fp,
        "FN": fn,
        "TPR": scores["TPR"],
        "PPV": scores["PPV"],
        "F1": scores["F1"],
        "FP_per_subject": scores["FPavg"],
        "found": dict(found),
        "total": dict(total),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _pct(value: float) -> str:
    return "–" if value != value else f"{100 * value:.1f}"  # NaN: undefined (no microbleed, or none predicted)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("data", nargs="+", type=Path)
    ap.add_argument("--conditions", default="hr,x2,x4,x8,slab3,slab4")
    ap.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    subjects, scored = labelled(args.data)
    predictor = Predictor(args.bundle, device=args.device)
    bins = list(SIZE_NAMES)
    head = ["input", "F1", "TPR", "PPV", "FP/subject", *bins, *LOCATIONS]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    rows = []
    for condition in args.conditions.split(","):
        r = evaluate(predictor, subjects, condition)
        rows.append(r)
        cells = [f"{r['found'].get(k, 0)}/{r['total'].get(k, 0)}" for k in (*bins, *LOCATIONS)]
        print(
            f"| {condition} | {_pct(r['F1'])} | {_pct(r['TPR'])} | {_pct(r['PPV'])} "
            f"| {r['FP_per_subject']:.2f} | " + " | ".join(cells) + " |",
            flush=True,
        )
        if args.json:
            doc = {"bundle": str(args.bundle), "scored": scored.to_dict(), "notes": [scored.sentence()], "rows": rows}
            doc["notes"] = [n for n in doc["notes"] if n]
            write_json_atomic(args.json, doc)
    if scored.skipped:
        print(scored.sentence())


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
