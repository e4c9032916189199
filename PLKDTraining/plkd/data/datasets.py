"""Finding subjects (image, label, brain mask) in the data set layouts people bring.

Layouts, tried in this order by ``layout="auto"``:

``synth``
    ``plkd synth`` output: ``manifest.json`` with ``"format": "plkd-synth/1"`` and VALDO-named
    files (see docs/design.md). Checked first because its files also match the VALDO names; the
    manifest adds each subject's microbleed list to :attr:`Subject.meta`.
``valdo``
    VALDO 2021 Task 2: ``sub-XXX_space-T2S_desc-masked_T2S.nii.gz`` with the label
    ``sub-XXX_space-T2S_CMB.nii.gz`` (and optionally ``sub-XXX_space-T2S_desc-brain_mask``), in
    ``sub-XXX/`` folders or flat. ``SWI`` in place of ``T2S`` likewise; the unmasked
    ``sub-XXX_space-T2S_T2S`` is used when no masked image exists. Other contrasts in the same
    space (``…_desc-masked_T1``) are ignored.
``bids``
    A BIDS tree: ``sub-XX/[ses-YY/]anat/`` images (``sub-01_ses-1_T2starw.nii.gz``) with their labels and brain
    masks under ``derivatives/*/sub-XX/[ses-YY/]anat/`` (or beside the image), paired by the BIDS entities
    ``sub``, ``ses``, ``acq``, ``ce``, ``rec`` and ``run``. The images are the files ``plkd predict``'s folder walk
    analyses in that tree (:func:`plkd.inference.input_kinds.classify`: T1w, FLAIR, phase, quantitative maps, ...
    are not), so both read the same scans; the others are named in one warning line. A label is a file whose name
    says so (``_dseg``, ``_label-CMB_mask``, ``_CMB``: :func:`plkd.metrics.pairing.file_role`, the rule of
    ``plkd evaluate``), a mask a ``_mask``/``_brainmask`` without a ``label-`` entity. A case is named by the
    image's entities (``sub-01_ses-1``), so sessions of one subject stay on one side of a split.
``folder``
    ``imagesTr/`` + ``labelsTr/`` (nnU-Net: ``CASE_0000.nii.gz`` + ``CASE.nii.gz``), or
    ``images/`` + ``labels/`` (+ ``masks/``) paired by name, or ``NAME.nii.gz`` beside
    ``NAME_label`` / ``_labels`` / ``_seg`` / ``_cmb`` (label) and ``NAME_mask`` /
    ``_brainmask`` / ``_brain_mask`` (brain mask), in the folder or its sub-folders.

VALDO and synth subjects are identified by :func:`plkd.naming.subject_id` (``sub-XXX``);
plain-folder subjects by their case name (the file name without extension, label suffix or
nnU-Net channel suffix), because general file names such as ``case_001`` would collide if cut
at the first ``_``; a case name found in two folders (one folder per patient, each holding
``T2S.nii.gz``) is prefixed by the folder (``sub-01_T2S``). A label without its image, two files
claiming the same subject, or an empty folder is a :class:`~plkd.errors.InputError` naming what was expected.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from plkd.errors import InputError
from plkd.label_grid import label_onto_image
from plkd.metrics.components import binarise_reference, check_label_values, label_components
from plkd.metrics.pairing import LABEL_WORDS
from plkd.modalities import MODALITIES
from plkd.naming import (
    PREDICTION_SUFFIXES,
    is_nifti,
    is_pair_name,
    is_plkd_prediction,
    pair_files,
    strip_nifti_suffix,
    subject_id,
)
from plkd.volumes import Volume, is_nifti_pair_header, load_label, load_volume, on_grid_of, spacing_from_affine

log = logging.getLogger(__name__)

#: Accepted values of ``find_subjects(layout=...)``.
LAYOUTS = ("auto", "synth", "valdo", "bids", "folder")
#: ``format`` of a ``plkd synth`` manifest this reader understands.
SYNTH_FORMAT = "plkd-synth/1"

#: A NIfTI file's extension, or a NIfTI pair's header's (:func:`_nifti_files`).
_NII = r"\.(?:nii|hdr)(?:\.gz)?$"
_VALDO_IMAGE = re.compile(
    r"^(?P<sid>sub-[^_]+)_space-(?P<space>[A-Za-z0-9]+)_(?P<masked>desc-masked_)?(?P<mod>T2S|SWI)" + _NII
)
_VALDO_LABEL = re.compile(r"^(?P<sid>sub-[^_]+)_space-(?P<space>[A-Za-z0-9]+)_CMB" + _NII)
_VALDO_MASK = re.compile(r"^(?P<sid>sub-[^_]+)_space-(?P<space>[A-Za-z0-9]+)_desc-brain_mask" + _NII)
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
#: File-name suffixes (case-insensitive) marking a label / a brain mask beside its image.
LABEL_SUFFIXES = ("_label", "_labels", "_seg", "_cmb")
MASK_SUFFIXES = ("_mask", "_brainmask", "_brain_mask")
#: Further endings that ``plkd evaluate`` reads as a label (:data:`plkd.metrics.pairing.LABEL_WORDS`: ``_gt``,
#: ``_truth``, ``_lesion``, ``_manual``, ``_microbleeds``...): a file so named beside an image of the rest of its
#: name is that image's label (it was a subject of its own, its label map read as a scan, and the image left out
#: for having no label); without such an image it stays an image, as before.
EXTRA_LABEL_SUFFIXES = tuple(sorted(f"_{w}" for w in LABEL_WORDS if f"_{w}" not in LABEL_SUFFIXES))


@dataclass
class Subject:
    """One subject of a data set: file paths and reader-specific metadata."""

    id: str
    image: Path
    label: Path | None = None
    mask: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# helpers


def _nifti_files(folder: Path, max_depth: int, *, unread_pairs: list[tuple[Path, str]] | None = None) -> list[Path]:
    """NIfTI files under ``folder`` down to ``max_depth`` sub-folder levels, hidden ones skipped: ``.nii``,
    ``.nii.gz`` and the header (``.hdr``) of each NIfTI pair whose voxels (``.img``) lie beside it, which
    :func:`plkd.volumes.load_volume` reads as ``plkd predict`` does (they were passed over: a data set of SPM's
    pairs was "no subjects found", or lost its pair subjects without a word). The pair files that are not read
    (an Analyze 7.5 header, an ``.img`` without its header...) are added to ``unread_pairs`` with why."""
    found: list[Path] = []
    base_depth = len(folder.parts)
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if len(here.parts) - base_depth >= max_depth:
            dirnames[:] = []
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            if is_nifti(f):
                found.append(here / f)
            elif is_pair_name(f):
                why = _pair_problem(here / f)
                stem = strip_nifti_suffix(f)
                if why is None and (
                    single := next((n for n in filenames if is_nifti(n) and strip_nifti_suffix(n) == stem), None)
                ):
                    # As plkd predict: the pair converted beside it is one scan, taken as the .nii.
                    why = f"NIfTI pair beside {single} (the same scan converted?), which is taken"
                if why is None:
                    found.append(here / f)
                elif why and unread_pairs is not None:
                    unread_pairs.append((here / f, why))
    return found


def _pair_problem(path: Path) -> str | None:
    """None when ``path`` is the header of a NIfTI pair with its voxels beside it (the file a pair is read by);
    ``""`` for the voxels of such a pair (read with their header); else why the file is not read, in
    ``plkd predict``'s words."""
    header, voxels = pair_files(path)
    if path != header:
        return "" if header.exists() else "not NIfTI or DICOM (an .img without its .hdr)"
    if not is_nifti_pair_header(path):
        return "Analyze 7.5 image (its header does not say where left and right are)"
    if not voxels.exists():
        return f"NIfTI header without its voxels ({voxels.name} is missing)"
    return None


_SAID: set[str] = set()


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time in this process: ``plkd cv`` and ``plkd tune`` read a data set
    several times (per fold, per segmenter), and one caveat is one line."""
    if message not in _SAID:
        _SAID.add(message)
        log.warning("%s", message)


#: How each layout names a subject, for the message refusing two files of one id.
_ID_RULES = {
    "valdo": "the name up to the first '_'",
    "synth": "the name up to the first '_'",
    "bids": "the file's BIDS entities",
    "folder": "the file name without extension, label suffix or nnU-Net channel, with its folder when another "
    "folder holds that name too",
}


def _check_unique(subjects: list[Subject]) -> list[Subject]:
    seen: dict[str, Subject] = {}
    for s in subjects:
        if s.id in seen:
            rule = _ID_RULES.get(s.meta.get("layout", ""), "")
            raise InputError(
                f"subject id {s.id!r} occurs twice: {seen[s.id].image} and {s.image}"
                + (f" (a subject is named by {rule}); keep one, or rename one" if rule else "")
            )
        seen[s.id] = s
    return sorted(subjects, key=lambda s: s.id)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------------------------
# VALDO


def _is_valdo(root: Path) -> bool:
    return any(_VALDO_IMAGE.match(p.name) or _VALDO_LABEL.match(p.name) for p in _nifti_files(root, 2))


def _find_valdo(root: Path, modality: str | None) -> list[Subject]:
    images: dict[str, dict[str, Path]] = {}  # sid -> {mod: path}
    masked: dict[tuple[str, str], bool] = {}
    labels: dict[tuple[str, str], Path] = {}  # (sid, space) -> path
    masks: dict[tuple[str, str], Path] = {}
    for p in _nifti_files(root, 2):
        if m := _VALDO_IMAGE.match(p.name):
            sid, mod, is_masked = subject_id(p), m["mod"], bool(m["masked"])
            if m["space"] != mod or (modality and mod != modality):
                continue  # another contrast resampled into this space, or a modality not asked for
            key = (sid, mod)
            if mod in images.get(sid, {}):
                if masked[key] == is_masked:
                    raise InputError(f"subject id {sid!r} occurs twice: {images[sid][mod]} and {p}")
                if not is_masked:
                    continue  # keep the skull-masked image, VALDO's input
            images.setdefault(sid, {})[mod] = p
            masked[key] = is_masked
        elif m := _VALDO_LABEL.match(p.name):
            key = (m["sid"], m["space"])
            if key in labels:
                raise InputError(f"two labels for subject {key[0]!r}: {labels[key]} and {p}")
            labels[key] = p
        elif m := _VALDO_MASK.match(p.name):
            key = (m["sid"], m["space"])
            if key in masks:  # the later one (sub-X/ or flat) replaced the other without a word
                raise InputError(f"two brain masks for subject {key[0]!r}: {masks[key]} and {p}")
            masks[key] = p
    subjects = []
    for sid, by_mod in images.items():
        if len(by_mod) > 1:
            raise InputError(f"subject {sid!r} has both T2S and SWI images in {root}; choose one modality")
        ((mod, path),) = by_mod.items()
        subjects.append(
            Subject(
                id=sid,
                image=path,
                label=labels.pop((sid, mod), None),
                mask=masks.get((sid, mod)),
                meta={"layout": "valdo", "modality": mod, "skull_masked": masked[(sid, mod)]},
            )
        )
    for (sid, space), path in sorted(labels.items()):
        if modality and space != modality:
            continue
        raise InputError(
            f"label {_rel(path, root)} has no image (expected {sid}_space-{space}_desc-masked_{space}.nii.gz "
            f"beside it or in {sid}/)"
        )
    return _check_unique(subjects)


# ----------------------------------------------------------------------------------------------
# plkd synth


def _read_synth_manifest(root: Path) -> dict[str, Any] | None:
    path = root / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict) or not str(manifest.get("format", "")).startswith("plkd-synth/"):
        return None
    if manifest["format"] != SYNTH_FORMAT:
        raise InputError(f"{path} has format {manifest['format']!r}; this plkd reads {SYNTH_FORMAT!r}")
    if not isinstance(manifest.get("subjects"), dict):
        raise InputError(f"{path} has no 'subjects' table")
    return manifest


def _find_synth(root: Path, manifest: dict[str, Any]) -> list[Subject]:
    modality = manifest.get("modality", "T2S")
    subjects = _find_valdo(root, modality)
    by_id = {s.id: s for s in subjects}
    missing = sorted(set(manifest["subjects"]) - set(by_id))
    if missing:
        raise InputError(
            f"{root / 'manifest.json'} lists {len(missing)} subject(s) without an image, e.g. "
            f"{missing[0]}/{missing[0]}_space-{modality}_desc-masked_{modality}.nii.gz"
        )
    for s in subjects:
        info = manifest["subjects"].get(s.id)
        if info is None:
            log.warning("%s: %s is not in manifest.json; read without metadata", root, s.id)
            info = {}
        s.meta = {
            **s.meta,
            **info,
            "layout": "synth",
            "modality": modality,
            "spacing_mm": manifest.get("spacing_mm"),
        }
    return subjects


# ----------------------------------------------------------------------------------------------
# BIDS

#: Entities that tell one acquisition from another (BIDS): a label or mask belongs to the image whose values of
#: the ones it carries are its own.
BIDS_MATCH_ENTITIES = ("sub", "ses", "acq", "ce", "rec", "run")
_BIDS_SUBJECT_DIR = re.compile(r"^sub-[A-Za-z0-9]+$")


def _bids_anat_dirs(root: Path) -> list[Path]:
    """``sub-XX/anat`` and ``sub-XX/ses-YY/anat`` folders of ``root`` (raw data, not derivatives), and, BIDS-like,
    ``sub-XX/ses-YY/`` without an ``anat/`` when it holds files named for the subject (``sub-XX_…``), and such a
    ``sub-XX/`` in a tree with ``anat/`` folders: these subjects were left out of the tree (or the whole tree was "no
    subjects found"). A tree of ``sub-XX/`` folders without any ``anat/`` stays a plain folder (read side by side)."""
    found, loose = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and _BIDS_SUBJECT_DIR.match(p.name)):
        for folder in (sub, *sorted(d for d in sub.glob("ses-*") if d.is_dir())):
            if (folder / "anat").is_dir():
                found.append(folder / "anat")
            elif any(p.name.startswith(sub.name + "_") for p in _nifti_files(folder, 0)):
                loose.append(folder)
    # sub-XX/ files of a tree without any anat/ or session folder are a plain folder's (read side by side, as they
    # always were, under the same ids); session folders are too deep for that reader.
    keep_loose = bool(found) or any(d.name.startswith("ses-") for d in loose)
    return sorted(found + (loose if keep_loose else []))


def _is_bids(root: Path) -> bool:
    return any(_nifti_files(d, 0) for d in _bids_anat_dirs(root))


def _bids_entities(path: Path) -> tuple[dict[str, str], str]:
    """``({entity: value}, suffix)`` of a BIDS file name (``sub-01_ses-1_T2starw`` → ``{sub: 01, ses: 1}``,
    ``T2starw``); the suffix is ``""`` when the last part is an entity."""
    parts = strip_nifti_suffix(path.name).split("_")
    entities = dict(p.split("-", 1) for p in parts if "-" in p)
    return entities, ("" if "-" in parts[-1] else parts[-1])


def _bids_key(entities: dict[str, str]) -> dict[str, str]:
    """The entities that tell acquisitions apart, each value as BIDS compares it: an index by its number (``run-01``
    is ``run-1``: a label named with the other spelling had no image)."""
    return {
        k: (str(int(v)) if v.isdigit() and k == "run" else v) for k, v in entities.items() if k in BIDS_MATCH_ENTITIES
    }


def _find_bids(root: Path, modality: str | None) -> list[Subject]:
    from plkd.inference.input_kinds import classify  # plkd.inference imports the networks
    from plkd.inference.modality import modality_of_text
    from plkd.metrics.pairing import file_role

    subjects: list[Subject] = []
    extras: list[Path] = []  # labels and masks, beside the images or in derivatives
    for anat in _bids_anat_dirs(root):
        for p in _nifti_files(anat, 0):
            reason = classify(p)
            if reason == "label map or mask":
                extras.append(p)
                continue
            entities, suffix = _bids_entities(p)
            mod = modality_of_text(suffix)  # None: a suffix that does not say (its sidecar may: detect_modality)
            if reason is not None or (modality and mod not in (None, modality)):
                continue  # named by _say_left_out
            sid = strip_nifti_suffix(p.name)
            sid = sid[: -len(suffix) - 1] if suffix and sid.endswith("_" + suffix) else sid
            meta = {"layout": "bids", "bids": entities} | ({"modality": mod} if mod else {})
            subjects.append(Subject(id=sid, image=p, meta=meta))
    if (root / "derivatives").is_dir():
        extras += [p for p in _nifti_files(root / "derivatives", 6) if "sub" in _bids_entities(p)[0]]
    for p in extras:
        role = file_role(p)
        attr = "label" if role == "label" else "mask" if role == "mask" else None
        if attr is None or is_plkd_prediction(p):
            continue  # another pipeline's output, or plkd's (named by _say_left_out when in the raw tree)
        key = _bids_key(_bids_entities(p)[0])
        owners = [s for s in subjects if key and all(_bids_key(s.meta["bids"]).get(k) == v for k, v in key.items())]
        if not owners:
            raise InputError(
                f"{attr} {_rel(p, root)} has no image: no sub-*/[ses-*/]anat image has its entities "
                f"({'_'.join(f'{k}-{v}' for k, v in key.items())})"
            )
        if len(owners) > 1:
            differ = {k for s in owners for k, v in s.meta["bids"].items() if owners[0].meta["bids"].get(k) != v}
            how = (
                "they are echoes of one multi-echo GRE stored one per file: keep only the echo to train on, or "
                "combine them into one file"
                if differ and differ <= {"echo", "part"}
                else "give it the entities (ses-, acq-, run-) of the one it belongs to"
            )
            raise InputError(
                f"{attr} {_rel(p, root)} fits {len(owners)} images ({', '.join(s.image.name for s in owners[:3])}); "
                + how
            )
        (owner,) = owners
        if getattr(owner, attr) is not None:
            raise InputError(f"two {attr}s for {owner.image.name}: {getattr(owner, attr)} and {p}")
        setattr(owner, attr, p)
    return _check_unique(subjects)


#: Folders of a data set that hold no subject's scan (BIDS: other pipelines' outputs, the scanner's files).
_NOT_SUBJECT_FOLDERS = frozenset({"derivatives", "sourcedata", "code"})


def _say_left_out(root: Path, subjects: list[Subject], layout: str, modality: str | None) -> None:
    """One warning line naming the NIfTI files under ``root`` that no subject reads (as image, label, mask or
    nnU-Net channel), counted by why (``plkd predict``'s reasons: other contrast, phase image, ...), so that a
    subject is never left out of training, tuning or cross-validation without a word: a session one folder deeper
    than the layout reads, a scan named as no layout reads it, a VALDO subject with an unmasked image only."""
    from plkd.inference.input_kinds import classify  # plkd.inference imports the networks
    from plkd.inference.inputs import count_reasons
    from plkd.inference.modality import modality_of_text

    used = {s.image for s in subjects} | {p for s in subjects for p in (s.label, s.mask) if p is not None}
    # nnU-Net channels other than 0000 are recorded in meta but never read: the networks take one image.
    channels = {Path(p): c for s in subjects for c, p in (s.meta.get("channels") or {}).items()}
    depth = {"folder": 1, "valdo": 2, "synth": 2}.get(layout)
    left: list[tuple[Path, str]] = []
    files = _nifti_files(root, 8, unread_pairs=left)
    left = [(p, why) for p, why in left if p.relative_to(root).parts[0] not in _NOT_SUBJECT_FOLDERS]
    for p in files:
        rel = p.relative_to(root).parts
        if p in used or is_plkd_prediction(p) or rel[0] in _NOT_SUBJECT_FOLDERS:
            continue  # results are said by the readers that meet them (plain folders), or are no subject's
        mod = modality_of_text(_bids_entities(p)[1])
        if p in channels:
            reason = f"nnU-Net channel {channels[p]}: the networks read channel 0000 (the T2*/SWI image) only"
        elif depth is not None and len(rel) - 1 > depth:
            reason = f"deeper than the {layout} layout reads ({depth} folder level(s))"
        elif modality and mod is not None and mod != modality:
            reason = f"{mod}, not the {modality} asked for"
        else:
            reason = classify(p) or f"not named as the {layout} layout reads an image, label or mask"
        left.append((p, reason))
    others = _other_format_files(root)  # NRRD, MetaImage, MGH...: a subject converted in part was left out unsaid
    left += others
    if left:
        examples = ", ".join(_rel(p, root) for p, _ in left[:2]) + (", ..." if len(left) > 2 else "")
        _warn_once(
            f"{root}: {len(left)} {'image' if others else 'NIfTI'} file(s) not read as a subject's image, label or "
            f"mask ({count_reasons(left)}; e.g. {examples}); see README, Data, for the names each layout reads"
        )


def _other_format_files(root: Path) -> list[tuple[Path, str]]:
    """Image files under ``root`` (outside :data:`_NOT_SUBJECT_FOLDERS`, hidden ones skipped) in a format no data set
    reader reads (:data:`plkd.inference.input_kinds.OTHER_FORMATS`, a pair's ``.img`` aside), with
    ``plkd predict``'s reason: ``not NIfTI or DICOM (.nrrd: convert it to NIfTI)``."""
    from plkd.inference.input_kinds import OTHER_FORMATS

    formats = tuple(ext for ext in OTHER_FORMATS if ext != ".img")  # pairs: _pair_problem
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        top = here == root
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (top and d in _NOT_SUBJECT_FOLDERS))
        for name in sorted(filenames):
            low = name.lower()
            if not name.startswith(".") and low.endswith(formats):
                ext = next(e for e in formats if low.endswith(e))
                if low[: -len(ext)].endswith(PREDICTION_SUFFIXES):
                    continue  # the Slicer module's NAME_cmb-final.nrrd: a result, no subject's
                found.append((here / name, f"not NIfTI or DICOM ({ext}: convert it to NIfTI)"))
    return found


# ----------------------------------------------------------------------------------------------
# plain folders


#: What may join a name and its label or mask suffix: ``NAME_label``, 3D Slicer's ``NAME-label`` (the name it gives a
#: label map of NAME), ``NAME.label``; plkd evaluate reads all three as labels, training read the others as scans.
_SUFFIX_JOINS = ("_", "-", ".")


def _strip_suffix(stem: str, suffixes: tuple[str, ...]) -> str | None:
    low = stem.lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        for join in _SUFFIX_JOINS:
            if low.endswith(join + suffix[1:]) and len(stem) > len(suffix):
                return stem[: -len(suffix)]
    return None


#: Words of an nnU-Net ``dataset.json`` label class that name the microbleeds.
_MICROBLEED_CLASS_WORDS = frozenset({"cmb", "cmbs", "microbleed", "microbleeds", "microhaemorrhage", "microhemorrhage"})


def _nnunet_label_classes(root: Path) -> dict[str, list[int]] | None:
    """``{class name: [label values]}`` of the foreground classes an nnU-Net ``dataset.json`` names (v2 ``{"CMB": 1}``,
    v1 ``{"1": "CMB"}``), or None without one (or without a ``labels`` table)."""
    path = root / "dataset.json"
    if not path.is_file():
        return None
    try:
        table = json.loads(path.read_text(encoding="utf-8")).get("labels")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if not isinstance(table, dict):
        return None
    classes: dict[str, list[int]] = {}
    for key, value in table.items():
        name, values = (value, [key]) if str(key).strip().lstrip("-").isdigit() else (key, value)
        values = values if isinstance(values, list) else [values]
        try:
            numbers = [int(v) for v in values]
        except (TypeError, ValueError):
            raise InputError(f"{path}: label class {key!r} has no whole-number value ({value!r})") from None
        if any(numbers):
            classes[str(name)] = [v for v in numbers if v]
    return classes


def _microbleed_values(root: Path) -> list[int] | None:
    """The label values of the microbleed class when an nnU-Net ``dataset.json`` names several foreground classes
    (``{"background": 0, "CMB": 1, "lacune": 2}``): every non-zero value was a microbleed, the lacunes trained on as
    microbleeds without a word. None when it names one class (or there is no dataset.json). Refuses one naming
    several classes of which none is the microbleeds."""
    classes = _nnunet_label_classes(root)
    if not classes or len(classes) == 1:
        return None
    named = ", ".join(f"{name} {'/'.join(map(str, values))}" for name, values in classes.items())
    ours = [
        name
        for name in classes
        if _MICROBLEED_CLASS_WORDS & set(re.split(r"[^a-z]+", name.lower()))
        or "microbleed" in name.lower().replace(" ", "")
    ]
    if len(ours) != 1:
        raise InputError(
            f"{root / 'dataset.json'} names {len(classes)} label classes ({named}) and "
            + ("none" if not ours else "several")
            + " of them is the microbleeds (a class named CMB or microbleeds): plkd reads one class; name it so"
        )
    values = classes[ours[0]]
    _warn_once(
        f"{root / 'dataset.json'} names {len(classes)} label classes ({named}): only {ours[0]} "
        f"({'/'.join(map(str, values))}) is read as microbleeds, the others as background"
    )
    return values


def _find_nnunet(root: Path) -> list[Subject]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    microbleed_values = _microbleed_values(root)
    channels: dict[str, dict[str, Path]] = {}
    for p in _nifti_files(images_dir, 0):
        stem = strip_nifti_suffix(p.name)
        m = _CHANNEL.match(stem)
        case, channel = (m["case"], m["channel"]) if m else (stem, "0000")
        if channel in channels.get(case, {}):
            raise InputError(f"case {case!r} channel {channel} occurs twice in {images_dir}")
        channels.setdefault(case, {})[channel] = p
    subjects = []
    for case, by_channel in channels.items():
        if "0000" not in by_channel:
            raise InputError(f"case {case!r} in {images_dir} has no channel 0000 image ({case}_0000.nii.gz)")
        others = {c: str(p) for c, p in sorted(by_channel.items()) if c != "0000"}
        meta: dict[str, Any] = {"layout": "folder"}
        if others:
            meta["channels"] = others
        if microbleed_values is not None:
            meta["microbleed_values"] = microbleed_values
        subjects.append(Subject(id=case, image=by_channel["0000"], meta=meta))
    by_id = {s.id: s for s in subjects}
    if labels_dir.is_dir():
        for p in _nifti_files(labels_dir, 0):
            case = strip_nifti_suffix(p.name)
            if case not in by_id:
                raise InputError(f"label labelsTr/{p.name} has no image (expected imagesTr/{case}_0000.nii.gz)")
            by_id[case].label = p
    return _check_unique(subjects)


def _find_split_folders(root: Path) -> list[Subject]:
    images_dir, labels_dir, masks_dir = root / "images", root / "labels", root / "masks"
    subjects = [
        Subject(id=strip_nifti_suffix(p.name), image=p, meta={"layout": "folder"}) for p in _nifti_files(images_dir, 0)
    ]
    subjects = _check_unique(subjects)
    by_id = {s.id: s for s in subjects}
    for folder, attr, suffixes in (
        (labels_dir, "label", LABEL_SUFFIXES + EXTRA_LABEL_SUFFIXES),
        (masks_dir, "mask", MASK_SUFFIXES),
    ):
        if not folder.is_dir():
            continue
        for p in _nifti_files(folder, 0):
            stem = strip_nifti_suffix(p.name)
            case = stem if stem in by_id else _strip_suffix(stem, suffixes)
            owner = by_id.get(case) if case is not None else None
            if owner is None and case is not None:
                # labels/p1_CMB.nii.gz of images/p1_T2S.nii.gz, as side by side (it was "has no image").
                images = [s for s in subjects if strip_nifti_suffix(s.image.name).startswith(case + "_")]
                owner = images[0] if len(images) == 1 else None
                if owner is not None:
                    owner.id = case
            if owner is None:
                expected = f"images/{case or stem}.nii.gz" + (f" or one images/{case}_*.nii.gz" if case else "")
                raise InputError(f"{attr} {folder.name}/{p.name} has no image (expected {expected})")
            if getattr(owner, attr) is not None:
                raise InputError(f"two {attr}s for case {owner.id!r}: {getattr(owner, attr)} and {p}")
            setattr(owner, attr, p)
    return _check_unique(subjects)


def _find_side_by_side(root: Path) -> list[Subject]:
    files = _nifti_files(root, 1)
    # plkd predict's outputs beside their inputs: NAME_cmb was read as NAME's label (the model's own
    # unreviewed result trained on as the truth) and NAME_cmb-final, the reviewed one, as another image.
    predictions = [p for p in files if is_plkd_prediction(p)]
    if predictions:
        _warn_once(
            f"{root}: {len(predictions)} plkd or Slicer result(s) left out (e.g. {_rel(predictions[0], root)}): they "
            "are not read as references; rename a reviewed one NAME_label.nii.gz to train on it"
        )
        files = [p for p in files if p not in predictions]
    stems: dict[tuple[Path, str], Path] = {}
    for p in files:
        key = (p.parent, strip_nifti_suffix(p.name))
        if key in stems:  # NAME.nii beside NAME.nii.gz
            raise InputError(f"{stems[key]} and {p.name} are the same case twice; keep one")
        stems[key] = p
    subjects: dict[tuple[Path, str], Subject] = {}
    extras: list[tuple[str, Path, str]] = []
    in_role_folders: list[tuple[str, Path, str]] = []
    alone: list[tuple[str, Path]] = []
    for (parent, stem), p in stems.items():
        if parent != root and (role := _folder_role(parent.name)) is not None:
            in_role_folders.append((role, p, stem))
            continue
        if parent != root and (role := _folder_role(stem)) is not None:
            alone.append((role, p))  # sub-01/label.nii.gz: the label of the one scan of sub-01/
            continue
        # A label/mask suffix marks the file as belonging to the image named by the rest.
        label_base = _strip_suffix(stem, LABEL_SUFFIXES)
        if label_base is None and (base := _strip_suffix(stem, EXTRA_LABEL_SUFFIXES)) is not None:
            label_base = base if (parent, base) in stems else None
        mask_base = _strip_suffix(stem, MASK_SUFFIXES)
        if label_base is not None:
            extras.append(("label", p, label_base))
        elif mask_base is not None:
            extras.append(("mask", p, mask_base))
        else:
            subjects[(parent, stem)] = Subject(id=stem, image=p, meta={"layout": "folder"})
    for attr, p, base in extras:
        owner = subjects.get((p.parent, base)) or _single_image_of_case(subjects, p.parent, base)
        if owner is None:
            raise InputError(
                f"{attr} {_rel(p, root)} has no image (expected {_rel(p.parent / base, root)}.nii.gz beside it)"
            )
        if getattr(owner, attr) is not None:
            raise InputError(f"two {attr}s for {owner.image.name}: {getattr(owner, attr)} and {p}")
        setattr(owner, attr, p)
    for attr, p in alone:
        images = [s for (folder, _), s in subjects.items() if folder == p.parent]
        if len(images) != 1:
            # Each subject's folder holding T2S.nii.gz + label.nii.gz: the labels were subjects of their own (label
            # maps read as scans), refused before as "subject id 'label' occurs twice".
            raise InputError(
                f"{attr} {_rel(p, root)} is named for no image and its folder holds {len(images)} images; name it "
                f"NAME_{attr}.nii.gz after its image NAME.nii.gz"
            )
        if getattr(images[0], attr) is not None:
            raise InputError(f"two {attr}s for {_rel(images[0].image, root)}: {getattr(images[0], attr)} and {p}")
        setattr(images[0], attr, p)
    for attr, p, stem in in_role_folders:
        owner = _image_in_sibling_folder(subjects, root, p, stem, attr)
        if getattr(owner, attr) is not None:
            raise InputError(f"two {attr}s for {_rel(owner.image, root)}: {getattr(owner, attr)} and {p}")
        setattr(owner, attr, p)
    return _check_unique(_with_folder_ids(root, list(subjects.values())))


#: Folder names (whole, any case) saying that their files are labels (``labels/``, ``CMB/``, ``GT/``,
#: ``annotations/``) or brain masks (``masks/``, ``brainmasks/``), as ``images/`` + ``labels/`` + ``masks/`` read
#: them; a subject's folder named ``CMB_001`` is none.
_LABEL_FOLDERS = LABEL_WORDS | {"labelstr", "labelsts", "segmentation", "segmentations", "ground_truth"}
_MASK_FOLDERS = frozenset({"mask", "masks", "brainmask", "brainmasks", "brain_mask", "brain_masks"})


def _folder_role(name: str) -> str | None:
    """``"label"`` or ``"mask"`` for a folder whose name says what its files are (:data:`_LABEL_FOLDERS`,
    :data:`_MASK_FOLDERS`), else None."""
    low = name.lower()
    return "label" if low in _LABEL_FOLDERS else "mask" if low in _MASK_FOLDERS else None


def _image_in_sibling_folder(
    subjects: dict[tuple[Path, str], Subject], root: Path, path: Path, stem: str, attr: str
) -> Subject:
    """The image a file of a label or mask folder (``scans/p1`` for ``labels/p1`` or ``labels/p1_label``) belongs
    to: the one of its name, or of its name without a label/mask suffix, in another folder of the data set. Such a
    folder beside ``scans/`` made two "subjects" of one name, its label maps read as scans (refused before as
    "subject id 'p1' occurs twice")."""
    suffixes = LABEL_SUFFIXES + EXTRA_LABEL_SUFFIXES if attr == "label" else MASK_SUFFIXES
    names = {stem, _strip_suffix(stem, suffixes) or stem}
    found = [s for (folder, name), s in subjects.items() if name in names and folder != path.parent]
    if len(found) != 1:
        named = ", ".join(_rel(s.image, root) for s in found[:3])
        where = f"{len(found)} images of its name lie in other folders ({named})" if found else "no image of its name"
        where += "" if found else " lies in another folder"
        raise InputError(
            f"{attr} {_rel(path, root)} (in a {attr}s folder) has no image: {where}; give each image its label as "
            f"images/NAME.nii.gz + labels/NAME.nii.gz, or NAME.nii.gz beside NAME_label.nii.gz"
        )
    return found[0]


def _with_folder_ids(root: Path, subjects: list[Subject]) -> list[Subject]:
    """``subjects`` with the case name of each one that shares it with a subject in another folder prefixed by its
    folder (``sub-01/T2S.nii.gz`` and ``sub-02/T2S.nii.gz``: ``sub-01_T2S`` and ``sub-02_T2S``; one at the top
    keeps its name): one folder per subject holding files of the same names was refused as "subject id 'T2S'
    occurs twice". Ids of names found once are unchanged (a run's ids, its splits and caches stay valid)."""
    by_id: dict[str, list[Subject]] = {}
    for s in subjects:
        by_id.setdefault(s.id, []).append(s)
    for same in by_id.values():
        if len({s.image.parent for s in same}) < 2:
            continue  # one folder: two files of one name there are refused by _check_unique
        for s in same:
            folder = s.image.parent.relative_to(root).parts
            if folder:
                s.id = "_".join((*folder, s.id))
    return subjects


def _single_image_of_case(subjects: dict[tuple[Path, str], Subject], parent: Path, case: str) -> Subject | None:
    """The one image ``CASE_<suffix>`` beside a label ``CASE_CMB`` (BIDS-like ``sub-01_T2S`` + ``sub-01_CMB``)."""
    found = [s for (folder, stem), s in subjects.items() if folder == parent and stem.startswith(case + "_")]
    if len(found) != 1:
        return None
    found[0].id = case
    return found[0]


def _find_folder(root: Path) -> list[Subject]:
    if (root / "imagesTr").is_dir():
        return _find_nnunet(root)
    if (root / "images").is_dir():
        return _find_split_folders(root)
    return _find_side_by_side(root)


# ----------------------------------------------------------------------------------------------
# public API


def find_subjects(root: str | os.PathLike[str], layout: str = "auto", *, modality: str | None = None) -> list[Subject]:
    """All subjects of the data set in ``root``, sorted by id (see the module docstring).

    ``layout`` is ``"auto"``, ``"synth"``, ``"valdo"``, ``"bids"`` or ``"folder"``; ``modality`` (``"T2S"`` or
    ``"SWI"``) selects one contrast of a VALDO-style folder holding both.
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise InputError(f"unknown data set layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if modality is not None and modality not in MODALITIES:
        raise InputError(f"modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
    if not root.exists():
        raise InputError(f"data set folder not found: {root}")
    if not root.is_dir():
        raise InputError(f"data set must be a folder, not a file: {root}")

    if layout in ("auto", "synth"):
        manifest = _read_synth_manifest(root)
        if manifest is not None:
            subjects = _find_synth(root, manifest)
        elif layout == "synth":
            raise InputError(f"{root} is not a plkd synth data set (no manifest.json with format {SYNTH_FORMAT!r})")
        elif _is_valdo(root):
            subjects = _find_valdo(root, modality)
        else:
            subjects = _find_bids(root, modality) if _is_bids(root) else _find_folder(root)
    elif layout == "valdo":
        subjects = _find_valdo(root, modality)
    elif layout == "bids":
        subjects = _find_bids(root, modality)
    else:
        subjects = _find_folder(root)

    if subjects:
        _say_left_out(root, subjects, subjects[0].meta.get("layout", layout), modality)
    if not subjects:
        others = _other_format_files(root)
        formats = sorted({p.name.lower().rsplit(".", 1)[-1] for p, _ in others})
        held = (
            f"{len(others)} image(s) in other formats ({', '.join(formats)}: convert them to NIfTI); " if others else ""
        )
        raise InputError(
            f"no subjects found in {root}: {held}expected sub-XXX/sub-XXX_space-T2S_desc-masked_T2S.nii.gz (VALDO, "
            "or SWI), a plkd synth folder with manifest.json, BIDS sub-XX/[ses-YY/]anat/sub-XX_T2starw.nii.gz "
            "(labels in derivatives/), imagesTr/ + labelsTr/, images/ + labels/, or NAME.nii.gz beside "
            "NAME_label.nii.gz"
        )
    log.info("found %d subject(s) in %s", len(subjects), root)
    return subjects


#: A labelled region larger than this (mL) is no microbleed, nor a haemorrhage labelled with them: a sphere of 10 mL
#: is 27 mm across, a microbleed at most 10 mm (0.5 mL; Greenberg et al., Lancet Neurol 2009).
MAX_LABELLED_REGION_ML = 10.0


def _refuse_oversized_region(label: Volume, subject: Subject) -> None:
    """Refuse a label holding a region of more than :data:`MAX_LABELLED_REGION_ML`: a brain mask (or a lesion or
    tissue segmentation) given as the label trained the whole brain as one microbleed without a word (no darker
    than the brain around it can be measured when there is no brain around it)."""
    voxel_ml = float(np.prod(spacing_from_affine(label.affine))) / 1000.0
    positive = binarise_reference(label.data)  # as training reads it: a float label's 1e-6 noise is background
    if float(np.count_nonzero(positive)) * voxel_ml <= MAX_LABELLED_REGION_ML:
        return  # the whole label is smaller: no region of it can be larger
    comps, n = label_components(positive)
    largest = float(np.bincount(comps.ravel())[1:].max()) * voxel_ml if n else 0.0
    if largest > MAX_LABELLED_REGION_ML:
        raise InputError(
            f"label of {subject.id} ({subject.label}) holds a labelled region of {largest:.4g} mL, far larger than "
            f"any microbleed (at most 10 mm across, 0.5 mL): a brain mask or another segmentation given as the "
            "label? Give the microbleed label map"
        )


def load_subject(subject: Subject, *, all_classes: bool = False) -> tuple[Volume, Volume | None, Volume | None]:
    """``(image, label, mask)`` volumes of a subject; label and mask are ``None`` when absent.

    A label of an nnU-Net data set whose ``dataset.json`` names other classes besides the microbleeds keeps only the
    microbleeds' values (``meta["microbleed_values"]``), unless ``all_classes`` (``plkd lowres`` converts them all).

    The mask must lie on the image's grid; one stored in another axis order or direction on the same voxels is
    turned onto it (:func:`plkd.volumes.on_grid_of`). The label is brought onto it by the rule ``plkd evaluate``
    applies too (:func:`plkd.label_grid.label_onto_image`: turned exactly, or resampled keeping every microbleed
    when drawn on another voxel size over the same field of view); what was done is in ``label.notes``.
    """
    image = load_volume(subject.image, what=f"image of {subject.id}")
    label = mask = None
    if subject.label is not None:
        label = load_label(subject.label, what=f"label of {subject.id}")
        # The rule plkd evaluate applies: a soft or interpolated label was cut at 0.25 here without a word.
        check_label_values(label.data, f"label of {subject.id} ({subject.label})")
        if (values := subject.meta.get("microbleed_values")) and not all_classes:
            label = replace(label, data=np.where(np.isin(label.data, values), label.data, 0).astype(label.data.dtype))
        label = label_onto_image(image, label, what=f"label of {subject.id}")
        _refuse_oversized_region(label, subject)
    if subject.mask is not None:
        mask = load_label(subject.mask, what=f"brain mask of {subject.id}", allow_empty=False)
        mask = on_grid_of(image, mask, what=f"brain mask of {subject.id}")
    return image, label, mask
