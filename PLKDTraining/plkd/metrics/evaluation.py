"""Evaluating prediction files against reference files: the engine of ``plkd evaluate``.

Each prediction is compared with its reference in world space: when the grids differ, the
binarised prediction is resampled onto the reference grid by nearest neighbour, and all
metrics are computed there with the reference's voxel size (:func:`voxel_size_mm`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from nibabel.orientations import apply_orientation

from plkd.errors import InputError
from plkd.metrics.components import (
    CONNECTIVITY,
    LABEL_VALUE_TOLERANCE,
    PREDICTION_THRESHOLD,
    binarise_prediction,
    check_label_values,
    find_components,
)
from plkd.metrics.detection import evaluate_subject, pool_results
from plkd.metrics.froc import FrocSubject, froc_curve, froc_subject, load_candidate_records
from plkd.metrics.pairing import pair_files, pairing_key
from plkd.metrics.scored import NO_REFERENCE, PREVIEW, ScoredSubjects
from plkd.metrics.valdo import MAX_DISTANCE_MM
from plkd.naming import strip_nifti_suffix
from plkd.resample import resample_array
from plkd.volumes import Volume, load_label, reorientation_onto, spacing_from_affine

log = logging.getLogger(__name__)


def voxel_size_mm(vol: Volume) -> np.ndarray:
    """Voxel size (mm) along each array axis of ``vol``: the column norms of the affine plkd places its voxels with
    (:func:`plkd.volumes.header_affine`: the sform, else the qform).

    Not the header's pixdim: a header whose sform was rewritten (registration tools, ``fslorient``) keeps the
    qform's pixdim, and distances measured with it disagreed with where the prediction was resampled from, with
    the candidates' ``center_ras`` and with ``plkd tune``/``plkd cv`` (which use the affine): a prediction 6 mm
    away on 3 mm slices whose pixdim said 1 mm matched at "2 mm". :func:`pixdim_note` says when they differ.
    """
    return spacing_from_affine(vol.affine)


#: Header pixdim and affine voxel sizes closer than this (relative) agree: float32 rounding of a header.
PIXDIM_TOLERANCE = 1e-3


def pixdim_note(vol: Volume) -> str | None:
    """One sentence when the header's pixdim is not the voxel size of the affine used (:func:`voxel_size_mm`)."""
    if vol.header is None:
        return None
    pixdim = np.asarray(vol.header.get_zooms()[:3], dtype=np.float64)
    spacing = voxel_size_mm(vol)
    if pixdim.size != 3 or not np.all(pixdim > 0) or np.allclose(pixdim, spacing, rtol=PIXDIM_TOLERANCE, atol=0):
        return None
    mm = " × ".join(f"{v:.3g}" for v in spacing)
    header = " × ".join(f"{v:.3g}" for v in pixdim)
    return (
        f"reference {vol.path.name if vol.path else ''}: its sform/qform places {mm} mm voxels but its pixdim says "
        f"{header} mm; distances are measured with the former, where the voxels are placed (check the header)"
    )


def prediction_on_reference_grid(pred: Volume, truth: Volume, threshold: float = 0.5) -> np.ndarray:
    """The binarised prediction on the reference grid (nearest-neighbour resampling through world space)."""
    return binarise_prediction(labels_on_reference_grid(pred, truth), threshold)


def labels_on_reference_grid(pred: Volume, truth: Volume) -> np.ndarray:
    """The prediction's values (instance labels kept) on the reference grid, by nearest neighbour; the same
    voxels stored in another axis order or direction are turned exactly (no resampling)."""
    ornt = reorientation_onto(truth.affine, truth.shape, pred.affine, pred.shape)
    if ornt is not None:
        return np.ascontiguousarray(apply_orientation(pred.data, ornt))
    return resample_array(pred.data, pred.affine, truth.affine, truth.shape, order=0)


#: Placements of two grids of the same shape differing by more than this (mm) are not one grid.
SAME_GRID_TOLERANCE_MM = 1e-3


def grid_problems(pred: Volume, ref: Volume, threshold: float = 0.5) -> list[str]:
    """What resampling ``pred`` onto ``ref`` (see :func:`labels_on_reference_grid`) changes, one
    sentence each; empty when both share one grid.

    Two things go unseen otherwise: grids of the same shape whose headers place them differently
    (most often one header lost or changed its orientation, so every microbleed is scored somewhere
    else), and predicted microbleeds (connected components at ``>= threshold``) that have no
    voxel on the reference grid (outside its field of view, or too small for its voxels) and so
    are not scored at all. Raises :class:`InputError` when the two fields of view do not overlap.
    """
    if reorientation_onto(ref.affine, ref.shape, pred.affine, pred.shape) is not None:
        return []  # one grid, perhaps stored in another axis order: nothing moves
    problems = []
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in pred.shape])).reshape(3, -1).T
    world = corners @ pred.affine[:3, :3].T + pred.affine[:3, 3]
    inv = np.linalg.inv(ref.affine)
    in_ref = world @ inv[:3, :3].T + inv[:3, 3]
    lo, hi = in_ref.min(axis=0), in_ref.max(axis=0)
    if np.any(hi <= -0.5) or np.any(lo >= np.asarray(ref.shape) - 0.5):
        raise InputError(
            f"prediction {pred.path} and reference {ref.path} do not overlap in space (their headers place "
            "them apart); check their qform/sform"
        )
    if pred.shape == ref.shape:
        # Displacement of each grid corner between the two placements (mm).
        moved = corners @ (ref.affine[:3, :3] - pred.affine[:3, :3]).T + (ref.affine[:3, 3] - pred.affine[:3, 3])
        shift = float(np.sqrt((moved**2).sum(axis=1)).max())
        if shift > SAME_GRID_TOLERANCE_MM:
            problems.append(
                f"prediction and reference have the same grid size {pred.shape} but their headers place them up "
                f"to {shift:.3g} mm apart; the prediction was moved through world coordinates (if both are the "
                "same scan, one header is wrong: compare their qform/sform)"
            )
    comps = find_components(binarise_prediction(pred.data, threshold))
    if comps.n:
        moved_labels = resample_array(comps.labels, pred.affine, ref.affine, ref.shape, order=0)
        lost = comps.n - int(np.unique(moved_labels[moved_labels > 0]).size)
        if lost:
            problems.append(
                f"{lost} of {comps.n} predicted microbleed(s) have no voxel on the reference grid (outside its "
                "field of view or smaller than its voxels) and are not scored"
            )
    return problems


def scaled_probability_note(data: np.ndarray) -> str | None:
    """One sentence when a prediction of whole numbers looks like a probability map scaled to 0..N (per cent,
    0..255), else None.

    Whole numbers are read as microbleed numbers, every voxel >= 1 a microbleed's (the threshold cannot
    apply: see ``plkd evaluate --threshold``). In a label map each microbleed holds one number (``plkd predict``
    merges touching ones); in a scaled probability map most hold many, and reading it as labels counted every
    voxel of 1 % or more.
    """
    comps = find_components(np.asarray(data) >= 1)
    big = np.flatnonzero(comps.sizes > 1) + 1
    if not big.size or float(np.max(data)) <= 1:
        return None
    fg = np.isin(comps.labels, big)
    pairs = np.unique(np.stack([comps.labels[fg], np.asarray(data)[fg].astype(np.int64)]), axis=1)
    several = int(np.count_nonzero(np.bincount(pairs[0], minlength=comps.n + 1) > 1))
    if several * 2 <= big.size:
        return None
    return (
        f"the prediction holds whole numbers up to {float(np.max(data)):g} and {several} of its {big.size} "
        "microbleeds hold several of them: a probability map scaled to 0-100 or 0-255? Every voxel >= 1 was "
        "counted as a microbleed's; give probabilities in 0-1 (or a label map)"
    )


def check_reference_values(ref: Volume) -> None:
    """Refuse a reference that is not a label map (:func:`plkd.metrics.components.check_label_values`, the rule
    training, ``plkd tune`` and ``plkd cv`` apply to their labels)."""
    check_label_values(ref.data, f"reference {ref.path}")


def check_prediction_values(pred: Volume) -> None:
    """Refuse a prediction with clearly negative values (below -:data:`LABEL_VALUE_TOLERANCE`, which allows the
    overshoot of an interpolated probability map): no probability or label map holds them. Cut at the threshold,
    a 0/255 mask stored as int8 (255 reads -1) was an empty prediction, and logits lost every value under 0.5."""
    low = float(np.min(pred.data)) if pred.data.size else 0.0
    if low < -LABEL_VALUE_TOLERANCE:
        raise InputError(
            f"prediction {pred.path} holds negative values (down to {low:g}): give probabilities in 0-1 or a label "
            "map (a 0/255 mask stored as signed 8-bit integers reads 255 as -1; logits need a sigmoid first)"
        )


def _find_candidates(
    sid: str, pred_file: Path | None, candidates_dir: Path | None, key: Callable[[Path], str] = pairing_key
) -> Path | None:
    """The candidates JSON of a subject: in ``candidates_dir`` by subject key (``key``, the pairing's), else next
    to the prediction."""
    if candidates_dir is not None:
        # By the key the pairing used (subject, plus a BIDS session): the subject id alone never equalled a key with
        # a session, so every subject of a multi-session study had "no candidates JSON".
        hits = sorted(f for f in candidates_dir.rglob("*.json") if key(f) == sid)
        if len(hits) > 1:
            raise InputError(f"candidates: subject {sid} has {len(hits)} JSON files in {candidates_dir}")
        return hits[0] if hits else None
    if pred_file is None:
        return None
    beside = pred_file.with_name(strip_nifti_suffix(pred_file.name) + ".json")
    return beside if beside.is_file() else None


def evaluate_paths(
    pred: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    *,
    candidates: str | os.PathLike[str] | None = None,
    froc: bool | None = None,
    missing_as_empty: bool = False,
    threshold: float = 0.5,
    max_distance_mm: float = MAX_DISTANCE_MM,
    connectivity: int = CONNECTIVITY,
) -> dict:
    """Evaluate prediction file(s) against reference file(s); returns the ``plkd evaluate`` JSON.

    ``pred`` and ``truth`` are files or folders paired by subject id (see
    :func:`plkd.metrics.pairing.pair_files`). ``froc``: ``True`` requires candidate JSONs for
    every subject (from ``candidates`` or beside the prediction files), ``None`` computes the
    FROC curve only if they are all found, ``False`` skips it. The result holds ``"pooled"``,
    ``"valdo"``, ``"subjects"``, ``"files"``, ``"unmatched"``, ``"scored"`` (subjects scored and left out, with
    why: :class:`plkd.metrics.scored.ScoredSubjects`), ``"settings"``, ``"notes"`` and, with FROC,
    ``"froc"`` (see :meth:`plkd.metrics.froc.FrocCurve.to_dict`).
    """
    cand_dir = Path(candidates) if candidates is not None else None
    if cand_dir is not None and not cand_dir.is_dir():
        raise InputError(f"candidates folder not found: {cand_dir}")
    pairing = pair_files(pred, truth, missing_as_empty=missing_as_empty)
    notes: list[str] = []
    scored = ScoredSubjects("plkd evaluate", scored=list(pairing.pairs))
    for sid in pairing.unmatched_predictions:
        scored.skip(sid, pairing.reasons.get(sid, NO_REFERENCE))
    if left_out := scored.sentence():  # logged with the other notes at the end, one line each
        notes.append(left_out)
    if pairing.unmatched_references:
        empty = ", ".join(pairing.unmatched_references[:PREVIEW])
        more = " …" if len(pairing.unmatched_references) > PREVIEW else ""
        notes.append(
            f"{len(pairing.unmatched_references)} reference(s) without a prediction scored as empty predictions: "
            + empty
            + more
        )
    applied: set[float] = set()
    label_maps: list[str] = []  # subjects whose prediction holds microbleed numbers, not probabilities

    subjects: dict[str, dict] = {}
    files: dict[str, dict] = {}
    froc_inputs: dict[str, FrocSubject] = {}
    froc_empty: dict[str, FrocSubject] = {}  # references without a prediction (--missing-as-empty): no candidate
    missing_candidates: list[str] = []
    want_froc = froc is not False or cand_dir is not None
    for sid, (pred_file, truth_file) in pairing.pairs.items():
        ref = load_label(truth_file, what="reference")
        check_reference_values(ref)
        spacing = voxel_size_mm(ref)
        if header_note := pixdim_note(ref):
            notes.append(f"{sid}: {header_note}")
        if pred_file is None:
            values = np.zeros(ref.shape, dtype=np.float32)
        else:
            pred_volume = load_label(pred_file, what="prediction")
            check_prediction_values(pred_volume)
            if problems := grid_problems(pred_volume, ref, threshold):
                notes.append(f"{sid}: " + "; ".join(problems))
            values = labels_on_reference_grid(pred_volume, ref)
            if np.any(pred_volume.data) and np.array_equal(pred_volume.data, np.round(pred_volume.data)):
                label_maps.append(sid)
                if scaled := scaled_probability_note(pred_volume.data):
                    notes.append(f"{sid}: {scaled}")
        mask = binarise_prediction(values, threshold)
        subjects[sid] = evaluate_subject(
            mask, ref.data, spacing, threshold=0.5, max_distance_mm=max_distance_mm, connectivity=connectivity
        )
        files[sid] = {"prediction": None if pred_file is None else str(pred_file), "reference": str(truth_file)}
        if want_froc and pred_file is None:
            # Scored as an empty prediction: its microbleeds are missed at every threshold (it has no candidates
            # JSON to look for; asking for one made the FROC curve impossible with --missing-as-empty).
            froc_empty[sid] = froc_subject(values, ref.data, spacing, ref.affine, [], connectivity=connectivity)[0]
        elif want_froc:
            cand_file = _find_candidates(sid, pred_file, cand_dir, pairing.key)
            if cand_file is None:
                missing_candidates.append(sid)
                continue
            record = load_candidate_records(cand_file)
            seg = (record.get("thresholds") or {}).get("segmentation")
            froc_inputs[sid], unexplained = froc_subject(
                values,
                ref.data,
                spacing,
                ref.affine,
                record["candidates"],
                threshold=threshold,
                connectivity=connectivity,
                applied=None if seg is None else float(seg),
            )
            if unexplained:
                notes.append(
                    f"{sid}: {unexplained} predicted component(s) carry no candidate's label or centre; "
                    "the FROC curve counts them at every threshold"
                )
            if froc_inputs[sid].unmerged:
                notes.append(
                    f"{sid}: the candidates JSON (an older plkd predict) does not say which of its "
                    f"{froc_inputs[sid].unmerged} candidate(s) below the threshold predict would keep (not duplicates "
                    "of a stronger one, not without an outline) nor where their outlines lie; the FROC curve below "
                    "the threshold counts each as a detection at its position (predict again for the rule of the table)"
                )
            if seg is not None:
                applied.add(float(seg))
            files[sid]["candidates"] = str(cand_file)

    result = {
        **pool_results(subjects),
        "subjects": subjects,
        "files": files,
        "pairing": pairing.to_dict(),
        "unmatched": {"predictions": pairing.unmatched_predictions, "references": pairing.unmatched_references},
        "scored": scored.to_dict(),
        "settings": {
            "threshold": threshold,
            "max_distance_mm": max_distance_mm,
            "connectivity": connectivity,
            "missing_as_empty": missing_as_empty,
            "pooled": "detection counts and Dice voxel counts summed over subjects (paper)",
            "valdo": "per-subject median/mean (VALDO challenge)",
            "matching": "VALDO rule (both reports): nearest reference within max_distance_mm; nearest prediction is TP",
        },
    }
    if want_froc:
        required = froc is True or cand_dir is not None
        if missing_candidates and (required or froc_inputs):
            where = f"in {cand_dir}" if cand_dir is not None else "beside the prediction files"
            names = ", ".join(missing_candidates[:5])
            msg = f"no candidates JSON {where} for {len(missing_candidates)} subject(s): {names}"
            if required:
                raise InputError(msg)
            notes.append(f"{msg}; FROC curve skipped")  # said with the other notes, and kept in the JSON
        elif froc_inputs or (required and froc_empty):
            pooled = result["pooled"]
            operating = {
                "sensitivity": pooled["TPR"],
                "fp_per_subject": pooled["FPavg"],
                "thresholds": sorted(applied),
                "source": "pooled table (label maps as written, VALDO rule)",
            }
            result["froc"] = froc_curve({**froc_inputs, **froc_empty}, max_distance_mm, operating).to_dict()
    if label_maps and threshold != PREDICTION_THRESHOLD:
        notes.append(
            f"threshold {threshold:g} binarises prediction values, but the predictions of {len(label_maps)} "
            f"subject(s) (e.g. {label_maps[0]}) are label maps (whole numbers: microbleed numbers or 0/1), in which "
            "every microbleed counts whatever the threshold; for another candidate probability run plkd predict "
            "--threshold, or read the FROC curve"
        )
    for note in notes:
        log.warning("%s", note)
    result["notes"] = notes
    return result
