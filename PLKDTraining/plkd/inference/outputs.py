"""Writing a prediction (label map on the input's grid and header, candidates JSON) and deciding
whether earlier outputs can be reused.

The JSON is written last, so "both files exist" means the input was finished; every file is
written atomically (temporary name, then rename). The JSON records the settings that change the
result and the input's sha256, so a rerun with other settings, on a changed input, or over a
label map that no longer reads (truncated copy, full disk) recomputes instead of skipping.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from plkd import __version__
from plkd.atomic import write_json_atomic
from plkd.inference.predictor import PredictionResult
from plkd.naming import output_stem
from plkd.volumes import Volume, nibabel_header_fixes, save_volume


@dataclass(frozen=True)
class OutputPaths:
    """Where the outputs for one input go."""

    label: Path
    json: Path
    probability: Path
    model_grid: Path


def output_paths(input_path: str | Path, output_dir: str | Path, stem: str | None = None) -> OutputPaths:
    """``DIR/NAME_cmb.nii.gz``, ``DIR/NAME_cmb.json`` and the optional extras for ``NAME.nii[.gz]``
    (``stem`` replaces ``NAME`` when a run has to tell inputs of the same name apart)."""
    stem = stem or output_stem(input_path)
    out = Path(output_dir)
    return OutputPaths(
        label=out / f"{stem}_cmb.nii.gz",
        json=out / f"{stem}_cmb.json",
        probability=out / f"{stem}_cmb_prob.nii.gz",
        model_grid=out / f"{stem}_cmb_modelgrid.nii.gz",
    )


def files_sha256(paths: list[Path]) -> str:
    """sha256 (hex) over the bytes of ``paths`` in the given order (one file, or a DICOM series)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


#: What :func:`reuse_problem` says when there is nothing to reuse (not worth a message).
NO_OUTPUTS = "no outputs yet"


def reuse_problem(paths: OutputPaths, settings: dict[str, Any], input_sha256: str, extras: list[Path]) -> str | None:
    """``None`` when the outputs in ``paths`` are complete and were made from this input with these
    settings; otherwise why they must be (re)computed, in a few words."""
    if not paths.json.exists() and not paths.label.exists():
        return NO_OUTPUTS
    try:
        doc = json.loads(paths.json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{paths.json.name} is missing or unreadable ({type(exc).__name__})"
    old = doc.get("settings") if isinstance(doc, dict) else None
    if not isinstance(old, dict):
        return "the outputs do not record their settings (written by an older plkd)"
    if doc.get("input_sha256") != input_sha256:
        return "the input changed since its outputs were written"
    changed = [f"{k} {old.get(k)!r} -> {settings.get(k)!r}" for k in sorted(settings) if old.get(k) != settings.get(k)]
    if changed:
        return "settings changed: " + ", ".join(changed)
    for p in [paths.label, *extras]:
        try:
            with nibabel_header_fixes():  # our own outputs keep the input's header: said when it was loaded
                img = nib.load(str(p))
                np.asarray(img.dataobj)  # reads (and decompresses) every byte: a truncated file fails here
        except Exception as exc:  # nibabel raises many types for broken files
            return f"{p.name} is missing or unreadable ({type(exc).__name__})"
        on_input_grid = p == paths.label or p == paths.probability
        if on_input_grid and list(img.shape[:3]) != list(doc.get("label_shape") or img.shape[:3]):
            return f"{p.name} has shape {img.shape}, not the input's {doc.get('label_shape')}"
    return None


def foreign_file(paths: OutputPaths) -> Path | None:
    """A file at one of the main output paths that plkd did not write, or ``None``.

    plkd writes the JSON (a record with ``candidates``) after the label map and removes the label map when
    the JSON cannot follow, so a label map without such a JSON beside it is someone else's: a reference
    ``sub-01_cmb.nii.gz`` beside ``sub-01.nii.gz`` when the outputs go beside the inputs, or ``sub-01_CMB.nii.gz``
    on a file system that ignores case (macOS, Windows). Taken for a stale output, it was deleted and replaced
    by the prediction, which ``plkd evaluate`` then scored against itself.
    """
    json_there = paths.json.exists()
    record = read_record(paths.json) if json_there else None
    if json_there and (record is None or "candidates" not in record):
        return paths.json
    if not json_there and paths.label.exists():
        return paths.label
    return None


def remove_outputs(paths: OutputPaths) -> list[Path]:
    """Delete the outputs of one input (label map, JSON, extras) that exist; returns those removed.

    Used when a scan fails while its folder holds outputs made from another input or with other
    settings: left in place, ``plkd evaluate`` or a reader would take them for this run's result.
    The JSON goes first, so an interruption never leaves a JSON without its label map.
    """
    removed = []
    for p in (paths.json, paths.label, paths.probability, paths.model_grid):
        try:
            p.unlink()
        except FileNotFoundError:
            continue
        removed.append(p)
    return removed


def rename_outputs(old: OutputPaths, new: OutputPaths) -> list[Path]:
    """Move the outputs of one input to another name (the JSON last, as it is written last: an interrupted move
    leaves a label map without its JSON, which a rerun recomputes); returns the new paths."""
    moved = []
    for a, b in ((old.label, new.label), (old.probability, new.probability), (old.model_grid, new.model_grid)):
        if a.exists():
            a.replace(b)
            moved.append(b)
    if old.json.exists():
        old.json.replace(new.json)
        moved.append(new.json)
    return moved


def read_record(path: Path) -> dict[str, Any] | None:
    """The prediction JSON at ``path``, or ``None`` when it cannot be read."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def result_record(
    result: PredictionResult,
    input_path: str | Path | None,
    model: str,
    *,
    settings: dict[str, Any] | None = None,
    input_sha256: str | None = None,
    warnings: list[str] | None = None,
    dicom: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document for one prediction (format in ``docs/design.md``)."""
    doc: dict[str, Any] = {
        "input": str(input_path) if input_path is not None else None,
        # The same scan in a later run (plkd.inference.stems: its outputs keep their name).
        "input_path": str(Path(input_path).resolve()) if input_path is not None else None,
        "model": model,
        "plkd_version": __version__,
        "student": result.student,
        "lr_factor": result.lr_factor,
        "thresholds": result.thresholds,
        "n_microbleeds": result.n_microbleeds,
        "candidates": renumber_candidates(result.candidates),
        "timings": result.timings,
        "notes": result.notes,
        "warnings": list(warnings or []),
        "label_shape": list(result.label_map.shape),
        "input_sha256": input_sha256,
        "settings": settings or {},
    }
    if dicom is not None:
        doc["dicom"] = dicom
    location = getattr(result, "location", None)  # optional per-scan block (shared contract)
    if location is not None:
        doc["location"] = location
    return doc


def renumber_candidates(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies whose ``id`` equals the label value of each kept candidate (so "#3" is label 3).

    Rejected candidates (label 0) take the ids after the largest label, in their order;
    ``merged_into`` follows the new ids. Records whose labels are not distinct are returned
    unchanged (copied).
    """
    labels = [int(c.get("label") or 0) for c in candidates]
    kept = [v for v in labels if v > 0]
    if len(set(kept)) != len(kept):
        return [dict(c) for c in candidates]
    new_ids: dict[Any, int] = {}
    next_id = max(kept, default=0) + 1
    for c, label in zip(candidates, labels, strict=True):
        if label > 0:
            new_ids[c["id"]] = label
        else:
            new_ids[c["id"]] = next_id
            next_id += 1
    out = []
    for c in candidates:
        rec = {**c, "id": new_ids[c["id"]]}
        if rec.get("merged_into") in new_ids:
            rec["merged_into"] = new_ids[rec["merged_into"]]
        out.append(rec)
    return out


def write_prediction(
    result: PredictionResult,
    volume: Volume,
    paths: OutputPaths,
    model: str,
    *,
    save_probability: bool = False,
    save_model_grid: bool = False,
    record: dict[str, Any] | None = None,
) -> list[Path]:
    """Write the label map (with the input's header geometry), extras, then the JSON (``record``
    or :func:`result_record` without provenance).

    The JSON marks a finished output: an earlier one is removed before the label map is replaced
    (else an interruption would leave the new label map beside the old candidates), and when the
    writing is interrupted (Ctrl+C, a full disk) the files this call wrote are removed again, so
    no label map is left without its JSON.
    """
    paths.json.unlink(missing_ok=True)
    written: list[Path] = []
    try:
        written.append(save_volume(paths.label, result.label_map, volume.affine, header=volume.header))
        if save_probability and result.probability_map is not None:
            prob = result.probability_map.astype(np.float32)
            written.append(save_volume(paths.probability, prob, volume.affine, header=volume.header))
        if save_model_grid and result.model_label_map is not None and result.model_affine is not None:
            written.append(save_volume(paths.model_grid, result.model_label_map.astype(np.int32), result.model_affine))
        write_json_atomic(paths.json, record if record is not None else result_record(result, volume.path, model))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    written.append(paths.json)
    return written
