"""What Slicer's own exports of a reviewed result write (real ``slicer-core`` scene).

Review keeps a rejected candidate, and one not yet seen below the review threshold, as a hidden segment of the result
(its voxels kept, so that accepting undoes a rejection). Slicer's generic paths write every segment, hidden ones too:
File > Save (``.seg.nrrd``), the Segmentations module's *Export to files* and export to a labelmap node ("All"
segments by default), the DICOM module's DICOM SEG export. A rejected candidate went out through each of them as
"Microbleed 2", a haemorrhage, drawn by hand. These tests take those paths with Slicer's own classes.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package has no MRML classes (slicer-core missing)", allow_module_level=True)

from segment_editor_effects import clone_segment, paint, split_islands_to_segments  # noqa: E402
from test_slicer_scene import (  # noqa: E402, F401
    AFFINE,
    SHAPE,
    _giveTwoIslands,
    _loadMrb,
    _saveMrb,
    _segmentMask,
    case,
)

from CMBSegmentationLib import candidateTable, reportExport, resultImport, reviewState, segmentPresentation  # noqa: E402
from CMBSegmentationLib.reviewWatcher import ReviewWatcher  # noqa: E402
from CMBSegmentationLib.volumeIO import arrayFromVolumeNode, updateVolumeNodeFromArray  # noqa: E402

HEMORRHAGE = ("SCT", "50960005")


def _codes(terminology: str) -> dict[str, tuple[str, str, str]]:
    """Category and type (scheme, value, meaning) of a serialised terminology, as Slicer deserialises it."""
    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(terminology, entry), terminology
    return {
        part: (obj.GetCodingSchemeDesignator(), obj.GetCodeValue(), obj.GetCodeMeaning())
        for part, obj in (("category", entry.GetCategoryObject()), ("type", entry.GetTypeObject()))
    }


def _dicomSegAttributes(seg) -> dict[str, dict]:
    """Per segment id, what Slicer's DICOM SEG export writes of it: ``DICOMSegmentationExporter`` (Slicer 5.12,
    Modules/Scripted/DICOMPlugins/DICOMSegmentationPlugin.py; QuantitativeReporting's for 5.10) exports every segment
    (``getSegmentIDs(visibleOnly=False)``), SegmentLabel = its name, SegmentDescription = the category's meaning,
    the property category and type from its terminology, SegmentAlgorithmType from the tag
    ``DICOM.SegmentAlgorithmType`` (MANUAL without it; any other needs ``DICOM.SegmentAlgorithmName``)."""
    segmentation = seg.GetSegmentation()
    written = {}
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        codes = _codes(segment.GetTerminology())
        algorithm = resultImport.segmentTag(segment, segmentPresentation.TAG_ALGORITHM_TYPE) or "MANUAL"
        name = resultImport.segmentTag(segment, segmentPresentation.TAG_ALGORITHM_NAME)
        assert algorithm in ("MANUAL", "SEMIAUTOMATIC", "AUTOMATIC")
        assert algorithm == "MANUAL" or name, "the plugin refuses a non-manual segment without an algorithm name"
        written[segmentation.GetNthSegmentID(i)] = {
            "SegmentLabel": segment.GetName(),
            "SegmentDescription": codes["category"][2],
            "type": codes["type"][:2],
            "SegmentAlgorithmType": algorithm,
            "SegmentAlgorithmName": name,
        }
    return written


def _readSegNrrd(path) -> dict[str, tuple[str, dict[str, tuple]]]:
    """A ``.seg.nrrd`` read into a scene of its own, as Slicer without this module reads it: {segment id: (name,
    codes)}; also checks that the header names them alike for other programs."""
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    read = {
        segmentation.GetNthSegmentID(i): (
            segmentation.GetNthSegment(i).GetName(),
            _codes(segmentation.GetNthSegment(i).GetTerminology()),
        )
        for i in range(segmentation.GetNumberOfSegments())
    }
    header = path.read_bytes().split(b"\n\n", 1)[0].decode("latin-1")
    names = {line.split(":=", 1)[1] for line in header.splitlines() if "_Name:=" in line}
    assert names == {name for name, _ in read.values()}
    return read


def _saveSegmentation(seg, path) -> None:
    """File > Save of the segmentation node: its default storage node writes it."""
    storage = seg.CreateDefaultStorageNode()
    seg.GetScene().AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.WriteData(seg)


def test_slicer_s_own_save_of_a_reviewed_result_calls_a_rejected_candidate_none_and_accept_undoes_it(case, tmp_path):  # noqa: F811
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    first, second, third = result.segmentIds
    voxels = _segmentMask(seg, second, volume)
    reviewState.accept(seg, table, first)
    reviewState.reject(seg, table, second)  # "Microbleed 2"

    _saveSegmentation(seg, tmp_path / "saved.seg.nrrd")
    read = _readSegNrrd(tmp_path / "saved.seg.nrrd")
    assert read[first] == (
        "Microbleed 1",
        {"category": read[first][1]["category"], "type": (*HEMORRHAGE, "Hemorrhage")},
    )
    name, codes = read[second]
    assert name == "Microbleed 2 (rejected)"
    assert (
        codes["type"][:2] == (segmentPresentation.CODING_SCHEME, "REJECTED") and "not a microbleed" in codes["type"][2]
    )
    assert codes["category"][2] == "Excluded microbleed candidate"
    assert read[third][0] == "Microbleed 3" and read[third][1]["type"][:2] == HEMORRHAGE  # not yet seen, included
    # Kept for undo: the voxels stay, and accepting gives back the name and the microbleed terminology.
    assert np.array_equal(_segmentMask(seg, second, volume), voxels)
    reviewState.accept(seg, table, second)
    segment = seg.GetSegmentation().GetSegment(second)
    assert segment.GetName() == "Microbleed 2" and segment.GetTerminology() == resultImport.TERMINOLOGY_ENTRY
    assert not segment.HasTag(segmentPresentation.TAG_INCLUDED_TERMINOLOGY)


def test_slicer_s_export_to_a_labelmap_and_to_files_names_excluded_candidates_as_such(case, tmp_path):  # noqa: F811
    import vtk

    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    first, second, third = result.segmentIds  # probabilities 0.95, 0.40, 0.70
    reviewState.reject(seg, table, first)
    reviewState.setReviewThreshold(seg, table, 0.5)  # "Microbleed 2" not yet seen, below it
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    ids = vtk.vtkStringArray()
    seg.GetSegmentation().GetSegmentIDs(ids)  # Segmentations module, Exported segments: All (its default)
    labelNode = volume.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    labelNode.CreateDefaultDisplayNodes()
    assert logic.ExportSegmentsToLabelmapNode(seg, ids, labelNode, volume)
    colors = labelNode.GetDisplayNode().GetColorNode()
    named = {
        colors.GetColorName(label): _codes(colors.GetTerminologyAsString(label))["type"][:2] for label in (1, 2, 3)
    }
    assert named == {
        "Microbleed 1 (rejected)": (segmentPresentation.CODING_SCHEME, "REJECTED"),
        "Microbleed 2 (below threshold)": (segmentPresentation.CODING_SCHEME, "BELOWTHRESHOLD"),
        "Microbleed 3": HEMORRHAGE,
    }
    # Export to files (labelmap): the label file and, beside it, its colour table of names and codes (.labels.csv).
    folder = tmp_path / "files"
    folder.mkdir()
    assert logic.ExportSegmentsBinaryLabelmapRepresentationToFiles(str(folder), seg, None, "nrrd", True, volume)
    (labels,) = folder.glob("*.labels.csv")
    with open(labels, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["Name"]: (row["Type_CodingScheme"], row["Type_CodeValue"]) for row in rows} == named


def test_dicom_seg_export_labels_and_codes_each_candidate_by_its_review(case, tmp_path):  # noqa: F811
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    first, second, third = result.segmentIds
    reviewState.accept(seg, table, first)
    reviewState.reject(seg, table, second)
    painted = seg.GetSegmentation().AddEmptySegment("", "Segment_4")  # Segment Editor: Add, then paint
    blob = np.zeros(SHAPE, np.uint8)
    blob[1:3, 1:3, 1:2] = 1
    paint(seg, volume, painted, resultImport.orientedImage(blob, np.zeros(3, int), AFFINE))
    reviewState.restoreReview(seg, table)  # the painted segment joins as the reader's

    written = _dicomSegAttributes(seg)
    assert written[first]["SegmentLabel"] == "Microbleed 1" and written[first]["type"] == HEMORRHAGE
    assert written[first]["SegmentAlgorithmType"] == "SEMIAUTOMATIC"  # the engine's, checked by the reader
    assert written[first]["SegmentAlgorithmName"].startswith("CMBSegmentation")
    assert written[second]["SegmentLabel"] == "Microbleed 2 (rejected)"
    assert written[second]["SegmentDescription"] == "Excluded microbleed candidate"
    assert written[second]["type"] == (segmentPresentation.CODING_SCHEME, "REJECTED")
    assert written[third]["SegmentAlgorithmType"] == "AUTOMATIC"  # not yet seen: the engine's alone
    assert written[painted]["SegmentAlgorithmType"] == "MANUAL" and written[painted]["type"] == HEMORRHAGE


def test_a_candidate_crossing_the_review_threshold_changes_what_it_says_both_ways(case):  # noqa: F811
    _, _, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    low = result.segmentIds[1]  # probability 0.40
    segment = seg.GetSegmentation().GetSegment(low)
    reviewState.setReviewThreshold(seg, table, 0.5)
    assert segment.GetName() == "Microbleed 2 (below threshold)"
    assert _codes(segment.GetTerminology())["type"][:2] == (segmentPresentation.CODING_SCHEME, "BELOWTHRESHOLD")
    reviewState.setReviewThreshold(seg, table, 0.3)  # crosses it again
    assert segment.GetName() == "Microbleed 2" and _codes(segment.GetTerminology())["type"][:2] == HEMORRHAGE
    reviewState.setReviewThreshold(seg, table, 0.5)
    reviewState.accept(seg, table, low)  # the reader's decision beats the threshold
    assert segment.GetName() == "Microbleed 2" and _codes(segment.GetTerminology())["type"][:2] == HEMORRHAGE


def test_a_name_and_terminology_the_reader_chose_survive_rejecting_and_accepting(case):  # noqa: F811
    _, _, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    target = result.segmentIds[0]
    segment = seg.GetSegmentation().GetSegment(target)
    segment.SetName("Left frontal")
    clot = resultImport.TERMINOLOGY_ENTRY.replace("SCT^50960005^Hemorrhage", "SCT^75753009^Blood clot")
    segment.SetTerminology(clot)
    reviewState.reject(seg, table, target)
    assert segment.GetName() == "Left frontal (rejected)"
    assert segmentPresentation.isExcludedTerminology(segment.GetTerminology())
    segment.SetName("Left frontal")  # the marker typed away in the Segment Editor: the refresh puts it back
    reviewState.restoreReview(seg, table)
    assert segment.GetName() == "Left frontal (rejected)"
    reviewState.accept(seg, table, target)
    assert segment.GetName() == "Left frontal" and segment.GetTerminology() == clot


def test_presenting_an_unchanged_review_fires_no_segment_event(case):  # noqa: F811
    # The review list refreshes on every segment event and each refresh presents the review again: a refresh that
    # wrote anything would start the next one without end.
    # Nor may the first refresh of a new result write anything: Apply's "Replace" takes any change of the result
    # after the run started for the reader's, and keeps it.
    scene, _, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    calls = []
    watcher = ReviewWatcher(scene, lambda: calls.append(1))
    watcher.watch(seg, table)
    before = resultImport.outputState(seg, table)
    reviewState.restoreReview(seg, table)
    assert calls == [] and resultImport.outputState(seg, table) == before
    reviewState.reject(seg, table, result.segmentIds[0])
    reviewState.setReviewThreshold(seg, table, 0.5)
    calls.clear()
    reviewState.restoreReview(seg, table)
    watcher.close()
    assert calls == []


def test_what_each_candidate_says_survives_save_and_reload_and_an_older_scene_is_brought_up_to_it(case, tmp_path):  # noqa: F811
    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    ids = result.segmentIds
    reviewState.reject(seg, table, ids[0])
    reviewState.setReviewThreshold(seg, table, 0.5)
    # As an older version left a rejected candidate: named and coded as a microbleed.
    older = seg.GetSegmentation().GetSegment(ids[0])
    older.SetName("Microbleed 1")
    older.SetTerminology(resultImport.TERMINOLOGY_ENTRY)
    mrb = _saveMrb(scene, tmp_path / "saved")
    scene.Clear(1)
    loaded = _loadMrb(mrb, tmp_path / "loaded")
    seg2 = loaded.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    table2 = candidateTable.tableOfSegmentation(loaded, seg2)
    reviewState.restoreReview(seg2, table2)  # what selecting the result in the module does
    names = {i: seg2.GetSegmentation().GetSegment(i).GetName() for i in ids}
    assert names == {
        ids[0]: "Microbleed 1 (rejected)",
        ids[1]: "Microbleed 2 (below threshold)",
        ids[2]: "Microbleed 3",
    }
    _saveSegmentation(seg2, tmp_path / "again.seg.nrrd")
    assert {name for name, _ in _readSegNrrd(tmp_path / "again.seg.nrrd").values()} == set(names.values())


def test_the_module_s_export_names_and_codes_its_microbleeds_as_microbleeds(case, tmp_path):  # noqa: F811
    # An export at a threshold of its own (scripts) includes a candidate the scene shows as below the review threshold.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    reviewState.setReviewThreshold(seg, table, 0.5)
    reviewState.reject(seg, table, result.segmentIds[0])
    files = reportExport.exportReview(seg, table, volume, tmp_path / "export", "case", threshold=0.3)
    read = _readSegNrrd(files.segmentation)
    assert sorted(name for name, _ in read.values()) == ["Microbleed 2", "Microbleed 3"]
    assert all(codes["type"][:2] == HEMORRHAGE for _, codes in read.values())
    report = json.loads(files.reportJson.read_text())
    assert [m["segment"] for m in report["microbleeds"]] == ["Microbleed 2", "Microbleed 3"]
    # The scene is as it was: the candidate below the review threshold still says so.
    assert seg.GetSegmentation().GetSegment(result.segmentIds[1]).GetName() == "Microbleed 2 (below threshold)"


@pytest.mark.parametrize("derive", ["split", "clone"])
def test_pieces_and_copies_of_a_rejected_candidate_say_so_and_never_share_a_name(case, tmp_path, derive):  # noqa: F811
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    parent = result.segmentIds[2]
    reviewState.reject(seg, table, parent)  # "Microbleed 3 (rejected)"
    made = []
    for _ in range(2):
        if derive == "split":
            _giveTwoIslands(seg, parent, volume)
            (new,) = split_islands_to_segments(seg, volume, parent)
            assert seg.GetSegmentation().GetSegment(new).GetName() == "Microbleed 3 (rejected)_2"  # the effect's
        else:
            new = clone_segment(seg, parent)
        reviewState.restoreReview(seg, table)
        made.append(new)
    names = [seg.GetSegmentation().GetSegment(s).GetName() for s in made]
    assert names == ["Microbleed 3_2 (rejected)", "Microbleed 3_3 (rejected)"]
    for segmentId in made:
        segment = seg.GetSegmentation().GetSegment(segmentId)
        assert segmentPresentation.isExcludedTerminology(segment.GetTerminology())
        assert resultImport.segmentTag(segment, candidateTable.TAG_STATUS) == candidateTable.STATUS_REJECTED
    reviewState.accept(seg, table, made[0])
    assert seg.GetSegmentation().GetSegment(made[0]).GetName() == "Microbleed 3_2"


def test_a_reader_s_microbleed_never_takes_the_name_of_a_rejected_one(case):  # noqa: F811
    _, _, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    reviewState.reject(seg, table, result.segmentIds[2])  # "Microbleed 3 (rejected)" still holds "Microbleed 3"
    assert reviewState.nextSegmentName(seg) == "Microbleed 4"


@pytest.mark.parametrize("shown_above", [True, False])
def test_a_segmentation_saved_alone_comes_back_with_the_threshold_the_reader_saw(case, tmp_path, shown_above):  # noqa: F811
    # A .seg.nrrd keeps no node attributes: its review, rebuilt from the segments' tags, counted every candidate not
    # yet seen, those the reader saw below the review threshold too, and exported microbleeds the reader never saw.
    scene, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    ids = result.segmentIds  # probabilities 0.95, 0.40, 0.70
    if not shown_above:
        reviewState.accept(seg, table, ids[0])
        reviewState.reject(seg, table, ids[2])
    reviewState.setReviewThreshold(seg, table, 0.5)
    before = reportExport.exportReview(seg, table, volume, tmp_path / "before", "case")
    _saveSegmentation(seg, tmp_path / "alone.seg.nrrd")

    scene2 = slicer.vtkMRMLScene()
    volume2 = scene2.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "case T2*")
    updateVolumeNodeFromArray(volume2, arrayFromVolumeNode(volume), AFFINE)
    seg2 = scene2.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene2.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(tmp_path / "alone.seg.nrrd"))
    assert storage.ReadData(seg2)
    assert seg2.GetAttribute(candidateTable.ATTRIBUTE_REVIEW_THRESHOLD) is None  # the file kept none
    seg2.SetReferenceImageGeometryParameterFromVolumeNode(volume2)  # the reader picks its volume (Segment Editor)
    seg2.SetNodeReferenceID(seg2.GetReferenceImageGeometryReferenceRole(), volume2.GetID())
    seg2.CreateDefaultDisplayNodes()
    table2 = reviewState.rebuildTable(seg2)
    threshold = reviewState.reviewThreshold(table2)
    assert 0.40 < threshold <= (0.70 if shown_above else 0.41)
    assert seg2.GetSegmentation().GetSegment(ids[1]).GetName() == "Microbleed 2 (below threshold)"
    after = reportExport.exportReview(seg2, table2, volume2, tmp_path / "after", "case")
    assert after.count == before.count == (2 if shown_above else 1)
    # The model that made them, which only the segments kept, is still named for DICOM SEG.
    segment = seg2.GetSegmentation().GetSegment(ids[0])
    assert resultImport.segmentTag(segment, segmentPresentation.TAG_ALGORITHM_NAME) == "CMBSegmentation tiny"
    got, expected = (json.loads(f.reportJson.read_text())["microbleeds"] for f in (after, before))
    assert [m["candidate_id"] for m in got] == [m["candidate_id"] for m in expected]
