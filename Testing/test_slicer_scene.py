"""The module's MRML code against a real scene (slicer-core wheel): import, review, save/reload, export.

Engine outputs are hand-written files that follow docs/design.md ("Prediction outputs") exactly.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "CMBSegmentation"))

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package has no MRML classes (slicer-core missing)", allow_module_level=True)

from segment_editor_effects import clone_segment, paint, split_islands_to_segments  # noqa: E402

from CMBSegmentationLib import (  # noqa: E402
    candidateTable,
    inferenceJob,
    reportExport,
    resultImport,
    reviewState,
    segmentPresentation,
)
from CMBSegmentationLib.volumeIO import arrayFromVolumeNode, ijkToRas, updateVolumeNodeFromArray  # noqa: E402

SHAPE = (24, 28, 10)
# Oblique, stored in LPS order (negative first two axes), thick slices (3 mm) along k.
AFFINE = np.array(
    [
        [-0.95, 0.10, 0.20, 60.0],
        [-0.12, -0.90, 0.35, 40.0],
        [0.05, -0.30, 2.95, -25.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
#: label -> voxel slices; label 5 on purpose: labels need not be consecutive.
LESIONS = {
    1: (slice(5, 7), slice(6, 8), slice(3, 5)),
    2: (slice(15, 16), slice(20, 21), slice(6, 7)),
    5: (slice(10, 13), slice(4, 6), slice(1, 2)),
}
PROBABILITY = {1: 0.95, 2: 0.40, 5: 0.70}
LOCATION = {1: "lobar", 2: "deep", 5: ""}
REGION = {1: "frontal", 2: "thalamus", 5: ""}


def _labels() -> np.ndarray:
    labels = np.zeros(SHAPE, np.int16)
    for label, index in LESIONS.items():
        labels[index] = label
    return labels


def _centre(mask: np.ndarray, affine: np.ndarray = AFFINE) -> list[float]:
    return (affine @ np.r_[np.argwhere(mask).mean(axis=0), 1.0])[:3].tolist()


def _writeEngineOutput(
    folder: Path, labels: np.ndarray, probabilities: dict[int, float], ids=None, notes=None
) -> tuple:
    folder.mkdir(parents=True, exist_ok=True)
    voxelVolume = abs(np.linalg.det(AFFINE[:3, :3]))
    candidates = []
    for n, label in enumerate(sorted(probabilities)):
        mask = labels == label
        candidates.append(
            {
                "id": (ids or {}).get(label, 100 + n),
                "label": label,
                "center_ras": _centre(mask),
                "voxels": int(mask.sum()),
                "volume_mm3": float(mask.sum() * voxelVolume),
                "probability": probabilities[label],
                "kept": True,
                **({"location": LOCATION[label], "region": REGION[label]} if LOCATION.get(label) else {}),
            }
        )
    # A candidate the model rejected: label 0, no voxels, not imported.
    candidates.append({"id": 999, "label": 0, "center_ras": [0.0, 0.0, 0.0], "voxels": 0, "volume_mm3": 0.0,
                       "probability": 0.05, "kept": False})  # fmt: skip
    labelPath, jsonPath = folder / "case_cmb.nii.gz", folder / "case_cmb.json"
    nib.save(nib.Nifti1Image(labels, AFFINE), labelPath)
    jsonPath.write_text(json.dumps({"input": "case.nii.gz", "model": "tiny", "student": "x4",
                                    "n_microbleeds": len(probabilities), "candidates": candidates,
                                    "thresholds": {"screening": 0.5, "segmentation": 0.3},
                                    "timings": {"total_s": 1.0}, **({"notes": notes} if notes else {})}))  # fmt: skip
    return labelPath, jsonPath, candidates


@pytest.fixture
def case(tmp_path):
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "case T2*")
    image = np.random.default_rng(3).normal(100, 10, SHAPE).astype(np.float32)
    updateVolumeNodeFromArray(volume, image, AFFINE)
    labelPath, jsonPath, candidates = _writeEngineOutput(tmp_path / "engine", _labels(), PROBABILITY)
    result = resultImport.importResults(scene, volume, labelPath, jsonPath)
    return scene, volume, result, candidates, tmp_path


def _segmentMask(segmentation_node, segment_id, volume) -> np.ndarray:
    """Voxels of one segment on the volume's grid, read back through Slicer's own export."""
    import vtk

    scene = volume.GetScene()
    labelNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelNode,
                                                                                volume)  # fmt: skip
    mask = arrayFromVolumeNode(labelNode) > 0
    scene.RemoveNode(labelNode)
    return mask


# --- import ------------------------------------------------------------------------------------------------


def test_import_makes_one_named_coloured_coded_segment_per_kept_microbleed(case):
    _, volume, result, _, _ = case
    segmentation = result.segmentationNode.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3  # the model-rejected candidate is not imported
    names = [segmentation.GetSegment(s).GetName() for s in result.segmentIds]
    assert names == ["Microbleed 1", "Microbleed 2", "Microbleed 3"]
    entry = slicer.vtkSlicerTerminologyEntry()
    for segmentId in result.segmentIds:
        segment = segmentation.GetSegment(segmentId)
        assert segment.GetColor() == pytest.approx(resultImport.COLOR_MODEL)
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        assert entry.GetCategoryObject().GetCodeValue() == "49755003"
        assert (entry.GetTypeObject().GetCodingSchemeDesignator(), entry.GetTypeObject().GetCodeValue()) == (
            "SCT",
            "50960005",
        )
        assert entry.GetRegionObject().GetCodeValue() == "12738006"
        assert resultImport.segmentTag(segment, candidateTable.TAG_STATUS) == candidateTable.STATUS_NOT_SEEN


def test_segments_hold_exactly_the_label_voxels_and_lie_at_the_json_centres(case):
    _, volume, result, candidates, _ = case
    labels = _labels()
    kept = [c for c in candidates if c["label"] > 0]
    voxelDiagonal = float(np.linalg.norm(AFFINE[:3, :3].sum(axis=1)))
    for segmentId, candidate in zip(result.segmentIds, kept, strict=True):
        mask = _segmentMask(result.segmentationNode, segmentId, volume)
        assert np.array_equal(mask, labels == candidate["label"])
        centre = result.segmentationNode.GetSegmentCenterRAS(segmentId)
        assert np.linalg.norm(np.subtract(centre, candidate["center_ras"])) <= voxelDiagonal


def test_reference_geometry_is_the_input_volume_even_when_oblique_and_lps(case):
    _, volume, result, _, _ = case
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    geometry = result.segmentationNode.GetSegmentation().GetConversionParameter(name)
    image = slicer.vtkOrientedImageData()
    assert slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, image)
    import vtk

    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    assert np.allclose([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], AFFINE, atol=1e-6)
    extent = image.GetExtent()
    assert (extent[1] + 1, extent[3] + 1, extent[5] + 1) == SHAPE


def test_volume_under_a_transform_gets_results_in_its_own_frame(case, tmp_path):
    scene, volume, _, _, _ = case
    import vtk

    transformNode = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 25.0)
    transformNode.SetMatrixTransformToParent(shift)
    volume.SetAndObserveTransformNodeID(transformNode.GetID())
    labelPath, jsonPath, _ = _writeEngineOutput(tmp_path / "moved", _labels(), PROBABILITY)
    result = resultImport.importResults(scene, volume, labelPath, jsonPath)
    assert result.segmentationNode.GetTransformNodeID() == transformNode.GetID()
    # The reference geometry is the volume's own voxel-to-RAS matrix, not the transformed one.
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    image = slicer.vtkOrientedImageData()
    geometry = result.segmentationNode.GetSegmentation().GetConversionParameter(name)
    assert slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, image)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    assert np.allclose([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], AFFINE, atol=1e-6)
    # Segment voxels still coincide with the engine's labels on the volume's grid.
    segmentId = result.segmentIds[0]
    label = sorted(PROBABILITY)[0]
    assert np.array_equal(_segmentMask(result.segmentationNode, segmentId, volume), _labels() == label)


def test_candidate_table_matches_the_json(case):
    scene, volume, result, candidates, _ = case
    rows = candidateTable.readRows(result.tableNode)
    kept = [c for c in candidates if c["label"] > 0]
    assert [r.candidateId for r in rows] == [c["id"] for c in kept]
    assert [r.segmentId for r in rows] == result.segmentIds
    for row, candidate in zip(rows, kept, strict=True):
        # Stored to 0.001 mm, 0.01 mm³ and 4 digits of probability.
        assert row.centerRas == pytest.approx(candidate["center_ras"], abs=5e-4)
        assert row.volumeMm3 == pytest.approx(candidate["volume_mm3"], abs=5e-3)
        assert row.probability == pytest.approx(candidate["probability"], abs=5e-5)
        assert row.location == candidate.get("location", "")
        assert row.region == candidate.get("region", "")
        assert row.status == candidateTable.STATUS_NOT_SEEN
    assert result.tableNode.GetNodeReferenceID(candidateTable.REFERENCE_SEGMENTATION) == (
        result.segmentationNode.GetID()
    )
    shNode = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    volumeParent = shNode.GetItemParent(shNode.GetItemByDataNode(volume))
    for node in (result.segmentationNode, result.tableNode):
        assert shNode.GetItemParent(shNode.GetItemByDataNode(node)) == volumeParent


def test_label_map_on_another_grid_is_refused(case, tmp_path):
    scene, volume, _, _, _ = case
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    labelPath = tmp_path / "other_cmb.nii.gz"
    nib.save(nib.Nifti1Image(_labels(), shifted), labelPath)
    with pytest.raises(resultImport.ResultFormatError, match="voxel-to-RAS"):
        resultImport.importResults(scene, volume, labelPath, tmp_path / "engine" / "case_cmb.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"candidates": [{"id": 1}]}')
    with pytest.raises(resultImport.ResultFormatError, match="candidate without"):
        resultImport.readCandidates(broken)


def _tilted(affine: np.ndarray, amount: float = 0.0009) -> np.ndarray:
    """``affine`` with one direction element changed by less than the old element-wise 1e-3 tolerance: a tilt that
    moves the far corner of this 24x28x10 grid by about 0.025 mm, 2.6 % of its smallest voxel size (0.96 mm)."""
    tilted = affine.copy()
    tilted[0, 1] += amount
    return tilted


def test_a_label_map_or_brain_mask_tilted_off_the_input_grid_is_refused_by_the_engine_s_rule(case, tmp_path):
    # The check compared affines element-wise within 1e-3 (mm per voxel): a tilt under it moved a 200-voxel grid's
    # far corner by 0.2 mm and the result was imported onto the input as if it lay there. The engine's rule (plkd
    # on_grid_of): no voxel corner more than 1 % of the smallest voxel size away.
    from plkd import volumes

    scene, volume, _, _, _ = case
    tilted = _tilted(AFFINE)
    assert np.allclose(tilted, AFFINE, atol=1e-3)  # what the old check let through
    assert volumes.grid_displacement_mm(tilted, AFFINE, SHAPE) > volumes.same_grid_tolerance_mm(AFFINE)
    labelPath = tmp_path / "tilted_cmb.nii.gz"
    nib.save(nib.Nifti1Image(_labels(), tilted), labelPath)
    with pytest.raises(resultImport.ResultFormatError, match="voxel-to-RAS"):
        resultImport.importResults(scene, volume, labelPath, tmp_path / "engine" / "case_cmb.json")
    mask = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "tilted brain mask")
    updateVolumeNodeFromArray(mask, np.ones(SHAPE, np.int16), tilted)
    with pytest.raises(ValueError, match="not on the grid"):
        inferenceJob.writeMaskAsNifti(mask, volume, tmp_path / "mask.nii.gz")
    # Float rounding of a header (the NIfTI sform is float32) is the same grid, for both.
    rounded = AFFINE.astype(np.float32).astype(np.float64) + 1e-6
    nib.save(nib.Nifti1Image(_labels(), rounded), labelPath)
    assert len(resultImport.importResults(scene, volume, labelPath, tmp_path / "engine" / "case_cmb.json").segmentIds)
    updateVolumeNodeFromArray(mask, np.ones(SHAPE, np.int16), rounded)
    assert inferenceJob.writeMaskAsNifti(mask, volume, tmp_path / "mask.nii.gz").exists()


def test_a_brain_mask_volume_is_placed_where_slicer_shows_it_through_transforms(case, tmp_path):
    # The grid check compared the mask's and the input's own frames, ignoring parent transforms: a mask on the input's
    # grid but moved 10 mm by a transform (shown 10 mm off the brain) was written onto the input as if it lay there,
    # and a mask registered onto the input by a transform (shown on the brain) was refused.
    scene, volume, _, _, _ = case
    shift = np.eye(4)
    shift[0, 3] = 10.0
    moved = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    moved.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    mask = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "brain mask")
    half = np.zeros(SHAPE, np.int16)
    half[: SHAPE[0] // 2] = 1
    updateVolumeNodeFromArray(mask, half, AFFINE)
    mask.SetAndObserveTransformNodeID(moved.GetID())
    with pytest.raises(ValueError, match="not on the grid"):
        inferenceJob.writeMaskAsNifti(mask, volume, tmp_path / "shifted.nii.gz")
    # The input under the same transform: both move together, the mask lies on the input as shown.
    volume.SetAndObserveTransformNodeID(moved.GetID())
    written = nib.load(str(inferenceJob.writeMaskAsNifti(mask, volume, tmp_path / "together.nii.gz")))
    assert np.array_equal(np.asarray(written.dataobj) > 0, half > 0)
    # A mask stored 10 mm off and brought onto the input by the inverse transform is accepted.
    volume.SetAndObserveTransformNodeID(None)
    off = AFFINE.copy()
    off[0, 3] += 10.0
    updateVolumeNodeFromArray(mask, half, off)
    back = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "back")
    back.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(np.linalg.inv(shift)))
    mask.SetAndObserveTransformNodeID(back.GetID())
    written = nib.load(str(inferenceJob.writeMaskAsNifti(mask, volume, tmp_path / "registered.nii.gz")))
    assert np.array_equal(np.asarray(written.dataobj) > 0, half > 0)


# --- review ------------------------------------------------------------------------------------------------


def _status(result, segment_id):
    row = candidateTable.readRows(result.tableNode)[candidateTable.rowIndexOfSegment(result.tableNode, segment_id)]
    tag = resultImport.segmentTag(result.segmentationNode.GetSegmentation().GetSegment(segment_id),
                                  candidateTable.TAG_STATUS)  # fmt: skip
    assert row.status == tag, "table and segment tag disagree"
    return row.status


def test_reject_hides_and_accept_restores_without_touching_voxels(case):
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    first = result.segmentIds[0]
    before = _segmentMask(seg, first, volume)
    reviewState.reject(seg, table, first)
    assert _status(result, first) == candidateTable.STATUS_REJECTED
    assert not seg.GetDisplayNode().GetSegmentVisibility(first)
    assert seg.GetSegmentation().GetSegment(first) is not None  # kept for undo
    reviewState.accept(seg, table, first)
    assert _status(result, first) == candidateTable.STATUS_ACCEPTED
    assert seg.GetDisplayNode().GetSegmentVisibility(first)
    assert np.array_equal(_segmentMask(seg, first, volume), before)
    with pytest.raises(reviewState.ReviewError, match="cannot become"):
        reviewState.setStatus(seg, table, first, candidateTable.STATUS_ADDED)
    with pytest.raises(reviewState.ReviewError, match="no candidate"):
        reviewState.reject(seg, table, "no-such-segment")


def test_a_status_typed_in_the_tables_module_counts_whatever_its_case(case, tmp_path):
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    column = table.GetColumnIndex(candidateTable.COLUMN_STATUS)
    table.SetCellText(0, column, "Rejected ")  # the reader's edit in the Tables module
    table.SetCellText(1, column, "ACCEPTED")
    rows = reviewState.restoreReview(seg, table)
    assert [r.status for r in rows[:2]] == [candidateTable.STATUS_REJECTED, candidateTable.STATUS_ACCEPTED]
    assert not seg.GetDisplayNode().GetSegmentVisibility(result.segmentIds[0])
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.5)
    report = json.loads(files.reportJson.read_text())
    assert [m["candidate_id"] for m in report["microbleeds"]] == [rows[1].candidateId, rows[2].candidateId]


def test_a_status_typed_that_its_kind_never_has_can_still_be_changed_with_the_buttons(case, tmp_path):
    # "accepted" typed in the Tables module on the reader's own microbleed (or "added by reader" on a model
    # candidate): Reject and Accept then failed with "a candidate that is 'accepted' cannot become 'rejected'".
    _, _, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    single = np.zeros(SHAPE, np.int16)
    single[18:20, 9:11, 4:6] = 1
    labelPath, jsonPath, candidates = _writeEngineOutput(tmp_path / "point", single, {1: 0.62})
    added = reviewState.addReaderMicrobleed(seg, table, labelPath, jsonPath, candidates[0]["center_ras"])
    column = table.GetColumnIndex(candidateTable.COLUMN_STATUS)
    table.SetCellText(candidateTable.rowIndexOfSegment(table, added), column, "Accepted")
    table.SetCellText(0, column, "added by reader")
    reviewState.restoreReview(seg, table)
    reviewState.reject(seg, table, added)
    reviewState.reject(seg, table, result.segmentIds[0])
    assert _status(result, added) == _status(result, result.segmentIds[0]) == candidateTable.STATUS_REJECTED
    reviewState.accept(seg, table, added)
    reviewState.accept(seg, table, result.segmentIds[0])
    assert _status(result, added) == candidateTable.STATUS_ADDED
    assert _status(result, result.segmentIds[0]) == candidateTable.STATUS_ACCEPTED


def test_a_status_the_module_does_not_know_stops_the_export(case, tmp_path):
    # "reject" typed in the Tables module counted as not yet seen: the candidate the reader meant to reject was
    # exported (it passed the threshold), with status "reject" in the report.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    table.SetCellText(0, table.GetColumnIndex(candidateTable.COLUMN_STATUS), "reject")
    reviewState.restoreReview(seg, table)
    with pytest.raises(reviewState.ReviewError, match=r"candidate\(s\) \d+ \('reject'\).*none of: not yet seen"):
        reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.5)
    assert not (tmp_path / "export").exists() or not list((tmp_path / "export").iterdir())
    reviewState.reject(seg, table, result.segmentIds[0])  # the module's Reject mends it (it refused to)
    assert candidateTable.readRows(table)[0].status == candidateTable.STATUS_REJECTED
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.5)
    rows = candidateTable.readRows(table)
    assert [m["candidate_id"] for m in json.loads(files.reportJson.read_text())["microbleeds"]] == [rows[2].candidateId]


def test_a_row_copied_in_the_tables_module_stops_the_export_instead_of_keeping_a_rejected_microbleed(case, tmp_path):
    # A row copied (Tables module: copy, insert row, paste) listed a segment twice: Reject changed the first row,
    # and the copy, still "not yet seen", kept the rejected microbleed in the export without a word.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    candidateTable.appendRow(table, candidateTable.readRows(table)[0])
    reviewState.reject(seg, table, result.segmentIds[0])
    with pytest.raises(reviewState.ReviewError, match=f"rows 1 and 4 both list segment '{result.segmentIds[0]}'"):
        reportExport.exportReview(seg, table, volume, tmp_path / "export", "case")
    assert not (tmp_path / "export").exists()
    table.RemoveRow(3)
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case")
    assert files.count == 2


def test_threshold_shows_only_passing_candidates_not_yet_seen(case):
    _, _, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    low = result.segmentIds[1]  # probability 0.40
    shown = reviewState.updateVisibility(seg, table, 0.5)
    assert low not in shown and not seg.GetDisplayNode().GetSegmentVisibility(low)
    reviewState.accept(seg, table, low, threshold=0.5)  # the reader's decision beats the threshold
    assert seg.GetDisplayNode().GetSegmentVisibility(low)
    assert len(reviewState.updateVisibility(seg, table, 0.99)) == 1


def test_segment_editor_changes_survive_review_actions(case):
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    target = result.segmentIds[2]
    edited = np.zeros(SHAPE, bool)
    edited[9:14, 3:7, 1:3] = True  # the reader grew the segment
    image = resultImport.orientedImage(edited.astype(np.uint8), np.zeros(3, int), AFFINE)
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, seg, target, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
    )
    reviewState.reject(seg, table, target)
    reviewState.accept(seg, table, target)
    reviewState.setStatus(seg, table, target, candidateTable.STATUS_NOT_SEEN)
    assert np.array_equal(_segmentMask(seg, target, volume), edited)


def test_add_by_click_adds_reader_segment_and_leaves_others_unchanged(case):
    _, volume, result, _, tmp_path = case
    seg, table = result.segmentationNode, result.tableNode
    before = {s: _segmentMask(seg, s, volume) for s in result.segmentIds}
    single = np.zeros(SHAPE, np.int16)
    single[18:20, 9:11, 4:6] = 1
    labelPath, jsonPath, candidates = _writeEngineOutput(tmp_path / "point", single, {1: 0.62})
    point = candidates[0]["center_ras"]
    added = reviewState.addReaderMicrobleed(seg, table, labelPath, jsonPath, point)
    segment = seg.GetSegmentation().GetSegment(added)
    assert segment.GetName() == "Microbleed 4"
    assert segment.GetColor() == pytest.approx(resultImport.COLOR_ADDED)
    assert _status(result, added) == candidateTable.STATUS_ADDED
    assert np.array_equal(_segmentMask(seg, added, volume), single == 1)
    for segmentId, mask in before.items():
        assert np.array_equal(_segmentMask(seg, segmentId, volume), mask)
    row = candidateTable.readRows(table)[-1]
    assert row.centerRas == pytest.approx(point)
    assert row.candidateId == max(r.candidateId for r in candidateTable.readRows(table)[:-1]) + 1
    reviewState.reject(seg, table, added)
    assert not seg.GetDisplayNode().GetSegmentVisibility(added)
    reviewState.accept(seg, table, added)  # "Accept" restores the reader's own microbleed as such
    assert _status(result, added) == candidateTable.STATUS_ADDED
    empty = _writeEngineOutput(tmp_path / "none", np.zeros(SHAPE, np.int16), {})
    with pytest.raises(reviewState.ReviewError, match="no microbleed"):
        reviewState.addReaderMicrobleed(seg, table, empty[0], empty[1], point)


def test_review_survives_saving_and_reloading(case, tmp_path):
    scene, _, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    ids = result.segmentIds
    reviewState.reject(seg, table, ids[0])
    reviewState.accept(seg, table, ids[2])
    segPath, tablePath = tmp_path / "saved" / "review.seg.nrrd", tmp_path / "saved" / "review.tsv"
    segPath.parent.mkdir()
    for node, path in ((seg, segPath), (table, tablePath)):
        storage = node.CreateDefaultStorageNode()
        scene.AddNode(storage)
        node.SetAndObserveStorageNodeID(storage.GetID())
        storage.SetFileName(str(path))
        assert storage.WriteData(node)

    other = slicer.vtkMRMLScene()
    seg2 = other.AddNewNodeByClass("vtkMRMLSegmentationNode")
    seg2.CreateDefaultDisplayNodes()
    table2 = other.AddNewNodeByClass("vtkMRMLTableNode")
    for node, cls, path in ((seg2, "vtkMRMLSegmentationStorageNode", segPath),
                            (table2, "vtkMRMLTableStorageNode", tablePath)):  # fmt: skip
        storage = other.AddNewNodeByClass(cls)
        storage.SetFileName(str(path))
        assert storage.ReadData(node)
    table2.SetAttribute(candidateTable.ATTRIBUTE_REVIEW_THRESHOLD, "0.5")  # a .tsv alone keeps no attributes
    rows = reviewState.restoreReview(seg2, table2)
    statuses = {r.segmentId: r.status for r in rows}
    assert statuses == {
        ids[0]: candidateTable.STATUS_REJECTED,
        ids[1]: candidateTable.STATUS_NOT_SEEN,
        ids[2]: candidateTable.STATUS_ACCEPTED,
    }
    for segmentId, status in statuses.items():
        segment = seg2.GetSegmentation().GetSegment(segmentId)
        assert resultImport.segmentTag(segment, candidateTable.TAG_STATUS) == status
    assert [seg2.GetDisplayNode().GetSegmentVisibility(s) for s in ids] == [False, False, True]
    assert rows[0].probability == pytest.approx(0.95) and rows[0].location == "lobar"


def test_a_table_of_another_run_loaded_beside_a_segmentation_is_refused(case, tmp_path):
    # A .tsv and a .seg.nrrd loaded alone carry no run id; a table of another run names the same segment ids
    # ("Microbleed_1", ...) and its statuses landed on other microbleeds without a word.
    scene, volume, result, _, _ = case
    labels = _labels()[::-1].copy()  # other microbleeds, numbered alike by the engine
    labelPath, jsonPath, _ = _writeEngineOutput(tmp_path / "other", labels, {1: 0.55, 2: 0.85, 5: 0.30})
    other = resultImport.importResults(scene, volume, labelPath, jsonPath)
    assert other.segmentIds == result.segmentIds
    reviewState.reject(other.segmentationNode, other.tableNode, other.segmentIds[2])
    for node in (result.segmentationNode, other.tableNode):  # as if each was loaded from its own file
        node.RemoveAttribute(candidateTable.ATTRIBUTE_RUN_ID)
    other.tableNode.RemoveNodeReferenceIDs(candidateTable.REFERENCE_SEGMENTATION)
    assert not candidateTable.belongsTo(other.tableNode, result.segmentationNode)
    with pytest.raises(reviewState.ReviewError, match="another result"):
        reviewState.restoreReview(result.segmentationNode, other.tableNode)
    assert candidateTable.belongsTo(result.tableNode, result.segmentationNode)  # its own table still pairs


# --- export ------------------------------------------------------------------------------------------------


def test_export_writes_final_label_map_segmentation_and_reports(case, tmp_path):
    _, volume, result, candidates, _ = case
    seg, table = result.segmentationNode, result.tableNode
    ids = result.segmentIds
    reviewState.reject(seg, table, ids[0])  # 0.95, rejected -> out
    # ids[1]: 0.40 not yet seen -> below threshold 0.5 -> out; ids[2]: 0.70 not yet seen -> in
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.5)
    assert files.count == 1

    image = nib.load(files.labelMap)
    assert image.shape == SHAPE and np.allclose(image.affine, AFFINE, atol=1e-5)
    data = np.asarray(image.dataobj)
    assert set(np.unique(data)) == {0, 1}
    assert np.array_equal(data == 1, _labels() == 5)

    with files.reportCsv.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == 1 and records[0]["candidate_id"] == str(candidates[2]["id"])
    assert float(records[0]["probability"]) == pytest.approx(0.70)
    assert records[0]["status"] == candidateTable.STATUS_NOT_SEEN

    report = json.loads(files.reportJson.read_text())
    assert report["n_microbleeds"] == 1 and report["n_rejected"] == 1
    assert report["microbleeds"][0]["r_mm"] == pytest.approx(candidates[2]["center_ras"][0], abs=1e-3)

    other = slicer.vtkMRMLScene()
    seg2 = other.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = other.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(files.segmentation))
    assert storage.ReadData(seg2)
    assert seg2.GetSegmentation().GetNumberOfSegments() == 1
    assert seg2.GetSegmentation().GetNthSegment(0).GetName() == "Microbleed 3"
    assert not list((tmp_path / "export").glob(".*partial*")), "temporary files left behind"


def test_export_reports_the_microbleeds_as_the_reader_edited_them(case, tmp_path):
    # The report's centres and volumes used to be the engine's even after Segment Editor edits, so the
    # CSV disagreed with the exported label map; a segment erased to nothing was still counted.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    ids = result.segmentIds  # labels 1, 2, 5
    grown = np.zeros(SHAPE, bool)
    grown[9:14, 3:7, 1:3] = True  # the reader grew microbleed 5 (6 voxels -> 40)
    empty = np.zeros((1, 1, 1), np.uint8)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    for segmentId, image in (
        (ids[2], resultImport.orientedImage(grown.astype(np.uint8), np.zeros(3, int), AFFINE)),
        (ids[0], resultImport.orientedImage(empty, np.zeros(3, int), AFFINE)),  # erased
    ):
        assert logic.SetBinaryLabelmapToSegment(image, seg, segmentId, logic.MODE_REPLACE)
    for segmentId in ids:
        reviewState.accept(seg, table, segmentId)
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.5)
    data = np.asarray(nib.load(files.labelMap).dataobj)
    report = json.loads(files.reportJson.read_text())
    assert files.count == report["n_microbleeds"] == 2 and set(np.unique(data)) == {0, 1, 2}
    # The accepted microbleed erased to nothing is named, not dropped without a word.
    assert [n for n in report["notes"] if "erased" in n] == [
        f"candidate 100 (accepted) has its segment '{ids[0]}' in '{seg.GetName()}' erased to nothing: not exported"
    ]
    voxelVolume = abs(np.linalg.det(AFFINE[:3, :3]))
    for record in report["microbleeds"]:
        mask = data == record["label"]
        assert record["volume_mm3"] == pytest.approx(mask.sum() * voxelVolume, abs=1e-3)
        assert [record["r_mm"], record["a_mm"], record["s_mm"]] == pytest.approx(_centre(mask), abs=1e-3)
    assert np.array_equal(data == 2, grown)
    assert report["microbleeds"][1]["volume_mm3"] == pytest.approx(40 * voxelVolume, abs=1e-3)
    with files.reportCsv.open(newline="") as handle:
        assert [float(r["volume_mm3"]) for r in csv.DictReader(handle)] == [
            m["volume_mm3"] for m in report["microbleeds"]
        ]


def test_a_segment_painted_by_hand_joins_the_review_and_the_export(case, tmp_path):
    # A microbleed the reader painted as a new segment (Segment Editor: Add, Paint) was shown but had no table
    # row: the review list did not show it and the export left it out without a word.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    painted = seg.GetSegmentation().AddEmptySegment("", "Painted")
    notYet = seg.GetSegmentation().AddEmptySegment("", "Not painted yet")
    mask = np.zeros(SHAPE, bool)
    mask[18:20, 9:11, 4:6] = True
    image = resultImport.orientedImage(mask.astype(np.uint8), np.zeros(3, int), AFFINE)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(image, seg, painted, logic.MODE_REPLACE)

    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.3)
    data = np.asarray(nib.load(files.labelMap).dataobj)
    report = json.loads(files.reportJson.read_text())
    assert files.count == 4 and np.array_equal(data == 4, mask)
    record = report["microbleeds"][3]
    assert (record["segment"], record["status"], record["probability"]) == ("Painted", "added by reader", None)
    assert [record["r_mm"], record["a_mm"], record["s_mm"]] == pytest.approx(_centre(mask), abs=1e-3)

    rows = {r.segmentId: r for r in reviewState.restoreReview(seg, table)}
    assert notYet not in rows  # nothing painted yet: nothing to review
    assert rows[painted].status == candidateTable.STATUS_ADDED and rows[painted].probability is None
    assert rows[painted].volumeMm3 == pytest.approx(mask.sum() * abs(np.linalg.det(AFFINE[:3, :3])), abs=0.01)
    segment = seg.GetSegmentation().GetSegment(painted)
    assert resultImport.segmentTag(segment, candidateTable.TAG_ORIGIN) == candidateTable.ORIGIN_READER
    reviewState.reject(seg, table, painted)  # the reader's own say: out of the export again
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.3)
    assert files.count == 3 and not np.asarray(nib.load(files.labelMap).dataobj)[mask].any()


def _giveTwoIslands(seg, segment_id, volume) -> tuple[np.ndarray, np.ndarray]:
    """Paint a second, smaller blob into a candidate's segment, apart from its own voxels; return (own, blob)."""
    own = _segmentMask(seg, segment_id, volume)
    blob = np.zeros(SHAPE, bool)
    blob[18:20, 14:15, 7:8] = True
    assert not (own & blob).any() and own.sum() > blob.sum()
    image = resultImport.orientedImage((own | blob).astype(np.uint8), np.zeros(3, int), AFFINE)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(image, seg, segment_id, logic.MODE_REPLACE)
    return own, blob


@pytest.mark.parametrize("status", [candidateTable.STATUS_REJECTED, candidateTable.STATUS_NOT_SEEN,
                                    candidateTable.STATUS_ACCEPTED, candidateTable.STATUS_ADDED])  # fmt: skip
def test_islands_split_from_a_candidate_keep_its_status_and_never_become_the_reader_s(case, tmp_path, status):
    # "Split islands to segments" on a candidate made each island but the largest a new untagged segment; the review
    # took it for a microbleed painted by the reader: the pieces of a REJECTED candidate were exported as the reader's.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    parent = result.segmentIds[2]  # "Microbleed 3", probability 0.70
    if status == candidateTable.STATUS_ADDED:  # the reader's own microbleed, split
        segment = seg.GetSegmentation().GetSegment(parent)
        reviewState.claimForReader(seg, segment, 7)
        candidateTable.setStatusCell(table, candidateTable.rowIndexOfSegment(table, parent), status)
    elif status != candidateTable.STATUS_NOT_SEEN:
        reviewState.setStatus(seg, table, parent, status)
    own, blob = _giveTwoIslands(seg, parent, volume)
    (island,) = split_islands_to_segments(seg, volume, parent)
    # The effect names it after the selected segment, "Microbleed 3 (rejected)_2" for a rejected one.
    assert segmentPresentation.baseName(seg.GetSegmentation().GetSegment(island).GetName()) == "Microbleed 3_2"
    assert np.array_equal(_segmentMask(seg, island, volume), blob)

    rows = {r.segmentId: r for r in reviewState.restoreReview(seg, table)}
    parentRow, islandRow = rows[parent], rows[island]
    assert islandRow.status == status and islandRow.candidateId not in {r.candidateId for r in rows.values()
                                                                        if r.segmentId != island}  # fmt: skip
    assert islandRow.probability == parentRow.probability
    segment = seg.GetSegmentation().GetSegment(island)
    assert resultImport.segmentTag(segment, candidateTable.TAG_DERIVED_FROM) == str(parentRow.candidateId)
    assert reviewState._wasAddedByReader(segment) == (status == candidateTable.STATUS_ADDED)
    assert seg.GetDisplayNode().GetSegmentVisibility(island) == (status != candidateTable.STATUS_REJECTED)

    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.3)
    report = json.loads(files.reportJson.read_text())
    exported = {r["segment"]: r for r in report["microbleeds"]}
    if status == candidateTable.STATUS_REJECTED:
        assert "Microbleed 3_2" not in exported and not np.asarray(nib.load(files.labelMap).dataobj)[blob].any()
    else:
        assert exported["Microbleed 3_2"]["status"] == status
        assert exported["Microbleed 3_2"]["derived_from"] == parentRow.candidateId
        assert exported["Microbleed 3"]["derived_from"] is None
    # Its own say afterwards: the island is a candidate of its own kind, reviewed on its own.
    if status != candidateTable.STATUS_ADDED:
        reviewState.accept(seg, table, island)
        assert _status(result, island) == candidateTable.STATUS_ACCEPTED
        assert _status(result, parent) == status


def test_islands_of_two_splits_of_one_candidate_never_share_a_name(case, tmp_path):
    # The Islands effect numbers each split's islands from 2: splitting the candidate again named the new island
    # "Microbleed 3_2" as well, and the report listed two microbleeds of that name.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    parent = result.segmentIds[2]
    _giveTwoIslands(seg, parent, volume)
    (first,) = split_islands_to_segments(seg, volume, parent)
    reviewState.restoreReview(seg, table)
    blob = np.zeros(SHAPE, bool)
    blob[2:3, 20:21, 8:9] = True
    paint(seg, volume, parent, resultImport.orientedImage(blob.astype(np.uint8), np.zeros(3, int), AFFINE))
    (second,) = split_islands_to_segments(seg, volume, parent)
    assert seg.GetSegmentation().GetSegment(second).GetName() == "Microbleed 3_2"  # what the effect names it
    reviewState.restoreReview(seg, table)
    names = [seg.GetSegmentation().GetSegment(s).GetName() for s in (first, second)]
    assert names == ["Microbleed 3_2", "Microbleed 3_3"]
    report = json.loads(reportExport.exportReview(seg, table, volume, tmp_path / "x", "case", threshold=0.3)
                        .reportJson.read_text())  # fmt: skip
    segments = [m["segment"] for m in report["microbleeds"]]
    assert len(segments) == len(set(segments)) == 5


@pytest.mark.parametrize("status", [candidateTable.STATUS_REJECTED, candidateTable.STATUS_ACCEPTED])
def test_a_clone_of_a_candidate_keeps_its_status_and_never_becomes_the_reader_s(case, tmp_path, status):
    # "Clone" on a segment (Data module) copies it with its tags: its candidate id is taken, so the review listed the
    # copy as a microbleed the reader painted, and a clone of a REJECTED candidate was exported as the reader's.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    source = result.segmentIds[0]  # "Microbleed 1", probability 0.95
    reviewState.setStatus(seg, table, source, status)
    copy = clone_segment(seg, source)
    rows = {r.segmentId: r for r in reviewState.restoreReview(seg, table)}
    assert rows[copy].status == status and rows[copy].candidateId != rows[source].candidateId
    assert rows[copy].probability == rows[source].probability
    segment = seg.GetSegmentation().GetSegment(copy)
    # Not two "Microbleed 1" in the report; a rejected one's name says so (test_slicer_generic_exports).
    assert segmentPresentation.baseName(segment.GetName()) == "Microbleed 1_2"
    assert resultImport.segmentTag(segment, candidateTable.TAG_DERIVED_FROM) == str(rows[source].candidateId)
    assert not reviewState._wasAddedByReader(segment)
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.3)
    exported = {r["segment"]: r for r in json.loads(files.reportJson.read_text())["microbleeds"]}
    if status == candidateTable.STATUS_REJECTED:
        assert "Microbleed 1_2" not in exported and "Microbleed 1" not in exported
    else:
        assert exported["Microbleed 1_2"]["derived_from"] == rows[source].candidateId


def test_a_segment_larger_than_any_microbleed_is_named_in_the_export(case, tmp_path):
    # A region painted into the result for another purpose (a haematoma, a measurement) was exported as one more
    # microbleed without a word, however large.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    large = seg.GetSegmentation().AddEmptySegment("", "Haematoma")
    mask = np.zeros(SHAPE, bool)
    mask[2:12, 14:26, 2:6] = True  # 480 voxels of 2.6 mm3: 13 mm across
    image = resultImport.orientedImage(mask.astype(np.uint8), np.zeros(3, int), AFFINE)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(image, seg, large, logic.MODE_REPLACE)
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case")
    diameter = (6 * mask.sum() * abs(np.linalg.det(AFFINE[:3, :3])) / np.pi) ** (1 / 3)
    assert files.count == 4
    assert list(files.notes) == [
        f"microbleed 4 (Haematoma) is {diameter:.1f} mm across (sphere-equivalent), more than a microbleed's 10 mm: "
        "check that it is one"
    ]
    assert json.loads(files.reportJson.read_text())["notes"] == list(files.notes)


def test_a_candidate_whose_row_was_deleted_comes_back_as_it_was(case, tmp_path):
    # A row deleted in the Tables module left its segment rowless, and the review took it for one painted by the
    # reader: a rejected candidate came back as "added by reader" and into the export.
    _, volume, result, candidates, _ = case
    seg, table = result.segmentationNode, result.tableNode
    rejected, kept = result.segmentIds[0], result.segmentIds[2]
    reviewState.reject(seg, table, rejected)
    before = {r.segmentId: r for r in candidateTable.readRows(table)}
    for segmentId in (rejected, kept):
        index = [r.segmentId for r in candidateTable.readRows(table)].index(segmentId)
        table.RemoveRow(index)
    rows = {r.segmentId: r for r in reviewState.restoreReview(seg, table)}
    for segmentId in (rejected, kept):
        assert (rows[segmentId].candidateId, rows[segmentId].status) == (
            before[segmentId].candidateId,
            before[segmentId].status,
        )
        assert rows[segmentId].probability == pytest.approx(before[segmentId].probability)
        assert rows[segmentId].centerRas == pytest.approx(before[segmentId].centerRas, abs=1e-3)
    assert rows[rejected].status == candidateTable.STATUS_REJECTED
    assert (rows[rejected].location, rows[rejected].region) == ("lobar", "frontal")  # came back without them
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.5)
    report = json.loads(files.reportJson.read_text())
    assert [m["candidate_id"] for m in report["microbleeds"]] == [candidates[2]["id"]]


def test_a_candidate_moved_to_another_result_is_the_reader_s_there_and_noted_where_it_left(case, tmp_path):
    # A segment moved (Segmentations module) from one result into another kept its tags: the result it landed in
    # listed it as its own model candidate, with the other run's id, status and probability (a score its engine
    # never gave), under the name of one of its own microbleeds; the result it left dropped an accepted microbleed
    # from its report without a word.
    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "case SWI")
    updateVolumeNodeFromArray(other, arrayFromVolumeNode(volume), AFFINE)
    labelPath, jsonPath, _ = _writeEngineOutput(
        tmp_path / "swi", _labels()[::-1].copy(), {1: 0.55, 2: 0.85}, ids={1: 200, 2: 201}
    )
    swi = resultImport.importResults(scene, other, labelPath, jsonPath)
    moved = result.segmentIds[0]  # id 100 there, an id the SWI result does not use (200, 201)
    assert moved not in swi.segmentIds
    reviewState.accept(seg, table, moved)
    swiSegmentation = swi.segmentationNode.GetSegmentation()
    assert swiSegmentation.CopySegmentFromSegmentation(seg.GetSegmentation(), moved, True)  # a move

    rows = {r.segmentId: r for r in reviewState.restoreReview(swi.segmentationNode, swi.tableNode)}
    assert rows[moved].status == candidateTable.STATUS_ADDED and rows[moved].probability is None
    assert rows[moved].candidateId not in {rows[s].candidateId for s in swi.segmentIds}
    segment = swiSegmentation.GetSegment(moved)
    assert resultImport.segmentTag(segment, candidateTable.TAG_ORIGIN) == candidateTable.ORIGIN_READER
    assert resultImport.segmentTag(segment, candidateTable.TAG_PROBABILITY) == ""
    names = [swiSegmentation.GetNthSegment(i).GetName() for i in range(swiSegmentation.GetNumberOfSegments())]
    assert len(set(names)) == len(names)
    files = reportExport.exportReview(swi.segmentationNode, swi.tableNode, other, tmp_path / "swi-export", "swi")
    record = json.loads(files.reportJson.read_text())["microbleeds"][-1]
    assert (record["status"], record["probability"]) == (candidateTable.STATUS_ADDED, None)

    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case")
    assert files.count == 2
    assert any("candidate 100 (accepted)" in n and "moved" in n for n in files.notes)
    assert json.loads(files.reportJson.read_text())["notes"] == list(files.notes)


def _clickedMicrobleed():
    """The engine's label map of the microbleed the reader adds by click in :func:`_reviewOneOfEach`."""
    single = np.zeros(SHAPE, np.int16)
    single[18:20, 9:11, 4:6] = 1
    return single


def _reviewOneOfEach(seg, table, ids, tmp_path):
    """A reader's review: ids[0] rejected, ids[1] accepted, a microbleed added by click (its segment id returned),
    and the review threshold raised to 0.8 so that ids[2] (0.70, not yet seen) drops out."""
    reviewState.reject(seg, table, ids[0])
    reviewState.accept(seg, table, ids[1])
    labelPath, jsonPath, candidates = _writeEngineOutput(tmp_path / "point", _clickedMicrobleed(), {1: 0.62})
    added = reviewState.addReaderMicrobleed(seg, table, labelPath, jsonPath, candidates[0]["center_ras"])
    reviewState.setReviewThreshold(seg, table, 0.8)
    return added


def test_a_result_whose_table_was_deleted_gets_it_back_from_its_segments_with_the_whole_review(case, tmp_path):
    # The candidate table deleted (Data module) or left unsaved: the segments still held every decision in their
    # tags, but without a table the module could neither show nor export the review.
    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    ids = result.segmentIds
    added = _reviewOneOfEach(seg, table, ids, tmp_path)
    before = reportExport.exportReview(seg, table, volume, tmp_path / "before", "case")
    rowsBefore = candidateTable.readRows(table)
    scene.RemoveNode(table)
    assert candidateTable.tableOfSegmentation(scene, seg) is None and reviewState.canRebuildTable(seg)

    rebuilt = reviewState.rebuildTable(seg)
    assert candidateTable.tableOfSegmentation(scene, seg) is rebuilt
    rows = candidateTable.readRows(rebuilt)
    for attribute in ("candidateId", "segmentId", "status", "location", "region"):
        assert [getattr(r, attribute) for r in rows] == [getattr(r, attribute) for r in rowsBefore], attribute
    assert [r.probability for r in rows] == pytest.approx([r.probability for r in rowsBefore], abs=1e-4)
    assert reviewState.reviewThreshold(rebuilt) == pytest.approx(0.8)
    assert reviewState.runThreshold(rebuilt) == pytest.approx(0.3)
    assert [seg.GetDisplayNode().GetSegmentVisibility(s) for s in (*ids, added)] == [False, True, False, True]
    after = reportExport.exportReview(seg, rebuilt, volume, tmp_path / "after", "case")
    expected, got = (json.loads(f.reportJson.read_text()) for f in (before, after))
    assert got == expected
    # Neither for a segmentation of something else nor without the result's volume.
    other = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "brain")
    assert not reviewState.canRebuildTable(other)
    with pytest.raises(reviewState.ReviewError, match="no microbleed candidates"):
        reviewState.rebuildTable(other)
    scene.RemoveNode(volume)
    assert not reviewState.canRebuildTable(seg)


def test_overlapping_microbleeds_are_all_exported_whole(case, tmp_path):
    # Painted over a microbleed, a larger segment took all its voxels in the one label map the export made: the
    # microbleed inside counted as erased and vanished from the report, and the painted one was measured without
    # the shared voxels.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    inner = _labels() == 1  # "Microbleed 1", 8 voxels
    outer = np.zeros(SHAPE, bool)
    outer[4:8, 5:9, 2:6] = True  # 64 voxels around it
    painted = seg.GetSegmentation().AddEmptySegment("", "Painted around")
    image = resultImport.orientedImage(outer.astype(np.uint8), np.zeros(3, int), AFFINE)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(image, seg, painted, logic.MODE_REPLACE)
    rows = {r.segmentId: r for r in reviewState.restoreReview(seg, table)}
    voxelVolume = abs(np.linalg.det(AFFINE[:3, :3]))
    assert rows[painted].volumeMm3 == pytest.approx(64 * voxelVolume, abs=0.01)

    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.3)
    report = json.loads(files.reportJson.read_text())
    byName = {m["segment"]: m for m in report["microbleeds"]}
    assert files.count == 4 and set(byName) == {"Microbleed 1", "Microbleed 2", "Microbleed 3", "Painted around"}
    data = np.asarray(nib.load(files.labelMap).dataobj)
    # The smaller one is drawn over the larger, so both are visible; each is measured on its own voxels.
    assert np.array_equal(data == byName["Microbleed 1"]["label"], inner)
    assert np.array_equal(data == byName["Painted around"]["label"], outer & ~inner)
    assert byName["Painted around"]["volume_mm3"] == pytest.approx(64 * voxelVolume, abs=1e-3)
    assert [byName["Painted around"][k] for k in ("r_mm", "a_mm", "s_mm")] == pytest.approx(_centre(outer), abs=1e-3)
    assert report["notes"] == [] and files.notes == ()

    # A copy with exactly the same voxels cannot be shown in one label map: kept in the report, and named.
    copy = seg.GetSegmentation().AddEmptySegment("", "Same voxels")
    image = resultImport.orientedImage(inner.astype(np.uint8), np.zeros(3, int), AFFINE)
    assert logic.SetBinaryLabelmapToSegment(image, seg, copy, logic.MODE_REPLACE)
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.3)
    report = json.loads(files.reportJson.read_text())
    assert files.count == report["n_microbleeds"] == 5 and len(files.notes) == 1
    assert "Microbleed 1" in files.notes[0] and "Same voxels" in files.notes[0]
    assert report["notes"] == list(files.notes)


def test_segment_voxels_read_from_the_layers_are_those_slicer_exports(case):
    # The export reads each segment from Slicer's shared labelmap layers (one whole-volume export per segment took
    # 1.8 s on a 512x512x200 volume); it must give exactly the voxels of Slicer's own export onto the volume.
    from CMBSegmentationLib import segmentLabelMap

    _, volume, result, _, _ = case
    seg = result.segmentationNode
    overlapping = seg.GetSegmentation().AddEmptySegment("", "Overlapping")  # a second layer
    mask = np.zeros(SHAPE, bool)
    mask[4:8, 5:9, 2:6] = True
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    image = resultImport.orientedImage(mask.astype(np.uint8), np.zeros(3, int), AFFINE)
    assert logic.SetBinaryLabelmapToSegment(image, seg, overlapping, logic.MODE_REPLACE)
    ids = [*result.segmentIds, overlapping]

    def inOrder(voxels: np.ndarray) -> np.ndarray:  # the order of np.argwhere: by i, then j, then k
        return voxels[np.lexsort(voxels.T[::-1])]

    fast = segmentLabelMap.segmentVoxels(seg, ids, volume)
    for segmentId, own in zip(ids, fast, strict=True):
        assert len(own) and np.array_equal(inOrder(own), np.argwhere(_segmentMask(seg, segmentId, volume)))
    assert np.array_equal(inOrder(fast[-1]), np.argwhere(mask))
    # Under another transform than the volume's (an identity one here): the same voxels.
    transform = volume.GetScene().AddNewNodeByClass("vtkMRMLLinearTransformNode")
    seg.SetAndObserveTransformNodeID(transform.GetID())
    again = segmentLabelMap.segmentVoxels(seg, ids, volume)
    assert all(np.array_equal(inOrder(a), inOrder(b)) for a, b in zip(fast, again, strict=True))


def test_exports_of_two_results_of_one_volume_never_replace_each_other(case, tmp_path):
    # Both results of one volume were written as VOLUME_cmb-*: the second export silently replaced the first.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    folder = tmp_path / "export"
    first = reportExport.exportReview(seg, table, volume, folder, "case", threshold=0.3)
    assert first.reportJson.name == "case_cmb-report.json" and first.count == 3
    labelPath, jsonPath, _ = _writeEngineOutput(tmp_path / "second", _labels(), {1: 0.95})
    second = resultImport.importResults(volume.GetScene(), volume, labelPath, jsonPath)
    files = reportExport.exportReview(second.segmentationNode, second.tableNode, volume, folder, "case", threshold=0.3)
    assert files.reportJson.name == "case-2_cmb-report.json" and files.labelMap.name == "case-2_cmb-final.nii.gz"
    assert json.loads(first.reportJson.read_text())["n_microbleeds"] == 3  # the first export is intact
    assert json.loads(files.reportJson.read_text())["n_microbleeds"] == 1
    # Exporting a result again after more review replaces its own files, wherever they are.
    reviewState.reject(seg, table, result.segmentIds[0])
    again = reportExport.exportReview(seg, table, volume, folder, "case", threshold=0.3)
    assert again.reportJson == first.reportJson and json.loads(again.reportJson.read_text())["n_microbleeds"] == 2
    again = reportExport.exportReview(second.segmentationNode, second.tableNode, volume, folder, "case", threshold=0.3)
    assert again.reportJson == files.reportJson
    # Files of unknown origin are not replaced either; overwrite=True (batch runs) writes the name it is given.
    (folder / "other_cmb-final.nii.gz").write_bytes(b"not ours")
    assert reportExport.exportReview(seg, table, volume, folder, "other").labelMap.name == "other-2_cmb-final.nii.gz"
    forced = reportExport.exportReview(seg, table, volume, folder, "other", overwrite=True)
    assert forced.labelMap.name == "other_cmb-final.nii.gz" and nib.load(forced.labelMap).shape == SHAPE


def test_an_export_that_fails_half_way_leaves_the_earlier_export_of_the_result_whole(case, tmp_path, monkeypatch):
    # The four files were renamed into place one by one: a failure writing the report (disk full) left the new label
    # map and segmentation beside the CSV and JSON of the earlier export, which described other microbleeds.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    first = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case")
    paths = [first.labelMap, first.segmentation, first.reportCsv, first.reportJson]
    before = [p.read_bytes() for p in paths]
    reviewState.reject(seg, table, result.segmentIds[0])

    def diskFull(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reportExport, "writeTextAtomic", diskFull)
    with pytest.raises(OSError, match="No space"):
        reportExport.exportReview(seg, table, volume, tmp_path / "export", "case")
    assert [p.read_bytes() for p in paths] == before
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == sorted(p.name for p in paths)  # no temporaries
    monkeypatch.undo()
    again = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case")
    assert again.reportJson == first.reportJson and again.count == first.count - 1


def test_a_reader_microbleed_never_takes_the_name_of_another(case, tmp_path):
    # Its name was "Microbleed <number of segments + 1>": after a deletion, the name of an existing one.
    _, _, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    seg.GetSegmentation().RemoveSegment(result.segmentIds[1])  # "Microbleed 2"
    single = np.zeros(SHAPE, np.int16)
    single[18:20, 9:11, 4:6] = 1
    labelPath, jsonPath, candidates = _writeEngineOutput(tmp_path / "point", single, {1: 0.62})
    added = reviewState.addReaderMicrobleed(seg, table, labelPath, jsonPath, candidates[0]["center_ras"])
    names = [
        seg.GetSegmentation().GetNthSegment(i).GetName() for i in range(seg.GetSegmentation().GetNumberOfSegments())
    ]
    assert seg.GetSegmentation().GetSegment(added).GetName() == "Microbleed 4"
    assert len(set(names)) == len(names) == 3


def test_export_with_nothing_included_writes_an_empty_label_map(case, tmp_path):
    _, volume, result, _, _ = case
    for segmentId in result.segmentIds:
        reviewState.reject(result.segmentationNode, result.tableNode, segmentId)
    files = reportExport.exportReview(result.segmentationNode, result.tableNode, volume, tmp_path / "e", "c")
    assert files.count == 0 and not np.asarray(nib.load(files.labelMap).dataobj).any()
    assert json.loads(files.reportJson.read_text())["n_microbleeds"] == 0


# --- engine inputs -----------------------------------------------------------------------------------------


def test_inputs_are_written_with_voxels_and_geometry_intact(case, tmp_path):
    scene, volume, result, _, _ = case
    prepared = inferenceJob.prepareInputs(volume, result.segmentationNode, tmp_path / "work")
    image = nib.load(prepared.inputPath)
    assert np.allclose(image.affine, ijkToRas(volume)) and np.array_equal(
        image.get_fdata(), arrayFromVolumeNode(volume)
    )
    mask = np.asarray(nib.load(prepared.maskPath).dataobj)
    assert np.array_equal(mask > 0, _labels() > 0)  # a segmentation as brain mask, on the input grid
    assert prepared.outputs.labelMap == prepared.outputDir / "case-T2star_cmb.nii.gz"  # "T2*" stays a word
    assert inferenceJob.safeFileName("case T2*") == "case-T2"


def test_the_sequence_the_scene_knows_reaches_the_engine(case, tmp_path):
    from CMBSegmentationLib import sequenceInfo
    from plkd.inference.inputs import ScanInput, with_metadata_from
    from plkd.inference.modality import detect_modality

    scene, volume, _, _, _ = case
    # Loaded from a file with a dcm2niix sidecar: the engine is given that file, whose metadata it reads itself.
    loaded = tmp_path / "data" / "sub-01_T2starw.nii.gz"
    loaded.parent.mkdir()
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), AFFINE), str(loaded))
    (tmp_path / "data" / "sub-01_T2starw.json").write_text(json.dumps({"SequenceName": "*swi3d1r", "EchoTime": 0.02}))
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(loaded))
    volume.SetAndObserveStorageNodeID(storage.GetID())
    prepared = inferenceJob.prepareInputs(volume, None, tmp_path / "work")
    assert prepared.metadataPath == loaded
    assert not prepared.inputPath.with_name("case-T2star.json").exists()  # no copy of the file's metadata
    for point in (None, (1.0, 2.0, 3.0)):  # the run and a click on its result read the same file
        argv = inferenceJob.engineCommand(prepared, "py", "", "CPU", None, "Auto", point)
        assert f"--metadata-from={loaded}" in argv
    scan = with_metadata_from([ScanInput(prepared.inputPath)], prepared.metadataPath)  # as the engine reads it
    decision = detect_modality(scan.described_by)
    assert (decision.modality, decision.source) == ("SWI", "sidecar")
    # The file gone: the node's name is what the engine reads ("case T2*" -> T2*).
    loaded.unlink()
    prepared = inferenceJob.prepareInputs(volume, None, tmp_path / "work2")
    argv = inferenceJob.engineCommand(prepared, "py")
    assert prepared.metadataPath is None and not any(a.startswith("--metadata-from") for a in argv)
    assert not prepared.inputPath.with_name("case-T2star.json").exists()
    decision = detect_modality(prepared.inputPath)
    assert (decision.modality, decision.source) == ("T2S", "file name")  # not "T2*" by default, for want of a word
    volume.SetAndObserveStorageNodeID(None)
    volume.SetName("sub-02_swi")
    prepared = inferenceJob.prepareInputs(volume, None, tmp_path / "work3")
    assert detect_modality(prepared.inputPath).modality == "SWI"
    volume.SetName("case T2*")

    # Loaded from DICOM: the series' tags in Slicer's DICOM database become the input's sidecar.
    class Database:
        isOpen = True  # noqa: N815 - ctkDICOMDatabase's name

        def fileForInstance(self, uid):
            return f"/dicom/{uid}.dcm" if uid == "1.2.3" else ""

        def fileValue(self, path, tag):
            return {"0018,0024": "*swi3d1r", "0008,103E": "SWI_Images"}.get(tag, "")

    (tmp_path / "work4").mkdir()
    volume.SetAttribute("DICOM.instanceUIDs", "1.2.3 1.2.4")
    storage.SetFileName(str(tmp_path / "data" / "sub-01_T2starw.json"))  # a DICOM volume's file is never passed
    volume.SetAndObserveStorageNodeID(storage.GetID())
    try:
        assert sequenceInfo.loadedFile(volume) is None
        written = sequenceInfo.writeSequenceSidecar(volume, tmp_path / "work4" / "case-T2star.nii.gz", Database())
    finally:
        volume.RemoveAttribute("DICOM.instanceUIDs")
        volume.SetAndObserveStorageNodeID(None)
    assert json.loads(written.read_text()) == {"SequenceName": "*swi3d1r", "SeriesDescription": "SWI_Images"}


def test_the_model_and_the_contrast_of_a_run_reach_the_table_and_the_report(case, tmp_path):
    scene, volume, result, _, _ = case
    # An engine output of an older version names its model only.
    assert resultImport.describeModelChoice(result.modelChoice) == ""
    files = reportExport.exportReview(result.segmentationNode, result.tableNode, volume, tmp_path / "old", "case")
    report = json.loads(files.reportJson.read_text())
    assert report["model"] == "tiny" and "modality" not in report
    # An SWI scan analysed by the T2* model (none for SWI installed): said in the log line, kept in the report.
    labelPath, jsonPath, _ = _writeEngineOutput(tmp_path / "swi", _labels(), PROBABILITY)
    decision = {"modality": "SWI", "source": "sidecar", "reason": "sidecar SequenceName '*swi3d1r'", "conflict": None,
                "stated": "auto", "model_modality": "T2S"}  # fmt: skip
    jsonPath.write_text(json.dumps({**json.loads(jsonPath.read_text()), "model": "cmb-t2s", "modality": decision}))
    result = resultImport.importResults(scene, volume, labelPath, jsonPath)
    expected = "T2* model for an SWI scan (sidecar SequenceName '*swi3d1r')"
    assert resultImport.describeModelChoice(resultImport.modelChoiceOf(result.tableNode)) == expected
    files = reportExport.exportReview(result.segmentationNode, result.tableNode, volume, tmp_path / "new", "case")
    report = json.loads(files.reportJson.read_text())
    assert report["model"] == "cmb-t2s" and report["modality"] == decision
    # The installed SWI model handed thick slices to the T2* one: the log line says why, as the engine's line does.
    handOver = "SWI slices of LR factor 4: from 3.5 to below 5.66 the SWI model hands them to the T2* model"
    jsonPath.write_text(
        json.dumps({**json.loads(jsonPath.read_text()), "modality": {**decision, "model_reason": handOver}})
    )
    result = resultImport.importResults(scene, volume, labelPath, jsonPath)
    shown = resultImport.describeModelChoice(resultImport.modelChoiceOf(result.tableNode))
    assert shown == f"T2* model for an SWI scan (sidecar SequenceName '*swi3d1r'; {handOver})"
    # A click on this result is segmented as SWI, whatever the Modality choice says now; an older result's as chosen.
    assert resultImport.reviewedModality(result.segmentationNode, "T2*") == "SWI"
    assert resultImport.reviewedModality(case[2].segmentationNode, "T2*") == "T2*"


# --- outputs are never overwritten unasked -------------------------------------------------------------------


def _nodeSummary(scene) -> list[tuple[str, str]]:
    return sorted((scene.GetNthNode(i).GetClassName(), scene.GetNthNode(i).GetName() or "")
                  for i in range(scene.GetNumberOfNodes()))  # fmt: skip


def test_a_run_never_overwrites_a_reviewed_result_unasked(case, tmp_path):
    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    reviewState.reject(seg, table, result.segmentIds[0])
    labelPath, jsonPath = tmp_path / "engine" / "case_cmb.nii.gz", tmp_path / "engine" / "case_cmb.json"
    content = resultImport.existingContent(seg, table)
    assert any("3 segment(s)" in c for c in content) and any("1 reviewed" in c for c in content)
    with pytest.raises(resultImport.OutputNotEmptyError, match="not replaced"):
        resultImport.importResults(scene, volume, labelPath, jsonPath, seg, table)
    assert _status(result, result.segmentIds[0]) == candidateTable.STATUS_REJECTED  # untouched
    # New nodes by default: the reviewed result stays as it is.
    fresh = resultImport.importResults(scene, volume, labelPath, jsonPath)
    assert fresh.segmentationNode is not seg and fresh.tableNode is not table
    assert _status(result, result.segmentIds[0]) == candidateTable.STATUS_REJECTED
    # Replacing is possible when asked for ...
    again = resultImport.importResults(scene, volume, labelPath, jsonPath, seg, table, replace=True)
    assert _status(again, again.segmentIds[0]) == candidateTable.STATUS_NOT_SEEN
    # ... but never of an input of the run (the brain mask) or of a table that is not a candidate table.
    mask = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "brain mask")
    with pytest.raises(resultImport.OutputNotEmptyError, match="input of the run"):
        resultImport.importResults(scene, volume, labelPath, jsonPath, mask, None, replace=True, inputNodes=[mask])
    other = scene.AddNewNodeByClass("vtkMRMLTableNode", "measurements")
    column = __import__("vtk").vtkStringArray()
    column.SetName("lesion")
    column.InsertNextValue("keep me")
    other.AddColumn(column)
    with pytest.raises(resultImport.OutputNotEmptyError, match="not a candidate table"):
        resultImport.importResults(scene, volume, labelPath, jsonPath, None, other, replace=True)
    assert other.GetCellText(0, 0) == "keep me"


def test_a_candidates_file_with_an_unreadable_value_leaves_the_result_it_would_replace_untouched(case, tmp_path):
    # A value that is not a number in the 2nd kept candidate was found half way through the import, after the
    # result being replaced (reviewed, and the reader said Replace) had lost its segments and rows.
    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    reviewState.reject(seg, table, result.segmentIds[0])
    labelPath, jsonPath, _ = _writeEngineOutput(tmp_path / "bad", _labels(), PROBABILITY)
    data = json.loads(jsonPath.read_text())
    data["candidates"][1]["probability"] = "high"
    jsonPath.write_text(json.dumps(data))
    nodes = scene.GetNumberOfNodes()
    with pytest.raises(resultImport.ResultFormatError, match="not a number"):
        resultImport.importResults(scene, volume, labelPath, jsonPath, seg, table, replace=True)
    assert seg.GetSegmentation().GetNumberOfSegments() == 3 and table.GetNumberOfRows() == 3
    assert _status(result, result.segmentIds[0]) == candidateTable.STATUS_REJECTED
    assert scene.GetNumberOfNodes() == nodes


def test_a_run_whose_output_nodes_were_deleted_meanwhile_lands_in_new_nodes_of_the_scene(case, tmp_path):
    # The reader deleted the chosen outputs while the engine ran: the import filled the detached nodes, the status
    # line said "3 microbleed candidate(s) found" and the scene showed nothing of the run.
    scene, volume, result, _, _ = case
    labelPath, jsonPath = tmp_path / "engine" / "case_cmb.nii.gz", tmp_path / "engine" / "case_cmb.json"
    seg, table = result.segmentationNode, result.tableNode
    scene.RemoveNode(seg)
    scene.RemoveNode(table)
    again = resultImport.importResults(scene, volume, labelPath, jsonPath, seg, table, replace=True)
    assert again.segmentationNode is not seg and again.tableNode is not table
    assert again.segmentationNode.GetScene() is scene and again.tableNode.GetScene() is scene
    assert again.segmentationNode.GetSegmentation().GetNumberOfSegments() == 3
    assert again.tableNode.GetNumberOfRows() == 3
    assert candidateTable.tableOfSegmentation(scene, again.segmentationNode) is again.tableNode
    assert any("left the scene during the run" in note for note in again.notes)
    assert json.loads(again.tableNode.GetAttribute(candidateTable.ATTRIBUTE_NOTES)) == []  # the engine's only
    # The volume itself removed: nothing is imported, with a message, and nothing is added to the scene.
    before = scene.GetNumberOfNodes()
    scene.RemoveNode(volume)
    with pytest.raises(resultImport.ResultFormatError, match="no longer in the scene"):
        resultImport.importResults(volume.GetScene(), volume, labelPath, jsonPath)
    with pytest.raises(resultImport.ResultFormatError, match="no longer in the scene"):
        resultImport.importResults(scene, volume, labelPath, jsonPath)
    assert scene.GetNumberOfNodes() == before - 1


def test_a_table_of_an_earlier_run_into_the_same_segmentation_is_not_applied_to_the_new_segments(case, tmp_path):
    # Apply again into the same segmentation with a new table: the old table still named the segmentation, and
    # its statuses ("rejected") went onto the new segments, which share their ids (Microbleed_<id>): hidden and
    # silently left out of the export.
    scene, volume, result, _, _ = case
    seg, old = result.segmentationNode, result.tableNode
    for segmentId in result.segmentIds:
        reviewState.reject(seg, old, segmentId)
    labelPath, jsonPath, _ = _writeEngineOutput(tmp_path / "again", _labels(), PROBABILITY)
    again = resultImport.importResults(scene, volume, labelPath, jsonPath, seg, None, replace=True)
    assert again.segmentIds == result.segmentIds  # the same ids: nothing but the run tells the tables apart
    assert candidateTable.tableOfSegmentation(scene, seg) is again.tableNode
    assert not candidateTable.belongsTo(old, seg) and candidateTable.belongsTo(again.tableNode, seg)
    with pytest.raises(reviewState.ReviewError, match="another result"):
        reviewState.restoreReview(seg, old)
    with pytest.raises(reviewState.ReviewError, match="another result"):
        reportExport.exportReview(seg, old, volume, tmp_path / "export", "case", threshold=0.3)
    assert all(seg.GetDisplayNode().GetSegmentVisibility(s) for s in again.segmentIds)
    assert reviewState.adoptPaintedSegments(seg, old) == [] and old.GetNumberOfRows() == 3
    files = reportExport.exportReview(seg, again.tableNode, volume, tmp_path / "export", "case", threshold=0.3)
    assert files.count == 3


def test_import_records_run_threshold_notes_region_and_never_zeroes_a_missing_probability(case, tmp_path):
    scene, volume, _, _, _ = case
    notes = ["candidate count capped at 500", "fell back to the CPU"]
    labelPath, jsonPath, _ = _writeEngineOutput(tmp_path / "noted", _labels(), PROBABILITY, notes=notes)
    data = json.loads(jsonPath.read_text())
    data["candidates"][2]["probability"] = None  # e.g. a candidate the engine could not score
    jsonPath.write_text(json.dumps(data))
    result = resultImport.importResults(scene, volume, labelPath, jsonPath)
    assert result.notes == ["candidate count capped at 500", "fell back to the CPU"]
    table = result.tableNode
    assert json.loads(table.GetAttribute(candidateTable.ATTRIBUTE_NOTES)) == result.notes
    assert reviewState.runThreshold(table) == pytest.approx(0.3)
    rows = candidateTable.readRows(table)
    assert rows[2].probability is None and rows[0].probability == pytest.approx(0.95)
    assert [r.location for r in rows] == ["lobar", "deep", ""]
    assert [r.region for r in rows] == ["frontal", "thalamus", ""]
    # Numbers are stored with the digits that matter, not vtkVariant's six.
    column = table.GetTable().GetColumnByName(candidateTable.COLUMN_R)
    for r in range(table.GetNumberOfRows()):
        value = column.GetValue(r)
        assert value == round(value, 3)
    # A table saved by an older version (no Region column) still reads.
    old = scene.AddNewNodeByClass("vtkMRMLTableNode")
    candidateTable.createCandidateTable(scene, "old", old)
    old.RemoveColumn(old.GetColumnIndex(candidateTable.COLUMN_REGION))
    candidateTable.appendRow(old, rows[0])
    assert candidateTable.readRows(old)[0].region == "" and candidateTable.readRows(old)[0].location == "lobar"


def test_the_run_threshold_is_the_one_the_engine_applied(case, tmp_path):
    # The widget passed the slider's value at the end of the run: moved meanwhile (or 0 for the model's own
    # thresholds), it became the run and review threshold, and microbleeds the engine kept below it were hidden
    # and silently left out of the export.
    scene, volume, _, _, _ = case
    labelPath, jsonPath, _ = _writeEngineOutput(tmp_path / "moved", _labels(), PROBABILITY)  # applied: 0.3
    result = resultImport.importResults(scene, volume, labelPath, jsonPath, runThreshold=0.8)
    assert reviewState.runThreshold(result.tableNode) == pytest.approx(0.3)
    assert reviewState.reviewThreshold(result.tableNode) == pytest.approx(0.3)
    files = reportExport.exportReview(result.segmentationNode, result.tableNode, volume, tmp_path / "export", "c")
    assert files.count == 3  # 0.95, 0.40 and 0.70: every microbleed the engine kept
    # A file without thresholds (an older engine) still takes the caller's value.
    data = json.loads(jsonPath.read_text())
    del data["thresholds"]
    jsonPath.write_text(json.dumps(data))
    result = resultImport.importResults(scene, volume, labelPath, jsonPath, runThreshold=0.45)
    assert reviewState.runThreshold(result.tableNode) == pytest.approx(0.45)


def test_review_threshold_lives_with_the_table_and_not_below_the_run_threshold(case):
    _, _, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    assert reviewState.reviewThreshold(table) == pytest.approx(0.3)  # starts at the run's
    assert reviewState.setReviewThreshold(seg, table, 0.6) == pytest.approx(0.6)
    assert reviewState.reviewThreshold(table) == pytest.approx(0.6)
    shown = [seg.GetDisplayNode().GetSegmentVisibility(s) for s in result.segmentIds]
    assert shown == [True, False, True]  # 0.95, 0.40, 0.70
    # Below the run threshold nothing more could appear (those candidates were never imported): clamped.
    assert reviewState.setReviewThreshold(seg, table, 0.1) == pytest.approx(0.3)
    assert all(seg.GetDisplayNode().GetSegmentVisibility(s) for s in result.segmentIds)


def test_a_table_without_its_thresholds_exports_every_candidate_the_engine_kept(case, tmp_path):
    # A .tsv loaded alone has no attributes: the review threshold fell back to 0.5, so candidates not yet seen
    # below it (0.40 here) were hidden and silently left out of the export.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    for name in (candidateTable.ATTRIBUTE_REVIEW_THRESHOLD, candidateTable.ATTRIBUTE_RUN_THRESHOLD):
        table.RemoveAttribute(name)
    reviewState.restoreReview(seg, table)
    assert all(seg.GetDisplayNode().GetSegmentVisibility(s) for s in result.segmentIds)
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case")
    assert files.count == 3


def test_review_actions_from_a_script_keep_the_review_threshold(case):
    # accept/reject without a threshold used 0: every candidate not yet seen was shown again, whatever the
    # review threshold the export then applied.
    _, _, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    reviewState.setReviewThreshold(seg, table, 0.6)
    reviewState.accept(seg, table, result.segmentIds[0])
    reviewState.reject(seg, table, result.segmentIds[2])
    shown = [seg.GetDisplayNode().GetSegmentVisibility(s) for s in result.segmentIds]
    assert shown == [True, False, False]  # accepted; 0.40 below 0.6; rejected


def test_export_and_a_segmentation_as_brain_mask_leave_no_helper_nodes_in_the_scene(case, tmp_path):
    scene, volume, result, _, _ = case
    before = _nodeSummary(scene)
    reportExport.exportReview(result.segmentationNode, result.tableNode, volume, tmp_path / "export", "case")
    inferenceJob.prepareInputs(volume, result.segmentationNode, tmp_path / "work")
    after = _nodeSummary(scene)
    assert after == before, f"left behind: {sorted(set(after) - set(before))}"
    assert not [name for _, name in after if name.endswith("_ColorTable")]


def test_a_segmentation_as_brain_mask_counts_its_hidden_segments_too(case, tmp_path):
    # Only the visible segments were written: a segment hidden while looking at the image left its part of the brain
    # out of the search, silently.
    scene, volume, result, _, _ = case
    seg = result.segmentationNode
    seg.GetDisplayNode().SetSegmentVisibility(result.segmentIds[0], False)
    written = np.asarray(nib.load(str(inferenceJob.writeMaskAsNifti(seg, volume, tmp_path / "m.nii.gz"))).dataobj)
    np.testing.assert_array_equal(written > 0, _labels() > 0)
    for segmentId in result.segmentIds:
        seg.GetDisplayNode().SetSegmentVisibility(segmentId, False)
    written = np.asarray(nib.load(str(inferenceJob.writeMaskAsNifti(seg, volume, tmp_path / "m2.nii.gz"))).dataobj)
    np.testing.assert_array_equal(written > 0, _labels() > 0)


def test_a_probability_map_as_brain_mask_reaches_the_engine_with_its_values(case, tmp_path):
    scene, volume, _, _, _ = case
    probability = np.zeros(SHAPE, dtype=np.float32)
    probability[2:-2, 2:-2, 1:-1] = 0.9
    probability[1, :, :] = 0.02  # a faint tail, as brain-extraction tools leave around the brain
    soft = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "brain probability")
    updateVolumeNodeFromArray(soft, probability, AFFINE)
    written = nib.load(str(inferenceJob.writeMaskAsNifti(soft, volume, tmp_path / "soft.nii.gz")))
    np.testing.assert_allclose(written.get_fdata(), probability, atol=1e-6)
    # An image of whole numbers chosen as brain mask (the input itself, a T1) keeps its values: the engine refuses it
    # (written as 0/1, every voxel above 0 was searched).
    image = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T1")
    integers = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) % 3000
    updateVolumeNodeFromArray(image, integers, AFFINE)
    written = nib.load(str(inferenceJob.writeMaskAsNifti(image, volume, tmp_path / "image.nii.gz")))
    np.testing.assert_array_equal(written.get_fdata(), integers)
    # A label map stays 0/1.
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "brain label")
    updateVolumeNodeFromArray(labels, (probability > 0.5).astype(np.int16) * 3, AFFINE)
    written = nib.load(str(inferenceJob.writeMaskAsNifti(labels, volume, tmp_path / "label.nii.gz")))
    assert set(np.unique(written.get_fdata())) == {0.0, 1.0}


# --- a saved scene (.mrb) keeps everything the reader decided ----------------------------------------------------


def _saveMrb(scene, folder: Path) -> Path:
    """Save like Slicer's .mrb: every storable node's data beside the MRML file, zipped."""
    data = folder / "scene"
    data.mkdir(parents=True)
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        if not node.IsA("vtkMRMLStorableNode") or node.GetHideFromEditors() and not node.IsA("vtkMRMLTableNode"):
            continue
        storage = node.GetStorageNode()
        if storage is None:
            storage = node.CreateDefaultStorageNode()
            if storage is None:
                continue
            scene.AddNode(storage)
            node.SetAndObserveStorageNodeID(storage.GetID())
        storage.SetFileName(str(data / f"{node.GetID()}.{storage.GetDefaultWriteFileExtension()}"))
        assert storage.WriteData(node), node.GetName()
    scene.SetRootDirectory(str(data))
    scene.SetURL(str(data / "scene.mrml"))
    assert scene.Commit()
    mrb = folder / "review.mrb"
    assert slicer.vtkMRMLApplicationLogic().Zip(str(mrb), str(data))
    return mrb


def _loadMrb(mrb: Path, folder: Path):
    folder.mkdir()
    mrml = slicer.vtkMRMLScene.UnpackSlicerDataBundle(str(mrb), str(folder))
    scene = slicer.vtkMRMLScene()
    scene.SetURL(mrml)
    scene.SetRootDirectory(str(Path(mrml).parent))
    assert scene.Connect()
    return scene


def test_everything_the_reader_decided_survives_save_close_and_reload_of_an_mrb(case, tmp_path):
    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    ids = result.segmentIds
    added = _reviewOneOfEach(seg, table, ids, tmp_path)
    # Another volume is loaded and selected meanwhile: the result still knows the volume it was computed on.
    scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "another series")
    expected = reportExport.exportReview(seg, table, volume, tmp_path / "before", "case")
    assert expected.count == 2

    mrb = _saveMrb(scene, tmp_path / "saved")
    scene.Clear(1)  # close
    loaded = _loadMrb(mrb, tmp_path / "loaded")

    tables = [n for n in (loaded.GetNthNodeByClass(i, "vtkMRMLTableNode")
                          for i in range(loaded.GetNumberOfNodesByClass("vtkMRMLTableNode")))
              if candidateTable.isCandidateTable(n)]  # fmt: skip
    (table2,) = tables
    seg2 = table2.GetNodeReference(candidateTable.REFERENCE_SEGMENTATION)
    assert seg2 is not None and seg2.IsA("vtkMRMLSegmentationNode")
    reference = resultImport.referenceVolume(seg2)
    assert reference is not None and reference.GetName() == "case T2*"
    assert np.array_equal(arrayFromVolumeNode(reference), arrayFromVolumeNode(volume))
    assert reviewState.reviewThreshold(table2) == pytest.approx(0.8)
    assert reviewState.runThreshold(table2) == pytest.approx(0.3)
    rows = reviewState.restoreReview(seg2, table2)
    assert {r.segmentId: r.status for r in rows} == {
        ids[0]: candidateTable.STATUS_REJECTED,
        ids[1]: candidateTable.STATUS_ACCEPTED,
        ids[2]: candidateTable.STATUS_NOT_SEEN,
        added: candidateTable.STATUS_ADDED,
    }
    addedSegment = seg2.GetSegmentation().GetSegment(added)
    assert resultImport.segmentTag(addedSegment, candidateTable.TAG_ORIGIN) == candidateTable.ORIGIN_READER
    assert np.array_equal(_segmentMask(seg2, added, reference), _clickedMicrobleed() == 1)
    assert [seg2.GetDisplayNode().GetSegmentVisibility(s) for s in (*ids, added)] == [False, True, False, True]
    # The reloaded scene exports exactly the microbleeds the reader saw.
    files = reportExport.exportReview(seg2, table2, reference, tmp_path / "after", "case")
    assert files.count == expected.count
    assert np.array_equal(np.asarray(nib.load(files.labelMap).dataobj), np.asarray(nib.load(expected.labelMap).dataobj))
    before, after = (json.loads(f.reportJson.read_text()) for f in (expected, files))
    assert after["microbleeds"] == before["microbleeds"] and after["threshold"] == pytest.approx(0.8)


def test_two_copies_of_one_saved_review_in_a_scene_never_replace_each_other_s_export(case, tmp_path):
    # One saved review loaded twice (two readers' copies brought together to compare): both copies carry the same
    # run id, so the export of the second replaced the first reader's files as its own, without a word.
    scene, _, result, _, _ = case
    mrb = _saveMrb(scene, tmp_path / "saved")
    combined = slicer.vtkMRMLScene()
    for k in (1, 2):
        folder = tmp_path / f"copy{k}"
        folder.mkdir()
        mrml = slicer.vtkMRMLScene.UnpackSlicerDataBundle(str(mrb), str(folder))
        combined.SetURL(mrml)
        combined.SetRootDirectory(str(Path(mrml).parent))
        assert combined.Import()
    copies = []
    for i in range(combined.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        seg = combined.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
        copies.append((seg, candidateTable.tableOfSegmentation(combined, seg), resultImport.referenceVolume(seg)))
    assert len(copies) == 2 and copies[0][2] is not copies[1][2]
    moved = result.segmentIds[0]
    reviewState.reject(copies[0][0], copies[0][1], moved)  # the first reader's decision
    reviewState.accept(copies[1][0], copies[1][1], moved)  # the second reader's
    folder = tmp_path / "export"
    first = reportExport.exportReview(*copies[0], folder, "case")
    second = reportExport.exportReview(*copies[1], folder, "case")
    assert first.reportJson != second.reportJson
    reports = [json.loads(f.reportJson.read_text()) for f in (first, second)]
    assert [r["microbleeds"][0]["status"] for r in reports] == ["not yet seen", "accepted"]
    assert reports[0]["result_id"] == reports[1]["result_id"] and reports[0]["review_id"] != reports[1]["review_id"]
    # Each copy's export again replaces its own files.
    assert reportExport.exportReview(*copies[0], folder, "case").reportJson == first.reportJson
    assert reportExport.exportReview(*copies[1], folder, "case").reportJson == second.reportJson


def test_a_saved_review_whose_table_file_is_lost_comes_back_from_the_segments(case, tmp_path):
    # The .tsv missing beside the saved scene (not saved, removed, not copied along): the table node loaded with its
    # attributes but without columns, was still taken as the result's table, and every review action and the export
    # stopped at "has no column 'ID'" although the segments held the review.
    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    reviewState.reject(seg, table, result.segmentIds[0])
    reviewState.setReviewThreshold(seg, table, 0.5)
    expected = reportExport.exportReview(seg, table, volume, tmp_path / "before", "case")
    mrb = _saveMrb(scene, tmp_path / "saved")
    folder = tmp_path / "unpacked"
    folder.mkdir()
    mrml = Path(slicer.vtkMRMLScene.UnpackSlicerDataBundle(str(mrb), str(folder)))
    (tsv,) = [p for p in mrml.parent.rglob("*.tsv") if not p.name.endswith(".schema.tsv")]
    tsv.unlink()
    loaded = slicer.vtkMRMLScene()
    loaded.SetURL(str(mrml))
    loaded.SetRootDirectory(str(mrml.parent))
    loaded.Connect()
    (seg2,) = [loaded.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
               for i in range(loaded.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]  # fmt: skip
    (broken,) = [loaded.GetNthNodeByClass(i, "vtkMRMLTableNode")
                 for i in range(loaded.GetNumberOfNodesByClass("vtkMRMLTableNode"))]  # fmt: skip
    assert candidateTable.lostItsColumns(broken) and not candidateTable.isCandidateTable(broken)
    assert candidateTable.tableOfSegmentation(loaded, seg2) is None and reviewState.canRebuildTable(seg2)
    rebuilt = reviewState.rebuildTable(seg2)
    assert candidateTable.tableOfSegmentation(loaded, seg2) is rebuilt
    assert reviewState.reviewThreshold(rebuilt) == pytest.approx(0.5)
    files = reportExport.exportReview(seg2, rebuilt, resultImport.referenceVolume(seg2), tmp_path / "after", "case")
    after, before = (json.loads(f.reportJson.read_text()) for f in (files, expected))
    for report in (after, before):
        del report["file_sha256"]["case_cmb-final.seg.nrrd"]  # reloaded: one shared layer, the same voxels
    assert before["input_file"] is None and after.pop("input_file").endswith(".nrrd")  # the volume's file in the .mrb
    del before["input_file"]
    # The report CSV names that file in each row (input_file) and is otherwise the same.
    rows = [list(csv.DictReader(f.reportCsv.open(newline=""))) for f in (files, expected)]
    assert [r.pop("input_file") for r in rows[1]] == [""] * len(rows[1])
    assert all(r.pop("input_file").endswith(".nrrd") for r in rows[0]) and rows[0] == rows[1]
    for report in (after, before):
        del report["file_sha256"]["case_cmb-report.csv"]
    assert after == before


# --- navigation and watching --------------------------------------------------------------------------------


def _sliceViews(scene):
    views = []
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        sliceNode = scene.AddNewNodeByClass("vtkMRMLSliceNode")
        sliceNode.SetLayoutName(name)
        sliceNode.SetOrientation(orientation)
        sliceNode.SetDimensions(256, 256, 1)
        sliceNode.SetFieldOfView(250, 250, 1)
        composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
        views.append((sliceNode, composite))
    return views


def test_showing_a_candidate_puts_the_reviewed_volume_in_every_view_centred_on_it(case):
    from CMBSegmentationLib import reviewNavigation

    scene, volume, result, _, _ = case
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "FLAIR")
    views = _sliceViews(scene)
    for _, composite in views:
        composite.SetBackgroundVolumeID(other.GetID())
        composite.SetForegroundVolumeID(other.GetID())
    row = candidateTable.readRows(result.tableNode)[0]
    reviewNavigation.showCandidate(scene, resultImport.referenceVolume(result.segmentationNode), row.centerRas)
    for sliceNode, composite in views:
        assert composite.GetBackgroundVolumeID() == volume.GetID()
        assert composite.GetForegroundVolumeID() == other.GetID()  # the reader's overlay is kept
        sliceToRas = sliceNode.GetSliceToRAS()
        assert [sliceToRas.GetElement(i, 3) for i in range(3)] == pytest.approx(list(row.centerRas), abs=1e-6)


def test_watcher_reports_every_change_of_the_shown_result_and_only_of_it(case, tmp_path):
    from CMBSegmentationLib.reviewWatcher import ReviewWatcher

    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    calls = []
    watcher = ReviewWatcher(scene, lambda: calls.append(1))
    watcher.watch(seg, table)
    table.SetCellText(0, table.GetColumnIndex(candidateTable.COLUMN_STATUS), candidateTable.STATUS_ACCEPTED)
    table.Modified()  # edited in the Tables module
    assert calls, "a table edit was not reported"
    reviewState.restoreReview(seg, table)  # what the refresh does: the segment follows the edited table
    assert _status(result, result.segmentIds[0]) == candidateTable.STATUS_ACCEPTED
    calls.clear()
    seg.GetSegmentation().GetSegment(result.segmentIds[1]).SetName("renamed")  # Segment Editor
    seg.GetSegmentation().RemoveSegment(result.segmentIds[2])
    assert len(calls) >= 2
    # Another result selected: the first one no longer triggers refreshes.
    labelPath, jsonPath = tmp_path / "engine" / "case_cmb.nii.gz", tmp_path / "engine" / "case_cmb.json"
    second = resultImport.importResults(scene, volume, labelPath, jsonPath)
    watcher.watch(second.segmentationNode, second.tableNode)
    calls.clear()
    table.Modified()
    assert not calls
    second.tableNode.Modified()
    assert calls
    # A scene imported while the module is shown, and the shown table removed.
    calls.clear()
    scene.InvokeEvent(slicer.vtkMRMLScene.EndImportEvent)
    assert calls
    calls.clear()
    scene.RemoveNode(second.tableNode)
    assert calls and watcher.watched == (None, None)
    watcher.close()
    calls.clear()
    table.Modified()
    scene.InvokeEvent(slicer.vtkMRMLScene.EndImportEvent)
    assert not calls


def test_a_result_s_table_and_segmentation_find_each_other(case, tmp_path):
    scene, volume, result, _, _ = case
    labelPath, jsonPath = tmp_path / "engine" / "case_cmb.nii.gz", tmp_path / "engine" / "case_cmb.json"
    second = resultImport.importResults(scene, volume, labelPath, jsonPath)
    for one in (result, second):
        assert candidateTable.segmentationOfTable(one.tableNode) is one.segmentationNode
        assert candidateTable.tableOfSegmentation(scene, one.segmentationNode) is one.tableNode
    assert candidateTable.tableOfSegmentation(scene, scene.AddNewNodeByClass("vtkMRMLSegmentationNode")) is None


def test_each_segment_is_read_from_its_own_layer_however_often_segments_are_read():
    # segmentVoxels cached each shared layer under id() of its Python wrapper; a wrapper released after its segment
    # could hand its id to the next layer's, which then read the earlier layer's voxels: a segment was exported (and
    # measured) as another one, depending on what ran before (seen as an order-dependent failure of the suite).
    from CMBSegmentationLib import segmentLabelMap

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    resultImport.ensureSegmentationConverters()
    shape, churn, wrong = (20, 20, 10), [], 0
    for trial in range(150):
        scene = slicer.vtkMRMLScene()
        volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        updateVolumeNodeFromArray(volume, np.zeros(shape, np.float32), np.eye(4))
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        masks, ids = [], []
        for n in range(3):
            mask = np.zeros(shape, bool)
            mask[2 + 5 * n : 4 + 5 * n, 2:4, 2:4] = True
            masks.append(mask)
            ids.append(resultImport.addCandidateSegment(seg, mask, np.eye(4), f"M{n}", n + 1, "not yet seen", 0.9))
        # Segment Editor edits give segments layers of their own: one grown, one erased.
        masks[2] = np.zeros(shape, bool)
        masks[2][12:17, 1:6, 1:4] = True
        masks[0] = np.zeros(shape, bool)
        for segmentId, mask in ((ids[2], masks[2][12:17, 1:6, 1:4]), (ids[0], np.zeros((1, 1, 1), bool))):
            lo = np.argwhere(masks[2]).min(axis=0) if segmentId == ids[2] else np.zeros(3, int)
            image = resultImport.orientedImage(mask.astype(np.uint8), lo, np.eye(4))
            assert logic.SetBinaryLabelmapToSegment(image, seg, segmentId, logic.MODE_REPLACE)
        churn.append([slicer.vtkOrientedImageData() for _ in range(trial % 7)])  # what else runs allocates too
        for mask, own in zip(masks, segmentLabelMap.segmentVoxels(seg, ids, volume), strict=True):
            wrong += not np.array_equal(np.sort(own, axis=0), np.sort(np.argwhere(mask), axis=0))
    assert wrong == 0
