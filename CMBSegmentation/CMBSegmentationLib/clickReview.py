"""A click on the result under review ("Add missed microbleed") never adds a microbleed twice.

Before the click runs, :func:`writeReviewSnapshot` writes the result as the reader sees it now — every segment, with
the reader's Segment Editor edits, hidden (rejected) ones and segments painted by hand included — as the engine's
``--existing`` pair (``review_cmb.nii.gz`` + ``review_cmb.json``, docs/design.md "Click"). The engine's working copies
of earlier runs are gone by then, and the review lives in the scene anyway. When the click falls on one of them, the
engine answers with ``existing_label`` (its label in the snapshot) and :func:`applyClickResult` marks that segment as
a microbleed instead of adding a new one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from CMBSegmentationLib import candidateTable, scanRegistration
from CMBSegmentationLib.atomicFiles import writeTextAtomic
from CMBSegmentationLib.inferenceJob import PreparedRun, prepareInputs
from CMBSegmentationLib.resultImport import (
    candidateRow,
    modelChoiceOf,
    otherModelText,
    readCandidates,
    readModelChoice,
    sameModel,
)
from CMBSegmentationLib.reviewState import (
    ReviewError,
    addReaderMicrobleed,
    adoptPaintedSegments,
    claimForReader,
    setStatus,
    updateVisibility,
)
from CMBSegmentationLib.segmentLabelMap import segmentLabels
from CMBSegmentationLib.volumeIO import ijkToRas, writeArrayAsNifti

#: File names of the snapshot (the engine pairs ``X_cmb.nii.gz`` with ``X_cmb.json`` beside it).
SNAPSHOT_LABELS = "review_cmb.nii.gz"
SNAPSHOT_CANDIDATES = "review_cmb.json"

#: What a click did (:attr:`ClickOutcome.kind`).
ADDED = "added"
EXISTING = "existing"
NOTHING = "nothing"


@dataclass(frozen=True)
class ClickOutcome:
    """The result of one click.

    ``kind``: :data:`ADDED` (a new segment, ``segmentId``), :data:`EXISTING` (the microbleed was in the result
    already: ``segmentId`` is that segment, ``previousStatus`` its status before the click, "" when it had no row
    in the candidate table) or :data:`NOTHING` (nothing darker than the surrounding tissue at the click).
    ``segmentation``: how the engine outlined an added microbleed, "network" or "intensity".
    """

    kind: str
    segmentId: str | None = None
    previousStatus: str | None = None
    status: str | None = None
    segmentation: str | None = None
    #: What the reader must know of an added microbleed: outlined by another model than the result's.
    note: str | None = None


def prepareClickInputs(referenceVolume, segmentationNode, tableNode, workDir: str | os.PathLike[str]) -> PreparedRun:
    """Write the inputs of a click on the result under review into ``workDir``: the volume the result was computed
    on and the result itself as the snapshot (``existingPath``, for ``--existing``)."""
    prepared = prepareInputs(referenceVolume, None, workDir)
    snapshot = writeReviewSnapshot(segmentationNode, tableNode, referenceVolume, Path(workDir) / "review")
    return dataclasses.replace(prepared, existingPath=snapshot)


def writeReviewSnapshot(segmentationNode, tableNode, referenceVolume, folder: str | os.PathLike[str]) -> Path:
    """Write the reviewed result as ``folder/review_cmb.nii.gz`` + ``.json``; return the label map's path.

    The label map lies on ``referenceVolume``'s grid (the volume the click is segmented on); label ``n`` is one
    segment, whatever its status or visibility. Where two segments overlap, the one that counts wins: segments
    without a table row (painted by hand) lose to rejected ones, which lose to the rest. The JSON names each label's
    ``segment_id`` and the table's candidate ``id`` (null without a row), with its centre (RAS mm, the volume's own
    frame) and volume (mm³) measured on the label map.
    """
    rows = {row.segmentId: row for row in candidateTable.readRows(tableNode)} if tableNode is not None else {}
    segmentation = segmentationNode.GetSegmentation()
    segmentIds = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]

    def priority(segmentId: str) -> int:
        row = rows.get(segmentId)
        return 0 if row is None else 1 if row.status == candidateTable.STATUS_REJECTED else 2

    segmentIds.sort(key=priority)  # stable: table order within each group
    labels = segmentLabels(segmentationNode, segmentIds, referenceVolume)
    affine = ijkToRas(referenceVolume)
    voxelVolume = abs(float(np.linalg.det(affine[:3, :3])))
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(segmentIds) + 1)
    candidates = []
    for label, segmentId in enumerate(segmentIds, start=1):
        if counts[label] == 0:  # erased in the Segment Editor: nothing there to click on
            continue
        row = rows.get(segmentId)
        centre = affine[:3, :3] @ np.argwhere(labels == label).mean(axis=0) + affine[:3, 3]
        candidates.append(
            {
                "id": None if row is None else row.candidateId,
                "label": label,
                "segment_id": segmentId,
                "status": None if row is None else row.status,
                "center_ras": [round(float(v), 3) for v in centre],
                "voxels": int(counts[label]),
                "volume_mm3": round(float(counts[label]) * voxelVolume, 3),
                "probability": None if row is None else row.probability,
            }
        )
    folder = Path(folder)
    path = writeArrayAsNifti(labels, affine, folder / SNAPSHOT_LABELS)
    document = {"source": f"review of '{segmentationNode.GetName()}'", "candidates": candidates}
    # The result's registration to MNI and the sha256 of the file it was made from: the engine reuses it when the
    # volume written for this click is that very file (scanRegistration), instead of registering again.
    document.update(scanRegistration.snapshotFields(segmentationNode))
    writeTextAtomic(folder / SNAPSHOT_CANDIDATES, json.dumps(document, indent=1) + "\n")
    return path


def applyClickResult(
    segmentationNode,
    tableNode,
    labelMapPath: str | os.PathLike[str],
    candidatesPath: str | os.PathLike[str],
    pointRas: tuple[float, float, float],
    snapshotPath: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
) -> ClickOutcome:
    """Bring the engine's answer to a click (``plkd predict --at-ras --existing``) into the review.

    A microbleed of the snapshot (``snapshotPath``, from :func:`writeReviewSnapshot`) under the click is marked as
    one: "not yet seen" and "rejected" become "accepted" (a rejected microbleed of the reader's own becomes "added
    by reader" again), a segment without a table row gets one as "added by reader"; no segment is added. A click
    where the engine found nothing dark adds nothing. Otherwise the new microbleed is added ("added by reader").
    Raises :class:`ReviewError` when the microbleed found under the click was deleted during the run.
    """
    data = readCandidates(candidatesPath)
    # A registration made (or reused) by this click is kept for the next one: a result without one (no candidate to
    # locate at the run, or the volume changed since) registers once, not at every click.
    scanRegistration.recordRegistration(segmentationNode, data, keepEarlier=True)
    if not data["candidates"]:
        return ClickOutcome(NOTHING)
    # The engine answers a click with one candidate; should it give several, the nearest is the reader's.
    candidate = min(data["candidates"], key=lambda c: float(np.linalg.norm(np.subtract(c["center_ras"], pointRas))))
    if candidate.get("existing_label") is not None or candidate.get("existing_id") is not None:
        segmentId = _snapshotSegment(snapshotPath, candidate)
        if segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
            raise ReviewError("the microbleed at the click was deleted meanwhile; click again to add it")
        previous, status = _markAsMicrobleed(segmentationNode, tableNode, segmentId, candidate, threshold)
        return ClickOutcome(EXISTING, segmentId, previous, status)
    if int(candidate["label"]) <= 0 or ("segmentation" in candidate and candidate["segmentation"] is None):
        return ClickOutcome(NOTHING)
    segmentId = addReaderMicrobleed(segmentationNode, tableNode, labelMapPath, candidatesPath, pointRas, threshold)
    # The click runs the model chosen now, which may not be the one that made the result (the Model setting changed
    # since, for another scan; the scene reviewed on another computer): its outline joined the result without a word.
    note = None
    clickModel, resultModel = readModelChoice(data).get("model"), modelChoiceOf(segmentationNode).get("model")
    if clickModel and resultModel and not sameModel(clickModel, resultModel):
        segmentationNode.GetSegmentation().GetSegment(segmentId).SetTag(candidateTable.TAG_MODEL, clickModel)
        note = otherModelText(clickModel, resultModel)
    return ClickOutcome(ADDED, segmentId, None, candidateTable.STATUS_ADDED, candidate.get("segmentation"), note)


def _snapshotSegment(snapshotPath, candidate: dict) -> str:
    """The segment id the engine's ``existing_label`` (else ``existing_id``) names in the snapshot."""
    if snapshotPath is None:
        raise ReviewError("the engine matched an earlier result, but none was given")
    path = Path(snapshotPath)
    document = readCandidates(path.with_name(SNAPSHOT_CANDIDATES) if path.name == SNAPSHOT_LABELS else path)
    label, candidateId = candidate.get("existing_label"), candidate.get("existing_id")
    for key, value in (("label", label), ("id", candidateId)):
        if value is None:
            continue
        for earlier in document["candidates"]:
            if earlier.get(key) is not None and int(earlier[key]) == int(value) and earlier.get("segment_id"):
                return str(earlier["segment_id"])
    raise ReviewError(f"the engine matched label {label} of the review snapshot, which has no such segment")


def _markAsMicrobleed(segmentationNode, tableNode, segmentId: str, candidate: dict, threshold: float):
    """Accept the segment the reader pointed at; return (status before, status after)."""
    rowIndex = candidateTable.rowIndexOfSegment(tableNode, segmentId)
    if rowIndex < 0 and segmentId in adoptPaintedSegments(segmentationNode, tableNode):
        # Not yet in the review: it joins it as the review takes in any such segment (an island split off a
        # candidate keeps that candidate's status; claimed here, one of a rejected candidate became the reader's).
        rowIndex = candidateTable.rowIndexOfSegment(tableNode, segmentId)
        if candidateTable.readRows(tableNode)[rowIndex].status == candidateTable.STATUS_ADDED:
            updateVisibility(segmentationNode, tableNode, threshold)
            return "", candidateTable.STATUS_ADDED
    if rowIndex < 0:
        # Painted in the Segment Editor, so not yet in the review: it joins it as the reader's own microbleed.
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        candidateId = candidateTable.nextCandidateId(tableNode)
        claimForReader(segmentationNode, segment, candidateId)
        # The engine's record describes these very voxels (label 1 of its output is the earlier microbleed); its
        # probability is for the new outline, so none is recorded.
        record = {**candidate, "probability": None, "location": None, "region": None}
        candidateTable.appendRow(
            tableNode, candidateRow(record, segmentId, candidateTable.STATUS_ADDED, candidateId=candidateId)
        )
        updateVisibility(segmentationNode, tableNode, threshold)
        return "", candidateTable.STATUS_ADDED
    previous = candidateTable.readRows(tableNode)[rowIndex].status
    if previous in (candidateTable.STATUS_NOT_SEEN, candidateTable.STATUS_REJECTED):
        setStatus(segmentationNode, tableNode, segmentId, candidateTable.STATUS_ACCEPTED, threshold)
    return previous, candidateTable.readRows(tableNode)[rowIndex].status
