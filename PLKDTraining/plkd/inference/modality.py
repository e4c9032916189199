"""Which contrast a scan is, T2*-GRE or SWI, from its metadata (``plkd predict --modality auto``).

SWI magnitude and minimum-intensity-projection images show microbleeds with more blooming and
many more dark veins than T2*-weighted GRE, so each has its own model bundle. The evidence is
read in order of trust, and the first source that names one contrast decides:

1. the DICOM series' own tags (``SequenceName`` 0018,0024, ``ImageType`` 0008,0008,
   ``SeriesDescription`` 0008,103E, ``ProtocolName`` 0018,1030);
2. the JSON sidecar next to a NIfTI file, as dcm2niix and BIDS write it, with what a BIDS data set states
   for the file higher up (``T2starw.json`` at its root: the inheritance principle,
   :mod:`plkd.sidecars`) (the same fields: ``SequenceName``, ``ImageType``, ``SeriesDescription``,
   ``ProtocolName``, ``PulseSequenceName``, ``ImageTypeText``);
3. the NIfTI header's ``descrip`` and ``intent_name`` text;
4. the file name: its BIDS suffix (the last ``_`` part: ``swi``, ``minIP``, ``T2starw``, ``T2S``,
   ``GRE``…), then its other words. Of BIDS entities only the values of ``acq-``, ``rec-`` and
   ``desc-`` describe the sequence; ``sub-swi01`` or ``ses-gre2`` are a study's labels and are not read.

Within one source every field is read, and SWI named anywhere in it wins, because SWI is itself a
GRE sequence: a Philips sidecar with ``PulseSequenceName`` "FFE" and ``SeriesDescription`` "SWIp"
is SWI, as is the protocol "swi_3d_gre". Only whole words count: ``clearswi-small/sub-01_GRE.nii.gz``
is GRE (the folder is never read and "clearswi" is not the word "swi"), and a trailing part is
allowed only in Siemens' sequence-name form (``*swi3d1r``, ``*fl2d1``, ``*me2d1r4``), so a label such
as "swi01" names no contrast. Siemens puts ``SWI`` or ``MNIP`` in ``ImageType``; GE ("SWAN") and
Philips ("SWIp", "VenBOLD") use the product names matched below. No evidence at all means T2*, the
default and the more common clinical sequence, and the decision says so. Evidence against the
decision is kept in it (``conflict``), for a warning, so that the choice is never silent: another
field of the deciding source or a less trusted source naming the other contrast, or, for a stated
modality, the source ``auto`` would have decided from. Against SWI only a T2*-weighted sequence that
is not SWI counts ("t2star", "hemo", MEDIC, a 2-D FLASH); GRE-family words ("GRE", "FFE", "fl3d")
are SWI's own.

A projection over several slices (SWI's minimum-intensity projection) and a phase image are
recognised from the same sources (:func:`projection_reason`, :func:`phase_reason`); ``plkd
predict`` analyses them with a warning, as what it finds on them cannot be trusted.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plkd.modalities import MODALITIES
from plkd.naming import strip_nifti_suffix
from plkd.sidecars import read_sidecar
from plkd.volumes import nibabel_header_fixes, open_nifti

#: ``--modality`` choices.
CHOICES = ("auto", *MODALITIES)

#: What may follow a contrast word: Siemens' sequence-name tail ("swi" + "3d1r"); "fl2d"/"fl3d"/"me2d" are
#: followed by digits ("fl2d1", "me2d1r4"). Other trailing digits make a label ("swi01"), not a sequence.
_TAIL = r"(?:[23]d\w*)?"
#: Whole words (lower case) that name SWI.
_SWI_WORDS = re.compile(rf"^(?:(?:swi|swip|swan|minip|mnip|venbold|susceptibility){_TAIL})$")
#: Whole words that name a T2*-weighted sequence that is not SWI (MEDIC "*me2d", a 2-D FLASH "*fl2d": SWI is 3-D).
_T2STAR_WORDS = re.compile(
    rf"^(?:(?:t2s|t2star|t2starw|t2starweighted|t2sw|hemo|medic|merge){_TAIL}|(?:fl2d|me2d)(?:\d\w*)?)$"
)
#: Whole words that name the gradient-echo family, SWI's own ("swi_3d_gre", Philips FFE, Siemens "*fl3d"): T2*
#: when no word names SWI, and no evidence against SWI.
_GRE_WORDS = re.compile(rf"^(?:(?:gre|megre|ffe|t2ffe|mffe){_TAIL}|fl3d(?:\d\w*)?)$")
#: Names written in two parts, read as one word: "T2*", "T2 star" ("t2star"), Philips "VEN_BOLD" ("venbold").
_SPELLED = {"t2star": re.compile(r"t2[ _-]?(?:\*|star)"), "venbold": re.compile(r"ven[ _-]?bold")}
#: Whole words (lower case) that mark a projection over several slices: SWI's minimum-intensity
#: projection ("mIP_Images(SW)", ImageType ``MNIP``, BIDS ``_minIP``), any maximum-intensity one,
#: and DICOM's ImageType value ``PROJECTION IMAGE``.
_PROJECTION_WORDS = re.compile(rf"^(?:minip|mnip|mip|minimumip|projection){_TAIL}$")
#: A phase image by name: BIDS ``part-phase``, a last name part ``phase``/``pha`` and dcm2niix's ``_ph``; and the
#: other parts of a complex image that are no magnitude (as ImageType ``R``/``I`` are): BIDS ``part-real``/
#: ``part-imag``, dcm2niix's ``_real``/``_imaginary`` (the folder walk of :mod:`plkd.inference.inputs` skips such
#: files; one named explicitly is analysed).
PHASE_NAME = re.compile(
    r"(^|[_-])(phase|pha|ph|part-phase|real|imaginary|imag)$|part-(phase|real|imag)(?![a-z0-9])", re.I
)
#: The part of :data:`PHASE_NAME` that names a real or imaginary image.
_COMPLEX_PART_NAME = re.compile(r"(^|[_-])(real|imaginary|imag)$|part-(real|imag)(?![a-z0-9])", re.I)
#: Words of a series description that mark phase (Siemens "Pha_Images", "SWI phase").
_PHASE_WORDS = frozenset({"pha", "phase"})
#: ``ImageType`` values of a phase, real or imaginary image (DICOM PS3.3 C.8.16.1 value 3: ``P``, ``R``, ``I``;
#: Philips ``PHASE``).
PHASE_IMAGE_TYPES = frozenset({"P", "PHASE", "PHASE MAP", "R", "REAL", "I", "IMAGINARY"})
#: BIDS entities whose value describes the sequence; the values of the others (``sub``, ``ses``, ``run``, …)
#: are a study's labels and are not read.
_SEQUENCE_ENTITIES = frozenset({"acq", "rec", "desc"})
#: A BIDS entity: ``key-value``, the value letters and digits only.
_ENTITY = re.compile(r"^([a-zA-Z]+)-([a-zA-Z0-9]+)$")
_BIDS_ENTITIES = frozenset({"sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "mod", "echo", "flip", "inv", "mt",
                            "part", "chunk", "trc", "space", "res", "den", "label", "desc", "split", "recording",
                            "sample", "stain", "tracer", "hemi"})  # fmt: skip
#: Sidecar / DICOM fields read (``ImageTypeText``: dcm2niix's name for the image type of Siemens XA series).
_FIELDS = ("SequenceName", "ImageType", "ImageTypeText", "PulseSequenceName", "SeriesDescription", "ProtocolName")
#: The same fields as :func:`plkd.dicom.load_dicom_series` records them.
_DICOM_KEYS = {
    "SequenceName": "sequence_name",
    "ImageType": "image_type",
    "SeriesDescription": "series_description",
    "ProtocolName": "protocol_name",
    # Not among _FIELDS: "GR" is the value of T2*-GRE and SWI alike, so it names no contrast (_gradient_echo).
    "ScanningSequence": "scanning_sequence",
}


@dataclass(frozen=True)
class ModalityDecision:
    """The contrast a scan was taken to be, and why (recorded in the output JSON)."""

    #: ``"T2S"`` or ``"SWI"``.
    modality: str
    #: ``"stated"`` (the user said), ``"dicom"``, ``"sidecar"``, ``"header"``, ``"file name"``, ``"model"``
    #: (no evidence; the contrast of the bundle given with ``--model``) or ``"default"``.
    source: str
    #: One human-readable clause, e.g. ``"sidecar SequenceName '*swi3d1r'"``.
    reason: str
    #: Evidence for the other contrast that the decision overrode (a field of the deciding source naming a T2*
    #: sequence against SWI, a less trusted source, or, against a stated modality, what ``auto`` would have
    #: chosen), e.g. ``"file name suffix '_swi' says SWI"``; None when nothing disagrees.
    conflict: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """``{"modality", "source", "reason", "conflict"}`` for the JSON."""
        return {"modality": self.modality, "source": self.source, "reason": self.reason, "conflict": self.conflict}


def words(text: str) -> list[str]:
    """The lower-case words of ``text``, split at anything but letters and digits; "T2*", "T2 star",
    "T2_star" and "T2-star" are the one word "t2star", "VEN_BOLD" is "venbold"."""
    text = text.lower()
    for word, spelled in _SPELLED.items():
        text = spelled.sub(word, text)
    return [w for w in re.split(r"[^0-9a-z]+", text) if w]


def modality_of_text(text: str) -> str | None:
    """``"SWI"`` when a word of ``text`` names SWI, else ``"T2S"`` when one names T2*-GRE, else None.

    SWI wins because an SWI protocol is itself a GRE sequence ("swi_3d_gre" is SWI).
    """
    found = words(text)
    if any(_SWI_WORDS.match(w) for w in found):
        return "SWI"
    return "T2S" if any(_T2STAR_WORDS.match(w) or _GRE_WORDS.match(w) for w in found) else None


def _field_text(value: Any) -> str:
    """A sidecar / DICOM value as text ("" when empty); lists (ImageType) joined by spaces."""
    if value is None or value == "":
        return ""
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _from_fields(
    fields: Mapping[str, Any], source: str, keys: Iterable[str], label: Callable[[str], str] | None = None
) -> ModalityDecision | None:
    """The contrast the fields name: SWI when any field names it, else T2* when one does (the first).

    An SWI decision keeps, as ``conflict``, a field of the same source naming a T2*-weighted sequence that is not
    SWI (:func:`_disagreeing`).
    """
    named = []
    for key in keys:
        text = _field_text(fields.get(key))
        modality = modality_of_text(text.replace("\\", " ")) if text else None
        if modality is not None:
            where = label(key) if label else source
            named.append((ModalityDecision(modality, source, f"{where} {key} {text.strip()!r}"), text))
    swi = next((d for d, _ in named if d.modality == "SWI"), None)
    if swi is None:
        return named[0][0] if named else None
    return dataclasses.replace(swi, conflict=_disagreeing(named, "SWI"))


def _header_text(path: Path) -> str:
    try:
        with nibabel_header_fixes():  # said once, when the image is loaded
            img, _mismatch = open_nifti(path)  # by its content, as the image is loaded
            header = img.header
            if (fileobj := getattr(img, "_plkd_fileobj", None)) is not None:
                fileobj.close()
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
    """The file name without its image extension (``.nii.gz``, ``.nii``, a pair's ``.hdr``/``.img``, ``.dcm``)."""
    stem = strip_nifti_suffix(path.name)  # a NIfTI pair's .hdr/.img too: "swi.hdr" was no word
    return stem[: -len(".dcm")] if stem.lower().endswith(".dcm") else stem


#: How a reason names the source of one field: ``label(key)`` ("dicom", "sidecar", "sidecar ../T2starw.json").
_Label = Callable[[str], str]


def _metadata(path: Path, dicom: Mapping[str, Any] | None) -> Iterator[tuple[str, _Label, Mapping[str, Any]]]:
    """``(source, label, fields)`` of the scan's metadata, most trusted first, each read only when
    reached: the DICOM record, the JSON sidecar with what it inherits (:func:`plkd.sidecars.read_sidecar`),
    the NIfTI header's text (as ``description``)."""
    if dicom:
        yield "dicom", lambda _key: "dicom", {k: dicom.get(v) for k, v in _DICOM_KEYS.items()}
    if path.suffix.lower() in (".nii", ".gz", ".hdr"):  # .hdr: a NIfTI pair's header, which holds the text
        sidecar = read_sidecar(path)
        yield "sidecar", lambda key: sidecar.label(key, path), sidecar.fields
        yield "header", lambda _key: "NIfTI header", {"description": _header_text(path)}


def _name_parts(path: Path) -> tuple[str, list[str]]:
    """The BIDS suffix of the file name (``""`` when none) and the parts of the name that may describe the
    sequence: parts that are no BIDS entity, and the values of ``acq-``, ``rec-`` and ``desc-``."""
    parts = _stem(path).split("_")
    readable = []
    for part in parts:
        entity = _ENTITY.match(part)
        if entity is None or entity[1].lower() not in _BIDS_ENTITIES:
            readable.append(part)
        elif entity[1].lower() in _SEQUENCE_ENTITIES:
            readable.append(entity[2])
    suffix = parts[-1] if len(parts) > 1 and readable and readable[-1] == parts[-1] else ""
    return suffix, readable


def _from_name(path: Path) -> ModalityDecision | None:
    suffix, readable = _name_parts(path)
    if suffix and (modality := modality_of_text(suffix)) is not None:
        return ModalityDecision(modality, "file name", f"file name suffix '_{suffix}'")
    text = " ".join(readable)
    modality = modality_of_text(text)
    word = next((w for w in words(text) if modality_of_text(w) == modality), None) if modality else None
    return ModalityDecision(modality, "file name", f"the word '{word}' in the file name") if modality else None


#: What one source says, and all the text it was read from.
_Evidence = tuple[ModalityDecision, str]


def _evidence(path: Path, dicom: Mapping[str, Any] | None) -> Iterator[_Evidence]:
    """What each source says about the contrast, most trusted first (sources that say nothing left out)."""
    for source, label, fields in _metadata(path, dicom):
        keys = _FIELDS if source != "header" else ("description",)
        if (d := _from_fields(fields, source, keys, label)) is not None:
            yield d, " ".join(_field_text(fields.get(key)) for key in keys)
    if (d := _from_name(path)) is not None:
        yield d, " ".join(_name_parts(path)[1])


def _names_t2star(text: str) -> bool:
    """True when ``text`` names a T2*-weighted sequence that is not SWI (not only the GRE family, SWI's own)."""
    return any(_T2STAR_WORDS.match(w) for w in words(text))


def _disagreeing(evidence: Iterable[_Evidence], modality: str) -> str | None:
    """The first evidence against ``modality``, as ``"<reason> says <contrast>"``: SWI against T2*; against SWI,
    only a T2* sequence ("_T2starw", "hemo"), since a GRE-family word ("_GRE", "FFE") is SWI's own."""
    other = next(
        (d for d, text in evidence if d.modality != modality and (modality != "SWI" or _names_t2star(text))), None
    )
    return None if other is None else f"{other.reason} says {'T2*' if other.modality == 'T2S' else other.modality}"


def coded_values(value: Any) -> set[str]:
    """The values of a coded DICOM string as DICOM (``GR\\IR``), dcm2niix (``GR_IR``) or a JSON list writes them,
    upper case (Scanning Sequence, Sequence Variant)."""
    return {v for v in re.split(r"[\\_,\s]+", _field_text(value).upper()) if v}


def _gradient_echo(path: Path, dicom: Mapping[str, Any] | None) -> str | None:
    """``"<source> ScanningSequence 'GR'"`` when the metadata says the scan is a gradient echo, else None."""
    for _source, label, fields in _metadata(path, dicom):
        if "GR" in coded_values(fields.get("ScanningSequence")):
            return f"{label('ScanningSequence')} ScanningSequence {_field_text(fields['ScanningSequence'])!r}"
    return None


def detect_modality(path: str | Path, dicom: Mapping[str, Any] | None = None) -> ModalityDecision:
    """The contrast of the scan at ``path`` (a NIfTI file or a DICOM series' folder or file).

    ``dicom`` is the record :func:`plkd.dicom.load_dicom_series` returns for a series. Never
    raises: missing or unreadable metadata only means less evidence. See the module docstring
    for the order of the sources. ``conflict`` names another field of the deciding source, or else the
    first less trusted source, that says otherwise (:func:`_disagreeing`).
    """
    evidence = _evidence(Path(path), dicom)
    first = next(evidence, None)
    if first is None:
        if (gre := _gradient_echo(Path(path), dicom)) is not None:  # weak: SWI is a gradient echo too
            why = f"{gre} says gradient echo, as T2*-GRE and SWI both are, and nothing names either; T2* assumed"
            return ModalityDecision("T2S", "default", why)
        return ModalityDecision(
            "T2S", "default", "no sequence information in the metadata or the file name; T2* assumed"
        )
    decision = first[0]
    return dataclasses.replace(decision, conflict=decision.conflict or _disagreeing(evidence, decision.modality))


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
                return f"{label(key)} {key} {text.strip()!r}"
    if (word := _projection_words(" ".join(_name_parts(path)[1]))) is not None:
        return f"the word '{word}' in the file name"
    return None


def _image_type_values(value: Any) -> list[str]:
    """``ImageType`` as its values: a list (sidecar) or one backslash-separated string (DICOM)."""
    if isinstance(value, list | tuple):
        return [str(v).strip().upper() for v in value]
    return [v.strip().upper() for v in str(value or "").split("\\")]


def phase_reason(path: str | Path, dicom: Mapping[str, Any] | None = None) -> str | None:
    """Why the scan at ``path`` looks like a phase (or real or imaginary) image, not a magnitude one, or None.

    SWI and multi-echo GRE protocols store a phase image beside the magnitude, often in the same series
    or with the same sequence name ("*swi3d1r"), so its sequence says SWI; but the models read magnitude
    (dark microbleeds on a bright brain), and phase shows wrapped stripes in radians. Read: the DICOM /
    sidecar ``ImageType`` (value ``P``, ``PHASE``, ``R``, ``I``), a ``SeriesDescription`` word ``Pha``/``phase``, the
    file name (BIDS ``part-phase``/``part-real``/``part-imag``, a last part ``phase``/``pha``, dcm2niix's ``_ph``,
    ``_real``, ``_imaginary``). Never raises.
    """
    path = Path(path)
    for _source, label, fields in _metadata(path, dicom):
        for key in ("ImageType", "ImageTypeText"):
            image_type = fields.get(key)
            if image_type and PHASE_IMAGE_TYPES & set(_image_type_values(image_type)):
                return f"{label(key)} {key} {_field_text(image_type).strip()!r}"
        description = _field_text(fields.get("SeriesDescription"))
        if _PHASE_WORDS & set(words(description)):
            return f"{label('SeriesDescription')} SeriesDescription {description.strip()!r}"
    if PHASE_NAME.search(_stem(path)):
        which = "a real or imaginary" if _COMPLEX_PART_NAME.search(_stem(path)) else "a phase"
        return f"the file name marks {which} image"
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

    A stated modality that ``auto`` would not have chosen keeps the evidence that chooses otherwise as
    ``conflict``. Raises ValueError for any other ``stated``.
    """
    key = normalise_modality(stated)
    if key == "auto":
        return detect_modality(path, dicom)
    found = next(_evidence(Path(path), dicom), None)  # what auto would have decided from
    return ModalityDecision(key, "stated", f"--modality {key}", _disagreeing([found] if found else [], key))
