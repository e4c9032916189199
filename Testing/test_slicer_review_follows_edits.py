"""The review list and the candidate table follow what the reader does to the segments (real ``slicer-core`` scene).

The table's centre and volume of a candidate were the engine's for good: a candidate grown, trimmed or erased with the
Segment Editor kept its old volume in the review list and in the saved table (the export alone measured it again), and
painting was no change the list heard of, so a microbleed painted as a new segment stayed out of the list.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package has no MRML classes (slicer-core missing)", allow_module_level=True)

from segment_editor_effects import paint  # noqa: E402
from test_slicer_scene import AFFINE, SHAPE, _centre, case  # noqa: E402, F401

from CMBSegmentationLib import candidateTable, reportExport, resultImport, reviewState  # noqa: E402
from CMBSegmentationLib.reviewWatcher import ReviewWatcher  # noqa: E402

VOXEL_MM3 = abs(float(np.linalg.det(AFFINE[:3, :3])))


def _stroke(mask: np.ndarray):
    return resultImport.orientedImage(mask.astype(np.uint8), np.zeros(3, int), AFFINE)


def _row(table, segment_id) -> candidateTable.CandidateRow:
    return candidateTable.readRows(table)[candidateTable.rowIndexOfSegment(table, segment_id)]


def test_a_candidate_grown_with_the_segment_editor_shows_its_new_volume_and_centre(case, tmp_path):  # noqa: F811
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    grown = result.segmentIds[2]  # label 5: 6 voxels
    stroke = np.zeros(SHAPE, bool)
    stroke[9:14, 3:7, 1:3] = True  # paints over it: 40 voxels in all
    calls = []
    watcher = ReviewWatcher(volume.GetScene(), lambda: calls.append(1))
    watcher.watch(seg, table)
    paint(seg, volume, grown, _stroke(stroke))
    watcher.close()
    assert calls, "painting a candidate was not reported to the review list"

    rows = {r.segmentId: r for r in reviewState.restoreReview(seg, table)}  # what each refresh of the list does
    assert rows[grown].volumeMm3 == pytest.approx(40 * VOXEL_MM3, abs=0.01)
    assert rows[grown].centerRas == pytest.approx(_centre(stroke), abs=1e-3)
    assert _row(table, grown) == rows[grown]  # the table (saved with the scene) says the same
    # The export measures alike: the table, the list and the report agree.
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.3)
    record = next(r for r in _report(files)["microbleeds"] if r["candidate_id"] == rows[grown].candidateId)
    assert record["volume_mm3"] == pytest.approx(rows[grown].volumeMm3, abs=0.01)
    assert [record["r_mm"], record["a_mm"], record["s_mm"]] == pytest.approx(rows[grown].centerRas, abs=1e-3)
    # Nothing changed since: a refresh writes nothing (no refresh loop through the table's Modified event).
    before = table.GetMTime()
    reviewState.restoreReview(seg, table)
    assert table.GetMTime() == before


def test_a_candidate_erased_to_nothing_shows_no_volume_but_keeps_where_it_was(case):  # noqa: F811
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    erased = result.segmentIds[0]
    where = _row(table, erased).centerRas
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(_stroke(np.zeros((1, 1, 1))), seg, erased, logic.MODE_REPLACE)
    row = {r.segmentId: r for r in reviewState.restoreReview(seg, table)}[erased]
    assert row.volumeMm3 == 0.0 and row.centerRas == pytest.approx(where)  # the list still jumps to where it was


def test_a_microbleed_painted_as_a_new_segment_reaches_the_list_as_it_is_painted(case):  # noqa: F811
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    calls = []
    watcher = ReviewWatcher(volume.GetScene(), lambda: calls.append(1))
    watcher.watch(seg, table)
    new = seg.GetSegmentation().AddEmptySegment("", "Segment_4")  # Segment Editor: Add
    reviewState.restoreReview(seg, table)  # the refresh the new segment triggers: nothing painted yet
    assert candidateTable.rowIndexOfSegment(table, new) < 0
    calls.clear()
    first = np.zeros(SHAPE, bool)
    first[18:20, 9:11, 4:5] = True
    paint(seg, volume, new, _stroke(first))  # first stroke
    assert calls, "a stroke was not reported: the painted microbleed stayed out of the list"
    assert _row_after_refresh(seg, table, new).volumeMm3 == pytest.approx(4 * VOXEL_MM3, abs=0.01)
    second = np.zeros(SHAPE, bool)
    second[18:20, 9:11, 5:6] = True
    paint(seg, volume, new, _stroke(second))  # second stroke: the row follows
    row = _row_after_refresh(seg, table, new)
    assert row.volumeMm3 == pytest.approx(8 * VOXEL_MM3, abs=0.01) and row.status == candidateTable.STATUS_ADDED
    assert row.centerRas == pytest.approx(_centre(first | second), abs=1e-3)
    watcher.close()


def _row_after_refresh(seg, table, segment_id) -> candidateTable.CandidateRow:
    return {r.segmentId: r for r in reviewState.restoreReview(seg, table)}[segment_id]


def _result_under_transform(tmp_path, elements: dict):
    """A result imported onto a volume lying under a linear transform with the given matrix ``elements`` ({(row,
    column): value} on the identity): (scene, volume, transform node, its matrix, segmentation, table)."""
    import vtk
    from test_slicer_scene import _labels, _writeEngineOutput, updateVolumeNodeFromArray

    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "case T2*")
    updateVolumeNodeFromArray(volume, np.zeros(SHAPE, np.float32), AFFINE)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    for (r, c), value in elements.items():
        matrix.SetElement(r, c, value)
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    labelPath, jsonPath, _ = _writeEngineOutput(tmp_path / "engine", _labels(), {1: 0.95, 2: 0.4})
    result = resultImport.importResults(scene, volume, labelPath, jsonPath)
    return scene, volume, transform, matrix, result.segmentationNode, result.tableNode


def _report(files) -> dict:
    import json

    return json.loads(files.reportJson.read_text())


@pytest.mark.parametrize("hardened", ["volume", "segmentation", "both"])
def test_a_candidate_is_shown_on_its_microbleed_after_a_transform_is_hardened(tmp_path, hardened):
    # A registration made permanent ("Harden transform") on the volume alone left the table's centres in the old frame
    # and the review list unaware; the jump then went through the segmentation's transform: off the microbleed.
    import vtk
    from test_slicer_scene import _labels

    from CMBSegmentationLib import reviewNavigation

    moved_and_turned = {(0, 3): 30.0, (1, 3): -12.0, (0, 1): 0.2, (1, 0): -0.2}
    scene, volume, transform, matrix, seg, table = _result_under_transform(tmp_path, moved_and_turned)
    transformToWorld = vtk.vtkGeneralTransform()
    transform.GetTransformToWorld(transformToWorld)
    expected = [transformToWorld.TransformPoint(_centre(_labels() == label)) for label in (1, 2)]

    calls = []
    watcher = ReviewWatcher(scene, lambda: calls.append(1))
    watcher.watch(seg, table)
    logic = slicer.vtkSlicerTransformLogic()
    for node in {"volume": [volume], "segmentation": [seg], "both": [volume, seg]}[hardened]:
        logic.hardenTransform(node)
    watcher.close()
    assert calls, "hardening a transform was not reported to the review list"
    rows = reviewState.restoreReview(seg, table)  # the refresh
    shown = [reviewNavigation.candidateCentreWorld(seg, volume, row) for row in rows]
    assert np.allclose(shown, expected, atol=1e-3)


@pytest.mark.parametrize("meanwhile", ["reject", "paint", "none"])
def test_a_result_reviewed_while_the_engine_ran_is_not_replaced_by_it(case, tmp_path, meanwhile):  # noqa: F811
    # "Replace" was answered for the result as it was at Apply; a candidate the reader rejected (or painted) while the
    # engine ran was wiped at the import without a word.
    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    labelPath, jsonPath = tmp_path / "engine" / "case_cmb.nii.gz", tmp_path / "engine" / "case_cmb.json"
    reviewState.restoreReview(seg, table)  # the list shown at Apply
    seg.SetAttribute(candidateTable.ATTRIBUTE_REVIEW_ID, "copy-of-an-earlier-review")  # given by an export
    agreed = resultImport.outputState(seg, table)  # Apply: "Replace"
    reviewState.restoreReview(seg, table)  # refreshes while the engine runs change nothing by themselves
    if meanwhile == "reject":
        reviewState.reject(seg, table, result.segmentIds[0])
    elif meanwhile == "paint":
        stroke = np.zeros(SHAPE, bool)
        stroke[9:14, 3:7, 1:3] = True
        paint(seg, volume, result.segmentIds[2], _stroke(stroke))
    imported = resultImport.importResults(
        scene, volume, labelPath, jsonPath, seg, table, replace=True, replaceState=agreed
    )
    if meanwhile == "none":  # what the reader agreed to: replaced
        assert (imported.segmentationNode, imported.tableNode) == (seg, table) and not imported.notes
        assert seg.GetAttribute(candidateTable.ATTRIBUTE_REVIEW_ID) is None  # a new result: its own review
        return
    assert imported.segmentationNode is not seg and imported.tableNode is not table
    assert any("changed during the run" in note for note in imported.notes)
    if meanwhile == "reject":
        assert _row(table, result.segmentIds[0]).status == candidateTable.STATUS_REJECTED
    else:
        assert reviewState.restoreReview(seg, table)[2].volumeMm3 == pytest.approx(40 * VOXEL_MM3, abs=0.01)
    assert candidateTable.tableOfSegmentation(scene, seg) is table  # the kept result is still whole and paired


def test_an_export_of_a_volume_under_a_transform_says_which_frame_its_coordinates_are_in(case, tmp_path):  # noqa: F811
    # The report's centres are in the volume's own frame (as its file, and the exported label map); Slicer shows the
    # volume where its transform puts it, and the report gave other coordinates than the views without a word.
    import json

    import vtk

    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    files = reportExport.exportReview(seg, table, volume, tmp_path / "plain", "case", threshold=0.3)
    report = json.loads(files.reportJson.read_text())
    assert report["coordinate_system"] == "RAS" and not files.notes
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "to atlas")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 25.0)
    transform.SetMatrixTransformToParent(shift)
    for node in (volume, seg):
        node.SetAndObserveTransformNodeID(transform.GetID())
    files = reportExport.exportReview(seg, table, volume, tmp_path / "moved", "case", threshold=0.3)
    moved = json.loads(files.reportJson.read_text())
    assert [m["r_mm"] for m in moved["microbleeds"]] == [m["r_mm"] for m in report["microbleeds"]]  # own frame
    (note,) = [n for n in files.notes if "to atlas" in n]
    assert note in moved["notes"] and "own frame" in note


def test_a_clone_made_after_reload_never_takes_the_row_of_a_deleted_clone_of_the_same_id(case, tmp_path):  # noqa: F811
    # Slicer numbers a clone's id from a counter that restarts with each loaded scene: after a reload the clone of
    # an accepted candidate got the id of a clone rejected and deleted before saving, took over its row, and was
    # hidden as rejected and left out of the export.
    import json

    from segment_editor_effects import clone_segment
    from test_slicer_scene import _loadMrb, _saveMrb

    scene, _, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    parent = result.segmentIds[2]
    reviewState.accept(seg, table, parent)
    first = clone_segment(seg, parent)
    reviewState.restoreReview(seg, table)
    reviewState.reject(seg, table, first)
    seg.GetSegmentation().RemoveSegment(first)
    reviewState.restoreReview(seg, table)
    loaded = _loadMrb(_saveMrb(scene, tmp_path / "saved"), tmp_path / "loaded")
    table = next(
        node
        for node in (loaded.GetNthNodeByClass(i, "vtkMRMLTableNode") for i in range(loaded.GetNumberOfNodes()))
        if node is not None and candidateTable.isCandidateTable(node)
    )
    seg = candidateTable.segmentationOfTable(table)
    reviewState.restoreReview(seg, table)
    second = clone_segment(seg, parent)
    assert second == first  # what Slicer does: the id is free again
    rows = reviewState.restoreReview(seg, table)
    (row,) = [r for r in rows if r.segmentId == second]
    assert row.status == candidateTable.STATUS_ACCEPTED  # the status of what it was cloned from
    assert seg.GetDisplayNode().GetSegmentVisibility(second)
    deleted = [r for r in rows if r.status == candidateTable.STATUS_REJECTED]
    assert [r.segmentId for r in deleted] == [f"{first} (deleted)"]  # the deleted clone's row, kept apart
    files = reportExport.exportReview(seg, table, resultImport.referenceVolume(seg), tmp_path / "export", "case")
    exported = [m["candidate_id"] for m in json.loads(files.reportJson.read_text())["microbleeds"]]
    assert row.candidateId in exported and files.count == 4


def test_a_candidate_moved_in_under_the_id_of_a_deleted_one_is_the_reader_s(case, tmp_path):  # noqa: F811
    # Two runs on one volume name their segments alike ("Microbleed_100"): a candidate of the second run moved into
    # the first in place of one deleted there took the deleted one's row: its status (rejected: hidden, not
    # exported) and the first run's probability.
    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    labelPath, jsonPath = tmp_path / "engine" / "case_cmb.nii.gz", tmp_path / "engine" / "case_cmb.json"
    second = resultImport.importResults(scene, volume, labelPath, jsonPath)
    gone = result.segmentIds[0]
    reviewState.reject(seg, table, gone)
    seg.GetSegmentation().RemoveSegment(gone)
    assert seg.GetSegmentation().CopySegmentFromSegmentation(second.segmentationNode.GetSegmentation(), gone, True)
    rows = {r.segmentId: r for r in reviewState.restoreReview(seg, table)}
    assert rows[gone].status == candidateTable.STATUS_ADDED and rows[gone].probability is None
    assert rows[f"{gone} (deleted)"].status == candidateTable.STATUS_REJECTED
    assert seg.GetDisplayNode().GetSegmentVisibility(gone)
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.3)
    assert files.count == 3


def test_segments_are_read_from_their_layers_when_a_linear_transform_lies_between_them_and_the_volume(
    case,  # noqa: F811
    monkeypatch,
):
    # The layers were read directly only when the segmentation and the volume had the same transform node: a volume
    # hardened alone sent each segment through a whole-volume export by Slicer, at every refresh of the list.
    import vtk

    from CMBSegmentationLib import segmentLabelMap

    scene, volume, result, _, _ = case
    seg = result.segmentationNode
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    for (r, c), value in {(0, 3): 7.5, (2, 3): -3.0, (0, 1): 0.3, (1, 0): -0.3}.items():
        matrix.SetElement(r, c, value)
    transform.SetMatrixTransformToParent(matrix)
    for node in (volume, seg):
        node.SetAndObserveTransformNodeID(transform.GetID())
    slicer.vtkSlicerTransformLogic().hardenTransform(volume)  # the segmentation stays under it
    exported = [np.argwhere(_mask(seg, s, volume)) for s in result.segmentIds]
    assert all(len(v) for v in exported)

    def whole_volume_export(*args):
        raise AssertionError("a segment was exported onto the whole volume")

    monkeypatch.setattr(segmentLabelMap, "segmentLabels", whole_volume_export)
    fast = segmentLabelMap.segmentVoxels(seg, result.segmentIds, volume)
    for own, expected in zip(fast, exported, strict=True):
        assert np.array_equal(own[np.lexsort(own.T[::-1])], expected)


def _mask(seg, segment_id, volume):
    from test_slicer_scene import _segmentMask

    return _segmentMask(seg, segment_id, volume)


def test_each_refresh_reads_again_only_the_segments_that_changed(case, monkeypatch):  # noqa: F811
    # Every refresh of the list measures the candidates; a segment off the volume's grid costs a whole-volume export
    # (1.8 s on a 512x512x200 volume), so an unchanged one must not be read again.
    import vtk

    from CMBSegmentationLib import segmentLabelMap

    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    read = []
    original = segmentLabelMap.segmentVoxels
    monkeypatch.setattr(segmentLabelMap, "segmentVoxels", lambda s, ids, v: read.extend(ids) or original(s, ids, v))
    reviewState.restoreReview(seg, table)
    reviewState.restoreReview(seg, table)
    assert sorted(read) == sorted(result.segmentIds)  # once each
    read.clear()
    reviewState.reject(seg, table, result.segmentIds[0])  # the review's own actions change no voxels
    reviewState.accept(seg, table, result.segmentIds[1])
    reviewState.restoreReview(seg, table)
    assert not read
    stroke = np.zeros(SHAPE, bool)
    stroke[9:14, 3:7, 1:3] = True
    paint(seg, volume, result.segmentIds[2], _stroke(stroke))  # (Slicer's paint touches every layer's time)
    row = _row_after_refresh(seg, table, result.segmentIds[2])
    assert result.segmentIds[2] in read and row.volumeMm3 == pytest.approx(40 * VOXEL_MM3, abs=0.01)
    read.clear()
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 5.0)
    transform.SetMatrixTransformToParent(shift)
    seg.SetAndObserveTransformNodeID(transform.GetID())  # the segments move against the volume: all measured again
    rows = reviewState.restoreReview(seg, table)
    assert sorted(read) == sorted(result.segmentIds)
    # Off the volume's grid now: resampled onto it by Slicer, so within a voxel of 5 mm further right.
    assert rows[0].centerRas[0] == pytest.approx(_row_before(result, 0)[0] + 5.0, abs=1.0)


def _row_before(result, n):
    return _centre(__import__("test_slicer_scene")._labels() == sorted(__import__("test_slicer_scene").LESIONS)[n])


def test_a_segment_erased_to_nothing_under_another_transform_than_the_volume_s_is_left_out_not_fatal(
    case,  # noqa: F811
    tmp_path,
):
    # Off the volume's grid each segment goes through Slicer's export, which fails for an empty segment: the export
    # stopped with "volume 'LabelMapVolume' has no voxels", and so did every refresh of the review list.
    import vtk

    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 5.0)  # not a whole number of voxels of the oblique grid
    transform.SetMatrixTransformToParent(shift)
    seg.SetAndObserveTransformNodeID(transform.GetID())
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    erased = result.segmentIds[0]
    reviewState.accept(seg, table, erased)
    assert logic.SetBinaryLabelmapToSegment(_stroke(np.zeros((1, 1, 1))), seg, erased, logic.MODE_REPLACE)
    seg.GetSegmentation().AddEmptySegment("", "Segment_4")  # Segment Editor: Add, nothing painted yet
    rows = {r.segmentId: r for r in reviewState.restoreReview(seg, table)}
    assert rows[erased].volumeMm3 == 0.0 and rows[result.segmentIds[1]].volumeMm3 > 0
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.3)
    assert files.count == 2 and any("erased to nothing" in n for n in files.notes)


@pytest.mark.parametrize("hardened", ["volume", "segmentation"])
def test_a_clicked_microbleed_lands_on_the_click_when_only_one_of_result_and_volume_was_hardened(tmp_path, hardened):
    # The engine segments the click on the volume's own grid; the new segment was put into the segmentation as if
    # its frame were the volume's. With a transform hardened on one of them only, it landed where the transform
    # moves things, off the microbleed the reader clicked (and the table listed it there).
    from test_slicer_scene import _segmentMask

    elements = {(0, 3): 12.0, (2, 3): -4.0, (0, 1): 0.25, (1, 0): -0.25}
    scene, volume, transform, matrix, seg, table = _result_under_transform(tmp_path, elements)
    slicer.vtkSlicerTransformLogic().hardenTransform(volume if hardened == "volume" else seg)
    clicked = np.zeros(SHAPE, np.int16)
    clicked[18:20, 9:11, 4:6] = 1
    # The engine's answer, on the volume's grid as it is now (its own frame).
    single = tmp_path / "point"
    single.mkdir()
    import json

    import nibabel as nib

    from CMBSegmentationLib.volumeIO import ijkToRas

    affine = ijkToRas(volume)
    nib.save(nib.Nifti1Image(clicked, affine), single / "case_cmb.nii.gz")
    centre = (affine @ np.r_[np.argwhere(clicked).mean(axis=0), 1.0])[:3].tolist()
    (single / "case_cmb.json").write_text(json.dumps({"candidates": [
        {"id": 1, "label": 1, "center_ras": centre, "volume_mm3": 8 * VOXEL_MM3, "probability": 0.6}]}))  # fmt: skip
    added = reviewState.addReaderMicrobleed(
        seg, table, single / "case_cmb.nii.gz", single / "case_cmb.json", tuple(centre)
    )
    assert np.array_equal(_segmentMask(seg, added, volume), clicked == 1)
    row = {r.segmentId: r for r in reviewState.restoreReview(seg, table)}[added]
    assert row.centerRas == pytest.approx(centre, abs=1e-3)


def test_an_export_never_replaces_its_earlier_files_once_the_reader_changed_them(case, tmp_path):  # noqa: F811
    # The reader opened the report in a spreadsheet and saved it with notes (or corrected the label map elsewhere):
    # the next export of the same result replaced it without a word, as its own file.
    import json

    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    folder = tmp_path / "export"
    first = reportExport.exportReview(seg, table, volume, folder, "case")
    again = reportExport.exportReview(seg, table, volume, folder, "case")
    assert again.reportJson == first.reportJson  # unchanged: the result's own files are replaced
    recorded = json.loads(first.reportJson.read_text())["file_sha256"]
    assert set(recorded) == {first.labelMap.name, first.segmentation.name, first.reportCsv.name}
    edited = first.reportCsv.read_text() + "reader's note: microbleed 2 is a vessel\n"
    first.reportCsv.write_text(edited)
    reviewState.reject(seg, table, result.segmentIds[0])
    third = reportExport.exportReview(seg, table, volume, folder, "case")
    assert third.reportCsv.name == "case-2_cmb-report.csv" and third.count == 2
    assert first.reportCsv.read_text() == edited


def test_a_large_segment_settles_after_one_refresh(case):  # noqa: F811
    # The table's numbers were read as text, six significant digits: a painted region of 16640.xx mm³ read 16640.x,
    # so each refresh wrote the measured volume again, and that change of the table started the next refresh.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    region = np.ones(SHAPE, bool)  # a haematoma painted into the result: > 10,000 mm³
    paint(seg, volume, result.segmentIds[0], _stroke(region))
    row = _row_after_refresh(seg, table, result.segmentIds[0])
    assert row.volumeMm3 == pytest.approx(round(region.sum() * VOXEL_MM3, 2), abs=1e-9) and row.volumeMm3 > 10000
    before = table.GetMTime()
    assert reviewState.measureRows(seg, table) == []
    reviewState.restoreReview(seg, table)
    assert table.GetMTime() == before


def test_the_list_hears_the_transform_of_the_volume_a_replacing_run_brought(case, tmp_path):  # noqa: F811
    import vtk
    from test_slicer_scene import updateVolumeNodeFromArray

    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    calls = []
    watcher = ReviewWatcher(scene, lambda: calls.append(1))
    watcher.watch(seg, table)
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "case SWI")
    updateVolumeNodeFromArray(other, np.zeros(SHAPE, np.float32), AFFINE)
    labelPath, jsonPath = tmp_path / "engine" / "case_cmb.nii.gz", tmp_path / "engine" / "case_cmb.json"
    resultImport.importResults(scene, other, labelPath, jsonPath, seg, table, replace=True)  # Apply on it, Replace
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    calls.clear()
    other.SetAndObserveTransformNodeID(transform.GetID())
    assert calls, "the new volume's transform was not heard"
    calls.clear()
    volume.SetAndObserveTransformNodeID(transform.GetID())  # the old volume is no longer the result's
    assert not calls
    watcher.close()
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 1.0)
    transform.SetMatrixTransformToParent(shift)
    assert not calls


@pytest.mark.parametrize("hardened", ["volume", "segmentation", "neither"])
def test_the_exported_segmentation_lies_on_the_label_map_when_a_transform_was_hardened_on_one_of_them(
    tmp_path, hardened
):
    # A registration hardened on the volume alone (or on the result alone) left the segmentation in another frame than
    # the volume: the label map was written in the volume's own frame, but the .seg.nrrd beside it in the
    # segmentation's, off the label map and the scan by the transform (7 mm here), without a word.
    import nibabel as nib
    from test_slicer_scene import _segmentMask, updateVolumeNodeFromArray

    scene, volume, _transform, _matrix, seg, table = _result_under_transform(tmp_path, {(0, 3): 7.0, (2, 3): -3.0})
    logic = slicer.vtkSlicerTransformLogic()
    for node in {"volume": [volume], "segmentation": [seg], "neither": []}[hardened]:
        logic.hardenTransform(node)
    seg.GetSegmentation().GetSegment(table.GetCellText(0, 1)).SetName("Renamed")
    files = reportExport.exportReview(seg, table, volume, tmp_path / "out", "case")
    labelMap = nib.load(str(files.labelMap))
    labels = np.asarray(labelMap.dataobj)
    assert sorted(np.unique(labels)) == [0, 1, 2]
    # The .seg.nrrd read back beside the label map (as a viewer opens the two files), no transform on either.
    other = slicer.vtkMRMLScene()
    resultImport.ensureSegmentationConverters()
    storage = other.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(files.segmentation))
    loaded = other.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert storage.ReadData(loaded)
    grid = other.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    updateVolumeNodeFromArray(grid, labels.astype(np.float32), labelMap.affine)
    segmentation = loaded.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    assert [segmentation.GetSegment(i).GetName() for i in ids] == ["Renamed", "Microbleed 2"]
    for label, segmentId in enumerate(ids, start=1):
        assert np.array_equal(_segmentMask(loaded, segmentId, grid), labels == label), segmentId
