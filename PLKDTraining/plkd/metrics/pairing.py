"""Finding prediction and reference files and pairing them by subject id.

Subject ids come from :func:`plkd.naming.subject_id` (file name up to the first ``_``), so
``sub-001_cmb.nii.gz`` pairs with ``sub-001.nii.gz`` or ``sub-001_space-T2S_CMB.nii.gz``.
Folders are searched recursively. VALDO and ``plkd synth`` folders keep images and brain
masks next to the labels, so when a subject has several files the one whose name says it is
a label (``CMB``, ``label``, ``seg``; for predictions also ``pred``) wins, and names with
``mask`` lose.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from plkd.errors import InputError
from plkd.naming import is_nifti, strip_nifti_suffix, subject_id

LABEL_WORDS = ("cmb", "label", "seg")
PREDICTION_WORDS = (*LABEL_WORDS, "pred")


def _score(path: Path, words: Iterable[str]) -> int:
    stem = strip_nifti_suffix(path.name).lower()
    if any(w in stem for w in words):
        return 2
    if "mask" in stem:
        return 0
    return 1


def find_nifti_files(path: str | os.PathLike[str], what: str) -> list[Path]:
    """NIfTI files named by ``path``: the file itself, or every ``*.nii[.gz]`` under a folder."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if p.is_file():
        if not is_nifti(p):
            raise InputError(f"{what} {p} is not a .nii or .nii.gz file")
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and is_nifti(f) and not f.name.startswith("."))
    if not files:
        raise InputError(f"{what} folder {p} holds no .nii/.nii.gz files")
    return files


def by_subject(files: Iterable[Path], what: str, words: Iterable[str]) -> dict[str, Path]:
    """One file per subject id, preferring label-like names; ambiguity is an error."""
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(subject_id(f), []).append(f)
    chosen: dict[str, Path] = {}
    words = tuple(words)
    for sid, group in sorted(groups.items()):
        best = max(_score(f, words) for f in group)
        top = [f for f in group if _score(f, words) == best]
        if len(top) > 1:
            names = ", ".join(str(f) for f in top[:4])
            raise InputError(
                f"{what}: subject {sid} has {len(top)} candidate files ({names}); give one file per subject"
            )
        chosen[sid] = top[0]
    return chosen


@dataclass
class Pairing:
    """Prediction/reference files by subject; ``pred`` is ``None`` for a missing prediction."""

    pairs: dict[str, tuple[Path | None, Path]]
    unmatched_predictions: list[str] = field(default_factory=list)
    unmatched_references: list[str] = field(default_factory=list)


def pair_files(
    pred: str | os.PathLike[str], truth: str | os.PathLike[str], *, missing_as_empty: bool = False
) -> Pairing:
    """Pair prediction and reference files by subject id.

    A single prediction file and a single reference file are paired whatever their names; a
    single prediction file against a folder is paired with its own subject's reference.
    Predictions without a reference are reported and skipped. References without a
    prediction are an error unless ``missing_as_empty`` (then they are scored as empty
    predictions: every microbleed missed).
    """
    pred_files = find_nifti_files(pred, "prediction")
    truth_files = find_nifti_files(truth, "reference")
    if Path(pred).is_file() and Path(truth).is_file():
        return Pairing(pairs={subject_id(truth_files[0]): (pred_files[0], truth_files[0])})
    preds = by_subject(pred_files, "prediction", PREDICTION_WORDS)
    if Path(pred).is_file():
        # One prediction against a reference folder: only its own subject is expected.
        truth_files = [f for f in truth_files if subject_id(f) in preds]
    truths = by_subject(truth_files, "reference", LABEL_WORDS)
    only_pred = sorted(set(preds) - set(truths))
    only_truth = sorted(set(truths) - set(preds))
    common = sorted(set(preds) & set(truths))
    if not common and not (missing_as_empty and truths):
        raise InputError(
            f"no prediction/reference pairs found: prediction subjects {_preview(preds)}, "
            f"reference subjects {_preview(truths)} (files pair by the name up to the first '_')"
        )
    if only_truth and not missing_as_empty:
        raise InputError(
            f"{len(only_truth)} reference subject(s) have no prediction: {_preview(only_truth)} "
            "(use --missing-as-empty to score them as empty predictions)"
        )
    pairs: dict[str, tuple[Path | None, Path]] = {sid: (preds[sid], truths[sid]) for sid in common}
    for sid in only_truth:
        pairs[sid] = (None, truths[sid])
    return Pairing(pairs=dict(sorted(pairs.items())), unmatched_predictions=only_pred, unmatched_references=only_truth)


def _preview(ids: Iterable[str], n: int = 5) -> str:
    ids = sorted(ids)
    if not ids:
        return "(none)"
    more = f" … (+{len(ids) - n})" if len(ids) > n else ""
    return ", ".join(ids[:n]) + more
