"""Export the reviewed result: final label map (NIfTI), segmentation (``.seg.nrrd``), report (CSV + JSON).

The final result holds the included candidates (see :func:`reviewState.isIncluded`): accepted, added by
the reader (segments painted by hand with the Segment Editor included), and those not yet seen that pass the
threshold; rejected ones, and segments the reader erased,
are left out. Centres and volumes in the report are measured on the exported label map, so they include
the reader's Segment Editor edits. Every file is
written under a temporary name and renamed, so a crash never leaves a half-written report.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from CMBSegmentationLib import candidateTable
from CMBSegmentationLib.atomicFiles import atomicPath, writeTextAtomic
from CMBSegmentationLib.resultImport import ensureSegmentationConverters
from CMBSegmentationLib.reviewState import (
    ReviewError,
    adoptPaintedSegments,
    checkStatuses,
    isIncluded,
    reviewThreshold,
)
from CMBSegmentationLib.sceneScratch import scratchNodes
from CMBSegmentationLib.segmentLabelMap import measureLabels, segmentLabels
from CMBSegmentationLib.volumeIO import ijkToRas, writeArrayAsNifti

REPORT_COLUMNS = (
    "label",
    "candidate_id",
    "segment",
    "r_mm",
    "a_mm",
    "s_mm",
    "volume_mm3",
    "probability",
    "status",
    "location",
    "region",
)


@dataclass(frozen=True)
class ExportedFiles:
    """Paths written by :func:`exportReview`."""

    labelMap: Path
    segmentation: Path
    reportCsv: Path
    reportJson: Path
    count: int


def includedRows(segmentationNode, tableNode, threshold: float) -> list[candidateTable.CandidateRow]:
    """Candidates of the final result, in table order, whose segment still exists."""
    segmentation = segmentationNode.GetSegmentation()
    return [
        r
        for r in candidateTable.readRows(tableNode)
        if isIncluded(r, threshold) and segmentation.GetSegment(r.segmentId)
    ]


def exportReview(
    segmentationNode,
    tableNode,
    referenceVolume,
    outputDir: str | os.PathLike[str],
    baseName: str,
    threshold: float | None = None,
) -> ExportedFiles:
    """Write ``BASE_cmb-final.nii.gz``, ``BASE_cmb-final.seg.nrrd``, ``BASE_cmb-report.csv`` and ``.json``.

    The label map lies on ``referenceVolume``'s grid; microbleed ``n`` of the report has label ``n``. ``threshold``
    None means the review threshold saved with the table (what the reader saw). The scene is left as it was:
    the helper nodes of the export are removed again.
    """
    if not candidateTable.belongsTo(tableNode, segmentationNode):
        raise ReviewError(f"table '{tableNode.GetName()}' lists the candidates of another result; nothing exported")
    checkStatuses(tableNode)  # a status typed as "reject" must not pass for "not yet seen"
    if threshold is None:
        threshold = reviewThreshold(tableNode)
    outputDir = Path(outputDir)
    adoptPaintedSegments(segmentationNode, tableNode, referenceVolume)  # a segment painted by hand is the reader's
    rows = includedRows(segmentationNode, tableNode, threshold)
    labels = segmentLabels(segmentationNode, [r.segmentId for r in rows], referenceVolume)
    counts = np.bincount(labels.ravel(), minlength=len(rows) + 1)[1:]
    if np.any(counts[: len(rows)] == 0):
        # A segment the reader erased with the Segment Editor is no microbleed of the final result.
        rows = [r for r, n in zip(rows, counts, strict=False) if n > 0]
        labels = segmentLabels(segmentationNode, [r.segmentId for r in rows], referenceVolume)
    files = ExportedFiles(
        labelMap=outputDir / f"{baseName}_cmb-final.nii.gz",
        segmentation=outputDir / f"{baseName}_cmb-final.seg.nrrd",
        reportCsv=outputDir / f"{baseName}_cmb-report.csv",
        reportJson=outputDir / f"{baseName}_cmb-report.json",
        count=len(rows),
    )
    segmentIds = [r.segmentId for r in rows]
    affine = ijkToRas(referenceVolume)
    with scratchNodes(segmentationNode.GetScene()):
        writeArrayAsNifti(labels, affine, files.labelMap)
        _writeSegmentation(segmentationNode, segmentIds, files.segmentation)
    measured = measureLabels(labels, affine, len(rows))
    records = [_record(n, r, segmentationNode, *measured[n - 1]) for n, r in enumerate(rows, start=1)]
    _writeCsv(records, files.reportCsv)
    allRows = candidateTable.readRows(tableNode)
    report = {
        "input": referenceVolume.GetName(),
        "n_microbleeds": len(rows),
        "threshold": float(threshold),
        "n_rejected": sum(r.status == candidateTable.STATUS_REJECTED for r in allRows),
        "n_not_yet_seen": sum(r.status == candidateTable.STATUS_NOT_SEEN for r in allRows),
        "microbleeds": records,
        "files": {"label_map": files.labelMap.name, "segmentation": files.segmentation.name},
    }
    writeTextAtomic(files.reportJson, json.dumps(report, indent=2) + "\n")
    return files


def _writeSegmentation(segmentationNode, segmentIds: list[str], path: Path) -> None:
    ensureSegmentationConverters()
    scene = segmentationNode.GetScene()
    copy = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    from slicer import vtkSegmentationConverter

    # Same reference geometry as the reviewed segmentation, so the file opens on the input's grid.
    name = vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    copy.GetSegmentation().SetConversionParameter(name, segmentationNode.GetSegmentation().GetConversionParameter(name))
    for segmentId in segmentIds:
        copy.GetSegmentation().CopySegmentFromSegmentation(segmentationNode.GetSegmentation(), segmentId)
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    with atomicPath(path) as tmp:
        storage.SetFileName(str(tmp))
        if not storage.WriteData(copy):
            raise OSError(f"could not write {path}")


def _record(
    number: int, row: candidateTable.CandidateRow, segmentationNode, centreRas: tuple, volumeMm3: float
) -> dict:
    segment = segmentationNode.GetSegmentation().GetSegment(row.segmentId)
    return {
        "label": number,
        "candidate_id": row.candidateId,
        "segment": segment.GetName() if segment is not None else "",
        "r_mm": round(centreRas[0], 3),
        "a_mm": round(centreRas[1], 3),
        "s_mm": round(centreRas[2], 3),
        "volume_mm3": round(volumeMm3, 3),
        "probability": None if row.probability is None else round(row.probability, 4),
        "status": row.status,
        "location": row.location or None,
        "region": row.region or None,
    }


def _writeCsv(records: list[dict], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: ("" if record[k] is None else record[k]) for k in REPORT_COLUMNS})
    writeTextAtomic(path, buffer.getvalue())
