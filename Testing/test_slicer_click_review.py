"""A click on the result under review ("Add missed microbleed") never adds a microbleed twice.

Real MRML scene (slicer-core) and, where the engine answers, a real ``plkd predict --at-ras --existing`` run with
the tiny bundle ``Testing/data/tiny-bundle``, started from the module's own command line. The volume is made here:
flat tissue in an ellipsoid, stored LPS, with four planted dark microbleeds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import vtk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "CMBSegmentation"))

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package has no MRML classes (slicer-core missing)", allow_module_level=True)

from segment_editor_effects import split_islands_to_segments  # noqa: E402

from CMBSegmentationLib import (  # noqa: E402
    candidateTable,
    clickReview,
    commandBuilder,
    inferenceJob,
    resultImport,
    reviewState,
)
from CMBSegmentationLib.volumeIO import arrayFromVolumeNode, updateVolumeNodeFromArray  # noqa: E402

BUNDLE = REPO / "Testing" / "data" / "tiny-bundle"
SHAPE = (48, 48, 32)
AFFINE = np.array([[-1.0, 0, 0, 23.5], [0, -1.0, 0, 23.5], [0, 0, 1.0, -15.5], [0, 0, 0, 1]])  # LPS-stored, 1 mm
#: Planted microbleeds (RAS mm). The first result holds A and C; B and D are missed by it.
CENTRES = {"A": (-8.0, 6.0, 2.0), "B": (8.0, -6.0, -2.0), "C": (6.0, 9.0, 4.0), "D": (-9.0, -8.0, -3.0)}
DIAMETER_MM = 3.5
#: Far (> 9 mm) from every microbleed and from the edge of the tissue: nothing is darker there.
FLAT_RAS = (0.0, 0.0, -5.0)


def _ras() -> np.ndarray:
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"), axis=-1).astype(float)
    return idx @ AFFINE[:3, :3].T + AFFINE[:3, 3]


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The image (tissue 500, dark blooming microbleeds) and each microbleed's voxels."""
    ras = _ras()
    tissue = ((ras / np.array([21.0, 21.0, 14.0])) ** 2).sum(-1) <= 1.0
    image = np.where(tissue, 500.0, 0.0)
    masks = {}
    for name, centre in CENTRES.items():
        r2 = ((ras - np.asarray(centre)) ** 2).sum(-1)
        image *= 1.0 - 0.8 * np.exp(-r2 / (2 * (DIAMETER_MM / 2.5) ** 2))
        masks[name] = r2 <= (DIAMETER_MM / 2) ** 2
    return image.astype(np.float32), masks


@pytest.fixture
def review(phantom, tmp_path):
    """A scene with the volume and a first result (A: probability 0.9, C: 0.6) as the module imports it."""
    image, masks = phantom
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "phantom T2*")
    updateVolumeNodeFromArray(volume, image, AFFINE)
    labels = np.zeros(SHAPE, np.int16)
    candidates = []
    for label, (name, probability) in enumerate((("A", 0.9), ("C", 0.6)), start=1):
        labels[masks[name]] = label
        centre = AFFINE[:3, :3] @ np.argwhere(masks[name]).mean(axis=0) + AFFINE[:3, 3]
        candidates.append({"id": 10 + label, "label": label, "center_ras": centre.tolist(),
                           "volume_mm3": float(masks[name].sum()), "probability": probability})  # fmt: skip
    first = tmp_path / "first"
    first.mkdir()
    nib.save(nib.Nifti1Image(labels, AFFINE), str(first / "phantom_cmb.nii.gz"))
    (first / "phantom_cmb.json").write_text(json.dumps({"candidates": candidates, "thresholds": {"segmentation": 0.5}}))
    result = resultImport.importResults(scene, volume, first / "phantom_cmb.nii.gz", first / "phantom_cmb.json")
    segmentOf = dict(zip("AC", result.segmentIds, strict=True))
    return scene, volume, result.segmentationNode, result.tableNode, segmentOf, tmp_path


def _click(review, name_or_ras, folder: str) -> tuple[clickReview.ClickOutcome, list[str], inferenceJob.PreparedRun]:
    """One click as the module makes it: inputs and snapshot written, engine run, its answer applied."""
    _scene, volume, seg, table, _segmentOf, tmp_path = review
    point = np.asarray(CENTRES[name_or_ras] if isinstance(name_or_ras, str) else name_or_ras) + 0.7  # ~1.2 mm off
    prepared = clickReview.prepareClickInputs(volume, seg, table, tmp_path / folder)
    argv = commandBuilder.buildSinglePointCommand(
        sys.executable, prepared.inputPath, prepared.outputDir, tuple(point), modelPath=BUNDLE, device="CPU",
        existingPath=prepared.existingPath,
    )  # fmt: skip
    inferenceJob.runBlocking(argv)
    outcome = clickReview.applyClickResult(
        seg, table, prepared.outputs.labelMap, prepared.outputs.candidates, tuple(point), prepared.existingPath,
        reviewState.reviewThreshold(table),
    )  # fmt: skip
    return outcome, argv, prepared


def _segmentMask(seg, segment_id, volume) -> np.ndarray:
    labelNode = seg.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg, ids, labelNode, volume)
    mask = arrayFromVolumeNode(labelNode) > 0
    seg.GetScene().RemoveNode(labelNode)
    return mask


def _status(table, segment_id) -> str:
    return candidateTable.readRows(table)[candidateTable.rowIndexOfSegment(table, segment_id)].status


def _paint(seg, segment_id, mask) -> None:
    """What the Segment Editor does: replace a segment's voxels."""
    image = resultImport.orientedImage(mask.astype(np.uint8), np.zeros(3, int), AFFINE)
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, seg, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
    )


def test_click_on_a_rejected_microbleed_accepts_it_and_adds_no_segment(review):
    _scene, _volume, seg, table, segmentOf, _ = review
    reviewState.reject(seg, table, segmentOf["A"])
    before = seg.GetSegmentation().GetNumberOfSegments()
    outcome, argv, _prepared = _click(review, "A", "clickA")
    assert any(a.startswith("--existing=") and a.endswith(clickReview.SNAPSHOT_LABELS) for a in argv)
    assert outcome.kind == clickReview.EXISTING and outcome.segmentId == segmentOf["A"]
    assert (outcome.previousStatus, outcome.status) == (candidateTable.STATUS_REJECTED, candidateTable.STATUS_ACCEPTED)
    assert seg.GetSegmentation().GetNumberOfSegments() == before
    assert len(candidateTable.readRows(table)) == before
    assert _status(table, segmentOf["A"]) == candidateTable.STATUS_ACCEPTED
    segment = seg.GetSegmentation().GetSegment(segmentOf["A"])
    assert resultImport.segmentTag(segment, candidateTable.TAG_STATUS) == candidateTable.STATUS_ACCEPTED
    assert seg.GetDisplayNode().GetSegmentVisibility(segmentOf["A"])  # rejected was hidden: shown again


def test_click_elsewhere_adds_one_reader_segment_on_the_microbleed(review, phantom):
    _scene, volume, seg, table, segmentOf, _ = review
    before = seg.GetSegmentation().GetNumberOfSegments()
    outcome, _argv, prepared = _click(review, "B", "clickB")
    assert outcome.kind == clickReview.ADDED and outcome.segmentation in ("network", "intensity")
    assert seg.GetSegmentation().GetNumberOfSegments() == before + 1
    segment = seg.GetSegmentation().GetSegment(outcome.segmentId)
    assert resultImport.segmentTag(segment, candidateTable.TAG_ORIGIN) == candidateTable.ORIGIN_READER
    assert _status(table, outcome.segmentId) == candidateTable.STATUS_ADDED
    mask = _segmentMask(seg, outcome.segmentId, volume)
    engineLabels = np.asarray(nib.load(str(prepared.outputs.labelMap)).dataobj)
    assert mask.any() and np.array_equal(mask, engineLabels == 1)  # the engine's outline, voxel for voxel
    assert (mask & phantom[1]["B"]).any() and not (mask & (phantom[1]["A"] | phantom[1]["C"])).any()
    # Clicking B again finds the reader's own microbleed: nothing is added the second time.
    again, _argv, _prepared = _click(review, "B", "clickB2")
    assert again.kind == clickReview.EXISTING and again.segmentId == outcome.segmentId
    assert seg.GetSegmentation().GetNumberOfSegments() == before + 1
    assert _status(table, outcome.segmentId) == candidateTable.STATUS_ADDED


def test_click_on_a_segment_painted_by_hand_takes_it_into_the_review(review, phantom):
    _scene, volume, seg, table, _segmentOf, _ = review
    painted = seg.GetSegmentation().AddEmptySegment("", "Painted")  # Segment Editor: new segment, no table row
    _paint(seg, painted, phantom[1]["D"])
    before = seg.GetSegmentation().GetNumberOfSegments()
    outcome, _argv, _prepared = _click(review, "D", "clickD")
    assert outcome.kind == clickReview.EXISTING and outcome.segmentId == painted
    assert (outcome.previousStatus, outcome.status) == ("", candidateTable.STATUS_ADDED)
    assert seg.GetSegmentation().GetNumberOfSegments() == before
    assert _status(table, painted) == candidateTable.STATUS_ADDED
    assert np.array_equal(_segmentMask(seg, painted, volume), phantom[1]["D"])  # the reader's voxels, untouched


def test_click_where_nothing_is_dark_adds_nothing(review):
    _scene, _volume, seg, table, _segmentOf, _ = review
    before = seg.GetSegmentation().GetNumberOfSegments()
    outcome, _argv, _prepared = _click(review, np.asarray(FLAT_RAS) - 0.7, "clickFlat")
    assert outcome == clickReview.ClickOutcome(clickReview.NOTHING)
    assert seg.GetSegmentation().GetNumberOfSegments() == len(candidateTable.readRows(table)) == before


def test_snapshot_is_the_review_as_the_reader_left_it(review, phantom):
    """Edits count, rejected (hidden) segments count, and the snapshot leaves nothing in the scene."""
    scene, volume, seg, table, segmentOf, tmp_path = review
    grown = phantom[1]["C"] | np.roll(phantom[1]["C"], 3, axis=0)  # the reader grew C by 3 voxels along i
    _paint(seg, segmentOf["C"], grown)
    reviewState.reject(seg, table, segmentOf["A"])
    nodes = scene.GetNumberOfNodes()
    path = clickReview.writeReviewSnapshot(seg, table, volume, tmp_path / "snap")
    assert scene.GetNumberOfNodes() == nodes
    image = nib.load(str(path))
    assert np.allclose(image.affine, AFFINE) and image.shape == SHAPE
    labels = np.asarray(image.dataobj)
    records = json.loads(path.with_name(clickReview.SNAPSHOT_CANDIDATES).read_text())["candidates"]
    bySegment = {r["segment_id"]: r for r in records}
    assert set(bySegment) == set(segmentOf.values())
    assert np.array_equal(labels == bySegment[segmentOf["A"]]["label"], phantom[1]["A"])  # rejected, hidden
    assert np.array_equal(labels == bySegment[segmentOf["C"]]["label"], grown)  # as edited
    assert bySegment[segmentOf["A"]]["status"] == candidateTable.STATUS_REJECTED
    assert bySegment[segmentOf["C"]]["id"] == candidateTable.readRows(table)[1].candidateId
    assert bySegment[segmentOf["C"]]["voxels"] == int(grown.sum())


def test_click_command_passes_the_snapshot_in_the_equals_form():
    build = commandBuilder.buildSinglePointCommand
    argv = build("py", "a.nii.gz", "o", (-1.0, 2.0, 3.0), existingPath="-x/r_cmb.nii.gz")
    assert argv[-2:] == ["--at-ras=-1.0,2.0,3.0", "--existing=-x/r_cmb.nii.gz"]
    assert not any(a.startswith("--existing") for a in build("py", "a", "o", (0, 0, 0)))


def test_a_click_on_an_island_split_off_a_rejected_candidate_accepts_it_as_that_candidate_s(review):
    # An island split off a candidate (Segment Editor, Islands effect) and clicked before the review list took it in
    # was claimed as the reader's own microbleed: it takes the candidate's kind, and the click accepts it.
    _scene, volume, seg, table, segmentOf, tmp_path = review
    reviewState.reject(seg, table, segmentOf["A"])
    piece = ((_ras() - np.asarray(CENTRES["D"])) ** 2).sum(-1) <= 1.0  # smaller than A: split off A
    _paint(seg, segmentOf["A"], _segmentMask(seg, segmentOf["A"], volume) | piece)
    (island,) = split_islands_to_segments(seg, volume, segmentOf["A"])
    prepared = clickReview.prepareClickInputs(volume, seg, table, tmp_path / "clickIsland")
    snapshot = json.loads(prepared.existingPath.with_name(clickReview.SNAPSHOT_CANDIDATES).read_text())
    label = next(c["label"] for c in snapshot["candidates"] if c["segment_id"] == island)
    # The engine's answer (docs/design.md "Click"): the microbleed under the click is that label of the snapshot.
    answer = tmp_path / "answer_cmb.json"
    answer.write_text(json.dumps({"candidates": [{"id": 1, "label": 1, "center_ras": list(CENTRES["D"]),
                                                  "volume_mm3": float(piece.sum()), "probability": 0.8,
                                                  "existing_label": label}]}))  # fmt: skip
    outcome = clickReview.applyClickResult(
        seg, table, prepared.outputs.labelMap, answer, CENTRES["D"], prepared.existingPath,
        reviewState.reviewThreshold(table),
    )  # fmt: skip
    assert outcome.kind == clickReview.EXISTING and outcome.segmentId == island
    assert (outcome.previousStatus, outcome.status) == (candidateTable.STATUS_REJECTED, candidateTable.STATUS_ACCEPTED)
    segment = seg.GetSegmentation().GetSegment(island)
    assert resultImport.segmentTag(segment, candidateTable.TAG_ORIGIN) != candidateTable.ORIGIN_READER
    aRow = candidateTable.readRows(table)[candidateTable.rowIndexOfSegment(table, segmentOf["A"])]
    assert resultImport.segmentTag(segment, candidateTable.TAG_DERIVED_FROM) == str(aRow.candidateId)
    assert _status(table, segmentOf["A"]) == candidateTable.STATUS_REJECTED  # the rest of A stays rejected
