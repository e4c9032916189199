"""What a candidate's segment says about itself to whoever reads the segmentation without this module.

Review keeps rejected candidates, and candidates not yet seen below the review threshold, as hidden segments of the
result (their voxels kept so that accepting undoes a rejection). Slicer's generic paths write every segment, hidden
ones included: File > Save (``.seg.nrrd``), the Segmentations module's *Export to files* and export to a labelmap
node (both "All" segments by default), and DICOM SEG export (``DICOMSegmentationPlugin``: every segment, its name as
SegmentLabel, its terminology as the segmented property category and type, SegmentAlgorithmType from the segment tag
``DICOM.SegmentAlgorithmType``, MANUAL without it). So each candidate carries its review in what those paths write:

- included (accepted, added by the reader, not yet seen at or above the review threshold): its name as the reader
  left it ("Microbleed 2") and the microbleed terminology (:data:`TERMINOLOGY_MICROBLEED`, or one the reader chose);
- excluded: the name with " (rejected)" or " (below threshold)" appended and a terminology of the module's private
  coding scheme (:data:`CODING_SCHEME`) that says it is no microbleed of the result. The terminology it had is kept in
  the tag :data:`TAG_INCLUDED_TERMINOLOGY` and comes back when it is included again;
- DICOM ``SegmentAlgorithmType``: AUTOMATIC for the engine's segmentation not yet seen by the reader, SEMIAUTOMATIC
  once the reader decided on it (accepted, rejected, added by a click), MANUAL for a segment painted by hand.
"""

from __future__ import annotations

import re

import vtk

from CMBSegmentationLib import candidateTable

#: The DICOM master list has no "microbleed": a haemorrhage (morphologically altered structure) in the brain is the
#: closest standard description, and it is what DICOM SEG export writes for a microbleed of the result.
TERMINOLOGY_MICROBLEED = (
    "Segmentation category and type - DICOM master list"
    "~SCT^49755003^Morphologically Altered Structure"
    "~SCT^50960005^Hemorrhage"
    "~^^"
    "~Anatomic codes - DICOM master list"
    "~SCT^12738006^Brain"
    "~^^"
)
#: What ``vtkSegment`` starts with (Slicer 5.10 to 5.13, vtkSegment.cxx): a segment added in the Segment Editor is
#: "Tissue" until the reader chooses a terminology.
_SLICER_DEFAULT_CODES = ("SCT^85756007^Tissue", "SCT^85756007^Tissue")
#: A private coding scheme (DICOM PS3.3 8.2: designators beginning "99" are private): no standard code says "a finding
#: the reader rejected" or "a candidate not counted".
CODING_SCHEME = "99CMBSEG"
TERMINOLOGY_CONTEXT = "CMBSegmentation - excluded microbleed candidates"
CATEGORY_EXCLUDED = f"{CODING_SCHEME}^EXCLUDED^Excluded microbleed candidate"
TYPE_REJECTED = f"{CODING_SCHEME}^REJECTED^Candidate rejected by the reader (not a microbleed)"
TYPE_BELOW_THRESHOLD = f"{CODING_SCHEME}^BELOWTHRESHOLD^Candidate below the review threshold (not a microbleed)"
#: Why a candidate is excluded -> (name marker, terminology type).
REASON_REJECTED = "rejected"
REASON_BELOW_THRESHOLD = "below threshold"
_EXCLUDED_TYPES = {REASON_REJECTED: TYPE_REJECTED, REASON_BELOW_THRESHOLD: TYPE_BELOW_THRESHOLD}
#: The terminology an excluded segment had while included (the microbleed one, or one the reader chose).
TAG_INCLUDED_TERMINOLOGY = "CMBSegmentation.IncludedTerminology"
#: Segment tags Slicer's DICOM SEG export reads (``DICOMSegmentationExporter._createSegmentData``).
TAG_ALGORITHM_TYPE = "DICOM.SegmentAlgorithmType"
TAG_ALGORITHM_NAME = "DICOM.SegmentAlgorithmName"
ALGORITHM_AUTOMATIC, ALGORITHM_SEMIAUTOMATIC, ALGORITHM_MANUAL = "AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"
ALGORITHM_NAME = "CMBSegmentation"

_MARKER = re.compile(r" \((?:rejected|below threshold)\)")


def excludedTerminology(reason: str) -> str:
    """The terminology entry of a candidate excluded for ``reason`` (:data:`REASON_REJECTED` or
    :data:`REASON_BELOW_THRESHOLD`), in Slicer's serialised form (context~category~type~modifier~region context~
    region~region modifier)."""
    return (
        f"{TERMINOLOGY_CONTEXT}~{CATEGORY_EXCLUDED}~{_EXCLUDED_TYPES[reason]}~^^"
        "~Anatomic codes - DICOM master list~SCT^12738006^Brain~^^"
    )


def isExcludedTerminology(entry: str) -> bool:
    """Whether ``entry`` is one of :func:`excludedTerminology`'s (its category is of :data:`CODING_SCHEME`)."""
    parts = (entry or "").split("~")
    return len(parts) == 7 and parts[1].split("^")[0] == CODING_SCHEME


def hasChosenTerminology(segment) -> bool:
    """Whether ``segment``'s terminology was chosen by someone: neither none nor the one every new segment has."""
    parts = segment.GetTerminology().split("~") if segment.HasTerminology() else []
    return len(parts) == 7 and tuple(parts[1:3]) != _SLICER_DEFAULT_CODES


def presentedReason(segment) -> str | None:
    """Why ``segment`` says it is excluded (:data:`REASON_REJECTED`, :data:`REASON_BELOW_THRESHOLD`), read from its
    terminology; None when it says it is included (or was saved by an older version, which said nothing)."""
    entry = segment.GetTerminology()
    if not isExcludedTerminology(entry):
        return None
    kind = entry.split("~")[2]
    return next((reason for reason, code in _EXCLUDED_TYPES.items() if code.split("^")[1] == kind.split("^")[1]), None)


def baseName(name: str) -> str:
    """A segment's name without the markers this module appends to an excluded one: "Microbleed 3 (rejected)" and
    the Islands effect's "Microbleed 3 (rejected)_2" give "Microbleed 3" and "Microbleed 3_2"."""
    return _MARKER.sub("", name or "")


def exclusionReason(status: str, included: bool) -> str | None:
    """None for an included candidate, else why it is left out."""
    if included:
        return None
    return REASON_REJECTED if status == candidateTable.STATUS_REJECTED else REASON_BELOW_THRESHOLD


def algorithmName(model: str | None) -> str | None:
    """The SegmentAlgorithmName of the engine's segments: the module and the model (DICOM LO: 64 characters); None
    when the model is unknown (a ``.seg.nrrd`` loaded alone keeps no node attributes, but its segments keep the
    name)."""
    return f"{ALGORITHM_NAME} {model}"[:64] if model else None


def presentSegment(segment, status: str, included: bool, engineMade: bool, algorithm: str | None = None) -> bool:
    """Give ``segment`` (a candidate of ``status``) the name, terminology and DICOM algorithm tags of its review
    (see the module's docstring); True when anything changed.

    ``engineMade``: the engine segmented it (a model candidate, a microbleed added by a click), else it was painted
    by hand. ``algorithm``: its :func:`algorithmName` (None: unknown, the name it has is kept). Only what differs is
    written, so presenting an unchanged review fires no segment event (the review list refreshes on them).
    """
    changed = False
    reason = exclusionReason(status, included)
    name = baseName(segment.GetName()) + (f" ({reason})" if reason else "")
    if segment.GetName() != name:
        segment.SetName(name)
        changed = True
    current = segment.GetTerminology()
    if reason:
        if not isExcludedTerminology(current):
            changed |= _setTag(segment, TAG_INCLUDED_TERMINOLOGY, current)
        wanted = excludedTerminology(reason)
    else:
        wanted = current
        if isExcludedTerminology(current):
            wanted = _tag(segment, TAG_INCLUDED_TERMINOLOGY) or TERMINOLOGY_MICROBLEED
        changed |= _removeTag(segment, TAG_INCLUDED_TERMINOLOGY)
    if current != wanted:
        segment.SetTerminology(wanted)
        changed = True
    if engineMade:
        kind = ALGORITHM_AUTOMATIC if status == candidateTable.STATUS_NOT_SEEN else ALGORITHM_SEMIAUTOMATIC
        changed |= _setTag(segment, TAG_ALGORITHM_TYPE, kind)
        if algorithm or not segment.HasTag(TAG_ALGORITHM_NAME):
            changed |= _setTag(segment, TAG_ALGORITHM_NAME, algorithm or ALGORITHM_NAME)
    else:
        changed |= _setTag(segment, TAG_ALGORITHM_TYPE, ALGORITHM_MANUAL)
        changed |= _removeTag(segment, TAG_ALGORITHM_NAME)
    # Names and colours are the module's, not derived from the terminology: without this, choosing a terminology in
    # the Segment Editor renamed "Microbleed 2" after it.
    for getter, setter in (
        (segment.GetNameAutoGenerated, segment.SetNameAutoGenerated),
        (segment.GetColorAutoGenerated, segment.SetColorAutoGenerated),
    ):
        if getter():
            setter(False)
            changed = True
    return changed


def _tag(segment, tag: str) -> str:
    value = vtk.reference("")
    return str(value) if segment.GetTag(tag, value) else ""


def _setTag(segment, tag: str, value: str) -> bool:
    if segment.HasTag(tag) and _tag(segment, tag) == value:
        return False
    segment.SetTag(tag, value)
    return True


def _removeTag(segment, tag: str) -> bool:
    if not segment.HasTag(tag):
        return False
    segment.RemoveTag(tag)  # always fires Modified (vtkSegment::RemoveTag): only when present
    return True
