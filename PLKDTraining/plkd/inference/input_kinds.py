"""What a file or a DICOM series met in a folder walk is: a T2*/SWI magnitude image to analyse, or something
to skip, and why (``plkd predict``, :mod:`plkd.inference.inputs`).

NIfTI files are told by their names (BIDS / VALDO suffixes, nnU-Net label folders, 3D Slicer's ``-label``,
plkd's own outputs, dcm2niix's ``_ph``), then by their JSON sidecar; DICOM series by their tags (Modality,
ImageType, SeriesDescription, ProtocolName, SequenceName): a clinic's export holds every series of a visit,
and a walk must take only the ones microbleeds are read on. Anything that names nothing is taken.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from plkd.inference.modality import PHASE_IMAGE_TYPES, PHASE_NAME, coded_values, modality_of_text, words
from plkd.metrics.pairing import LABEL_WORDS
from plkd.naming import is_plkd_prediction, strip_nifti_suffix
from plkd.sidecars import read_sidecar

#: Folder names whose NIfTI files are labels or masks (nnU-Net, plain image/label folders).
LABEL_FOLDERS = frozenset({"labelstr", "labelsts", "labels", "masks", "segmentations"})
#: Last name token (``_`` separated, case-insensitive), or its last ``-`` part (3D Slicer's ``T2S-label``,
#: ``Segmentation-label``), marking a label map or a mask.
LABEL_TOKENS = frozenset(
    {"cmb", "label", "labels", "seg", "dseg", "probseg", "mask", "brainmask", "roi", "lesion", "lesions"}
    | {"segmentation", "labelmap", "synthseg", "aseg", "aparc+aseg"}
    # Every word ``plkd evaluate`` reads as a reference label (``plkd demo``'s ``_truth``, ``_gt``, ``_manual``),
    # so a folder evaluate pairs is one predict walks; not ``ref``/``reference``, which also name reference images.
    | (LABEL_WORDS - {"ref", "reference"})
)
#: The same for another tool's output on the image: many distinct values, so it passes as an image and
#: "microbleeds" are found in it.
PREDICTION_TOKENS = frozenset({"prob", "probs", "probability", "probmap", "pred", "prediction", "heatmap"})
#: Last name token of a quantitative map (BIDS qMRI suffixes, QSM): values in physical units (R2* in 1/s, T2* in ms,
#: susceptibility in ppm) computed from an acquisition, not a magnitude image, whatever its sequence was.
QUANTITATIVE_MAPS = frozenset(
    {"t2starmap", "r2starmap", "t1map", "t2map", "r1map", "r2map", "pdmap", "chimap", "qsm", "s0map", "m0map"}
    | {"tb1map", "b1map", "fieldmap", "phasediff", "unwrappedphase", "r2s", "r2star"}
)
#: Words of a DICOM series' description, protocol or sequence name (or of a sidecar's) naming a quantitative map:
#: ``QSM``, ``R2star``, Siemens' MapIt ``T2Star_Map`` (a ``map`` word beside a contrast word), ImageType ``... MAP``.
QUANTITATIVE_SERIES = frozenset({"qsm", "r2star", "r2s", "r2starmap", "t2starmap", "chimap", "susceptibilitymap"})
#: Last name token of another contrast (BIDS / VALDO suffixes); microbleeds are read on T2*/SWI.
OTHER_CONTRASTS = (
    frozenset({"t1", "t1w", "t2", "t2w", "flair", "pd", "pdw", "dwi", "bold", "sbref", "epi", "angio", "asl"})
    | QUANTITATIVE_MAPS
)
#: Words of a DICOM series' description, protocol or sequence name marking another contrast even beside a GRE word
#: (``t1_fl2d``, ``T1 FFE``: T1-weighted gradient echo). A word naming SWI wins over them.
OTHER_SERIES = OTHER_CONTRASTS - {"t2", "t2w"} | {
    *("mprage", "mp2rage", "spgr", "bravo", "tof", "mra", "fmri"),  # T1 3-D, angiography, functional
    *("dti", "adc", "trace", "diff", "diffusion", "perf", "dsc", "pwi"),  # diffusion (ep2d_diff), perfusion
    *("field", "fieldmap"),  # gre_field_mapping: a GRE, but B0 mapping at low resolution
}
#: DICOM Modality values (0008,0060) of series that hold no MR image: reports, presentation states, other
#: scanners. Not ``OT`` (other), which some MR post-processing writes.
NOT_MR = frozenset({"SR", "PR", "KO", "DOC", "SEG", "REG", "RTSTRUCT", "RTDOSE", "RTPLAN"}) | frozenset(
    {"CT", "PT", "NM", "US", "CR", "DX", "XA", "MG"}  # other scanners
)
#: Words naming SWI that the modality rules do not know as words of their own (Philips ``VEN_BOLD``).
SWI_SERIES = frozenset({"ven", "venbold"})
#: Words marking T2 (spin echo) unless a T2*/SWI word is there too (``t2_fl2d_hemo`` is a T2* protocol).
WEAK_OTHER_SERIES = frozenset({"t2", "t2w", "tse", "fse"})
#: Words of a planning series (a few slices in three planes, never a scan to read).
LOCALIZER_WORDS = frozenset({"localizer", "localiser", "scout", "survey", "aahead", "3plane"})
#: Endings of image files in formats plkd does not read (NIfTI and DICOM only): a walk counts them as skipped,
#: so a folder converted only in part never loses its other scans without a word.
OTHER_FORMATS = (".mgz", ".mgh", ".nrrd", ".nhdr", ".mha", ".mhd", ".img", ".nii.bz2", ".nii.xz", ".nii.zip")


def classify(path: Path) -> str | None:
    """Why a NIfTI file met in a folder walk is not an image to analyse, or ``None`` to take it.

    By its name first (plkd outputs, labels and masks, other tools' maps, phase images, other contrasts),
    then, unless the name's suffix says T2* or SWI, by its JSON sidecar (:func:`classify_series`).
    """
    stem = strip_nifti_suffix(path.name)
    if is_plkd_prediction(path):
        return "plkd prediction"
    token = stem.rsplit("_", 1)[-1].lower()
    tokens = {token, token.rsplit("-", 1)[-1]}
    if path.parent.name.lower() in LABEL_FOLDERS or tokens & LABEL_TOKENS or stem.lower().endswith("brain_mask"):
        return "label map or mask"
    if tokens & PREDICTION_TOKENS:
        return "prediction or probability map"
    if PHASE_NAME.search(stem):
        return "phase image"
    if token in QUANTITATIVE_MAPS:
        return f"quantitative map ({stem.rsplit('_', 1)[-1]})"
    if token in OTHER_CONTRASTS:
        return f"other contrast ({stem.rsplit('_', 1)[-1]})"
    if modality_of_text(token) is not None:
        return None  # the name's own suffix says T2* or SWI (``_T2starw``, ``_swi``): no sidecar overrules it
    return classify_series(sidecar_tags(path), what="image", source="sidecar")


#: dcm2niix / BIDS sidecar fields → the keys of :func:`plkd.dicom.series_tags`.
_SIDECAR_KEYS = {
    "Modality": "modality",
    "ImageType": "image_type",
    "SeriesDescription": "series_description",
    "ProtocolName": "protocol_name",
    "SequenceName": "sequence_name",
    "ScanningSequence": "scanning_sequence",
    "SequenceVariant": "sequence_variant",
}


def sidecar_tags(path: Path) -> dict[str, str]:
    """The DICOM tags that dcm2niix copied into the JSON sidecar of a NIfTI file, or that a BIDS data set states for
    it higher up (:func:`plkd.sidecars.read_sidecar`); ``{}`` when there is none.

    dcm2niix names files ``FOLDER_PROTOCOL_TIME_SERIES`` (``x_t1_mprage_sag_20230101_3.nii.gz``, a phase image
    ``..._ph``): no suffix says what they are, but the sidecar does.
    """
    doc = read_sidecar(path).fields
    tags = {}
    for field_name, key in _SIDECAR_KEYS.items():
        value = doc.get(field_name)
        if isinstance(value, list):
            value = "\\".join(map(str, value))
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            tags[key] = str(value)
    return tags


def classify_series(tags: Mapping[str, str], *, what: str = "series", source: str = "DICOM") -> str | None:
    """Why a DICOM series (or a NIfTI file, from its sidecar: ``what="image"``) met in a folder walk is not a
    T2*/SWI magnitude image to analyse, or ``None`` to take it.

    ``tags``: :func:`plkd.dicom.series_tags` or :func:`sidecar_tags`. A clinic's export holds every series of a
    visit: localizers, T1, FLAIR, diffusion, phase images, reports. Analysed as T2*, each gave a "microbleed"
    count of its own in the summary. A series without such words is taken, as before.
    """
    modality = tags.get("modality", "").strip().upper()
    if modality in NOT_MR:
        return f"not an MR {what} (Modality {modality})"
    image_type = {v.strip().upper() for v in tags.get("image_type", "").split("\\")}
    if image_type & PHASE_IMAGE_TYPES:
        return f"phase {what} ({source} ImageType)"
    text = " ".join(tags.get(k, "") for k in ("series_description", "protocol_name", "sequence_name"))
    found = words(text)
    if any(w in LOCALIZER_WORDS for w in found):
        return f"localizer {what}"
    quantitative = next((w for w in found if w in QUANTITATIVE_SERIES), None)
    if quantitative is None and "map" in {*words(tags.get("image_type", "")), *found}:
        quantitative = "map"
    if quantitative is not None:
        return f"quantitative map ({source} '{quantitative}')"
    named = "SWI" if SWI_SERIES.intersection(found) else modality_of_text(text)
    other = next((w for w in found if w in OTHER_SERIES), None)
    if named != "SWI" and other is not None:
        return f"other contrast ({other})"
    weak = next((w for w in found if w in WEAK_OTHER_SERIES), None)
    if named is None and weak is not None:
        return f"other contrast ({weak})"
    if named is None and (doubt := sequence_doubt(tags)) is not None:
        return f"other contrast ({doubt})"
    return None


def sequence_doubt(tags: Mapping[str, str]) -> str | None:
    """Why Scanning Sequence (0018,0020) and Sequence Variant (0018,0021) say the scan is no T2*-weighted gradient
    echo, or None (also when they are absent).

    What they may conclude: T2*-GRE and SWI are both gradient echoes (``GR``), so ``GR`` alone tells neither apart
    from the other, nor from a T1-weighted spoiled GRE: it is consistent with a T2*/SWI scan and never decides one.
    Without ``GR`` (spin echo ``SE``, inversion recovery ``IR``: T2 TSE, FLAIR, diffusion) there is no T2* weighting
    to show microbleeds; an inversion-recovery or magnetisation-prepared (``MP``) gradient echo is T1-weighted
    (MPRAGE, TFE); an echo-planar one (``EP``) is diffusion, functional or perfusion, as a rule. ``tags``: the keys
    of :func:`plkd.dicom.series_tags` (``scanning_sequence``, ``sequence_variant``). A series whose words name T2* or
    SWI is taken anyway (the words are the stronger evidence), with a warning (``plkd predict``).
    """
    scanning = coded_values(tags.get("scanning_sequence"))
    variant = coded_values(tags.get("sequence_variant"))
    said = f"ScanningSequence '{tags.get('scanning_sequence', '').strip()}'"
    if not scanning:
        return None
    if "GR" not in scanning:
        return f"no gradient echo: {said}"
    if "IR" in scanning or "MP" in variant:
        prepared = f", SequenceVariant '{tags.get('sequence_variant', '').strip()}'" if "MP" in variant else ""
        return f"a T1-weighted prepared gradient echo: {said}{prepared}"
    if "EP" in scanning:
        return f"an echo-planar gradient echo: {said}"
    return None
