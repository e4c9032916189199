"""Export the reviewed result: final label map (NIfTI), segmentation (``.seg.nrrd``), report (CSV + JSON).

The final result holds the included candidates (see :func:`reviewState.isIncluded`): accepted, added by
the reader (segments painted by hand with the Segment Editor included), and those not yet seen that pass the
threshold; rejected ones, and segments the reader erased,
are left out. Centres and volumes in the report are measured on each microbleed's own voxels as the reader
left them (Segment Editor edits included). Where two microbleeds overlap, the label map gives the shared voxels
to the smaller one, so one drawn inside another stays visible; the ``.seg.nrrd`` keeps both whole, and the
report's ``notes`` name any microbleed the label map cannot show at all. Every file is
written under a temporary name and the four are renamed together, so a crash never leaves a half-written report,
nor a new label map beside the report of an earlier export.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from CMBSegmentationLib import candidateTable, segmentPresentation
from CMBSegmentationLib.atomicFiles import atomicPath, atomicPaths, writeTextAtomic
from CMBSegmentationLib.resultImport import (
    BINARY_LABELMAP,
    algorithmNameOf,
    engineNotesOf,
    ensureSegmentationConverters,
    modelChoiceOf,
    orientedImage,
    otherModelText,
    sameModel,
    segmentTag,
)
from CMBSegmentationLib.reviewState import (
    ReviewError,
    adoptPaintedSegments,
    checkStatuses,
    isIncluded,
    measureRows,
    recoverReviewThreshold,
    reviewThreshold,
)
from CMBSegmentationLib.sceneScratch import scratchNodes
from CMBSegmentationLib.segmentLabelMap import (
    countPieces,
    flattenVoxels,
    measureVoxels,
    segmentationToVolumeFrame,
    segmentVoxels,
)
from CMBSegmentationLib.sequenceInfo import loadedFile
from CMBSegmentationLib.volumeIO import (
    fileGrid,
    ijkToRas,
    numpyToMatrix,
    sameGridToleranceMm,
    writeArrayAsNifti,
    writeLabelsOnFileGrid,
)

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
    "derived_from",
    "outline",
    "input_file",
)
#: The report CSV's ``input_file``: the file the volume was loaded from (absolute, as the JSON report's and the batch
#: summary's ``input_file``; empty when none, or DICOM), on every row, so that the rows of a batch's reports put into
#: one table still say which scan each is from. Last, so that columns read by position keep their places; reports of
#: older versions lack it.


#: The report's ``exported_by``: the module's Export of a reader's review, or a batch run (no review, every candidate
#: the model keeps). A batch run replaces its own earlier reports, never a reader's.
EXPORTED_BY_REVIEW, EXPORTED_BY_BATCH = "review", "batch"

#: A segment whose centre lies further than this from where the engine found its candidate (a false positive erased and
#: a missed microbleed painted into its segment, two candidates merged into one) is named in a note: its probability,
#: location and region are the engine's for the old place.
MOVED_MM = 5.0

#: Microbleeds are up to 10 mm across (Greenberg et al., Lancet Neurol 2009; docs cmb-domain). A larger segment
#: (a region painted into the result for another purpose, a haematoma) still counts as one microbleed in the report,
#: so the export names it.
MAX_DIAMETER_MM = 10.0


@dataclass(frozen=True)
class ExportedFiles:
    """Paths written by :func:`exportReview`."""

    labelMap: Path
    segmentation: Path
    reportCsv: Path
    reportJson: Path
    count: int
    notes: tuple[str, ...] = ()


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
    overwrite: bool = False,
    exportedBy: str = EXPORTED_BY_REVIEW,
) -> ExportedFiles:
    """Write ``BASE_cmb-final.nii.gz``, ``BASE_cmb-final.seg.nrrd``, ``BASE_cmb-report.csv`` and ``.json``.

    The label map lies on ``referenceVolume``'s grid; microbleed ``n`` of the report has label ``n``. ``threshold``
    None means the review threshold saved with the table (what the reader saw). The scene is left as it was:
    the helper nodes of the export are removed again.

    Exporting the same result again replaces its files (the report records the result's run id and each file's
    SHA-256) unless one was changed since. When the folder holds files of ``BASE`` from another result (another run
    on the same volume, or files of unknown origin), or changed since this result's export wrote them,
    ``BASE-2``, ``BASE-3``, ... is used instead, so one export never replaces another's; the returned paths name
    the files written. ``overwrite`` writes ``BASE`` whatever is there (batch runs, which redo every input).
    ``exportedBy`` (:data:`EXPORTED_BY_REVIEW` or :data:`EXPORTED_BY_BATCH`) goes into the report's ``exported_by``.
    """
    if not candidateTable.belongsTo(tableNode, segmentationNode):
        raise ReviewError(f"table '{tableNode.GetName()}' lists the candidates of another result; nothing exported")
    checkStatuses(tableNode)  # a status typed as "reject" must not pass for "not yet seen"
    recoverReviewThreshold(segmentationNode, tableNode)  # a table loaded alone: the threshold the reader saw
    if threshold is None:
        threshold = reviewThreshold(tableNode)
    outputDir = Path(outputDir)
    adoptPaintedSegments(segmentationNode, tableNode, referenceVolume)  # a segment painted by hand is the reader's
    measureRows(segmentationNode, tableNode, referenceVolume)  # the saved table says what the report says
    rows = includedRows(segmentationNode, tableNode, threshold)
    voxels = segmentVoxels(segmentationNode, [r.segmentId for r in rows], referenceVolume)
    # A segment the reader erased with the Segment Editor is no microbleed of the final result.
    erased = [r for r, v in zip(rows, voxels, strict=True) if not len(v)]
    rows, voxels = [r for r, v in zip(rows, voxels, strict=True) if len(v)], [v for v in voxels if len(v)]
    labels, hidden = flattenVoxels(voxels, referenceVolume.GetImageData().GetDimensions())
    resultId = segmentationNode.GetAttribute(candidateTable.ATTRIBUTE_RUN_ID) or None
    reviewId = reviewIdentity(segmentationNode)
    if not overwrite:
        baseName = freeBaseName(outputDir, baseName, resultId, reviewId)
    files = ExportedFiles(*outputPaths(outputDir, baseName), count=len(rows))
    affine = ijkToRas(referenceVolume)
    measured = measureVoxels(voxels, affine)
    records = [_record(n, r, segmentationNode, *measured[n - 1]) for n, r in enumerate(rows, start=1)]
    notes = tuple(
        f"microbleed {n} ({records[n - 1]['segment']}) lies wholly under "
        + ", ".join(f"microbleed {m} ({records[m - 1]['segment']})" for m in covering)
        + ": the label map cannot show it; the .seg.nrrd and the report keep it"
        for n, covering in hidden
    )
    notes += _pieceNotes(labels, voxels, records)
    notes += _missingSegmentNotes(segmentationNode, tableNode, erased)
    notes += _sharedNameNotes(records)
    notes += _otherModelNotes(segmentationNode, rows, records)
    notes += _movedNotes(segmentationNode, rows, voxels, records, affine)
    notes += tuple(
        f"microbleed {record['label']} ({record['segment']}) is {diameter:.1f} mm across (sphere-equivalent), more "
        f"than a microbleed's {MAX_DIAMETER_MM:g} mm: check that it is one"
        for record, diameter in ((r, _sphereDiameter(r["volume_mm3"])) for r in records)
        if diameter > MAX_DIAMETER_MM
    )
    transformNode = referenceVolume.GetParentTransformNode()
    if transformNode is not None and len(records):
        # Slicer shows the volume where the transform puts it; the files are on the volume's own grid, as loaded.
        notes += (
            f"'{referenceVolume.GetName()}' lies under the transform '{transformNode.GetName()}': centres and files "
            "are in the volume's own frame (as its file), not where Slicer shows it; harden the transform first "
            "for the shown frame",
        )
    # The file the volume was loaded from, when its voxels are the volume's: the label map is written in its voxel order
    # and with its header (Slicer reverses k of a left-handed file), so it lies on the scan's voxels in every tool.
    inputGrid = fileGrid(referenceVolume, loadedFile(referenceVolume))
    notes += _placementNotes(referenceVolume, inputGrid, affine)
    files = dataclasses.replace(files, notes=notes)
    allRows = candidateTable.readRows(tableNode)
    inputFile = loadedFile(referenceVolume)
    report = {
        "input": referenceVolume.GetName(),
        # The file the volume was loaded from (absolute; None: not from a file, or from DICOM): a batch run tells by
        # it whether a report of its name in the output folder is of the same scan.
        "input_file": str(inputFile.resolve()) if inputFile is not None else None,
        # r_mm, a_mm, s_mm: RAS (not the LPS of DICOM and of Slicer's markup files), the label map's frame.
        "coordinate_system": "RAS",
        "exported_by": exportedBy,
        "result_id": resultId,
        "review_id": reviewId,
        "n_microbleeds": len(rows),
        "threshold": float(threshold),
        "n_rejected": sum(r.status == candidateTable.STATUS_REJECTED for r in allRows),
        "n_not_yet_seen": sum(r.status == candidateTable.STATUS_NOT_SEEN for r in allRows),
        "microbleeds": records,
        "files": {"label_map": files.labelMap.name, "segmentation": files.segmentation.name},
        "notes": list(notes),
        # What the engine noted of its run (candidate count capped, brain mask not used, a phase image or a model of
        # the other contrast analysed, ...): logged at the import, but a report read later said nothing of it.
        "engine_notes": engineNotesOf(tableNode, segmentationNode),
        # The model that analysed the scan and the contrast decided for it, as the engine recorded them.
        **{key: value for key, value in modelChoiceOf(tableNode).items() if value is not None},
    }
    # The four files are renamed into place together once all are written: a failure half way (disk full) leaves
    # the earlier export of this result whole, never its report beside a newer label map.
    with atomicPaths([files.labelMap, files.segmentation, files.reportCsv, files.reportJson]) as temporary:
        with scratchNodes(segmentationNode.GetScene()):
            if inputGrid is not None and inputGrid.movedMm <= sameGridToleranceMm(affine):
                writeLabelsOnFileGrid(labels, inputGrid, temporary[0])
            else:  # not from a file, edited since, or placed elsewhere than the file places it (noted above)
                writeArrayAsNifti(labels, affine, temporary[0])
            _writeSegmentation(segmentationNode, rows, temporary[1], referenceVolume, voxels)
        _writeCsv(records, temporary[2], report["input_file"])
        # What was written, so that the next export of this result replaces its files only while nobody changed them.
        finals = outputPaths(outputDir, baseName)[:3]
        report["file_sha256"] = {final.name: _sha256(tmp) for final, tmp in zip(finals, temporary[:3], strict=True)}
        writeTextAtomic(temporary[3], json.dumps(report, indent=2) + "\n")
    return files


def outputPaths(outputDir: Path, baseName: str) -> tuple[Path, Path, Path, Path]:
    """Label map, segmentation, CSV and JSON report of an export named ``baseName`` in ``outputDir``."""
    return (
        outputDir / f"{baseName}_cmb-final.nii.gz",
        outputDir / f"{baseName}_cmb-final.seg.nrrd",
        outputDir / f"{baseName}_cmb-report.csv",
        outputDir / f"{baseName}_cmb-report.json",
    )


def reviewIdentity(segmentationNode) -> str | None:
    """The id of this review of a result: its run id, unless another segmentation of the scene has the same one.

    Two copies of one saved review in a scene (loaded twice, two readers' reviews brought together) share their run
    id, so the export of one replaced the other's files as its own. The copy exported while another has the same
    id gets a review id of its own (:data:`candidateTable.ATTRIBUTE_REVIEW_ID`, saved with the scene).
    """
    own = _reviewId(segmentationNode)
    scene = segmentationNode.GetScene()
    if own is None or scene is None:
        return own
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        other = scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
        if other is not segmentationNode and _reviewId(other) == own:
            own = uuid.uuid4().hex
            segmentationNode.SetAttribute(candidateTable.ATTRIBUTE_REVIEW_ID, own)
            break
    return own


def _reviewId(segmentationNode) -> str | None:
    return (
        segmentationNode.GetAttribute(candidateTable.ATTRIBUTE_REVIEW_ID)
        or segmentationNode.GetAttribute(candidateTable.ATTRIBUTE_RUN_ID)
        or None
    )


def freeBaseName(
    outputDir: str | os.PathLike[str], baseName: str, resultId: str | None, reviewId: str | None = None
) -> str:
    """``baseName``, or ``baseName-2``, ``-3``, ...: the first whose files in ``outputDir`` are absent or are an
    export of the result ``resultId`` in its review ``reviewId`` (None: the result's own, see
    :func:`reviewIdentity`; its report names both) and unchanged since that export wrote them. Files without a
    readable report are not ours."""
    outputDir = Path(outputDir)
    reviewId = reviewId or resultId
    for k in itertools.count(1):
        name = baseName if k == 1 else f"{baseName}-{k}"
        paths = outputPaths(outputDir, name)
        if not any(p.exists() for p in paths):
            return name
        try:
            previous = json.loads(paths[3].read_text(encoding="utf-8"))
            previousIds = (previous.get("result_id"), previous.get("review_id") or previous.get("result_id"))
        except (OSError, ValueError, AttributeError):
            previousIds = (None, None)
        if resultId is not None and previousIds == (resultId, reviewId) and _unchanged(previous, paths[:3]):
            return name
    raise AssertionError("unreachable")


def _unchanged(report: dict, paths) -> bool:
    """Whether the files of an earlier export are as it wrote them (its report's ``file_sha256``; a report of an older
    version, without it, is taken at its word). A report opened in a spreadsheet and saved with the reader's notes,
    or a label map corrected in another program, was replaced by the next export of the result without a word."""
    return not changedSinceExport(report, paths)


def changedSinceExport(report: dict, paths) -> list[Path]:
    """Those of ``paths`` (label map, segmentation, CSV report of an export) that exist and differ from what the export
    whose JSON ``report`` this is wrote (its ``file_sha256``; one that cannot be read counts as changed); ``[]`` for a
    report of an older version, without ``file_sha256``, which is taken at its word."""
    recorded = report.get("file_sha256")
    if not isinstance(recorded, dict):
        return []
    changed = []
    for path in map(Path, paths):
        if not path.exists():
            continue
        try:
            same = recorded.get(path.name) == _sha256(path)
        except OSError:  # a folder of that name, a file that cannot be read
            same = False
        if not same:
            changed.append(path)
    return changed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _writeSegmentation(segmentationNode, rows: list[candidateTable.CandidateRow], path: Path, referenceVolume, voxels):
    """Write the segments of ``rows`` (the included candidates) to ``path``, each named and coded as a microbleed of
    the result: one included at an export ``threshold`` below the review's is presented in the scene as below it.

    The file lies in the frame of the label map, ``referenceVolume``'s own. Where the segmentation lies in another
    (a transform hardened on the volume alone, or on the segmentation alone) each segment is written as its ``voxels``
    on the volume's grid (those of the label map): copied as they are, they lay off the label map and the scan by the
    transform."""
    ensureSegmentationConverters()
    scene = segmentationNode.GetScene()
    copy = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    from slicer import vtkSegment, vtkSegmentationConverter

    name = vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    toVolumeFrame = segmentationToVolumeFrame(segmentationNode, referenceVolume)
    sameFrame = toVolumeFrame is not None and np.allclose(toVolumeFrame, np.eye(4), atol=1e-9)
    if sameFrame:  # same reference geometry as the reviewed segmentation, so the file opens on the input's grid
        geometry = segmentationNode.GetSegmentation().GetConversionParameter(name)
    else:
        extent = [0, -1] * 3
        extent[1::2] = [n - 1 for n in referenceVolume.GetImageData().GetDimensions()]
        geometry = vtkSegmentationConverter.SerializeImageGeometry(numpyToMatrix(ijkToRas(referenceVolume)), extent)
    copy.GetSegmentation().SetConversionParameter(name, geometry)
    algorithm = algorithmNameOf(segmentationNode)
    source = segmentationNode.GetSegmentation()
    for row, own in zip(rows, voxels, strict=True):
        if sameFrame:
            copy.GetSegmentation().CopySegmentFromSegmentation(source, row.segmentId)
        else:
            original = source.GetSegment(row.segmentId)
            segment = vtkSegment()
            segment.DeepCopyMetadata(original)  # name, colour, tags
            segment.SetTerminology(original.GetTerminology())
            segment.SetLabelValue(1)
            lo, hi = own.min(axis=0), own.max(axis=0) + 1
            mask = np.zeros(hi - lo, dtype=np.uint8)
            mask[tuple((own - lo).T)] = 1
            segment.AddRepresentation(BINARY_LABELMAP, orientedImage(mask, lo, ijkToRas(referenceVolume)))
            copy.GetSegmentation().AddSegment(segment, row.segmentId)
        segment = copy.GetSegmentation().GetSegment(row.segmentId)
        segmentPresentation.presentSegment(segment, row.status, True, row.probability is not None, algorithm)
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    with atomicPath(path) as tmp:
        storage.SetFileName(str(tmp))
        if not storage.WriteData(copy):
            raise OSError(f"could not write {path}")


def _sphereDiameter(volumeMm3: float) -> float:
    """Diameter (mm) of the sphere of ``volumeMm3``."""
    return (6.0 * volumeMm3 / math.pi) ** (1.0 / 3.0)


def _placementNotes(referenceVolume, inputGrid, affine) -> tuple[str, ...]:
    """A note when the volume lies elsewhere than its NIfTI file places it for other tools (``inputGrid``, see
    :func:`volumeIO.fileGrid`): the files follow Slicer's placement, so those tools show them off the scan."""
    moved = inputGrid.movedMm if inputGrid is not None else None
    if moved is None or moved <= sameGridToleranceMm(affine):
        return ()
    path = loadedFile(referenceVolume)
    return (
        f"'{referenceVolume.GetName()}' lies up to {moved:.1f} mm from where its file {path.name} places it for "
        "tools that read its sform (FSL, nibabel, plkd predict; Slicer reads the qform when the two differ): the "
        f"label map and centres follow the volume as Slicer places it, so those tools show them up to {moved:.1f} mm "
        "off the scan",
    )


def _movedNotes(segmentationNode, rows, voxels, records, affine) -> tuple[str, ...]:
    """One note per exported candidate whose segment's centre lies more than :data:`MOVED_MM` from where the engine
    found it (:data:`candidateTable.TAG_ENGINE_CENTRE`): its probability, location and region, which the report gives,
    describe that place, not the microbleed the segment now holds. Pieces and copies of a candidate (``derived_from``)
    say so already; segments of older versions have no engine centre."""
    segmentation = segmentationNode.GetSegmentation()
    notes = []
    for row, own, record in zip(rows, voxels, records, strict=True):
        segment = segmentation.GetSegment(row.segmentId)
        engine = segmentTag(segment, candidateTable.TAG_ENGINE_CENTRE) if segment is not None else ""
        if not engine or record["derived_from"] is not None:
            continue
        try:
            found = [float(v) for v in engine.split()]
        except ValueError:
            continue
        if len(found) != 3:
            continue
        moved = float(math.dist(affine[:3, :3] @ own.mean(axis=0), affine[:3, :3] @ found))
        if moved > MOVED_MM:
            notes.append(
                f"microbleed {record['label']} ({record['segment']}) lies {moved:.1f} mm from where the engine found "
                "its candidate (repainted or merged): its probability, location and region are the engine's for that "
                "place"
            )
    return tuple(notes)


def _pieceNotes(labels, voxels, records) -> tuple[str, ...]:
    """One note per microbleed whose label in the label map ``labels`` falls into separate pieces (a second dot painted
    into its segment, a segment cut in two by a smaller one drawn across it): the report counts it once, while a count
    of the label map's pieces (``plkd evaluate``, VALDO: 26-connectivity) takes each piece for a microbleed."""
    notes = []
    for record, own in zip(records, voxels, strict=True):
        label = record["label"]
        count = countPieces(own[labels[tuple(own.T)] == label])
        if count > 1:
            notes.append(
                f"microbleed {label} ({record['segment']}) is {count} separate pieces in the label map, which a count "
                f"of its pieces (plkd evaluate, VALDO) takes for {count} microbleeds: split them into segments "
                "(Segment Editor, Islands) if they are, else join or erase them"
            )
    return tuple(notes)


def _otherModelNotes(segmentationNode, rows, records) -> tuple[str, ...]:
    """One note per exported microbleed a click outlined with another model than the result's (its segment's
    :data:`candidateTable.TAG_MODEL`, see ``clickReview.applyClickResult``): the report names the result's model."""
    resultModel = modelChoiceOf(segmentationNode).get("model")
    segmentation = segmentationNode.GetSegmentation()
    notes = []
    for row, record in zip(rows, records, strict=True):
        segment = segmentation.GetSegment(row.segmentId)
        clickModel = segmentTag(segment, candidateTable.TAG_MODEL) if segment is not None else ""
        if clickModel and resultModel and not sameModel(clickModel, resultModel):
            notes.append(
                f"microbleed {record['label']} ({record['segment']}) was {otherModelText(clickModel, resultModel)} "
                "(a click while another model was chosen)"
            )
    return tuple(notes)


def _sharedNameNotes(records: list[dict]) -> tuple[str, ...]:
    """One note per name that several exported microbleeds share (a segment renamed in the Segment Editor to the name
    of another): the report, the ``.seg.nrrd`` and Slicer's lists named two microbleeds alike without a word."""
    labels: dict[str, list[int]] = {}
    for record in records:
        labels.setdefault(record["segment"], []).append(record["label"])
    return tuple(
        f"microbleeds {' and '.join(str(n) for n in numbers)} share the name '{name}' (a segment renamed so): tell "
        "them apart by their label and candidate_id"
        for name, numbers in labels.items()
        if len(numbers) > 1
    )


def _missingSegmentNotes(segmentationNode, tableNode, erased) -> tuple[str, ...]:
    """One note per microbleed the reader kept (accepted, added) whose segment is gone from the segmentation, or
    is among the ``erased`` rows (its segment emptied in the Segment Editor).

    Deleted, moved to another segmentation or erased, it was left out of the report without a word while the table
    still called it accepted.
    """
    segmentation = segmentationNode.GetSegmentation()
    kept = (candidateTable.STATUS_ACCEPTED, candidateTable.STATUS_ADDED)
    erasedIds = {row.segmentId for row in erased}
    notes = []
    for row in candidateTable.readRows(tableNode):
        if row.status not in kept:
            continue
        if segmentation.GetSegment(row.segmentId) is None:
            why = "has no segment '{}' in '{}' any more (deleted, or moved to another segmentation)"
        elif row.segmentId in erasedIds:
            why = "has its segment '{}' in '{}' erased to nothing"
        else:
            continue
        notes.append(
            f"candidate {row.candidateId} ({row.status}) "
            + why.format(row.segmentId, segmentationNode.GetName())
            + ": not exported"
        )
    return tuple(notes)


def _record(
    number: int, row: candidateTable.CandidateRow, segmentationNode, centreRas: tuple, volumeMm3: float
) -> dict:
    segment = segmentationNode.GetSegmentation().GetSegment(row.segmentId)
    return {
        "label": number,
        "candidate_id": row.candidateId,
        "segment": segmentPresentation.baseName(segment.GetName()) if segment is not None else "",
        "r_mm": round(centreRas[0], 3),
        "a_mm": round(centreRas[1], 3),
        "s_mm": round(centreRas[2], 3),
        "volume_mm3": round(volumeMm3, 3),
        "probability": None if row.probability is None else round(row.probability, 4),
        "status": row.status,
        "location": row.location or None,
        "region": row.region or None,
        # The candidate an island was split off (Segment Editor, Islands effect) or a clone copied from, else None.
        "derived_from": _intOrNone(segmentTag(segment, candidateTable.TAG_DERIVED_FROM) if segment is not None else ""),
        # How the engine outlined it ("network", "intensity": a large microbleed's dark spot); None when painted by hand
        # or imported by an older version. Its volume is the segment's as the reader left it, whatever the outline.
        "outline": (segmentTag(segment, candidateTable.TAG_OUTLINE) or None) if segment is not None else None,
    }


def _intOrNone(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _writeCsv(records: list[dict], path: Path, inputFile: str | None) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        row = {**record, "input_file": inputFile}
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in REPORT_COLUMNS})
    writeTextAtomic(path, buffer.getvalue())
