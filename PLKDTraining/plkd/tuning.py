"""Decision thresholds chosen on validation subjects (``plkd tune``).

A candidate becomes a microbleed when its screening score reaches the ``screening`` threshold
(candidates of the blob source need no screening score) and its calibrated probability the
``segmentation`` threshold. Before choosing thresholds, each segmenter's probabilities are
calibrated on the same validation candidates (:mod:`plkd.calibration`, Platt scaling of the
candidate logit), so the segmentation threshold is a real probability. Training leaves both at 0.5, which
suits no student in particular: the HR teacher, whose false positives are the problem, wants a
stricter screening cut than the ×8 student, which must keep every faint trace it sees.

:func:`tune_thresholds` predicts each labelled validation subject once per segmenter at the
loosest thresholds of the search grid — HR images for the teacher; the cubic LR@k and thick-slab
versions (:func:`plkd.lowres.simulate_lowres`) for the ×k student — remembers each candidate's two
scores and its label, and then scores every threshold pair on those stored predictions with the
metrics of ``plkd evaluate`` (paper Table 2, VALDO matching). It keeps the pair with the best
pooled F1 — among those with at most ``max_fp`` false positives per subject when a limit is
given (the best F1 overall when none qualifies) — and writes a copy of the bundle whose
segmenters carry their own thresholds.
Re-thresholding stored candidates equals a new prediction except where two candidates overlap or
touch (merged into the stronger, :func:`plkd.inference.segmentation.stitch`) and the weaker one would
have stood alone once the stronger one is cut; such
pairs are rare (candidates are at least ``min_distance_mm`` apart).

Never tune on the subjects you report: use a validation set whose seeds training and testing
never saw.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plkd.atomic import temporary_folder, write_json_atomic
from plkd.bundle import MANIFEST, check_replaceable, load_bundle, move_into_place
from plkd.calibration import expected_calibration_error, fit_platt, reliability_diagram
from plkd.data.datasets import find_subjects, load_subject
from plkd.data.scans import scan_digests, shared_scans, shared_sentence
from plkd.errors import PLKDError
from plkd.inference.predictor import STUDENT_REACH
from plkd.inference.preprocess import effective_lr_factor, network_slice_axis
from plkd.lowres import declared_lr_factor, simulate_lowres
from plkd.metrics import evaluate_subject, pool_results
from plkd.metrics.components import binarise_reference, label_components
from plkd.metrics.scored import labelled_subjects, scored_labelled_subjects
from plkd.models.scoring import Calibration
from plkd.progress import Progress
from plkd.volumes import spacing_from_affine

log = logging.getLogger(__name__)

#: Subjects whose slices span more model-grid voxels than this are not HR (the teacher's reach, as in prediction).
HR_REACH = STUDENT_REACH

SCREENING_GRID: tuple[float, ...] = tuple(round(0.3 + 0.05 * i, 2) for i in range(14))  # 0.30 … 0.95
SEGMENTATION_GRID: tuple[float, ...] = (*(round(0.1 * i, 1) for i in range(1, 10)), 0.95, 0.99, 0.999)
#: Candidates per validation input at most (FCN candidates, strongest first, plus blob candidates).
TUNING_CANDIDATES = 100
#: Margin (voxels) kept around the foreground when cropping a case for fast re-scoring.
CROP_MARGIN = 8


@dataclass
class Case:
    """One validation input predicted at the loosest thresholds, cropped around its foreground."""

    subject: str
    condition: str
    labels: np.ndarray  # predicted label map (one label per candidate), cropped
    truth: np.ndarray  # reference label, same crop
    spacing: np.ndarray
    scores: dict[int, tuple[float, float]]  # label -> (screening score, candidate logit)
    #: (logit, is a microbleed) of every candidate, kept or not: the calibration data.
    points: list[tuple[float, bool]] = field(default_factory=list)
    #: What bringing the label onto the image's grid did (turned, resampled: :mod:`plkd.label_grid`).
    label_notes: tuple[str, ...] = ()

    def kept(self, screening: float, segmentation: float, calibration: Calibration | None = None) -> frozenset[int]:
        """Labels of the candidates that pass both thresholds (probability = ``calibration(logit)``)."""
        cal = calibration or Calibration()
        return frozenset(
            lab for lab, (s, z) in self.scores.items() if s >= screening and round(cal(z), 4) >= segmentation
        )


def conditions_for(factor: float) -> list[str]:
    """The inputs a segmenter meets: HR for the teacher, LR@k and thick slabs for a ×k student."""
    return ["hr"] if factor <= 1 else ["interp", "slab"]


def _degrade(image: np.ndarray, condition: str, factor: int, affine: np.ndarray) -> np.ndarray:
    """``image`` under ``condition``: thick slices along the axis the networks see as Z (a sagittally stored
    subject thinned along array axis 2 gave the student slices across its X axis)."""
    if condition == "hr":
        return image
    return simulate_lowres(image, factor, axis=network_slice_axis(affine), mode=condition).astype(np.float32)


def _crop(labels: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fg = (labels > 0) | binarise_reference(truth)
    if not fg.any():
        return labels[:1, :1, :1] * 0, truth[:1, :1, :1] * 0
    idx = np.argwhere(fg)
    lo = np.maximum(idx.min(axis=0) - CROP_MARGIN, 0)
    hi = np.minimum(idx.max(axis=0) + CROP_MARGIN + 1, labels.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    return labels[box], truth[box]


def not_high_resolution(affine: np.ndarray, header: Any, model_spacing: Sequence[float] | np.ndarray) -> str | None:
    """Why an image (voxel -> RAS ``affine``, NIfTI ``header``) is no HR subject for a model of ``model_spacing`` mm
    (slices over :data:`HR_REACH` model voxels thick, or LR@k by its header: ``plkd lowres --factor``), else None.

    ``plkd tune`` and ``plkd cv`` make the students' low-resolution inputs from HR subjects themselves."""
    declared = declared_lr_factor(header)
    own = max(effective_lr_factor(affine, np.asarray(model_spacing, dtype=np.float64)), float(declared or 1))
    if own <= HR_REACH:
        return None
    grid = "x".join(f"{v:.3g}" for v in spacing_from_affine(affine))
    said = f", LR@{declared} by its header" if declared else ""
    return f"slices {own:.2g} times the model grid's ({grid} mm{said})"


def collect_cases(
    predictor: Any,
    data_root: str | os.PathLike[str],
    segmenter: str,
    factor: float,
    progress: Progress | None = None,
    conditions: Sequence[str] | None = None,
) -> list[Case]:
    """Predict every labelled subject of ``data_root`` under each condition of ``segmenter``.

    ``conditions`` (default :func:`conditions_for` the segmenter's factor) narrows the inputs, e.g.
    to ``["interp"]`` when the thresholds serve an evaluation on cubic LR@k only.
    """
    subjects, _left_out = labelled_subjects(find_subjects(data_root), "plkd tune")  # said by tune_thresholds
    if not subjects:
        raise PLKDError(f"{data_root} has no labelled subject to tune thresholds on")
    conditions = list(conditions or conditions_for(factor))
    progress = progress or Progress("none")
    progress.start(f"tune {segmenter}", len(subjects) * len(conditions))
    model_spacing = np.asarray(getattr(predictor.bundle, "spacing_mm", (1.0, 1.0, 1.0)), dtype=np.float64)
    cases = []
    for subject in subjects:
        image, label, mask = load_subject(subject)
        if thick := not_high_resolution(image.affine, image.header, model_spacing):
            # The LR versions are made here from HR images: a thick-slice subject was taken as HR for the teacher and
            # thinned again for each student (4 mm slices tuned the x4 student on 16 mm), and the thresholds chosen
            # so went into the bundle without a word.
            raise PLKDError(
                f"{subject.id}: {thick}; plkd tune makes each student's low-resolution inputs itself from "
                "high-resolution subjects: give the HR validation data"
            )
        for condition in conditions:
            data = _degrade(image.data, condition, int(round(factor)), image.affine)
            # The LR input is simulated on the HR grid: say its factor, or each input would warn that the student
            # was chosen for 1 mm slices.
            lr_factor = None if condition == "hr" else factor
            result = predictor.predict(image.with_data(data), mask, lr_factor=lr_factor, student=segmenter)
            scores = {int(c["label"]): (_screening_score(c), _logit(c)) for c in result.candidates if c["label"] > 0}
            refs = truth_microbleeds(label)
            points = [(_logit(c), is_microbleed(c["center_ras"], refs)) for c in result.candidates]
            labels, truth = _crop(result.label_map, label.data)
            cases.append(Case(subject.id, condition, labels, truth, image.spacing, scores, points, tuple(label.notes)))
            progress.advance()
    progress.finish()
    return cases


def _screening_score(candidate: dict[str, Any]) -> float:
    """A candidate's screening score; the blob source's pass any screening threshold."""
    if "blob" in str(candidate.get("source", "screening")) or candidate.get("screening_score") is None:
        return float("inf")
    return float(candidate["screening_score"])


def _logit(candidate: dict[str, Any]) -> float:
    """A candidate's logit; from its probability for records written before logits were."""
    z = candidate.get("logit")
    if z is not None:
        return float(z)
    p = min(max(float(candidate["probability"]), 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def truth_microbleeds(label: Any) -> list[tuple[np.ndarray, float]]:
    """``[(centre RAS mm, sphere-equivalent radius mm)]`` of a reference label's microbleeds (connected
    components as ``plkd evaluate`` counts them)."""
    from scipy import ndimage

    # Rounded to the label values as plkd evaluate reads a reference: a float label's rounding noise (1e-6 on the
    # background) read as > 0 made the brain one microbleed, and every candidate in it a true one for the calibration.
    comps, n = label_components(binarise_reference(label.data))
    if n == 0:
        return []
    vox = np.asarray(ndimage.center_of_mass(comps > 0, comps, range(1, n + 1))).reshape(-1, 3)
    counts = np.bincount(comps.ravel())[1:]
    voxel_mm3 = abs(float(np.linalg.det(label.affine[:3, :3])))
    radii = (3.0 * counts * voxel_mm3 / (4.0 * np.pi)) ** (1.0 / 3.0)
    ras = vox @ label.affine[:3, :3].T + label.affine[:3, 3]
    return list(zip(ras, radii, strict=True))


def is_microbleed(centre_ras: Sequence[float], refs: Sequence[tuple[np.ndarray, float]], min_mm: float = 3.0) -> bool:
    """True when the candidate centre lies within ``max(min_mm, radius)`` of a reference microbleed."""
    c = np.asarray(centre_ras, dtype=np.float64)
    return any(np.linalg.norm(c - r) <= max(min_mm, radius) for r, radius in refs)


def score(
    cases: Sequence[Case],
    screening: float,
    segmentation: float,
    cache: dict | None = None,
    calibration: Calibration | None = None,
) -> dict[str, float]:
    """Pooled TPR, PPV, FPavg, F1 (and Dice) of ``cases`` re-thresholded at the given pair."""
    cache = {} if cache is None else cache
    per_subject = {}
    for i, case in enumerate(cases):
        kept = case.kept(screening, segmentation, calibration)
        key = (i, kept)
        if key not in cache:
            pred = np.isin(case.labels, list(kept)) if kept else np.zeros(case.labels.shape, dtype=bool)
            cache[key] = evaluate_subject(pred, case.truth, case.spacing)
        per_subject[f"{case.subject}/{case.condition}"] = cache[key]
    return pool_results(per_subject)["pooled"]


def search(
    cases: Sequence[Case],
    max_fp: float | None = None,
    screening_grid: Iterable[float] = SCREENING_GRID,
    segmentation_grid: Iterable[float] = SEGMENTATION_GRID,
    calibration: Calibration | None = None,
) -> dict[str, Any]:
    """The threshold pair with the best pooled F1 (at ≤ ``max_fp`` false positives per subject).

    Ties go to the higher sensitivity, then to fewer false positives, then to the looser pair.
    ``feasible`` is False when no pair meets ``max_fp`` (the best F1 overall is returned then).
    Raises :class:`PLKDError` when the cases hold no reference microbleed: F1 and sensitivity are
    then undefined for every pair.
    """
    if not any(binarise_reference(c.truth).any() for c in cases):
        # Every pair scored F1 0 and the tie went to the loosest pair: the most false positives, chosen silently.
        raise PLKDError(
            "the validation subjects hold no labelled microbleed: no threshold pair can be judged by F1; "
            "tune on subjects with microbleeds"
        )
    cache: dict = {}
    rows = []
    for s in screening_grid:
        for p in segmentation_grid:
            m = score(cases, s, p, cache, calibration)
            f1 = m["F1"] if np.isfinite(m["F1"]) else 0.0
            tpr = m["TPR"] if np.isfinite(m["TPR"]) else 0.0
            # Equal F1 and TPR with more false positives happens when nothing is found (F1 = TPR = 0 at every
            # pair): the loosest pair, the most false positives, won that tie.
            rows.append((max_fp is None or m["FPavg"] <= max_fp, f1, tpr, -m["FPavg"], -s, -p, m))
    feasible = [r for r in rows if r[0]]
    best = max(feasible or rows, key=lambda r: r[1:6])
    return {"screening": -best[4], "segmentation": -best[5], "metrics": best[6], "feasible": bool(feasible)}


def choose_thresholds(
    name: str,
    cases: Sequence[Case],
    max_fp: float | None,
    calibration: Calibration,
    current: dict[str, Any],
) -> tuple[dict[str, Any], list[str]]:
    """:func:`search`'s pair for segmenter ``name``, and the notes (each also a warning line) on how it was chosen.

    When no pair finds any validation microbleed (F1 0 at every pair) the tie-break picked a pair nothing supported
    (the loosest, or the one with the fewest false positives) and it was written as "tuned": the segmenter keeps
    its ``current`` thresholds instead (``"kept": True``). When no pair meets ``max_fp`` the best F1 overall is
    written, which only the report table's flag said: a note gives its false positives and the fewest any pair had.
    """
    best = search(cases, max_fp, calibration=calibration)
    notes: list[str] = []
    if not best["metrics"]["TP"] > 0:
        kept = {k: float(current[k]) for k in ("screening", "segmentation")}
        metrics = score(cases, kept["screening"], kept["segmentation"], calibration=calibration)
        feasible = max_fp is None or metrics["FPavg"] <= max_fp
        best = {**kept, "metrics": metrics, "feasible": feasible, "kept": True}
        notes.append(
            f"{name}: no threshold pair found any of the validation microbleeds (F1 0 at every pair); its "
            f"thresholds stay {kept['screening']:g} (screening) and {kept['segmentation']:g} (segmentation)"
        )
    if max_fp is not None and not best["feasible"]:
        fewest = score(cases, max(SCREENING_GRID), max(SEGMENTATION_GRID), calibration=calibration)["FPavg"]
        notes.append(
            f"{name}: no threshold pair keeps the false positives at or below --max-fp {max_fp:g} per subject "
            f"(the fewest: {fewest:.2f}); thresholds {best['screening']:g} / {best['segmentation']:g} "
            f"give {best['metrics']['FPavg']:.2f}"
        )
    for note in notes:
        log.warning("%s", note)
    return best, notes


def _rounded(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (round(float(v), 4) if np.isfinite(v) else None) for k, v in metrics.items() if k != "n_subjects"}


def tune_thresholds(
    bundle: Any,
    data_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    max_fp: float | None = None,
    segmenters: Sequence[str] | None = None,
    device: Any = "auto",
    progress: str = "tqdm",
    overwrite: bool = False,
    conditions: Sequence[str] | None = None,
    plot: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Calibrate and tune each segmenter on ``data_root`` and write the tuned bundle to ``out``.

    ``bundle`` is a loaded :class:`plkd.bundle.Bundle` or a path (opened and verified once).
    ``conditions`` overrides the inputs each segmenter is tuned on (see :func:`collect_cases`).
    Returns ``{segmenter: {"before", "after", "screening", "segmentation", "feasible",
    "calibration", ...}}``, which is also stored in the new bundle's manifest under ``tuning``
    (and each segmenter's calibration under its network entry). ``plot`` writes the reliability
    diagram (PNG) of every segmenter, before and after calibration.
    """
    from plkd.inference.predictor import Predictor

    out = Path(out)
    if out.exists() and not overwrite:
        raise PLKDError(f"{out} exists; choose another --out or pass --overwrite")
    check_replaceable(out)  # the validation data, say: --overwrite deleted whatever folder --out named
    if max_fp is not None and not max_fp > 0:
        raise PLKDError(f"--max-fp must be a positive number of false positives per subject, not {max_fp}")
    loosest = {"screening": min(SCREENING_GRID), "segmentation": 0.0}
    # The strongest TUNING_CANDIDATES per input: stage 2 costs one patch per candidate, and a
    # screening threshold that lets more through would not be chosen for a scan anyway.
    predictor = Predictor(bundle, device=device, thresholds=loosest, max_candidates=TUNING_CANDIDATES, locate=False)
    bundle = predictor.bundle
    names = bundle.segmenter_names()
    chosen = list(segmenters) if segmenters else list(names)
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise PLKDError(f"the model has no segmenter {', '.join(unknown)}; it has {', '.join(names)}")
    # Said once for every segmenter: the thresholds are chosen on the labelled subjects only.
    labelled, scored = scored_labelled_subjects(find_subjects(data_root), "plkd tune", require=False)
    refuse_training_scans(bundle.manifest, labelled, bundle.name)
    prog = Progress(progress)  # type: ignore[arg-type]
    report: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for name in chosen:
        cases = collect_cases(predictor, data_root, name, names[name], prog, conditions)
        current = predictor.thresholds_for(name, overrides=False)
        old = Calibration.from_manifest(bundle.manifest["networks"][name].get("calibration"))
        before = score(cases, float(current["screening"]), float(current["segmentation"]), calibration=old)
        z = np.array([p[0] for c in cases for p in c.points], dtype=np.float64)
        y = np.array([p[1] for c in cases for p in c.points], dtype=bool)
        cal = Calibration(*fit_platt(z, y))
        raw = np.array([Calibration()(v) for v in z])
        fitted = np.array([cal(v) for v in z])
        curves[name] = (raw, fitted, y)
        best, chosen_notes = choose_thresholds(name, cases, max_fp, cal, current)
        report[name] = {
            "calibration": {
                "method": "platt",
                "a": round(cal.a, 5),
                "b": round(cal.b, 5),
                "n_candidates": int(z.size),
                "n_microbleeds": int(y.sum()),
                "ece_before": round(expected_calibration_error(raw, y), 4),
                "ece_after": round(expected_calibration_error(fitted, y), 4),
            },
            "conditions": list(dict.fromkeys(c.condition for c in cases)),
            "inputs": len(cases),
            "scored": scored.to_dict(),
            "screening": best["screening"],
            "segmentation": best["segmentation"],
            "feasible": best["feasible"],
            "before": _rounded(before),
            "after": _rounded(best["metrics"]),
        }
        if best.get("kept"):
            report[name]["thresholds_kept"] = True
        label_notes = list(dict.fromkeys(n for c in cases for n in c.label_notes))
        if notes := label_notes + chosen_notes:
            report[name]["notes"] = notes  # said when read (plkd.label_grid) or chosen, recorded with the thresholds
    if plot is not None and curves:
        reliability_diagram(curves, plot)
    _write_tuned_bundle(bundle.root, out, report, data_root, max_fp)
    return report


def refuse_training_scans(manifest: dict[str, Any], subjects: Sequence[Any], model: str) -> None:
    """Refuse validation subjects whose image is one the bundle's networks were trained on.

    The networks are surer on the scans they learnt, so a calibration and thresholds chosen on them are too
    loose for new scans, and nothing said so. Scans are told by their voxel values
    (:mod:`plkd.data.scans`; the bundle records them since plkd recorded them, ``training.image_sha256``), not by
    ids, which repeat across data sets. Bundles without the record are not checked.
    """
    known = (manifest.get("training") or {}).get("image_sha256") or {}
    if not known or not subjects:
        return
    shared = shared_scans(scan_digests(subjects), known)
    if shared:
        named = shared_sentence(shared, len(subjects), "validation subjects", "training subject")
        raise PLKDError(
            f"{named} are scans {model} was trained on: its networks are surer on them than on new scans, so the "
            "calibration and thresholds chosen there would not hold; tune on subjects the model has not seen"
        )


def objective(max_fp: float | None) -> str:
    """What the threshold search maximises, in words (recorded with every tuned segmenter)."""
    limit = f" at <= {max_fp} false positives per subject" if max_fp is not None else ""
    return "pooled F1 (paper Table 2, VALDO matching)" + limit


def _write_tuned_bundle(src: Path, out: Path, report: dict[str, Any], data_root: Any, max_fp: float | None) -> None:
    """Copy the bundle with each tuned segmenter's thresholds (temporary folder, then rename)."""
    # Named as plkd.atomic names temporaries, so the copy a killed tune left is removed by the next one (it was named
    # after the process only, and stayed); replaced as save_bundle replaces a bundle (the old one was removed first,
    # so a kill in between lost it: the bundle itself when tuned in place).
    tmp = temporary_folder(out)
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        manifest = json.loads((tmp / MANIFEST).read_text(encoding="utf-8"))
        # The validation folder by its name: the tuned bundle is shared, and --data as typed (an absolute path of
        # this machine, or one relative to where plkd tune ran) said where it lay, to no reader's use.
        data = Path(str(data_root)).name
        for name, r in report.items():
            manifest["networks"][name]["thresholds"] = {"screening": r["screening"], "segmentation": r["segmentation"]}
            manifest["networks"][name]["calibration"] = {**r["calibration"], "data": data}
        # Segmenters tuned earlier (on other data, say) keep their record; each names its data.
        earlier = (manifest.get("tuning") or {}).get("segmenters", {})
        records = {name: {"data": data, "objective": objective(max_fp), **r} for name, r in report.items()}
        manifest["tuning"] = {"segmenters": {**earlier, **records}}
        # The thresholds hold for the candidates tuning saw: the predictor keeps the same number.
        manifest.setdefault("candidates", {})["max_screening"] = TUNING_CANDIDATES
        write_json_atomic(tmp / MANIFEST, manifest)
        load_bundle(tmp)  # the tuned bundle must open like any other
        move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def format_report(report: dict[str, Any]) -> str:
    """A Markdown table of the tuned thresholds and the validation metrics before and after."""
    lines = [
        "| segmenter | inputs | screening | segmentation | F1 before | F1 after | TPR after | FP/subject after "
        "| ECE before → after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report.items():
        b, a = r["before"], r["after"]
        pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}"  # noqa: E731
        fp = "n/a" if a["FPavg"] is None else f"{a['FPavg']:.2f}"
        flag = "" if r["feasible"] else " (no pair within the FP limit)"
        if r.get("thresholds_kept"):
            flag += " (nothing found at any pair: thresholds kept)"
        lines.append(
            f"| {name} | {r['inputs']} | {r['screening']:.2f} | {r['segmentation']:.3g} | {pct(b['F1'])} | "
            f"{pct(a['F1'])}{flag} | {pct(a['TPR'])} | {fp} | "
            f"{r['calibration']['ece_before']:.3f} → {r['calibration']['ece_after']:.3f} |"
        )
    return "\n".join(lines)
