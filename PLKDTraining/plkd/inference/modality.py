"""Which contrast a scan is, T2*-GRE or SWI, from its metadata (``plkd predict --modality auto``).

SWI magnitude and minimum-intensity-projection images show microbleeds with more blooming and
many more dark veins than T2*-weighted GRE, so each has its own model bundle. The evidence is
read in order of trust, and the first source that names one contrast decides:

1. the DICOM series' own tags (``SequenceName`` 0018,0024, ``ImageType`` 0008,0008,
   ``SeriesDescription`` 0008,103E, ``ProtocolName`` 0018,1030);
2. the JSON sidecar next to a NIfTI file, as dcm2niix and BIDS write it (the same fields:
   ``SequenceName``, ``ImageType``, ``SeriesDescription``, ``ProtocolName``, ``PulseSequenceName``);
3. the NIfTI header's ``descrip`` and ``intent_name`` text;
4. the file name: its BIDS suffix (the last ``_`` part: ``swi``, ``minIP``, ``T2starw``, ``T2S``,
   ``GRE``…), then any other ``_``/``-``/``.``-separated word of the name.

Only whole words count: ``clearswi-small/sub-01_GRE.nii.gz`` is GRE (the folder is never read and
"clearswi" is not the word "swi"). Siemens names its SWI reconstructions ``*swi3d1r`` and puts
``SWI`` or ``MNIP`` in ``ImageType``; GE ("SWAN") and Philips ("SWIp", "VenBOLD") use the
product names matched below. A source naming both wins for SWI, itself a GRE sequence
("swi_3d_gre"). No evidence at all means T2*, the default and the more common clinical
sequence, and the decision says so.

A projection over several slices (SWI's minimum-intensity projection) is recognised from the same
sources (:func:`projection_reason`); ``plkd predict`` analyses it with a warning, as its positions
and counts cannot be trusted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib

from plkd.modalities import MODALITIES
from plkd.volumes import nibabel_header_fixes

#: ``--modality`` choices.
CHOICES = ("auto", *MODALITIES)

#: Whole words (lower case) that name each contrast. A trailing number is allowed (``swi3d1r``).
_WORDS = {
    "SWI": re.compile(r"^(swi|swip|swan|minip|mnip|mip_swi|venbold|susceptibility)(\d\w*)?$"),
    "T2S": re.compile(r"^(t2s|t2star|t2starw|t2starweighted|t2sw|gre|megre|fl3d|fl2d|ffe|t2ffe|hemo)(\d\w*)?$"),
}
#: Whole words (lower case) that mark a projection over several slices: SWI's minimum-intensity
#: projection ("mIP_Images(SW)", ImageType ``MNIP``, BIDS ``_minIP``), any maximum-intensity one,
#: and DICOM's ImageType value ``PROJECTION IMAGE``.
_PROJECTION_WORDS = re.compile(r"^(minip|mnip|mip|minimumip|projection)(\d\w*)?$")
#: Sidecar / DICOM fields read, most specific first.
_FIELDS = ("SequenceName", "ImageType", "PulseSequenceName", "SeriesDescription", "ProtocolName")
#: The same fields as :func:`plkd.dicom.load_dicom_series` records them.
_DICOM_KEYS = {
    "SequenceName": "sequence_name",
    "ImageType": "image_type",
    "SeriesDescription": "series_description",
    "ProtocolName": "protocol_name",
}


@dataclass(frozen=True)
class ModalityDecision:
    """The contrast a scan was taken to be, and why (recorded in the output JSON)."""

    #: ``"T2S"`` or ``"SWI"``.
    modality: str
    #: ``"stated"`` (the user said), ``"dicom"``, ``"sidecar"``, ``"header"``, ``"file name"`` or ``"default"``.
    source: str
    #: One human-readable clause, e.g. ``"sidecar SequenceName '*swi3d1r'"``.
    reason: str

    def as_dict(self) -> dict[str, str]:
        """``{"modality", "source", "reason"}`` for the JSON."""
        return {"modality": self.modality, "source": self.source, "reason": self.reason}


def words(text: str) -> list[str]:
    """The lower-case words of ``text``, split at anything but letters and digits ("T2*" → "t2star")."""
    return [w for w in re.split(r"[^0-9a-z]+", text.lower().replace("t2*", "t2star")) if w]


def modality_of_text(text: str) -> str | None:
    """``"SWI"`` when a word of ``text`` names SWI, else ``"T2S"`` when one names T2*-GRE, else None.

    SWI wins because an SWI protocol is itself a GRE sequence ("swi_3d_gre" is SWI).
    """
    found = {m for m, pattern in _WORDS.items() for w in words(text) if pattern.match(w)}
    return "SWI" if "SWI" in found else found.pop() if found else None


def _field_text(value: Any) -> str:
    """A sidecar / DICOM value as text ("" when empty); lists (ImageType) joined by spaces."""
    if value is None or value == "":
        return ""
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _from_fields(
    fields: Mapping[str, Any], source: str, keys: Iterable[str], label: str | None = None
) -> ModalityDecision | None:
    for key in keys:
        text = _field_text(fields.get(key))
        modality = modality_of_text(text.replace("\\", " ")) if text else None
        if modality is not None:
            return ModalityDecision(modality, source, f"{label or source} {key} {text.strip()!r}")
    return None


def sidecar_path(path: Path) -> Path:
    """The JSON sidecar of a NIfTI file: ``scan.nii.gz`` → ``scan.json``."""
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def _read_sidecar(path: Path) -> Mapping[str, Any]:
    side = sidecar_path(path)
    if not side.is_file() or side.stat().st_size > 1_000_000:
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _header_text(path: Path) -> str:
    try:
        with nibabel_header_fixes():  # said once, when the image is loaded
            header = nib.load(str(path)).header
    except Exception:  # noqa: BLE001 - an unreadable header gives no evidence; loading reports it
        return ""
    parts = []
    for key in ("descrip", "intent_name"):
        try:
            parts.append(header[key].item().decode("latin-1", "replace").strip("\x00 "))
        except (KeyError, AttributeError, ValueError):
            continue
    return " ".join(p for p in parts if p)


def _stem(path: Path) -> str:
    """The file name without its image extension (``.nii.gz``, ``.nii``, ``.dcm``)."""
    stem = path.name
    for ext in (".nii.gz", ".nii", ".dcm"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
    return stem


def _metadata(path: Path, dicom: Mapping[str, Any] | None) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """``(source, label, fields)`` of the scan's metadata, most trusted first, each read only when
    reached: the DICOM record, the JSON sidecar, the NIfTI header's text (as ``description``)."""
    if dicom:
        yield "dicom", "dicom", {k: dicom.get(v) for k, v in _DICOM_KEYS.items()}
    if path.suffix.lower() in (".nii", ".gz"):
        yield "sidecar", "sidecar", _read_sidecar(path)
        yield "header", "NIfTI header", {"description": _header_text(path)}


def _from_name(path: Path) -> ModalityDecision | None:
    stem = _stem(path)
    suffix = stem.rsplit("_", 1)[-1] if "_" in stem else ""
    if suffix and (modality := modality_of_text(suffix)) is not None:
        return ModalityDecision(modality, "file name", f"file name suffix '_{suffix}'")
    for word in words(stem):
        if (modality := modality_of_text(word)) is not None and modality == modality_of_text(stem):
            return ModalityDecision(modality, "file name", f"the word '{word}' in the file name")
    return None


def detect_modality(path: str | Path, dicom: Mapping[str, Any] | None = None) -> ModalityDecision:
    """The contrast of the scan at ``path`` (a NIfTI file or a DICOM series' folder or file).

    ``dicom`` is the record :func:`plkd.dicom.load_dicom_series` returns for a series. Never
    raises: missing or unreadable metadata only means less evidence. See the module docstring
    for the order of the sources.
    """
    path = Path(path)
    for source, label, fields in _metadata(path, dicom):
        if (d := _from_fields(fields, source, _FIELDS if source != "header" else ("description",), label)) is not None:
            return d
    if (d := _from_name(path)) is not None:
        return d
    return ModalityDecision("T2S", "default", "no sequence information in the metadata or the file name; T2* assumed")


def _projection_words(text: str) -> str | None:
    return next((w for w in words(text) if _PROJECTION_WORDS.match(w)), None)


def projection_reason(path: str | Path, dicom: Mapping[str, Any] | None = None) -> str | None:
    """Why the scan at ``path`` looks like a projection over several slices, or None.

    A minimum-intensity projection (the usual second SWI series) takes, for each pixel, the
    darkest value over a slab of 4-16 mm: veins join up, and a microbleed appears on every
    projected slice its slab covers, so positions, sizes and counts found on it are wrong. The same
    sources as :func:`detect_modality` are read (DICOM tags, JSON sidecar, NIfTI description, the
    file name's words). Never raises.
    """
    path = Path(path)
    for _source, label, fields in _metadata(path, dicom):
        for key, value in fields.items():
            text = _field_text(value)
            if text and _projection_words(text) is not None:
                return f"{label} {key} {text.strip()!r}"
    if (word := _projection_words(_stem(path))) is not None:
        return f"the word '{word}' in the file name"
    return None


def normalise_modality(text: str | None) -> str:
    """A stated modality as ``auto``, ``T2S`` or ``SWI`` (``T2*``, ``None`` = auto, any case).

    Raises ValueError for anything else.
    """
    value = "auto" if text is None else str(text).strip()
    key = "auto" if value.lower() == "auto" else value.upper().replace("T2*", "T2S")
    if key not in CHOICES:
        raise ValueError(f"modality must be one of {', '.join(CHOICES)}, not {text!r}")
    return key


def decide_modality(stated: str, path: str | Path, dicom: Mapping[str, Any] | None = None) -> ModalityDecision:
    """``stated`` (``T2S``/``SWI``) as the user's decision, or :func:`detect_modality` for ``auto``.

    Raises ValueError for any other ``stated``.
    """
    key = normalise_modality(stated)
    if key == "auto":
        return detect_modality(path, dicom)
    return ModalityDecision(key, "stated", f"--modality {key}")
