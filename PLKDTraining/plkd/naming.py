"""File naming shared by every command: subject ids and output names."""

from __future__ import annotations

import os
from pathlib import Path

#: Extensions recognised as NIfTI, longest first so ``.nii.gz`` wins over ``.gz``.
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: str | os.PathLike[str]) -> bool:
    """True for ``*.nii`` and ``*.nii.gz`` names (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


#: Name endings of plkd's own outputs (``NAME_cmb`` itself counts when its JSON lies beside it).
PREDICTION_SUFFIXES = ("_cmb_prob", "_cmb_modelgrid", "_cmb-final")


def is_plkd_prediction(path: str | os.PathLike[str]) -> bool:
    """True for an output of ``plkd predict`` or the Slicer module: ``NAME_cmb_prob``, ``NAME_cmb_modelgrid``,
    ``NAME_cmb-final``, or ``NAME_cmb`` with its ``NAME_cmb.json`` beside it (a reference named
    ``sub-01_CMB`` without such a JSON is a label)."""
    path = Path(path)
    stem = strip_nifti_suffix(path.name)
    low = stem.lower()
    return low.endswith(PREDICTION_SUFFIXES) or (low.endswith("_cmb") and (path.parent / f"{stem}.json").exists())


def strip_nifti_suffix(name: str) -> str:
    """``sub-001_T2S.nii.gz`` → ``sub-001_T2S``; other names are returned unchanged."""
    low = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def subject_id(path: str | os.PathLike[str]) -> str:
    """The subject id of a file: its name up to the first ``_`` (without extension).

    ``sub-001_cmb.nii.gz``, ``sub-001.nii.gz`` and ``sub-001_space-T2S_CMB.nii.gz`` all give
    ``sub-001``, which is how predictions are paired with references.
    """
    stem = strip_nifti_suffix(Path(path).name)
    if stem.endswith(".json"):
        stem = stem[: -len(".json")]
    return stem.split("_", 1)[0]


def output_stem(path: str | os.PathLike[str]) -> str:
    """The stem used for outputs of an input file: ``scan.nii.gz`` → ``scan``."""
    return strip_nifti_suffix(Path(path).name)
