"""What the module's Export report says of the run and of the review (real ``slicer-core`` scene), also after the
result's table is rebuilt from its segments or the scene is saved and loaded again."""

from __future__ import annotations

import dataclasses
import json

import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package has no MRML classes (slicer-core missing)", allow_module_level=True)

from segment_editor_effects import paint, split_islands_to_segments  # noqa: E402
from test_slicer_scene import (  # noqa: E402, F401
    PROBABILITY,
    _clickedMicrobleed,
    _giveTwoIslands,
    _labels,
    _loadMrb,
    _saveMrb,
    _writeEngineOutput,
    case,
)

from CMBSegmentationLib import candidateTable, reportExport, resultImport, reviewState  # noqa: E402


def _affine():
    from test_slicer_scene import AFFINE

    return AFFINE


def _report(files) -> dict:
    return json.loads(files.reportJson.read_text())


def _candidateTables(scene) -> list:
    tables = (
        scene.GetNthNodeByClass(i, "vtkMRMLTableNode") for i in range(scene.GetNumberOfNodesByClass("vtkMRMLTableNode"))
    )
    return [t for t in tables if candidateTable.isCandidateTable(t)]


def _importAtRunThreshold(scene, volume, folder, probabilities, threshold):
    """The engine's output for ``probabilities`` (label: p) as a run with segmentation threshold ``threshold``
    (``--threshold``) writes it, imported into ``scene``."""
    labelPath, jsonPath, _ = _writeEngineOutput(folder, _labels(), probabilities)
    data = json.loads(jsonPath.read_text())
    data["thresholds"]["segmentation"] = threshold
    jsonPath.write_text(json.dumps(data))
    return resultImport.importResults(scene, volume, labelPath, jsonPath)


def test_the_engine_s_notes_of_the_run_reach_the_report_also_from_a_rebuilt_table_and_a_reloaded_scene(case, tmp_path):  # noqa: F811
    # The engine's notes (candidate count capped, brain mask not used, a model of the other contrast) were logged at the
    # import and kept on the table, but the report, which a batch user and a reader's colleague read later, said
    # nothing of them: a capped count was reported as the scan's count.
    scene, volume, _, _, _ = case
    notes = ["candidate count capped at 500; the scan may be very noisy", "the brain mask vanished on the model grid"]
    labelPath, jsonPath, _ = _writeEngineOutput(tmp_path / "noted", _labels(), PROBABILITY, notes=notes)
    result = resultImport.importResults(scene, volume, labelPath, jsonPath)
    seg, table = result.segmentationNode, result.tableNode
    report = _report(reportExport.exportReview(seg, table, volume, tmp_path / "out", "case"))
    assert report["engine_notes"] == notes
    assert not any("capped" in note for note in report["notes"])  # the export's own notes stay apart

    mrb = _saveMrb(scene, tmp_path / "saved")
    loaded = _loadMrb(mrb, tmp_path / "loaded")
    table2 = next(t for t in _candidateTables(loaded) if t.GetAttribute(candidateTable.ATTRIBUTE_NOTES) != "[]")
    seg2 = candidateTable.segmentationOfTable(table2)
    volume2 = resultImport.referenceVolume(seg2)
    assert (
        _report(reportExport.exportReview(seg2, table2, volume2, tmp_path / "reloaded", "case"))["engine_notes"]
        == notes
    )
    # The table deleted: the one rebuilt from the segments keeps them too.
    loaded.RemoveNode(table2)
    rebuilt = reviewState.rebuildTable(seg2)
    assert (
        _report(reportExport.exportReview(seg2, rebuilt, volume2, tmp_path / "rebuilt", "case"))["engine_notes"]
        == notes
    )


def test_a_result_without_engine_notes_reports_none(case, tmp_path):  # noqa: F811
    scene, volume, result, _, _ = case
    table = result.tableNode
    table.RemoveAttribute(candidateTable.ATTRIBUTE_NOTES)  # a result of an older version
    result.segmentationNode.RemoveAttribute(candidateTable.ATTRIBUTE_NOTES)
    report = _report(reportExport.exportReview(result.segmentationNode, table, volume, tmp_path / "out", "case"))
    assert report["engine_notes"] == []


def test_an_island_of_a_rejected_candidate_accepted_keeps_the_terminology_the_reader_chose(case):  # noqa: F811
    # Split off a rejected candidate, an island took its "excluded" terminology but not the one the reader had chosen
    # (kept in a tag while excluded): accepted, the island became a haemorrhage, the reader's choice lost.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    parent = result.segmentIds[2]
    segment = seg.GetSegmentation().GetSegment(parent)
    clot = resultImport.TERMINOLOGY_ENTRY.replace("SCT^50960005^Hemorrhage", "SCT^75753009^Blood clot")
    segment.SetTerminology(clot)
    reviewState.reject(seg, table, parent)
    _giveTwoIslands(seg, parent, volume)
    (island,) = split_islands_to_segments(seg, volume, parent)
    reviewState.restoreReview(seg, table)
    reviewState.accept(seg, table, island)
    reviewState.accept(seg, table, parent)
    pieces = [seg.GetSegmentation().GetSegment(i) for i in (parent, island)]
    assert [p.GetTerminology() for p in pieces] == [clot, clot]
    assert [p.GetName() for p in pieces] == ["Microbleed 3", "Microbleed 3_2"]


def test_microbleeds_the_reader_renamed_alike_are_named_in_a_note(case, tmp_path):  # noqa: F811
    # The module never names two microbleeds alike, but a segment renamed in the Segment Editor to another's name made
    # a report with two "Microbleed 1" rows without a word.
    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    seg.GetSegmentation().GetSegment(result.segmentIds[2]).SetName("Microbleed 1")
    files = reportExport.exportReview(seg, table, volume, tmp_path / "out", "case")
    report = _report(files)
    assert [m["segment"] for m in report["microbleeds"]] == ["Microbleed 1", "Microbleed 2", "Microbleed 1"]
    shared = [n for n in report["notes"] if "share the name" in n]
    assert shared == [
        "microbleeds 1 and 3 share the name 'Microbleed 1' (a segment renamed so): tell them apart by their label and "
        "candidate_id"
    ]
    assert shared[0] in files.notes
    seg.GetSegmentation().GetSegment(result.segmentIds[2]).SetName("Microbleed 3")
    assert not any(
        "share the name" in n
        for n in _report(reportExport.exportReview(seg, table, volume, tmp_path / "again", "case"))["notes"]
    )


def test_a_candidate_the_engine_kept_at_a_threshold_finer_than_the_table_is_exported(case, tmp_path):  # noqa: F811
    # The table keeps probabilities to 4 decimals: with a run threshold of 0.33333 (batch --threshold), a candidate
    # the engine kept at 0.33334 was stored as 0.3333, counted as below the threshold and left out of the export.
    scene, volume, _, _, _ = case
    result = _importAtRunThreshold(scene, volume, tmp_path / "fine", {1: 0.95, 2: 0.33334, 5: 0.7}, 0.33333)
    seg, table = result.segmentationNode, result.tableNode
    assert reviewState.updateVisibility(seg, table) == result.segmentIds  # all three shown
    report = _report(reportExport.exportReview(seg, table, volume, tmp_path / "out", "case"))
    assert report["n_microbleeds"] == 3 and report["threshold"] == 0.33333
    assert sorted(m["probability"] for m in report["microbleeds"]) == [0.3333, 0.7, 0.95]
    reviewState.setReviewThreshold(seg, table, 0.34)  # above it: out, as the reader sees
    assert _report(reportExport.exportReview(seg, table, volume, tmp_path / "raised", "case"))["n_microbleeds"] == 2


def test_how_the_engine_outlined_each_microbleed_reaches_the_report_and_survives_a_reload(case, tmp_path):  # noqa: F811
    # The engine outlines a large microbleed by its intensity region where its network's mask held a rim (the JSON's
    # per-candidate "segmentation"); the import dropped it, so the report could not tell which volumes came from which.
    import csv

    import numpy as np

    scene, volume, _, _, _ = case
    labelPath, jsonPath, _ = _writeEngineOutput(tmp_path / "outlined", _labels(), PROBABILITY)
    data = json.loads(jsonPath.read_text())
    for candidate, outline in zip(data["candidates"], ["network", "network", "intensity", None], strict=True):
        candidate["segmentation"] = outline  # the last one: not kept, null
    jsonPath.write_text(json.dumps(data))
    result = resultImport.importResults(scene, volume, labelPath, jsonPath)
    seg, table = result.segmentationNode, result.tableNode
    ids = result.segmentIds
    # An island of the intensity-outlined one, a microbleed painted by hand, one added by a click.
    _giveTwoIslands(seg, ids[2], volume)
    (island,) = split_islands_to_segments(seg, volume, ids[2])
    painted = seg.GetSegmentation().AddEmptySegment("", "Painted")
    stroke = np.zeros(_labels().shape, np.uint8)
    stroke[2:4, 2:4, 1:2] = 1
    paint(seg, volume, painted, resultImport.orientedImage(stroke, np.zeros(3, int), _affine()))
    clickLabel, clickJson, _ = _writeEngineOutput(tmp_path / "point", _clickedMicrobleed(), {1: 0.62})
    click = json.loads(clickJson.read_text())
    click["candidates"][0]["segmentation"] = "intensity"
    clickJson.write_text(json.dumps(click))
    clicked = reviewState.addReaderMicrobleed(seg, table, clickLabel, clickJson, click["candidates"][0]["center_ras"])
    reviewState.restoreReview(seg, table)
    files = reportExport.exportReview(seg, table, volume, tmp_path / "out", "case")
    bySegment = {m["segment"]: m["outline"] for m in _report(files)["microbleeds"]}
    name = {i: seg.GetSegmentation().GetSegment(i).GetName() for i in (*ids, island, painted, clicked)}
    assert bySegment == {
        name[ids[0]]: "network",
        name[ids[1]]: "network",
        name[ids[2]]: "intensity",
        name[island]: "intensity",
        name[painted]: None,
        name[clicked]: "intensity",
    }
    with open(files.reportCsv, newline="") as handle:
        assert {row["segment"]: row["outline"] for row in csv.DictReader(handle)} == {
            k: v or "" for k, v in bySegment.items()
        }
    # Saved and loaded again, its table rebuilt from the segments: the same.
    loaded = _loadMrb(_saveMrb(scene, tmp_path / "saved"), tmp_path / "loaded")
    table2 = next(t for t in _candidateTables(loaded) if t.GetNumberOfRows() == table.GetNumberOfRows())  # not case's
    seg2 = candidateTable.segmentationOfTable(table2)
    loaded.RemoveNode(table2)
    rebuilt = reviewState.rebuildTable(seg2)
    again = reportExport.exportReview(seg2, rebuilt, resultImport.referenceVolume(seg2), tmp_path / "again", "case")
    assert {m["segment"]: m["outline"] for m in _report(again)["microbleeds"]} == bySegment
    # A result of an older engine (no "segmentation" field) says nothing.
    older = resultImport.importResults(
        scene, volume, *_writeEngineOutput(tmp_path / "older", _labels(), PROBABILITY)[:2]
    )
    report = _report(reportExport.exportReview(older.segmentationNode, older.tableNode, volume, tmp_path / "o", "x"))
    assert {m["outline"] for m in report["microbleeds"]} == {None}


def test_a_candidate_repainted_elsewhere_is_named_in_a_note_but_one_grown_in_place_is_not(case, tmp_path):  # noqa: F811
    # A reader erased a false positive and painted a missed microbleed into its segment: the report gave the new
    # microbleed the old candidate's probability, location and region without a word.
    import numpy as np

    from CMBSegmentationLib.volumeIO import ijkToRas

    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    first, second, _ = result.segmentIds
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    elsewhere = np.zeros(_labels().shape, np.uint8)
    elsewhere[18:20, 20:22, 7:9] = 1  # some 15 mm from Microbleed 1 (label 1 at [5:7, 6:8, 3:5])
    image = resultImport.orientedImage(elsewhere, np.zeros(3, int), ijkToRas(volume))
    assert logic.SetBinaryLabelmapToSegment(image, seg, first, logic.MODE_REPLACE)
    grown = np.zeros(_labels().shape, np.uint8)
    grown[14:17, 19:22, 6:7] = 1  # Microbleed 2 (label 2 at [15, 20, 6]) painted a little larger
    paint(seg, volume, second, resultImport.orientedImage(grown, np.zeros(3, int), ijkToRas(volume)))
    files = reportExport.exportReview(seg, table, volume, tmp_path / "out", "case")
    moved = [n for n in _report(files)["notes"] if "from where the engine found" in n]
    assert len(moved) == 1 and moved[0].startswith("microbleed 1 (Microbleed 1) lies 1") and "probability" in moved[0]
    assert moved[0] in files.notes
    # Put back where it was (a transform hardened on the volume meanwhile moves nothing in its voxels): no note.
    transform = slicer.vtkMRMLLinearTransformNode()
    volume.GetScene().AddNode(transform)
    matrix = vtk_matrix(translation=(30.0, -12.0, 7.0))
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    seg.SetAndObserveTransformNodeID(transform.GetID())
    slicer.vtkSlicerTransformLogic().hardenTransform(volume)
    slicer.vtkSlicerTransformLogic().hardenTransform(seg)
    original = (_labels() == 1).astype(np.uint8)
    image = resultImport.orientedImage(original, np.zeros(3, int), ijkToRas(volume))
    assert logic.SetBinaryLabelmapToSegment(image, seg, first, logic.MODE_REPLACE)
    again = reportExport.exportReview(seg, table, volume, tmp_path / "again", "case")
    assert not [n for n in _report(again)["notes"] if "from where the engine found" in n]


def vtk_matrix(translation):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for axis, value in enumerate(translation):
        matrix.SetElement(axis, 3, value)
    return matrix


def test_the_probability_the_review_list_shows_agrees_with_the_candidate_s_status(case, tmp_path):  # noqa: F811
    # The review list showed probabilities to 2 decimals: a candidate at 0.4996 read "0.50" beside the status "below
    # threshold" with the review threshold at 0.50, and one at 0.3333 read "0.33" as included at a threshold of 0.3333.
    scene, volume, _, _, _ = case
    labelPath, jsonPath, _ = _writeEngineOutput(tmp_path / "close", _labels(), {1: 0.95, 2: 0.4996, 5: 0.50004})
    result = resultImport.importResults(scene, volume, labelPath, jsonPath)
    seg, table = result.segmentationNode, result.tableNode
    reviewState.setReviewThreshold(seg, table, 0.5)
    shown = {}
    for row in candidateTable.readRows(table):
        text = reviewState.probabilityText(row.probability, 0.5)
        shown[text] = reviewState.isIncluded(row, 0.5)
    assert shown == {"0.95": True, "0.4996": False, "0.50": True}
    assert reviewState.probabilityText(None, 0.5) == ""
    # Whatever the value and the threshold, the number shown passes the threshold exactly when the candidate does.
    for threshold in (0.1, 0.3333, 0.5, 0.95, 0.999):
        for probability in (0.09996, 0.1, 0.33325, 0.3333, 0.33334, 0.4996, 0.49996, 0.5, 0.9499, 0.9989, 0.999, 1.0):
            text = reviewState.probabilityText(probability, threshold)
            row = candidateTable.CandidateRow(1, "s", (0, 0, 0), 1.0, probability, candidateTable.STATUS_NOT_SEEN)
            again = dataclasses.replace(row, probability=float(text))
            assert reviewState.isIncluded(again, threshold) == reviewState.isIncluded(row, threshold), (text, threshold)
            assert 4 <= len(text) <= 6


def test_the_review_threshold_is_shown_with_the_decimals_its_candidates_are_compared_at(case, tmp_path):  # noqa: F811
    # The "Show from probability" slider showed 2 decimals: a run threshold of 0.999 (plkd tune's grid) read "1.00"
    # and one of 0.3333 read "0.33" while a candidate at 0.33 stood "below threshold" in the list.
    scene, volume, _, _, _ = case
    result = _importAtRunThreshold(scene, volume, tmp_path / "fine", {1: 0.9995, 2: 0.9985, 5: 0.9991}, 0.999)
    threshold = reviewState.reviewThreshold(result.tableNode)
    decimals = reviewState.thresholdDecimals(threshold)
    assert f"{threshold:.{decimals}f}" == "0.999"
    for row in candidateTable.readRows(result.tableNode):  # what the list says agrees with the slider's text
        text = reviewState.probabilityText(row.probability, threshold)
        assert (float(text) >= float(f"{threshold:.{decimals}f}")) == reviewState.isIncluded(row, threshold), text
    shown = {t: f"{t:.{reviewState.thresholdDecimals(t)}f}" for t in (0.5, 0.3333, 0.33333, 0.35000000000000003, 1.0)}
    assert shown == {0.5: "0.50", 0.3333: "0.3333", 0.33333: "0.3333", 0.35000000000000003: "0.35", 1.0: "1.00"}


def test_a_microbleed_whose_segment_falls_into_pieces_is_named_in_the_export(case, tmp_path):  # noqa: F811
    # A second dot painted into a candidate's segment (Paint without first adding a segment, the commonest slip in the
    # Segment Editor) went out as one label of two pieces: the report counted one microbleed, while any count of the
    # label map's pieces (plkd evaluate, VALDO's 26-connectivity) found two, and the centre lay between them.
    import numpy as np
    from scipy import ndimage

    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    ids = result.segmentIds
    _giveTwoIslands(seg, ids[2], volume)  # label 5 ("Microbleed 3"): its own voxels and a blob apart
    # A dot touching another by a corner only is one piece, as plkd.metrics counts (26-connectivity).
    corner = np.zeros(_labels().shape, np.uint8)
    corner[7, 8, 5] = 1  # touches Microbleed 1's voxel [6, 7, 4] by a corner
    paint(seg, volume, ids[0], resultImport.orientedImage(corner, np.zeros(3, int), _affine()))
    files = reportExport.exportReview(seg, table, volume, tmp_path / "out", "case")
    report = _report(files)
    labels = np.asarray(__import__("nibabel").load(files.labelMap).dataobj)
    pieces = {
        m["label"]: ndimage.label(labels == m["label"], structure=np.ones((3, 3, 3)))[1] for m in report["microbleeds"]
    }
    assert pieces == {1: 1, 2: 1, 3: 2}
    split = [n for n in report["notes"] if "pieces" in n]
    assert split == [
        "microbleed 3 (Microbleed 3) is 2 separate pieces in the label map, which a count of its pieces (plkd "
        "evaluate, VALDO) takes for 2 microbleeds: split them into segments (Segment Editor, Islands) if they are, "
        "else join or erase them"
    ]
    assert split[0] in files.notes


def test_pieces_are_counted_as_plkd_counts_microbleeds():
    # 26-connected pieces, as plkd.metrics and VALDO count microbleeds (Slicer ships scipy: SuperBuild's
    # External_python-scipy.cmake).
    import numpy as np
    from scipy import ndimage

    from CMBSegmentationLib.segmentLabelMap import countPieces

    truth = {}
    rng = np.random.default_rng(5)
    masks = [rng.random(tuple(rng.integers(1, 8, 3))) < rng.uniform(0.05, 0.5) for _ in range(60)]
    for n, mask in enumerate(masks):
        truth[n] = ndimage.label(mask, structure=np.ones((3, 3, 3)))[1]
    assert {n: countPieces(np.argwhere(mask) + 40) for n, mask in enumerate(masks)} == truth
    assert countPieces(np.zeros((0, 3), int)) == 0 and max(truth.values()) > 3


def _clickAnswer(folder, model):
    """The engine's answer to a click (a new microbleed, :func:`_clickedMicrobleed`) as a run of ``model`` writes it."""
    labelPath, jsonPath, candidates = _writeEngineOutput(folder, _clickedMicrobleed(), {1: 0.62})
    data = json.loads(jsonPath.read_text())
    data["model"] = model
    jsonPath.write_text(json.dumps(data))
    return labelPath, jsonPath, tuple(candidates[0]["center_ras"])


@pytest.mark.parametrize(
    ("click_model", "other"),
    [("tiny", False), ("tiny (/elsewhere/tiny)", False), ("cmb-swi (/site/plkd/bundled/cmb-swi)", True)],
)
def test_a_microbleed_a_click_outlined_with_another_model_than_the_result_s_is_named(
    case,  # noqa: F811
    tmp_path,
    click_model,
    other,
):
    # The click takes the model named under Advanced > Model now, which may be another than the one that made the
    # result (changed since for another scan, or the scene reviewed on another computer): its outline and probability
    # joined the result, and the report named the result's model alone, without a word.
    from CMBSegmentationLib import clickReview

    _, volume, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    labelPath, jsonPath, point = _clickAnswer(tmp_path / "click", click_model)
    threshold = reviewState.reviewThreshold(table)
    outcome = clickReview.applyClickResult(seg, table, labelPath, jsonPath, point, None, threshold)
    assert outcome.kind == clickReview.ADDED
    said = f"outlined by the model '{click_model}', not by the result's 'tiny'"
    assert (said in (outcome.note or "")) == other
    report = _report(reportExport.exportReview(seg, table, volume, tmp_path / "out", "case"))
    assert report["microbleeds"][-1]["status"] == candidateTable.STATUS_ADDED
    notes = [n for n in report["notes"] if "outlined by the model" in n]
    expected = f"microbleed 4 (Microbleed 4) was {said} (a click while another model was chosen)"
    assert notes == ([expected] if other else [])
    # It says so after a reload too: the model is kept on the segment.
    mrb = _saveMrb(case[0], tmp_path / "saved")
    loaded = _loadMrb(mrb, tmp_path / "loaded")
    (table2,) = _candidateTables(loaded)
    seg2 = candidateTable.segmentationOfTable(table2)
    volume2 = resultImport.referenceVolume(seg2)
    again = _report(reportExport.exportReview(seg2, table2, volume2, tmp_path / "o2", "case"))
    assert [n for n in again["notes"] if "outlined by the model" in n] == notes


def test_replacing_a_segmentation_chosen_without_its_table_names_the_review_it_would_lose(case):  # noqa: F811
    # With the table selector cleared, Apply asked "segmentation ... has 3 segment(s)" only: Replace wiped the reviewed
    # segments and left their table listing none of the new ones, the reader's decisions lost without being named.
    _, _, result, _, _ = case
    seg, table = result.segmentationNode, result.tableNode
    reviewState.reject(seg, table, result.segmentIds[0])
    reviewState.accept(seg, table, result.segmentIds[1])
    expected = f"its review, table '{table.GetName()}', has 3 candidate(s), 2 reviewed"
    assert expected in resultImport.existingContent(seg, None)
    assert resultImport.existingContent(seg, table) == [
        f"segmentation '{seg.GetName()}' has 3 segment(s)",
        f"table '{table.GetName()}' has 3 candidate(s), 2 reviewed",
    ]
