"""The candidate table: one row per microbleed candidate, kept in the scene as a ``vtkMRMLTableNode``.

The table is the record of the review: saving the scene (or the table as ``.tsv``) saves every status.
Segments carry the same candidate id and status as tags, so a ``.seg.nrrd`` saved alone keeps them too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import vtk

# Review statuses (stored as these strings in files: do not translate them).
STATUS_NOT_SEEN = "not yet seen"
STATUS_ACCEPTED = "accepted"
STATUS_REJECTED = "rejected"
STATUS_ADDED = "added by reader"
STATUSES = (STATUS_NOT_SEEN, STATUS_ACCEPTED, STATUS_REJECTED, STATUS_ADDED)

# Segment tags and node attributes.
TAG_CANDIDATE_ID = "CMBSegmentation.CandidateID"
TAG_STATUS = "CMBSegmentation.Status"
TAG_PROBABILITY = "CMBSegmentation.Probability"
TAG_ORIGIN = "CMBSegmentation.Origin"  # "reader" on a microbleed the reader added
ORIGIN_READER = "reader"
ATTRIBUTE_ROLE = "CMBSegmentation.Role"
ROLE_CANDIDATES = "candidates"
#: Probability threshold the engine ran with: candidates below it were never imported.
ATTRIBUTE_RUN_THRESHOLD = "CMBSegmentation.RunThreshold"
#: The reader's review threshold: saved with the table, so a reloaded scene exports what the reader saw.
ATTRIBUTE_REVIEW_THRESHOLD = "CMBSegmentation.ReviewThreshold"
#: The engine's notes (JSON list of strings) of the run that made this table.
ATTRIBUTE_NOTES = "CMBSegmentation.Notes"
#: The model that analysed the scan and the contrast decided for it (JSON ``{"model": str, "modality": {...}}``,
#: the engine's ``model`` and ``modality``; on the table and its segmentation; absent in results of older versions).
ATTRIBUTE_MODEL = "CMBSegmentation.Model"
#: What the engine's run found before any threshold and what it applied (JSON ``{"n_candidates": int, "thresholds":
#: {"screening": float, "segmentation": float}}``, from its candidates file; on the table and its segmentation; absent
#: in results of older versions): the batch summary's candidate count and thresholds.
ATTRIBUTE_ENGINE_RUN = "CMBSegmentation.EngineRun"
REFERENCE_SEGMENTATION = "CMBSegmentation.Segmentation"
#: Set on the segmentation and its table by each import: a table of an earlier run into the same segmentation
#: (replaced since) has another value, and its statuses must not be applied to the new segments.
ATTRIBUTE_RUN_ID = "CMBSegmentation.RunID"
#: Set on a segmentation by its first export when another segmentation of the scene is a copy of the same review
#: (the same run id: one saved review loaded twice, e.g. two readers' copies to compare): the export of one copy
#: then never replaces the other's. Without it a result's review id is its run id.
ATTRIBUTE_REVIEW_ID = "CMBSegmentation.ReviewID"
#: The same run id as a segment tag: a segment moved or copied into another result (Segmentations module) keeps the
#: run it came from, so it is not taken for a model candidate of the result it lands in.
TAG_RUN_ID = "CMBSegmentation.RunID"
#: The engine's location class and region of a candidate, kept on its segment as in its row: a row deleted, or a
#: whole table, comes back with them.
TAG_LOCATION = "CMBSegmentation.Location"
TAG_REGION = "CMBSegmentation.Region"
#: How the engine outlined a candidate: "network" (the segmenter's mask) or "intensity" (the dark spot's intensity
#: region, for large microbleeds whose network mask held a rim; the engine JSON's per-candidate ``segmentation``).
#: Absent on a segment painted by hand and in results of older versions.
TAG_OUTLINE = "CMBSegmentation.Outline"
OUTLINES = ("network", "intensity")
#: Where the engine found a candidate: the centre of its voxels as ``"i j k"`` on the grid of the result's volume (voxel
#: indices stay where they are when a transform is hardened on the volume). Its probability, location and region are
#: the engine's for that place: the export notes a segment the reader moved far from it.
TAG_ENGINE_CENTRE = "CMBSegmentation.EngineCentreIJK"
#: On a segment made from a candidate by the Segment Editor's Islands effect ("Split islands to segments") or the
#: Data module's "Clone": the candidate id it was made from. It keeps that candidate's status: a piece or copy of a
#: rejected candidate stays rejected.
TAG_DERIVED_FROM = "CMBSegmentation.DerivedFrom"
#: On a microbleed a click added: the model that outlined it (the engine's ``model``), when it is not the model of the
#: result (the Model setting changed since the run): the export names it.
TAG_MODEL = "CMBSegmentation.Model"

# Column names in file order.
COLUMN_ID = "ID"
COLUMN_SEGMENT = "Segment ID"
COLUMN_R, COLUMN_A, COLUMN_S = "R", "A", "S"
COLUMN_VOLUME = "Volume (mm3)"
COLUMN_PROBABILITY = "Probability"
COLUMN_STATUS = "Status"
COLUMN_LOCATION = "Location"
COLUMN_REGION = "Region"
COLUMNS = (
    COLUMN_ID,
    COLUMN_SEGMENT,
    COLUMN_R,
    COLUMN_A,
    COLUMN_S,
    COLUMN_VOLUME,
    COLUMN_PROBABILITY,
    COLUMN_STATUS,
    COLUMN_LOCATION,
    COLUMN_REGION,
)
#: Columns a table saved by an older version may lack; they read as empty.
OPTIONAL_COLUMNS = frozenset({COLUMN_LOCATION, COLUMN_REGION})
#: Decimals kept per numeric column: the table shows what matters (0.001 mm, 0.01 mm³, 4 digits of probability)
#: instead of vtkVariant's six significant digits.
DECIMALS = {COLUMN_R: 3, COLUMN_A: 3, COLUMN_S: 3, COLUMN_VOLUME: 2, COLUMN_PROBABILITY: 4}
_NUMERIC = {COLUMN_ID, COLUMN_R, COLUMN_A, COLUMN_S, COLUMN_VOLUME, COLUMN_PROBABILITY}


@dataclass
class CandidateRow:
    """One candidate as the table stores it. ``probability`` is None for a microbleed added by the reader
    when the engine gave none."""

    candidateId: int
    segmentId: str
    centerRas: tuple[float, float, float]
    volumeMm3: float
    probability: float | None
    status: str
    location: str = ""
    region: str = ""


def createCandidateTable(scene, name: str, tableNode=None):
    """Return an empty candidate table (``tableNode`` cleared and reused when given)."""
    if tableNode is None:
        tableNode = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    tableNode.RemoveAllColumns()
    for column in COLUMNS:
        array = vtk.vtkDoubleArray() if column in _NUMERIC else vtk.vtkStringArray()
        array.SetName(column)
        tableNode.AddColumn(array)
    tableNode.SetAttribute(ATTRIBUTE_ROLE, ROLE_CANDIDATES)
    tableNode.SetUseColumnTitleAsColumnHeader(True)
    return tableNode


def isCandidateTable(tableNode) -> bool:
    """Whether ``tableNode`` is a candidate table made by this module, with its columns.

    A table whose file could not be read when its scene was loaded (a ``.tsv`` missing beside the ``.mrml``) keeps
    its attributes but no columns: taken as the result's table, it stopped every review action and the export
    with "has no column 'ID'" although the segments held the review (see ``reviewState.rebuildTable``).
    """
    if tableNode is None or tableNode.GetAttribute(ATTRIBUTE_ROLE) != ROLE_CANDIDATES:
        return False
    table = tableNode.GetTable()
    present = {table.GetColumn(c).GetName() for c in range(table.GetNumberOfColumns())}
    return set(COLUMNS) - OPTIONAL_COLUMNS <= present


def lostItsColumns(tableNode) -> bool:
    """Whether ``tableNode`` was made as a candidate table but lacks its columns now (see :func:`isCandidateTable`)."""
    return (
        tableNode is not None
        and tableNode.GetAttribute(ATTRIBUTE_ROLE) == ROLE_CANDIDATES
        and not isCandidateTable(tableNode)
    )


def segmentationOfTable(tableNode):
    """The segmentation whose candidates ``tableNode`` lists, or None."""
    return tableNode.GetNodeReference(REFERENCE_SEGMENTATION) if tableNode is not None else None


def belongsTo(tableNode, segmentationNode) -> bool:
    """Whether ``tableNode`` may describe the segments of ``segmentationNode``: not a table of another
    segmentation, nor of an earlier run into this one (its segment ids name segments of the new run, so its
    statuses would hide and drop them). When either node has no run id (a ``.tsv`` or ``.seg.nrrd`` loaded alone,
    older scenes), the table must give each of its segments the candidate id and probability the segment's tags
    keep: a table of another run on the same volume numbers its candidates alike ("Microbleed_100", ...), and its
    statuses would land on other microbleeds."""
    owner = segmentationOfTable(tableNode)
    if owner is not None and owner is not segmentationNode:
        return False
    tableRun = tableNode.GetAttribute(ATTRIBUTE_RUN_ID) if tableNode is not None else None
    segmentationRun = segmentationNode.GetAttribute(ATTRIBUTE_RUN_ID) if segmentationNode is not None else None
    if tableRun and segmentationRun:
        return tableRun == segmentationRun
    return tableNode is None or segmentationNode is None or _tagsAgree(tableNode, segmentationNode)


def _tagsAgree(tableNode, segmentationNode) -> bool:
    segmentation = segmentationNode.GetSegmentation()
    tolerance = 0.5 * 10.0 ** -DECIMALS[COLUMN_PROBABILITY]  # the table keeps the probability rounded
    for row in readRows(tableNode):
        segment = segmentation.GetSegment(row.segmentId)
        if segment is None:
            continue
        candidateId, probability = vtk.reference(""), vtk.reference("")
        if segment.GetTag(TAG_CANDIDATE_ID, candidateId) and str(candidateId) != str(row.candidateId):
            return False
        if segment.GetTag(TAG_PROBABILITY, probability) and row.probability is not None:
            tagged = _float(str(probability))
            if tagged is not None and abs(tagged - row.probability) > tolerance + 1e-9:
                return False
    return True


def tableOfSegmentation(scene, segmentationNode):
    """The candidate table that lists the segments of ``segmentationNode`` (the last one made), or None."""
    if segmentationNode is None:
        return None
    found = None
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLTableNode")):
        tableNode = scene.GetNthNodeByClass(i, "vtkMRMLTableNode")
        if (
            isCandidateTable(tableNode)
            and segmentationOfTable(tableNode) is segmentationNode
            and belongsTo(tableNode, segmentationNode)
        ):
            found = tableNode
    return found


def appendRow(tableNode, row: CandidateRow) -> int:
    """Append ``row``; return its row index."""
    index = tableNode.AddEmptyRow()
    values = {
        COLUMN_ID: str(int(row.candidateId)),
        COLUMN_SEGMENT: row.segmentId,
        COLUMN_R: _number(row.centerRas[0], COLUMN_R),
        COLUMN_A: _number(row.centerRas[1], COLUMN_A),
        COLUMN_S: _number(row.centerRas[2], COLUMN_S),
        COLUMN_VOLUME: _number(row.volumeMm3, COLUMN_VOLUME),
        # A double cell cannot be empty (vtkVariant("") is 0.0): an unknown probability is stored as NaN.
        COLUMN_PROBABILITY: "nan" if row.probability is None else _number(row.probability, COLUMN_PROBABILITY),
        COLUMN_STATUS: row.status,
        COLUMN_LOCATION: row.location or "",
        COLUMN_REGION: row.region or "",
    }
    for column, text in values.items():
        columnIndex = _columnIndex(tableNode, column, required=column not in OPTIONAL_COLUMNS)
        if columnIndex >= 0:
            tableNode.SetCellText(index, columnIndex, text)
    return index


def readRows(tableNode) -> list[CandidateRow]:
    """Every row of the table, in table order (also for a table read back from a ``.tsv`` file)."""
    rows = []
    for r in range(tableNode.GetNumberOfRows()):
        probability = _value(tableNode, r, COLUMN_PROBABILITY)
        rows.append(
            CandidateRow(
                candidateId=int(_value(tableNode, r, COLUMN_ID) or 0),
                segmentId=_cell(tableNode, r, COLUMN_SEGMENT),
                centerRas=tuple(_value(tableNode, r, c) or 0.0 for c in (COLUMN_R, COLUMN_A, COLUMN_S)),
                volumeMm3=_value(tableNode, r, COLUMN_VOLUME) or 0.0,
                probability=probability,
                status=normaliseStatus(_cell(tableNode, r, COLUMN_STATUS)),
                location=_cell(tableNode, r, COLUMN_LOCATION),
                region=_cell(tableNode, r, COLUMN_REGION),
            )
        )
    return rows


def rowIndexOfSegment(tableNode, segmentId: str) -> int:
    """Row of the candidate shown by ``segmentId``, or -1."""
    column = _columnIndex(tableNode, COLUMN_SEGMENT)
    for r in range(tableNode.GetNumberOfRows()):
        if tableNode.GetCellText(r, column) == segmentId:
            return r
    return -1


def setStatusCell(tableNode, rowIndex: int, status: str) -> None:
    """Write ``status`` into the Status cell of ``rowIndex``."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    tableNode.SetCellText(rowIndex, _columnIndex(tableNode, COLUMN_STATUS), status)
    tableNode.Modified()


def setSegmentCell(tableNode, rowIndex: int, segmentId: str) -> None:
    """Write ``segmentId`` into the Segment ID cell of ``rowIndex`` (the table's Modified event is the caller's)."""
    tableNode.SetCellText(rowIndex, _columnIndex(tableNode, COLUMN_SEGMENT), segmentId)


def setMeasuredCells(tableNode, rowIndex: int, centerRas: tuple[float, float, float], volumeMm3: float) -> bool:
    """Write a candidate's centre (RAS mm, the volume's own frame) and volume (mm³) into row ``rowIndex`` where they
    differ from the cells at the table's precision (:data:`DECIMALS`); True when a cell changed. The table's
    Modified event is left to the caller (one for many rows)."""
    changed = False
    for column, value in zip((COLUMN_R, COLUMN_A, COLUMN_S, COLUMN_VOLUME), (*centerRas, volumeMm3), strict=True):
        stored = _value(tableNode, rowIndex, column)
        if stored is not None and abs(stored - round(float(value), DECIMALS[column])) < 0.5 * 10.0 ** -DECIMALS[column]:
            continue
        tableNode.SetCellText(rowIndex, _columnIndex(tableNode, column), _number(value, column))
        changed = True
    return changed


def nextCandidateId(tableNode) -> int:
    """An id no row uses yet (one more than the largest)."""
    return max((row.candidateId for row in readRows(tableNode)), default=0) + 1


def _columnIndex(tableNode, column: str, required: bool = True) -> int:
    table = tableNode.GetTable()
    for c in range(table.GetNumberOfColumns()):
        if table.GetColumn(c).GetName() == column:
            return c
    if not required:
        return -1
    raise KeyError(f"table '{tableNode.GetName()}' has no column '{column}'; is it a candidate table?")


def _cell(tableNode, rowIndex: int, column: str) -> str:
    columnIndex = _columnIndex(tableNode, column, required=column not in OPTIONAL_COLUMNS)
    return tableNode.GetCellText(rowIndex, columnIndex) if columnIndex >= 0 else ""


def _value(tableNode, rowIndex: int, column: str) -> float | None:
    """A numeric cell as the number it holds (None when empty, NaN or not a number).

    Read as text, a number cell has six significant digits (vtkVariant's): a volume of 12345.68 mm³ read 12345.7, and
    the review, which writes a measured value only where it differs from the cell, wrote it again at every refresh,
    whose table change started the next refresh, without end.
    """
    columnIndex = _columnIndex(tableNode, column, required=column not in OPTIONAL_COLUMNS)
    if columnIndex < 0:
        return None
    array = tableNode.GetTable().GetColumn(columnIndex)
    if array.IsNumeric():
        value = array.GetVariantValue(rowIndex).ToDouble()
        return value if math.isfinite(value) else None
    return _float(tableNode.GetCellText(rowIndex, columnIndex))  # a column of text (a .tsv read without its schema)


def _number(value: float, column: str) -> str:
    return repr(round(float(value), DECIMALS[column]))


def normaliseStatus(text: str) -> str:
    """A status cell as one of :data:`STATUSES`: typed in the Tables module as "Rejected" or "rejected " it must
    still reject (read as written, it counted as not yet seen and the candidate was exported)."""
    wanted = " ".join((text or "").split()).lower()
    for status in STATUSES:
        if wanted == status:
            return status
    return text or STATUS_NOT_SEEN


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
