"""The JSON metadata of a NIfTI file: its own sidecar, and what it inherits under the BIDS inheritance principle.

dcm2niix writes ``scan.json`` beside ``scan.nii.gz``; a BIDS data set may instead state metadata once for many files,
higher up: ``T2starw.json`` at the data set's root applies to every ``sub-*/anat/sub-*_T2starw.nii.gz``, and
``sub-01/sub-01_T2starw.json`` to every session of subject 01. The rule (BIDS specification, "The Inheritance
Principle"): a JSON file applies to a data file when it lies in the data file's folder or a folder above it, up to
the data set's root, its suffix is the data file's suffix and each of its entities (``key-value``) is one of the data
file's. Those that apply are merged from the root down, a value of a deeper (more specific) file replacing the same
key's value from above. BIDS allows one applicable file per folder; where a folder holds several, the one with the
most entities is taken (the most specific), the others are not read.

The data set's root is the nearest folder above the file holding ``dataset_description.json``; without one, the folder
holding the nearest ``sub-*`` folder, else the file's own folder. A file whose name is not a BIDS name (``x_t1_mprage
_20230101_3.nii.gz``, from dcm2niix) has only its own sidecar.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plkd.naming import PAIR_SUFFIXES, is_pair_name, pair_files, strip_nifti_suffix

#: Sidecars larger than this are not read (a JSON of metadata holds a few kB; a big file is something else).
MAX_SIDECAR_BYTES = 1_000_000
#: A BIDS entity: ``key-value``, both letters and digits only.
_ENTITY = re.compile(r"^([a-zA-Z]+)-([a-zA-Z0-9]+)$")
#: The suffix of a BIDS name: letters and digits (``T2starw``, ``swi``, ``MEGRE``).
_SUFFIX = re.compile(r"^[a-zA-Z0-9]+$")
#: Folders looked through above a file for the data set's root.
_MAX_LEVELS = 32


@dataclass
class Sidecar:
    """The metadata that applies to one NIfTI file, and where each key came from."""

    #: The merged JSON objects (a deeper file's value replaces a higher one's).
    fields: dict[str, Any] = field(default_factory=dict)
    #: The file each key of :attr:`fields` was read from.
    origin: dict[str, Path] = field(default_factory=dict)

    def label(self, key: str, image: Path) -> str:
        """How a reason names where ``key`` came from: ``"sidecar"`` for the file's own sidecar, else ``"sidecar
        ../../T2starw.json"`` (the inherited file, relative to the image's folder)."""
        source = self.origin.get(key)
        if source is None or source == Path(os.path.abspath(sidecar_path(image))):
            return "sidecar"
        return f"sidecar {Path(os.path.relpath(source, image.parent)).as_posix()}"


def sidecar_path(path: Path) -> Path:
    """The JSON sidecar of a NIfTI file: ``scan.nii.gz`` → ``scan.json`` (a NIfTI pair's ``scan.hdr.gz`` too)."""
    name = path.name
    for ext in (".nii.gz", ".nii", *PAIR_SUFFIXES):
        if name.lower().endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def as_nifti_name(path: Path) -> Path:
    """The NIfTI file name under which plkd reads the metadata of the image ``path``: ``path`` itself for NIfTI; an
    image in any other format (NRRD, MetaImage, MGH, Analyze, VTK...: ``scan.nrrd``, ``scan.mgz``, ``scan.mgh.gz``)
    → ``scan.nii.gz``, so that its sidecar ``scan.json``, what a BIDS data set states for its name, and its name's
    words are read as for a NIfTI file of that name (as the Slicer batch script's walk reads them; the module read
    the sidecar of a volume loaded from any format). A NIfTI file of that name lying beside it is taken for the same
    scan (its header text is read)."""
    name = path.name
    if name.lower().endswith((".nii", ".nii.gz")):
        return path
    if is_pair_name(path) and _is_nifti_pair(header := pair_files(path)[0]):
        # A NIfTI pair is NIfTI, read by its header (x.img → x.hdr): its header text was not read, because the
        # name given was that of an x.nii.gz that does not exist.
        return header
    for packed in (".gz", ".bz2", ".xz", ".zip"):  # a compressed file: scan.mgh.gz, scan.img.gz, scan.nii.bz2
        if name.lower().endswith(packed):
            name = name[: -len(packed)]
            break
    stem, dot, ext = name.rpartition(".")
    return path.with_name((stem if dot and stem and ext else name) + ".nii.gz")


def _is_nifti_pair(header: Path) -> bool:
    from plkd.volumes import is_nifti_pair_header  # plkd.volumes reads images (nibabel, numpy)

    return header.is_file() and is_nifti_pair_header(header)


def bids_name(stem: str) -> tuple[dict[str, str], str] | None:
    """``(entities, suffix)`` of a BIDS name without extension (``sub-01_acq-fast_T2starw`` → ``({"sub": "01",
    "acq": "fast"}, "T2starw")``), or None when ``stem`` is not one (a part before the suffix is no entity)."""
    parts = stem.split("_")
    entities: dict[str, str] = {}
    for part in parts[:-1]:
        m = _ENTITY.match(part)
        if m is None or m[1] in entities:
            return None
        entities[m[1]] = m[2]
    if not _SUFFIX.match(parts[-1]) or _ENTITY.match(parts[-1]):
        return None
    return entities, parts[-1]


def dataset_root(image: Path) -> Path:
    """The BIDS data set's root above ``image`` (see the module docstring); ``image``'s folder when there is none."""
    folder = Path(os.path.abspath(image)).parent  # as given: a linked subject folder stays in the study's layout
    subject_parent = None
    for level, here in enumerate([folder, *folder.parents]):
        if level >= _MAX_LEVELS:
            break
        if (here / "dataset_description.json").is_file():
            return here
        if subject_parent is None and here.name.startswith("sub-"):
            subject_parent = here.parent
    return subject_parent or folder


def applicable_files(image: Path) -> list[Path]:
    """The JSON files whose metadata applies to the NIfTI file ``image``, from the data set's root down to its own
    folder (the order they are merged in). A name that is not BIDS has only its own sidecar (when it exists)."""
    own = Path(os.path.abspath(sidecar_path(image)))
    parsed = bids_name(strip_nifti_suffix(image.name))
    if parsed is None:
        return [own] if own.is_file() else []
    entities, suffix = parsed
    folder = Path(os.path.abspath(image)).parent
    root = dataset_root(image)
    levels = [folder]
    while levels[-1] != root and levels[-1].parent != levels[-1]:
        levels.append(levels[-1].parent)
    found = []
    for here in reversed(levels):
        best: tuple[int, str, Path] | None = None
        try:
            names = [e.name for e in os.scandir(here) if e.name.lower().endswith(".json")]
        except OSError:
            continue
        for name in names:
            candidate = bids_name(name[: -len(".json")])
            if candidate is None or candidate[1] != suffix:
                continue
            if all(entities.get(k) == v for k, v in candidate[0].items()):
                rank = (len(candidate[0]), name, here / name)
                if best is None or rank[:2] > best[:2]:
                    best = rank
        if best is not None and best[2].is_file():
            found.append(best[2])
    return found


def _read_json(path: Path) -> Mapping[str, Any]:
    """A JSON object from ``path``; ``{}`` when it cannot be read, is too large or is not an object."""
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # Windows editors may add a BOM
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_sidecar(image: Path) -> Sidecar:
    """The metadata that applies to the NIfTI file ``image`` (:func:`applicable_files`, merged from the root down).
    Never raises: unreadable files give nothing."""
    merged = Sidecar()
    for path in applicable_files(Path(image)):
        for key, value in _read_json(path).items():
            merged.fields[key] = value
            merged.origin[key] = path
    return merged
