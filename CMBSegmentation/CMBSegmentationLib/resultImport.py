"""Import the engine's results (``NAME_cmb.nii.gz`` + ``NAME_cmb.json``) into the MRML scene.

One segment per kept microbleed ("Microbleed 1", ...) with colour, DICOM terminology and review tags, on
the input volume's reference geometry, plus the candidate table. Candidates the model rejected (label 0)
have no voxels and are not imported.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import vtk
from vtkmodules.util import numpy_support

from CMBSegmentationLib import candidateTable, scanRegistration, segmentPresentation
from CMBSegmentationLib.volumeIO import gridDisplacementMm, ijkToRas, numpyToMatrix, readNifti, sameGridToleranceMm

# DICOM codes of a microbleed of the result (see segmentPresentation, which also gives excluded candidates theirs).
TERMINOLOGY_ENTRY = segmentPresentation.TERMINOLOGY_MICROBLEED
COLOR_MODEL = (0.55, 0.05, 0.05)  # dark red, like haemosiderin on T2*
COLOR_ADDED = (1.0, 0.55, 0.0)  # orange: easy to tell the reader's additions apart
BINARY_LABELMAP = "Binary labelmap"


class ResultFormatError(ValueError):
    """The engine's output files do not follow the contract of docs/design.md."""


class OutputNotEmptyError(ValueError):
    """The chosen output nodes hold something a run would replace, and replacing was not allowed."""


@dataclass
class ImportedResult:
    """What :func:`importResults` created or filled."""

    segmentationNode: object
    tableNode: object
    segmentIds: list[str] = field(default_factory=list)
    #: The engine's notes (warnings such as a modality mismatch or a capped candidate count).
    notes: list[str] = field(default_factory=list)
    #: The model and the contrast decided for the scan (:func:`readModelChoice`).
    modelChoice: dict = field(default_factory=dict)


def readCandidates(path: str | os.PathLike[str]) -> dict:
    """Read and check ``NAME_cmb.json``; candidates come back sorted by label."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultFormatError(f"cannot read candidates file {path}: {exc}") from exc
    candidates = data.get("candidates") if isinstance(data, dict) else None
    if not isinstance(candidates, list):
        raise ResultFormatError(f"{path}: no 'candidates' list")
    for c in candidates:
        missing = {"id", "label", "center_ras", "volume_mm3", "probability"} - set(c)
        if missing:
            raise ResultFormatError(f"{path}: candidate without {', '.join(sorted(missing))}")
        if len(c["center_ras"]) != 3:
            raise ResultFormatError(f"{path}: candidate {c['id']} has no 3D centre")
    return data


def readNotes(data: dict) -> list[str]:
    """The engine's ``notes`` of a candidates file's content, as strings (absent in older outputs)."""
    notes = data.get("notes") if isinstance(data, dict) else None
    return [str(n) for n in notes if str(n).strip()] if isinstance(notes, list) else []


def readModelChoice(data: dict) -> dict:
    """``{"model": name, "modality": {...}}`` of a candidates file's content: the bundle that analysed the scan and
    the engine's decision on its contrast (``modality``, ``source``, ``reason``, ``model_modality``, ...); a key is
    None when the file lacks it (older outputs)."""
    data = data if isinstance(data, dict) else {}
    model, modality = data.get("model"), data.get("modality")
    return {"model": str(model) if model else None, "modality": modality if isinstance(modality, dict) else None}


def readEngineRun(data: dict) -> dict:
    """``{"n_candidates": N, "thresholds": {...}}`` of a candidates file's content: how many candidates the engine
    judged (kept or not) and the thresholds it applied (``{}`` when the file has none)."""
    data = data if isinstance(data, dict) else {}
    applied = data.get("thresholds") if isinstance(data.get("thresholds"), dict) else {}
    thresholds = {str(k): v for k, v in applied.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"n_candidates": len(data.get("candidates") or []), "thresholds": thresholds}


def _jsonObjectAttribute(node, attribute) -> dict:
    """The JSON object stored in ``node``'s ``attribute`` by the import; ``{}`` when absent, unreadable or not an
    object (a result of an older version)."""
    text = node.GetAttribute(attribute) if node is not None else None
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def engineRunOf(node) -> dict:
    """What :func:`readEngineRun` recorded on a candidate table or its segmentation at the import (``{}`` for a
    result of an older version)."""
    return _jsonObjectAttribute(node, candidateTable.ATTRIBUTE_ENGINE_RUN)


def engineNotesOf(*nodes) -> list[str]:
    """The engine's notes of the run recorded by the import on the first of ``nodes`` (a candidate table, its
    segmentation) that holds them; ``[]`` for a result of an older version or a ``.seg.nrrd`` loaded alone."""
    for node in nodes:
        text = node.GetAttribute(candidateTable.ATTRIBUTE_NOTES) if node is not None else None
        try:
            notes = json.loads(text) if text else None
        except ValueError:
            notes = None
        if isinstance(notes, list):
            return [str(n) for n in notes]
    return []


def modelChoiceOf(node) -> dict:
    """The model choice recorded on a candidate table or its segmentation by the import (``{}`` for a result of an
    older version)."""
    return _jsonObjectAttribute(node, candidateTable.ATTRIBUTE_MODEL)


def sameModel(first: str, second: str) -> bool:
    """Whether two of the engine's ``model`` values ("NAME (PATH)" for a bundle found by its path) name one model: the
    same name, wherever the bundle lies (an installed bundle's path differs from one computer to the next)."""
    return first == second or first.split(" (", 1)[0] == second.split(" (", 1)[0]


def otherModelText(clickModel: str, resultModel: str) -> str:
    """How the status line and the export say that ``clickModel`` outlined a microbleed of a result of
    ``resultModel``."""
    return f"outlined by the model '{clickModel}', not by the result's '{resultModel}'"


def algorithmNameOf(segmentationNode) -> str | None:
    """The DICOM SegmentAlgorithmName of the engine's segments of this result: the module and its run's model (None
    when the segmentation does not record the model, see :func:`segmentPresentation.algorithmName`)."""
    return segmentPresentation.algorithmName(modelChoiceOf(segmentationNode).get("model"))


def reviewedModality(node, chosen: str) -> str:
    """The Modality ("T2*" or "SWI") of a click on the result ``node`` (its segmentation or table) holds: the contrast
    its run decided, so that the engine takes the model that made the result; ``chosen`` (the module's Modality
    choice) for a result of an older version, which recorded none."""
    decision = modelChoiceOf(node).get("modality")
    contrast = decision.get("modality") if isinstance(decision, dict) else None
    return {"T2S": "T2*", "SWI": "SWI"}.get(str(contrast), chosen)


def describeModelChoice(choice: dict) -> str:
    """The choice as the engine's line says it: ``"SWI model (sidecar SequenceName '*swi3d1r')"``,
    ``"T2* model for an SWI scan (...)"``, with the engine's ``model_reason`` after the reason when the installed SWI
    model handed thick slices to the T2* one; ``""`` when the choice is unknown."""
    decision = choice.get("modality") if isinstance(choice, dict) else None
    if not isinstance(decision, dict) or not decision.get("modality"):
        return ""
    shown = {"T2S": "T2*"}
    scan = str(decision["modality"])
    used = str(decision.get("model_modality") or scan)
    text = f"{shown.get(used, used)} model"
    if used != scan:
        text += f" for {'an' if scan == 'SWI' else 'a'} {shown.get(scan, scan)} scan"
    why = decision.get("reason") or decision.get("source") or "no reason recorded"
    handOver = decision.get("model_reason")
    return f"{text} ({why}" + (f"; {handOver}" if handOver else "") + ")"


def existingContent(segmentationNode, tableNode) -> list[str]:
    """What a run writing into these nodes would replace, one line each (empty: nothing is lost).

    A segmentation with segments, a table with rows; a table holding review decisions says how many.
    """
    found = []
    if segmentationNode is not None:
        count = segmentationNode.GetSegmentation().GetNumberOfSegments()
        if count:
            found.append(f"segmentation '{segmentationNode.GetName()}' has {count} segment(s)")
        # Chosen without its table (the table selector cleared): replacing its segments loses the review all the same.
        own = candidateTable.tableOfSegmentation(segmentationNode.GetScene(), segmentationNode)
        if count and own is not None and own is not tableNode:
            rows = candidateTable.readRows(own)
            reviewed = sum(r.status != candidateTable.STATUS_NOT_SEEN for r in rows)
            found.append(f"its review, table '{own.GetName()}', has {len(rows)} candidate(s), {reviewed} reviewed")
    if tableNode is not None and (tableNode.GetNumberOfRows() or tableNode.GetNumberOfColumns()):
        if candidateTable.isCandidateTable(tableNode):
            rows = candidateTable.readRows(tableNode)
            reviewed = sum(r.status != candidateTable.STATUS_NOT_SEEN for r in rows)
            found.append(f"table '{tableNode.GetName()}' has {len(rows)} candidate(s), {reviewed} reviewed")
        else:
            found.append(f"table '{tableNode.GetName()}' is not a candidate table")
    return found


def outputState(segmentationNode, tableNode) -> tuple:
    """A token of everything a reader can change in these output nodes (segments, their tags and voxels, table cells
    and attributes): equal tokens taken before and after a run mean nothing was changed meanwhile.

    Built from modification times, which reading never changes; a change that leaves the content as it was may still
    count as one (the safe side: the result then goes into new nodes).
    """
    segments = ()
    if segmentationNode is not None:
        segmentation = segmentationNode.GetSegmentation()
        segments = tuple(
            (
                segmentation.GetNthSegmentID(i),
                segmentation.GetNthSegment(i).GetMTime(),
                _representationTime(segmentation.GetNthSegment(i)),
            )
            for i in range(segmentation.GetNumberOfSegments())
        )
    table = tableNode.GetTable().GetMTime() if tableNode is not None else 0
    return segments, table, tableNode.GetMTime() if tableNode is not None else 0


def _representationTime(segment) -> int:
    data = segment.GetRepresentation(BINARY_LABELMAP)
    return data.GetMTime() if data is not None else 0


def checkOutputTargets(segmentationNode, tableNode, inputNodes=(), replace: bool = False) -> None:
    """Refuse output nodes a run must not overwrite.

    Never: an input of the run (the volume, the brain mask) or a table that is not a candidate table. Without
    ``replace``: anything that holds content (see :func:`existingContent`). Raises :class:`OutputNotEmptyError`.
    """
    for node in (segmentationNode, tableNode):
        if node is not None and any(node is n for n in inputNodes if n is not None):
            raise OutputNotEmptyError(f"'{node.GetName()}' is an input of the run; choose another output")
    if tableNode is not None and tableNode.GetNumberOfColumns() and not candidateTable.isCandidateTable(tableNode):
        raise OutputNotEmptyError(
            f"table '{tableNode.GetName()}' is not a candidate table; choose another one or create a new one"
        )
    content = existingContent(segmentationNode, tableNode)
    if content and not replace:
        raise OutputNotEmptyError("; ".join(content) + ": not replaced (choose new output nodes)")


def referenceVolume(segmentationNode):
    """The volume a result was computed on (its reference geometry node), or None."""
    if segmentationNode is None:
        return None
    return segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())


def importResults(
    scene,
    inputVolume,
    labelMapPath: str | os.PathLike[str],
    candidatesPath: str | os.PathLike[str],
    segmentationNode=None,
    tableNode=None,
    runThreshold: float | None = None,
    replace: bool = False,
    inputNodes=(),
    replaceState: tuple | None = None,
) -> ImportedResult:
    """Fill ``segmentationNode`` and ``tableNode`` from one run of the engine.

    New nodes are created when None is passed, or for a node that is not in ``scene`` (deleted during the run; a
    note says so). Raises :class:`ResultFormatError` when ``inputVolume`` is not in ``scene``. Nodes that hold
    something are replaced only with ``replace`` (and never an input of the run or a table that is not a candidate
    table): see :func:`checkOutputTargets`. ``replaceState`` is the outputs' :func:`outputState` when the reader
    agreed to replace them: changed since (reviewed or painted while the engine ran, which the reader never agreed
    to lose), they are left as they are and the result goes into new nodes, with a note.
    The label map must lie on the input volume's grid. The segmentation is placed under the input volume's parent
    transform (the engine works in the volume's own frame). The probability the engine kept candidates from (the
    candidates file's ``thresholds.segmentation``; ``runThreshold`` for a file without one) is recorded on the
    table as the run and review threshold, as are the engine's notes.
    """
    ensureSegmentationConverters()
    if inputVolume is None or scene is None or inputVolume.GetScene() is not scene:
        name = inputVolume.GetName() if inputVolume is not None else None
        raise ResultFormatError(f"the input volume '{name}' is no longer in the scene; nothing imported")
    # Output nodes deleted while the engine ran (or of another scene): filled, they were nowhere to be seen and the
    # run's result was lost while the status line counted its microbleeds. New nodes take the result instead.
    removed = [n.GetName() for n in (segmentationNode, tableNode) if n is not None and n.GetScene() is not scene]
    if segmentationNode is not None and segmentationNode.GetScene() is not scene:
        segmentationNode = None
    if tableNode is not None and tableNode.GetScene() is not scene:
        tableNode = None
    # The reader agreed to replace the result as it was at Apply; decisions and edits made while the engine ran were
    # wiped without a word. Such a result is kept: the run goes into new nodes.
    untouched: list[str] = []
    if replace and replaceState is not None and outputState(segmentationNode, tableNode) != replaceState:
        untouched = [n.GetName() for n in (segmentationNode, tableNode) if n is not None]
        segmentationNode = tableNode = None
    checkOutputTargets(segmentationNode, tableNode, (inputVolume, *inputNodes), replace)
    data = readCandidates(candidatesPath)
    labels, affine = readNifti(labelMapPath)
    _checkSameGrid(inputVolume, labels.shape, affine, labelMapPath)
    keptRows = _keptRows(data, candidatesPath)
    baseName = inputVolume.GetName()
    if segmentationNode is None:
        segmentationNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{baseName} microbleeds")
    if tableNode is None:
        tableNode = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{baseName} microbleed candidates")
    segmentationNode.GetSegmentation().RemoveAllSegments()
    # The engine works in the volume's own frame: the results go under the volume's parent transform. This comes
    # first, because the reference geometry is stored relative to the segmentation's own transform.
    segmentationNode.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
    # Slicer also records the volume as a node reference (export and the Segment Editor find it there); be explicit.
    segmentationNode.SetNodeReferenceID(segmentationNode.GetReferenceImageGeometryReferenceRole(), inputVolume.GetID())
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()
    candidateTable.createCandidateTable(scene, tableNode.GetName(), tableNode)
    tableNode.SetNodeReferenceID(candidateTable.REFERENCE_SEGMENTATION, segmentationNode.GetID())
    runId = uuid.uuid4().hex  # a table of an earlier run into this segmentation no longer matches it
    segmentationNode.SetAttribute(candidateTable.ATTRIBUTE_RUN_ID, runId)
    # A review id of the result replaced (given by an export, see reportExport.reviewIdentity) is not this one's.
    segmentationNode.RemoveAttribute(candidateTable.ATTRIBUTE_REVIEW_ID)
    tableNode.SetAttribute(candidateTable.ATTRIBUTE_RUN_ID, runId)
    placeInSubjectHierarchy(scene, inputVolume, segmentationNode, tableNode)
    # What the engine applied (the bundle's tuned threshold, or the one it was given) is in its JSON: the value a
    # caller holds may differ (the slider moved during the run, 0 for the model's own), and a review threshold
    # above the applied one would silently drop kept microbleeds from the export.
    applied = (data.get("thresholds") or {}).get("segmentation")
    if applied is not None:
        runThreshold = applied
    threshold = 0.0 if runThreshold is None else float(runThreshold)
    # Also on the segmentation: a table rebuilt from the segments (reviewState.rebuildTable) takes them from there.
    for node in (tableNode, segmentationNode):
        node.SetAttribute(candidateTable.ATTRIBUTE_RUN_THRESHOLD, repr(threshold))
        node.SetAttribute(candidateTable.ATTRIBUTE_REVIEW_THRESHOLD, repr(threshold))
    notes = readNotes(data)
    for node in (tableNode, segmentationNode):  # as the thresholds: a table rebuilt from the segments keeps them
        node.SetAttribute(candidateTable.ATTRIBUTE_NOTES, json.dumps(notes))
    choice = readModelChoice(data)
    engineRun = readEngineRun(data)
    for node in (tableNode, segmentationNode):  # as the thresholds: a table rebuilt from the segments keeps it
        node.SetAttribute(candidateTable.ATTRIBUTE_MODEL, json.dumps(choice))
        node.SetAttribute(candidateTable.ATTRIBUTE_ENGINE_RUN, json.dumps(engineRun))
    # The run's registration to MNI of the file it read: a click on this result reuses it while the volume is unchanged.
    scanRegistration.recordRegistration(segmentationNode, data)

    result = ImportedResult(segmentationNode, tableNode, notes=list(notes), modelChoice=choice)
    if removed:  # not the engine's: shown with its notes, not stored with them
        result.notes.append(
            f"the chosen output(s) {', '.join(repr(n) for n in removed)} left the scene during the run; "
            f"the result is in '{segmentationNode.GetName()}' and '{tableNode.GetName()}'"
        )
    if untouched:
        result.notes.append(
            f"{' and '.join(repr(n) for n in untouched)} changed during the run (reviewed or edited) and were not "
            f"replaced; the result is in '{segmentationNode.GetName()}' and '{tableNode.GetName()}'"
        )
    for number, (label, row, outline) in enumerate(keptRows, start=1):
        segmentId = addCandidateSegment(
            segmentationNode,
            labels == label,
            affine,
            name=f"Microbleed {number}",
            candidateId=row.candidateId,
            status=row.status,
            probability=row.probability,
            location=row.location,
            region=row.region,
            outline=outline,
        )
        if segmentId is None:  # a kept candidate with no voxel left on the input grid
            continue
        result.segmentIds.append(segmentId)
        candidateTable.appendRow(tableNode, dataclasses.replace(row, segmentId=segmentId))
    return result


def _keptRows(data: dict, path) -> list[tuple[int, candidateTable.CandidateRow, str | None]]:
    """(label, table row without segment id, :func:`outlineOf`) of each kept candidate, by label;
    :class:`ResultFormatError` for one with a value that is not a number. Read before the scene is touched: an
    unreadable value found half way through the import left a replaced (reviewed) result half filled."""
    try:
        kept = sorted(((int(c["label"]), c) for c in data["candidates"] if int(c["label"]) > 0), key=lambda k: k[0])
        return [(label, candidateRow(c, "", candidateTable.STATUS_NOT_SEEN), outlineOf(c)) for label, c in kept]
    except (TypeError, ValueError) as exc:
        raise ResultFormatError(f"{path}: a candidate has a value that is not a number ({exc})") from exc


def outlineOf(candidate: dict) -> str | None:
    """How the engine outlined ``candidate`` (its ``segmentation``: "network" or "intensity"), or None (absent in
    outputs of older versions)."""
    value = candidate.get("segmentation") if isinstance(candidate, dict) else None
    return value if value in candidateTable.OUTLINES else None


def addCandidateSegment(
    segmentationNode,
    mask: np.ndarray,
    affine: np.ndarray,
    name: str,
    candidateId: int,
    status: str,
    probability: float | None,
    color: tuple[float, float, float] = COLOR_MODEL,
    location: str | None = None,
    region: str | None = None,
    outline: str | None = None,
) -> str | None:
    """Add one segment holding the voxels of ``mask`` (indexed ``[i, j, k]`` on the grid of ``affine``).

    The segment keeps only the bounding box of its voxels, so hundreds of candidates stay cheap; its tags keep what
    its table row says (a row or table deleted comes back from them). Returns the new segment id, or None when the
    mask is empty.
    """
    index = np.argwhere(mask)
    if index.size == 0:
        return None
    lo, hi = index.min(axis=0), index.max(axis=0) + 1
    sub = np.ascontiguousarray(mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.uint8)
    image = orientedImage(sub, lo, affine)
    segment = _newSegment(name, color, candidateId, status, probability)
    runId = segmentationNode.GetAttribute(candidateTable.ATTRIBUTE_RUN_ID)
    centre = " ".join(f"{v:.3f}" for v in index.mean(axis=0))
    for tag, value in (
        (candidateTable.TAG_ENGINE_CENTRE, centre),
        (candidateTable.TAG_RUN_ID, runId),
        (candidateTable.TAG_LOCATION, location),
        (candidateTable.TAG_REGION, region),
        (candidateTable.TAG_OUTLINE, outline),
    ):
        if value:
            segment.SetTag(tag, str(value))
    # Included, as every candidate of a run and the reader's click are: named and coded as a microbleed, with the
    # DICOM algorithm type of its review (the review changes them as it excludes it, see reviewState.updateVisibility).
    segmentPresentation.presentSegment(
        segment, status, True, probability is not None, algorithmNameOf(segmentationNode)
    )
    segment.AddRepresentation(BINARY_LABELMAP, image)
    segmentation = segmentationNode.GetSegmentation()
    segmentId = segmentation.GenerateUniqueSegmentID(f"Microbleed_{candidateId}")
    if not segmentation.AddSegment(segment, segmentId):
        raise RuntimeError(f"could not add segment {name}")
    return segmentId


def ensureSegmentationConverters() -> None:
    """Register the labelmap <-> surface conversion rules when nobody did (plain Python with ``slicer-core``).

    Slicer's Segmentations module registers them at startup; without them a segmentation cannot copy or
    create binary labelmap segments. Inside Slicer this finds them registered and does nothing.
    """
    from slicer import (
        vtkBinaryLabelmapToClosedSurfaceConversionRule,
        vtkClosedSurfaceToBinaryLabelmapConversionRule,
        vtkSegmentationConverterFactory,
    )

    factory = vtkSegmentationConverterFactory.GetInstance()
    if len(factory.GetConverterRules()) == 0:
        factory.RegisterConverterRule(vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(vtkClosedSurfaceToBinaryLabelmapConversionRule())


def segmentTag(segment, tag: str) -> str:
    """A segment tag's value ('' when absent)."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(tag, value) else ""


def _newSegment(name, color, candidateId, status, probability):
    from slicer import vtkSegment

    segment = vtkSegment()
    segment.SetName(name)
    segment.SetColor(*color)
    segment.SetTerminology(TERMINOLOGY_ENTRY)
    segment.SetTag(candidateTable.TAG_CANDIDATE_ID, str(int(candidateId)))
    segment.SetTag(candidateTable.TAG_STATUS, status)
    if probability is not None:
        segment.SetTag(candidateTable.TAG_PROBABILITY, repr(float(probability)))
    return segment


def orientedImage(sub: np.ndarray, lo: np.ndarray, affine: np.ndarray):
    """The ``[i, j, k]`` mask ``sub`` whose first voxel is ``lo`` of the grid of ``affine``, as a segment's binary
    labelmap."""
    from slicer import vtkOrientedImageData

    image = vtkOrientedImageData()
    image.SetExtent(
        int(lo[0]), int(lo[0]) + sub.shape[0] - 1, int(lo[1]), int(lo[1]) + sub.shape[1] - 1,
        int(lo[2]), int(lo[2]) + sub.shape[2] - 1,
    )  # fmt: skip
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = sub.transpose(2, 1, 0).ravel()
    image.SetImageToWorldMatrix(numpyToMatrix(affine))
    return image


def candidateRow(
    candidate: dict, segmentId: str, status: str, candidateId: int | None = None
) -> candidateTable.CandidateRow:
    """The table row of one candidate of the engine's JSON (``location``/``region`` are optional there)."""
    probability = candidate.get("probability")
    return candidateTable.CandidateRow(
        candidateId=int(candidate["id"]) if candidateId is None else int(candidateId),
        segmentId=segmentId,
        centerRas=tuple(float(v) for v in candidate["center_ras"]),
        volumeMm3=float(candidate.get("volume_mm3") or 0.0),
        probability=None if probability is None else float(probability),
        status=status,
        location=str(candidate.get("location") or ""),
        region=str(candidate.get("region") or ""),
    )


def _checkSameGrid(inputVolume, shape, affine, path) -> None:
    """Refuse a label map that does not lie on the input volume's grid, by the engine's rule (see
    :func:`volumeIO.gridDisplacementMm`): no voxel corner more than 1 % of the smallest voxel size away."""
    image = inputVolume.GetImageData()
    if image is None:
        raise ResultFormatError(f"input volume '{inputVolume.GetName()}' has no voxels")
    if tuple(image.GetDimensions()) != tuple(shape):
        raise ResultFormatError(f"{path}: grid {tuple(shape)} differs from the input's {image.GetDimensions()}")
    inputAffine = ijkToRas(inputVolume)
    moved = gridDisplacementMm(inputAffine, affine, shape)
    if moved > sameGridToleranceMm(inputAffine):
        raise ResultFormatError(
            f"{path}: its voxel-to-RAS matrix differs from the input volume's (voxels up to {moved:.3g} mm apart)"
        )


def placeInSubjectHierarchy(scene, inputVolume, *nodes) -> None:
    """Put the results beside the input volume (same patient/study), which DICOM SEG export requires."""
    from slicer import vtkMRMLSubjectHierarchyNode

    shNode = vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    if shNode is None:
        return
    volumeItem = shNode.GetItemByDataNode(inputVolume)
    if not volumeItem:  # outside Slicer the subject hierarchy plugins do not create items by themselves
        volumeItem = shNode.CreateItem(shNode.GetSceneItemID(), inputVolume)
    parent = shNode.GetItemParent(volumeItem)
    for node in nodes:
        item = shNode.GetItemByDataNode(node) or shNode.CreateItem(parent, node)
        shNode.SetItemParent(item, parent)
