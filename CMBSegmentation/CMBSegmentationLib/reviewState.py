"""The reader's review of the candidates: accept, reject, add a missed microbleed, threshold.

Statuses live in the candidate table and, as tags, on the segments, so saving the scene saves the review.
Review actions only change tags, table cells, visibility and what a segment says of itself (the name marker and the
terminology of an excluded candidate, see segmentPresentation), never a segment's voxels: edits made with the
Segment Editor survive every review action, and rejecting is undone by accepting (nothing is deleted).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re

import numpy as np

from CMBSegmentationLib import candidateTable, segmentPresentation
from CMBSegmentationLib.resultImport import (
    COLOR_ADDED,
    addCandidateSegment,
    algorithmNameOf,
    candidateRow,
    ensureSegmentationConverters,
    outlineOf,
    placeInSubjectHierarchy,
    readCandidates,
    segmentTag,
)
from CMBSegmentationLib.resultImport import referenceVolume as resultVolume
from CMBSegmentationLib.segmentLabelMap import (
    measureSegments,
    measureVoxels,
    segmentationToVolumeFrame,
    segmentVoxels,
)
from CMBSegmentationLib.volumeIO import ijkToRas, readNifti

#: Which status may follow which, for a model candidate ...
ALLOWED_STATUS_CHANGES: dict[str, frozenset[str]] = {
    candidateTable.STATUS_NOT_SEEN: frozenset({candidateTable.STATUS_ACCEPTED, candidateTable.STATUS_REJECTED}),
    candidateTable.STATUS_ACCEPTED: frozenset({candidateTable.STATUS_REJECTED, candidateTable.STATUS_NOT_SEEN}),
    candidateTable.STATUS_REJECTED: frozenset({candidateTable.STATUS_ACCEPTED, candidateTable.STATUS_NOT_SEEN}),
}
#: ... and for a microbleed the reader added: it is kept as the reader's or rejected.
READER_STATUS_CHANGES: dict[str, frozenset[str]] = {
    candidateTable.STATUS_ADDED: frozenset({candidateTable.STATUS_REJECTED}),
    candidateTable.STATUS_REJECTED: frozenset({candidateTable.STATUS_ADDED}),
}


class ReviewError(ValueError):
    """A review action that is not possible (unknown segment, refused status change, empty result)."""


def isIncluded(row: candidateTable.CandidateRow, threshold: float) -> bool:
    """Whether a candidate belongs to the final segmentation and report.

    Rejected never; accepted and the reader's own always; a candidate not yet seen when its probability
    reaches ``threshold``.
    """
    if row.status == candidateTable.STATUS_REJECTED:
        return False
    if row.status in (candidateTable.STATUS_ACCEPTED, candidateTable.STATUS_ADDED):
        return True
    # At the precision the table keeps probabilities (rounding never reverses an order): against a finer threshold
    # (``--threshold 0.33333``), a candidate the engine kept at 0.33334, stored as 0.3333, was dropped from the export.
    precision = candidateTable.DECIMALS[candidateTable.COLUMN_PROBABILITY]
    return row.probability is None or round(row.probability, precision) >= round(threshold, precision)


def probabilityText(probability: float | None, threshold: float) -> str:
    """A candidate's probability as the review list shows it: 2 decimals, more (up to the table's 4) where fewer
    would read as passing ``threshold`` when the candidate does not, or the other way round ("" for none).

    At 2 decimals a candidate at 0.4996 read "0.50" beside its status "below threshold" at a review threshold of 0.5.
    """
    if probability is None:
        return ""
    precision = candidateTable.DECIMALS[candidateTable.COLUMN_PROBABILITY]

    def passes(value: float) -> bool:  # as isIncluded decides
        return round(value, precision) >= round(threshold, precision)

    for decimals in range(2, precision):
        text = f"{probability:.{decimals}f}"
        if passes(float(text)) == passes(probability):
            return text
    return f"{probability:.{precision}f}"


def thresholdDecimals(threshold: float) -> int:
    """The decimals the review threshold is shown with: 2, or more (up to the table's 4) where 2 would round it
    (a run threshold of 0.999 read "1.00", one of 0.3333 read "0.33" beside a candidate at 0.33 "below threshold")."""
    precision = candidateTable.DECIMALS[candidateTable.COLUMN_PROBABILITY]
    exact = round(float(threshold), precision)
    return next((d for d in range(2, precision) if abs(round(exact, d) - exact) < 0.5 * 10.0**-precision), precision)


def checkStatuses(tableNode) -> None:
    """Refuse a review whose table holds a status that is none of :data:`candidateTable.STATUSES`, or lists one
    segment in two rows.

    A status typed in the Tables module as "reject", "FP" or "no" counted as not yet seen: the candidate stayed in
    the export whenever it passed the threshold, the opposite of what the reader meant. Raises :class:`ReviewError`
    naming the rows.
    """
    rows = candidateTable.readRows(tableNode)
    unknown = [row for row in rows if row.status not in candidateTable.STATUSES]
    if unknown:
        names = ", ".join(f"{row.candidateId} ({row.status!r})" for row in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        allowed = ", ".join(candidateTable.STATUSES)
        raise ReviewError(
            f"table '{tableNode.GetName()}': candidate(s) {names}{more} have a status that is none of: {allowed}; "
            "correct the Status column first"
        )
    # A row copied in the Tables module listed a segment twice: Reject changed the first row only, and the copy kept
    # the microbleed in the export (twice over, as two labels, when both counted).
    seen: dict[str, int] = {}
    for index, row in enumerate(rows, start=1):
        if row.segmentId and row.segmentId in seen:
            raise ReviewError(
                f"table '{tableNode.GetName()}': rows {seen[row.segmentId]} and {index} both list segment "
                f"'{row.segmentId}'; delete one of them first"
            )
        seen.setdefault(row.segmentId, index)


def setStatus(segmentationNode, tableNode, segmentId: str, status: str, threshold: float | None = None) -> None:
    """Change the status of the candidate shown by ``segmentId`` (table, segment tag and visibility at ``threshold``;
    None: the table's review threshold)."""
    rowIndex = candidateTable.rowIndexOfSegment(tableNode, segmentId)
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    if rowIndex < 0 or segment is None:
        raise ReviewError(f"no candidate with segment id '{segmentId}'")
    current = candidateTable.readRows(tableNode)[rowIndex].status
    changes = ALLOWED_STATUS_CHANGES
    if _wasAddedByReader(segment):
        changes = READER_STATUS_CHANGES
        if status == candidateTable.STATUS_ACCEPTED:  # "Accept" on the reader's own rejected microbleed restores it
            status = candidateTable.STATUS_ADDED
    if status == current:
        return
    # A status typed by hand that this kind of candidate never has (none of the known ones, see checkStatuses, or
    # "accepted" typed on the reader's own microbleed in the Tables module) may become any this kind can have:
    # refused, the reader could neither reject nor restore it with the module's buttons.
    allowed = changes.get(current, frozenset().union(*changes.values()))
    if status not in allowed:
        raise ReviewError(f"a candidate that is '{current}' cannot become '{status}'")
    candidateTable.setStatusCell(tableNode, rowIndex, status)
    segment.SetTag(candidateTable.TAG_STATUS, status)
    updateVisibility(segmentationNode, tableNode, threshold)


def accept(segmentationNode, tableNode, segmentId: str, threshold: float | None = None) -> None:
    """Mark a candidate as a microbleed (also restores a rejected one)."""
    setStatus(segmentationNode, tableNode, segmentId, candidateTable.STATUS_ACCEPTED, threshold)


def reject(segmentationNode, tableNode, segmentId: str, threshold: float | None = None) -> None:
    """Mark a candidate as not a microbleed: hidden and left out of the export, its voxels kept for undo."""
    setStatus(segmentationNode, tableNode, segmentId, candidateTable.STATUS_REJECTED, threshold)


def updateVisibility(segmentationNode, tableNode, threshold: float | None = None) -> list[str]:
    """Show exactly the segments that are included at ``threshold`` (None: the table's review threshold, what
    the export uses), and let each say so in its name, terminology and DICOM algorithm tags
    (:func:`segmentPresentation.presentSegment`); return their ids in table order.

    Hidden alone, a rejected candidate went out as "Microbleed 2", a haemorrhage, with every one of Slicer's own
    exports of the segmentation (File > Save, Export to files, DICOM SEG), which write hidden segments too.
    """
    if threshold is None:
        threshold = reviewThreshold(tableNode)
    displayNode = segmentationNode.GetDisplayNode()
    algorithm = algorithmNameOf(segmentationNode)
    shown = []
    for row in candidateTable.readRows(tableNode):
        segment = segmentationNode.GetSegmentation().GetSegment(row.segmentId)
        if segment is None:
            continue
        included = isIncluded(row, threshold)
        segmentPresentation.presentSegment(segment, row.status, included, row.probability is not None, algorithm)
        if displayNode is not None:
            displayNode.SetSegmentVisibility(row.segmentId, included)
        if included:
            shown.append(row.segmentId)
    return shown


def runThreshold(tableNode) -> float:
    """The probability the engine kept candidates from (0 when unknown): nothing below it was imported."""
    return _floatAttribute(tableNode, candidateTable.ATTRIBUTE_RUN_THRESHOLD, 0.0)


def reviewThreshold(tableNode, default: float | None = None) -> float:
    """The review threshold saved with the table, never below the run's.

    A table that has none (a ``.tsv`` loaded alone keeps no attributes) gets ``default``, else the run's: every
    candidate the engine kept counts, as right after the import. (A fixed 0.5 silently dropped the candidates
    not yet seen below it from the export.)
    """
    value = _floatAttribute(
        tableNode, candidateTable.ATTRIBUTE_REVIEW_THRESHOLD, runThreshold(tableNode) if default is None else default
    )
    return min(max(value, runThreshold(tableNode)), 1.0)


def setReviewThreshold(segmentationNode, tableNode, threshold: float) -> float:
    """Save the reader's review threshold with the table and show what passes it; return the value kept.

    A value below the run threshold is raised to it: candidates below it were never imported, so a lower value
    would change nothing that the reader could see.
    """
    value = min(max(float(threshold), runThreshold(tableNode)), 1.0)
    # Also on the segmentation, for a table rebuilt from it (rebuildTable).
    for node in (tableNode, segmentationNode):
        if node is not None and node.GetAttribute(candidateTable.ATTRIBUTE_REVIEW_THRESHOLD) != repr(value):
            node.SetAttribute(candidateTable.ATTRIBUTE_REVIEW_THRESHOLD, repr(value))
    if segmentationNode is not None:
        updateVisibility(segmentationNode, tableNode, value)
    return value


def recoverReviewThreshold(segmentationNode, tableNode) -> float | None:
    """Give a table that has no review threshold the one its result was reviewed at; return it (None: the table had
    one, or nothing tells, and :func:`reviewThreshold` counts from the run's).

    Neither a ``.tsv`` nor a ``.seg.nrrd`` keeps node attributes: a table loaded alone, or rebuilt from a segmentation
    saved alone, counted every candidate not yet seen, those the reader saw below the threshold too, so the export
    held microbleeds the reader never saw. Taken from the segmentation's attribute, else from what its segments say
    (:func:`segmentPresentation.presentSegment`, saved in the ``.seg.nrrd``): the lowest probability of a candidate
    not yet seen that is shown, else the next 0.01 above the highest one "below threshold". Recorded on the table.
    """
    if tableNode.GetAttribute(candidateTable.ATTRIBUTE_REVIEW_THRESHOLD):
        return None
    value = _floatAttribute(segmentationNode, candidateTable.ATTRIBUTE_REVIEW_THRESHOLD, math.nan)
    if math.isnan(value):
        value = _thresholdShown(segmentationNode, tableNode)
    if value is None:
        return None
    tableNode.SetAttribute(candidateTable.ATTRIBUTE_REVIEW_THRESHOLD, repr(value))
    return value


def _thresholdShown(segmentationNode, tableNode) -> float | None:
    shown, below = [], []
    for row in candidateTable.readRows(tableNode):
        segment = segmentationNode.GetSegmentation().GetSegment(row.segmentId)
        if row.status != candidateTable.STATUS_NOT_SEEN or row.probability is None or segment is None:
            continue
        reason = segmentPresentation.presentedReason(segment)
        (below if reason == segmentPresentation.REASON_BELOW_THRESHOLD else shown).append(row.probability)
    if not below:
        return None
    if shown:
        return min(shown) if min(shown) > max(below) else None  # no single threshold shows these: no guess
    return min(math.floor(max(below) * 100.0 + 1.0) / 100.0, 1.0)


def hasCandidateSegments(segmentationNode) -> bool:
    """Whether ``segmentationNode`` holds segments of this module's results (tagged with a candidate id)."""
    if segmentationNode is None:
        return False
    segmentation = segmentationNode.GetSegmentation()
    return any(
        segmentTag(segmentation.GetNthSegment(i), candidateTable.TAG_CANDIDATE_ID)
        for i in range(segmentation.GetNumberOfSegments())
    )


def canRebuildTable(segmentationNode) -> bool:
    """Whether :func:`rebuildTable` can make a table for ``segmentationNode`` (its candidates and volume are there)."""
    volume = resultVolume(segmentationNode)
    return hasCandidateSegments(segmentationNode) and volume is not None and volume.GetImageData() is not None


def rebuildTable(segmentationNode):
    """A new candidate table for a result whose own is gone (deleted in the Data module, its ``.tsv`` lost beside
    a saved scene), rebuilt from the tags every segment keeps: candidate id, status, probability, location and
    region, and the run's and reader's thresholds from the segmentation's attributes (without them every candidate
    the engine kept counts, as right after the run). The segmentation must still reference its volume.

    Without it the module could neither show nor export the review, which the segments still held. Centres and
    volumes are measured on the result's volume. Raises :class:`ReviewError` when the segmentation holds no
    candidates of this module or its volume is gone.
    """
    if not hasCandidateSegments(segmentationNode):
        raise ReviewError(f"'{segmentationNode.GetName()}' holds no microbleed candidates of this module")
    volume = resultVolume(segmentationNode)
    if volume is None or volume.GetImageData() is None:
        raise ReviewError(f"the volume of '{segmentationNode.GetName()}' is no longer in the scene")
    scene = segmentationNode.GetScene()
    tableNode = candidateTable.createCandidateTable(scene, f"{volume.GetName()} microbleed candidates")
    tableNode.SetNodeReferenceID(candidateTable.REFERENCE_SEGMENTATION, segmentationNode.GetID())
    placeInSubjectHierarchy(scene, volume, tableNode)
    for attribute in (
        candidateTable.ATTRIBUTE_RUN_ID,
        candidateTable.ATTRIBUTE_RUN_THRESHOLD,
        candidateTable.ATTRIBUTE_REVIEW_THRESHOLD,
        candidateTable.ATTRIBUTE_MODEL,
        candidateTable.ATTRIBUTE_ENGINE_RUN,
        candidateTable.ATTRIBUTE_NOTES,
    ):
        value = segmentationNode.GetAttribute(attribute)
        if value:
            tableNode.SetAttribute(attribute, value)
    adoptPaintedSegments(segmentationNode, tableNode, volume)  # every segment is rowless here
    restoreReview(segmentationNode, tableNode)
    return tableNode


def restoreReview(segmentationNode, tableNode) -> list[candidateTable.CandidateRow]:
    """After loading a saved scene, or any change: copy the table's statuses onto the segment tags and visibility.

    Segments painted with the Segment Editor join the review first (:func:`adoptPaintedSegments`), and each row's
    centre and volume are those of its segment as it is now (:func:`measureRows`). Raises :class:`ReviewError` for a
    table of another result (:func:`candidateTable.belongsTo`).
    """
    if not candidateTable.belongsTo(tableNode, segmentationNode):
        raise ReviewError(f"table '{tableNode.GetName()}' lists the candidates of another result")
    adoptPaintedSegments(segmentationNode, tableNode)
    recoverReviewThreshold(segmentationNode, tableNode)
    measureRows(segmentationNode, tableNode)
    rows = candidateTable.readRows(tableNode)
    for row in rows:
        segment = segmentationNode.GetSegmentation().GetSegment(row.segmentId)
        if segment is not None and segmentTag(segment, candidateTable.TAG_STATUS) != row.status:
            segment.SetTag(candidateTable.TAG_STATUS, row.status)
    updateVisibility(segmentationNode, tableNode, reviewThreshold(tableNode))
    return rows


def measureRows(segmentationNode, tableNode, referenceVolume=None) -> list[str]:
    """Bring each row's centre (RAS mm, the volume's own frame) and volume (mm³) to its segment as it is now; return
    the segment ids of the rows that changed.

    The table kept the engine's values for good: a candidate grown, trimmed or erased with the Segment Editor showed
    its old volume in the review list and in the saved table (only the export measured it again), and the list
    jumped to where it had been. A segment erased to nothing gets volume 0 and keeps its last centre; a row whose
    segment is gone is left as it is. Measured on ``referenceVolume`` (default: the result's), as the export does.
    Cells are written only where they differ at the table's precision, so a refresh that finds nothing changed
    does not modify the table (whose Modified event refreshes the list).
    """
    if referenceVolume is None:
        referenceVolume = resultVolume(segmentationNode)
    if referenceVolume is None or referenceVolume.GetImageData() is None:
        return []
    segmentation = segmentationNode.GetSegmentation()
    rows = [
        (index, row)
        for index, row in enumerate(candidateTable.readRows(tableNode))
        if row.segmentId and segmentation.GetSegment(row.segmentId) is not None
    ]
    measured = measureSegments(segmentationNode, [row.segmentId for _, row in rows], referenceVolume)
    changed = []
    for (index, row), (centre, volumeMm3) in zip(rows, measured, strict=True):
        if candidateTable.setMeasuredCells(tableNode, index, centre if volumeMm3 else row.centerRas, volumeMm3):
            changed.append(row.segmentId)
    if changed:
        tableNode.Modified()
    return changed


def adoptPaintedSegments(segmentationNode, tableNode, referenceVolume=None) -> list[str]:
    """Give each segment that has voxels but no table row a row again; return their ids.

    A segment the reader painted as a new segment with the Segment Editor gets a row "added by reader": without a
    row it was shown but left out of the review list and of the export; its probability is unknown. A candidate
    whose row was deleted (Tables module) gets its row back with the id, status and probability its segment tags
    keep: taken as the reader's, a rejected candidate came back into the export. A segment split off a listed
    candidate or cloned from one (:func:`sourceRow`) becomes a candidate of its own with that candidate's status,
    probability, location and origin: taken as the reader's, pieces and copies of a rejected candidate were exported.
    Centres (RAS mm, the volume's own frame) and volumes are measured on ``referenceVolume`` (default: the
    result's). A segment still empty (just created, not painted yet) waits until it has voxels.
    """
    if not candidateTable.belongsTo(tableNode, segmentationNode):
        return []  # a table of another result: these segments are not its to list
    releaseReusedRows(segmentationNode, tableNode)
    if referenceVolume is None:
        referenceVolume = resultVolume(segmentationNode)
    if referenceVolume is None or referenceVolume.GetImageData() is None:
        return []
    segmentation = segmentationNode.GetSegmentation()
    runId = segmentationNode.GetAttribute(candidateTable.ATTRIBUTE_RUN_ID) or ""
    rows = candidateTable.readRows(tableNode)
    listed = {row.segmentId for row in rows}
    usedIds = {row.candidateId for row in rows}  # kept up to date below: the table is read once
    rowless = [
        segmentId
        for segmentId in (segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments()))
        if segmentId not in listed
    ]
    # Listed segments by name and by candidate id, for islands split off them and clones; kept up to date below, so
    # islands of islands and clones of clones find theirs.
    rowOfName = {}
    rowOfId = {row.candidateId: row for row in rows}
    for row in rows:
        segment = segmentation.GetSegment(row.segmentId)
        if segment is not None:
            rowOfName.setdefault(segmentPresentation.baseName(segment.GetName()), row)
    if not rowless:
        return []
    # Each segment on its own voxels: one painted over another keeps its whole size, and is adopted at all.
    measured = measureVoxels(segmentVoxels(segmentationNode, rowless, referenceVolume), ijkToRas(referenceVolume))
    adopted = []
    for segmentId, (centre, volumeMm3) in zip(rowless, measured, strict=True):
        if volumeMm3 == 0:
            continue
        segment = segmentation.GetSegment(segmentId)
        row = _rowFromTags(segment, segmentId, centre, volumeMm3, usedIds, runId)
        source = sourceRow(segment, rowOfName, rowOfId, runId) if row is None else None
        if source is not None:
            row = dataclasses.replace(
                source,
                candidateId=max(usedIds, default=0) + 1,
                segmentId=segmentId,
                centerRas=centre,
                volumeMm3=volumeMm3,
            )
            _claimDerived(segmentationNode, segment, row, source)
        elif row is None:  # painted by hand, or moved in from another result
            row = candidateTable.CandidateRow(
                candidateId=max(usedIds, default=0) + 1,  # as candidateTable.nextCandidateId
                segmentId=segmentId,
                centerRas=centre,
                volumeMm3=volumeMm3,
                probability=None,
                status=candidateTable.STATUS_ADDED,
            )
            claimForReader(segmentationNode, segment, row.candidateId)
        candidateTable.appendRow(tableNode, row)
        usedIds.add(row.candidateId)
        rowOfName.setdefault(segmentPresentation.baseName(segment.GetName()), row)
        rowOfId.setdefault(row.candidateId, row)
        adopted.append(segmentId)
    return adopted


def releaseReusedRows(segmentationNode, tableNode) -> list[str]:
    """Detach each row from a segment that carries its segment id but is not the candidate it listed; return those
    segment ids (their segments then join the review as any segment without a row, see :func:`adoptPaintedSegments`).

    A row stays when its segment is deleted (the export names an accepted one that is gone), and Slicer gives a new
    segment an id that is free *now*: a clone made after the scene was reloaded ("Microbleed_102_1" again), or a
    candidate moved in from another run on the same volume ("Microbleed_100"), took the old row's status and
    probability (a rejected one: hidden, and left out of the export). A segment is the row's when its candidate id
    tag is the row's id and its run id tag is the result's (segments without them, of older scenes, count as the
    row's). The row keeps its candidate and status, its Segment ID becomes "<id> (deleted)".
    """
    segmentation = segmentationNode.GetSegmentation()
    runId = segmentationNode.GetAttribute(candidateTable.ATTRIBUTE_RUN_ID) or ""
    rows = candidateTable.readRows(tableNode)
    used = {row.segmentId for row in rows}
    released = []
    for index, row in enumerate(rows):
        segment = segmentation.GetSegment(row.segmentId) if row.segmentId else None
        if segment is None or _isRowOf(segment, row, runId):
            continue
        detached = next(
            name
            for name in (f"{row.segmentId} (deleted{'' if n == 1 else f' {n}'})" for n in itertools.count(1))
            if name not in used
        )
        candidateTable.setSegmentCell(tableNode, index, detached)
        used.add(detached)
        released.append(row.segmentId)
    if released:
        tableNode.Modified()
    return released


def _isRowOf(segment, row: candidateTable.CandidateRow, runId: str) -> bool:
    tagged = segmentTag(segment, candidateTable.TAG_CANDIDATE_ID)
    if tagged and tagged != str(row.candidateId):
        return False
    segmentRun = segmentTag(segment, candidateTable.TAG_RUN_ID)
    return not (runId and segmentRun and segmentRun != runId)


def sourceRow(
    segment,
    rowOfName: dict[str, candidateTable.CandidateRow],
    rowOfId: dict[int, candidateTable.CandidateRow],
    runId: str = "",
) -> candidateTable.CandidateRow | None:
    """The row of the listed candidate a rowless ``segment`` was made from by the Segment Editor or Data module, or
    None (a segment painted by hand, or moved in from another result).

    - An island: Segment Editor's Islands effect ("Split islands to segments", ``SegmentEditorIslandsEffect
      .splitSegments`` in Slicer) keeps the largest island in the selected segment and makes each other one a new
      segment named "<selected name>_<n>" (n = 2, 3, ...) without any tag: no candidate id, that name pattern, and
      the selected segment listed in ``rowOfName`` (listed segments by name, without the markers of
      :func:`segmentPresentation.baseName`: the candidate may have been rejected or accepted since the split).
    - A clone: the Data module's "Clone" on a segment (``qSlicerSubjectHierarchySegmentsPlugin::cloneSegment``)
      adds a deep copy, tags and name included: a candidate id of ``rowOfId`` (listed candidates by id) and the run
      id ``runId`` (segments of older scenes, without one, stay the reader's).
    """
    candidateId = segmentTag(segment, candidateTable.TAG_CANDIDATE_ID)
    if not candidateId:
        match = _ISLAND_NAME.fullmatch(segment.GetName() or "")
        return rowOfName.get(segmentPresentation.baseName(match.group(1))) if match else None
    if not runId or segmentTag(segment, candidateTable.TAG_RUN_ID) != runId:
        return None  # without run ids a candidate of another result numbered alike would pass for its source
    try:
        return rowOfId.get(int(candidateId))
    except ValueError:
        return None


def _claimDerived(segmentationNode, segment, row: candidateTable.CandidateRow, source: candidateTable.CandidateRow):
    """Tag a segment split or cloned off ``source`` (see :func:`sourceRow`) as the candidate ``row``, of the same kind,
    look and run as ``source``.

    A name another segment has (a clone's is its source's; the effect numbers the islands of each split from 2, so a
    second split of one candidate named its islands as the first had) becomes the next free "<source name>_<n>":
    the report named two microbleeds alike.
    """
    segmentation = segmentationNode.GetSegmentation()
    sourceSegment = segmentation.GetSegment(source.segmentId)
    # Names without the markers of excluded candidates: "Microbleed 3 (rejected)_2" is "Microbleed 3_2" once the
    # review presents it (segmentPresentation), and must not become a second "Microbleed 3_2".
    names = _baseNames(segmentation, segment)
    if segmentPresentation.baseName(segment.GetName()) in names:
        base = segmentPresentation.baseName((segment if sourceSegment is None else sourceSegment).GetName())
        segment.SetName(next(f"{base}_{n}" for n in itertools.count(2) if f"{base}_{n}" not in names))
    segment.SetTag(candidateTable.TAG_CANDIDATE_ID, str(row.candidateId))
    segment.SetTag(candidateTable.TAG_STATUS, row.status)
    segment.SetTag(candidateTable.TAG_DERIVED_FROM, str(source.candidateId))
    if row.probability is not None:
        segment.SetTag(candidateTable.TAG_PROBABILITY, repr(float(row.probability)))
    for tag in (
        candidateTable.TAG_LOCATION,
        candidateTable.TAG_REGION,
        candidateTable.TAG_ORIGIN,
        candidateTable.TAG_RUN_ID,
        candidateTable.TAG_OUTLINE,
        candidateTable.TAG_MODEL,
    ):
        value = segmentTag(sourceSegment, tag) if sourceSegment is not None else ""
        if value:
            segment.SetTag(tag, value)
    if sourceSegment is not None:
        segment.SetColor(*sourceSegment.GetColor())
        segment.SetTerminology(sourceSegment.GetTerminology())
        # An excluded source keeps the terminology it had while included (the reader's choice) in a tag: without it
        # an island of a rejected candidate, accepted, became a microbleed of the default terminology.
        included = segmentTag(sourceSegment, segmentPresentation.TAG_INCLUDED_TERMINOLOGY)
        if included:
            segment.SetTag(segmentPresentation.TAG_INCLUDED_TERMINOLOGY, included)


def claimForReader(segmentationNode, segment, candidateId: int) -> None:
    """Tag ``segment`` as the reader's microbleed ``candidateId`` of ``segmentationNode``'s run.

    A probability tag it brought along (a candidate moved in from another result) is dropped: the engine of this
    run never scored it; a segment still coded as Slicer codes every new one ("Tissue") is coded as a microbleed; a
    name another segment has ("Microbleed 1" of the other result) becomes the next free
    "Microbleed N", so the report never names two microbleeds alike.
    """
    if segmentPresentation.baseName(segment.GetName()) in _baseNames(segmentationNode.GetSegmentation(), segment):
        segment.SetName(nextSegmentName(segmentationNode))
    # Painted in the Segment Editor, it is "Tissue" (what every new segment is) unless the reader chose otherwise:
    # Slicer's own exports (DICOM SEG) sent a microbleed of the result out as tissue.
    if not segmentPresentation.hasChosenTerminology(segment):
        segment.SetTerminology(segmentPresentation.TERMINOLOGY_MICROBLEED)
    segment.SetTag(candidateTable.TAG_CANDIDATE_ID, str(candidateId))
    segment.SetTag(candidateTable.TAG_STATUS, candidateTable.STATUS_ADDED)
    segment.SetTag(candidateTable.TAG_ORIGIN, candidateTable.ORIGIN_READER)
    for tag in (
        candidateTable.TAG_PROBABILITY,
        candidateTable.TAG_LOCATION,
        candidateTable.TAG_REGION,
        candidateTable.TAG_OUTLINE,
        candidateTable.TAG_ENGINE_CENTRE,
    ):
        segment.RemoveTag(tag)
    runId = segmentationNode.GetAttribute(candidateTable.ATTRIBUTE_RUN_ID)
    if runId:
        segment.SetTag(candidateTable.TAG_RUN_ID, runId)


def _rowFromTags(
    segment, segmentId: str, centre: tuple[float, float, float], volumeMm3: float, usedIds: set[int], runId: str = ""
) -> candidateTable.CandidateRow | None:
    """The row a listed candidate had, from its segment's tags, when its id is not in ``usedIds``, its status is
    known and it is of run ``runId`` (a segment or result without a run id, from older scenes, counts as of it);
    else None. ``centre`` and ``volumeMm3`` are the segment's as measured now.

    A candidate moved in from another result (Segmentations module) was listed as a model candidate of this run,
    with the other run's id, probability and status: a probability the engine never gave on this volume.
    """
    segmentRun = segmentTag(segment, candidateTable.TAG_RUN_ID)
    if runId and segmentRun and segmentRun != runId:
        return None
    try:
        candidateId = int(segmentTag(segment, candidateTable.TAG_CANDIDATE_ID))
    except ValueError:
        return None
    status = candidateTable.normaliseStatus(segmentTag(segment, candidateTable.TAG_STATUS))
    if status not in candidateTable.STATUSES or candidateId in usedIds:
        return None
    try:
        probability = float(segmentTag(segment, candidateTable.TAG_PROBABILITY))
    except ValueError:
        probability = None
    return candidateTable.CandidateRow(
        candidateId=candidateId,
        segmentId=segmentId,
        centerRas=centre,
        volumeMm3=volumeMm3,
        probability=probability,
        status=status,
        location=segmentTag(segment, candidateTable.TAG_LOCATION),
        region=segmentTag(segment, candidateTable.TAG_REGION),
    )


def addReaderMicrobleed(
    segmentationNode,
    tableNode,
    labelMapPath: str | os.PathLike[str],
    candidatesPath: str | os.PathLike[str],
    pointRas: tuple[float, float, float],
    threshold: float | None = None,
) -> str:
    """Add the microbleed the engine segmented at the reader's click (``plkd predict --at-ras``).

    Existing segments are left untouched. Returns the new segment id.
    """
    ensureSegmentationConverters()
    data = readCandidates(candidatesPath)
    labels, affine = readNifti(labelMapPath)
    affine = _inSegmentationFrame(segmentationNode, affine)
    found = [c for c in data["candidates"] if int(c["label"]) > 0]
    if not found:
        raise ReviewError("the engine found no microbleed at the clicked point")
    # The engine segments one candidate at the point; if it returns several, the nearest is the reader's.
    candidate = min(found, key=lambda c: float(np.linalg.norm(np.subtract(c["center_ras"], pointRas))))
    candidateId = candidateTable.nextCandidateId(tableNode)
    segmentId = addCandidateSegment(
        segmentationNode,
        labels == int(candidate["label"]),
        affine,
        name=nextSegmentName(segmentationNode),
        candidateId=candidateId,
        status=candidateTable.STATUS_ADDED,
        probability=candidate.get("probability"),
        color=COLOR_ADDED,
        location=candidate.get("location"),
        region=candidate.get("region"),
        outline=outlineOf(candidate),
    )
    if segmentId is None:
        raise ReviewError("the engine's segmentation at the clicked point is empty")
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    segment.SetTag(candidateTable.TAG_ORIGIN, candidateTable.ORIGIN_READER)
    candidateTable.appendRow(
        tableNode, candidateRow(candidate, segmentId, candidateTable.STATUS_ADDED, candidateId=candidateId)
    )
    updateVisibility(segmentationNode, tableNode, threshold)
    return segmentId


def _inSegmentationFrame(segmentationNode, affine: np.ndarray) -> np.ndarray:
    """A voxel-to-RAS ``affine`` of the result volume's own frame (where the engine works) as one of the
    segmentation's frame: they differ once a transform is hardened on one of them only. Raises :class:`ReviewError`
    when a non-linear transform lies between them."""
    volume = resultVolume(segmentationNode)
    if volume is None:
        return affine
    toVolume = segmentationToVolumeFrame(segmentationNode, volume)
    if toVolume is None:
        raise ReviewError(
            f"'{segmentationNode.GetName()}' and '{volume.GetName()}' lie under different non-linear transforms; "
            "harden the transform on both (or on neither) first"
        )
    return np.linalg.inv(toVolume) @ affine


def nextSegmentName(segmentationNode) -> str:
    """ "Microbleed N" with N one more than the largest in use: the number of segments plus one named an existing
    segment again once one had been deleted, so two microbleeds of the report shared a name."""
    used = [
        int(match.group(1))
        for name in _baseNames(segmentationNode.GetSegmentation())
        if (match := _SEGMENT_NAME.fullmatch(name))
    ]
    return f"Microbleed {max(used, default=0) + 1}"


def _baseNames(segmentation, but=None) -> set[str]:
    """The names of the segments (except ``but``) without the markers of excluded candidates: "Microbleed 4
    (rejected)" still holds the name "Microbleed 4", which comes back when it is accepted."""
    return {
        segmentPresentation.baseName(segmentation.GetNthSegment(i).GetName())
        for i in range(segmentation.GetNumberOfSegments())
        if segmentation.GetNthSegment(i) is not but
    }


_SEGMENT_NAME = re.compile(r"Microbleed (\d+)")
#: The name the Islands effect gives a segment split off the segment named group 1.
_ISLAND_NAME = re.compile(r"(.+)_(\d+)")


def _floatAttribute(node, name: str, default: float) -> float:
    try:
        return float(node.GetAttribute(name))
    except (TypeError, ValueError):
        return default


def _wasAddedByReader(segment) -> bool:
    return segmentTag(segment, candidateTable.TAG_ORIGIN) == candidateTable.ORIGIN_READER
