"""File naming shared by every command: subject ids and output names."""

from __future__ import annotations

import os
from pathlib import Path

#: Extensions recognised as NIfTI, longest first so ``.nii.gz`` wins over ``.gz``.
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: str | os.PathLike[str]) -> bool:
    """True for ``*.nii`` and ``*.nii.gz`` names (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


#: Extensions of the two files of a NIfTI pair (or an Analyze 7.5 image): header and voxels, as SPM writes them.
PAIR_SUFFIXES = (".hdr.gz", ".img.gz", ".hdr", ".img")


def is_pair_name(path: str | os.PathLike[str]) -> bool:
    """True for ``*.hdr`` and ``*.img`` names (also gzip-compressed, ``.hdr.gz``; case-insensitive)."""
    return str(path).lower().endswith(PAIR_SUFFIXES)


def _pair_member(path: Path, want: str) -> Path:
    name = path.name
    for ext in PAIR_SUFFIXES:
        if name.lower().endswith(ext):
            other = ext.replace(".hdr", want).replace(".img", want)
            return path.with_name(name[: -len(ext)] + (other.upper() if name[-len(ext) :].isupper() else other))
    return path


def pair_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files of the NIfTI pair that ``path`` (its ``.hdr`` or its ``.img``) belongs to, header first: ``x.img`` →
    ``[x.hdr, x.img]`` (in the case of ``path``'s own extension: ``X.IMG`` → ``X.HDR``); ``[path]`` for other names."""
    path = Path(path)
    if not is_pair_name(path):
        return [path]
    return [_pair_member(path, ".hdr"), _pair_member(path, ".img")]


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
    """``sub-001_T2S.nii.gz`` → ``sub-001_T2S`` (a NIfTI pair's ``x.hdr``, ``x.img`` → ``x``); other names are returned
    unchanged."""
    low = name.lower()
    for suffix in NIFTI_SUFFIXES + PAIR_SUFFIXES:
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
