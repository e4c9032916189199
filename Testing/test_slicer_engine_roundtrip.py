"""The contract between the Slicer module and the engine, tested for real (slicer-core scene + ``plkd predict``).

The module's own code writes the input volume, builds the ``plkd predict`` command line and runs it as a child
process (as the widget does, but blocking); the engine's real outputs are then imported into an MRML scene.
Data: ``Testing/data/tiny-case`` (phantom with three planted microbleeds, centres in ``truth.json``) and the tiny
test bundle ``Testing/data/tiny-bundle``.
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

from CMBSegmentationLib import (  # noqa: E402
    candidateTable,
    commandBuilder,
    inferenceJob,
    resultImport,
    reviewState,
    segmentLabelMap,
)
from CMBSegmentationLib.volumeIO import updateVolumeNodeFromArray  # noqa: E402

DATA = REPO / "Testing" / "data"
CASE = DATA / "tiny-case" / "tiny_T2S.nii.gz"
BUNDLE = DATA / "tiny-bundle"


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return np.asarray(json.loads((CASE.parent / "truth.json").read_text())["centres_ras"], dtype=float)


def _runEngine(volume, folder: Path, events: list | None = None):
    """Write ``volume``, build the command and run the engine exactly as the module does (blocking)."""
    prepared = inferenceJob.prepareInputs(volume, None, folder)
    argv = commandBuilder.buildPredictCommand(
        sys.executable, prepared.inputPath, prepared.outputDir, modelPath=BUNDLE, device="CPU", threshold=0.5
    )
    inferenceJob.runBlocking(argv, *([events.append] if events is not None else []))
    return prepared


def _segmentsHoldTheEngineLabels(result, volume, prepared) -> bool:
    """Voxel for voxel, the segments hold the engine's label map (read back through Slicer's own export)."""
    engineLabels = np.asarray(nib.load(str(prepared.outputs.labelMap)).dataobj)
    segments = segmentLabelMap.segmentLabels(result.segmentationNode, result.segmentIds, volume)
    return np.array_equal(segments > 0, engineLabels > 0)


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    """One real engine run on the tiny case, started exactly as the module starts it."""
    scene = slicer.vtkMRMLScene()
    image = nib.load(str(CASE))
    # A node name that is not a valid file name: the module must make one of it.
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "tiny T2* (axial)")
    updateVolumeNodeFromArray(volume, np.asarray(image.dataobj), image.affine)
    events = []
    prepared = _runEngine(volume, tmp_path_factory.mktemp("run"), events)
    return scene, volume, prepared, events


def test_engine_accepts_the_module_command_and_reports_jsonl_progress(engine_run):
    _scene, _volume, prepared, events = engine_run
    assert prepared.outputs.labelMap.is_file() and prepared.outputs.candidates.is_file()
    stages = {e.stage for e in events}
    assert {"screen", "segment"} <= stages
    segmentDone = [e for e in events if e.stage == "segment" and e.fraction is not None]
    assert segmentDone and segmentDone[-1].fraction == 1.0
    assert any(e.message and "microbleed" in e.message for e in events)


def test_engine_output_imports_one_segment_per_planted_microbleed(engine_run, truth):
    scene, volume, prepared, _events = engine_run
    result = resultImport.importResults(scene, volume, prepared.outputs.labelMap, prepared.outputs.candidates)
    rows = candidateTable.readRows(result.tableNode)
    assert len(result.segmentIds) == len(rows) == len(truth)
    role = result.segmentationNode.GetReferenceImageGeometryReferenceRole()
    assert result.segmentationNode.GetNodeReferenceID(role) == volume.GetID()
    for centre in truth:
        distances = [np.linalg.norm(np.subtract(r.centerRas, centre)) for r in rows]
        assert min(distances) < 2.0, f"no candidate within 2 mm of {centre}"
    assert all(r.probability is not None and r.probability >= 0.5 for r in rows)
    assert all(r.volumeMm3 > 0 and r.status == candidateTable.STATUS_NOT_SEEN for r in rows)
    assert _segmentsHoldTheEngineLabels(result, volume, prepared)
    # The engine's centres and volumes are those of its labels: the review's measuring changes none of them.
    assert reviewState.measureRows(result.segmentationNode, result.tableNode) == []


def test_single_point_command_adds_the_clicked_microbleed(engine_run, truth, tmp_path):
    scene, volume, prepared, _events = engine_run
    result = resultImport.importResults(scene, volume, prepared.outputs.labelMap, prepared.outputs.candidates)
    # The add path without --existing (see test_slicer_click_review.py for a click on a microbleed already found).
    rows = candidateTable.readRows(result.tableNode)
    nearest = min(rows, key=lambda r: np.linalg.norm(np.subtract(r.centerRas, truth[0])))
    reviewState.reject(result.segmentationNode, result.tableNode, nearest.segmentId)
    click = inferenceJob.prepareInputs(volume, None, tmp_path)
    argv = commandBuilder.buildSinglePointCommand(
        sys.executable, click.inputPath, click.outputDir, tuple(truth[0]), modelPath=BUNDLE, device="CPU"
    )
    inferenceJob.runBlocking(argv)
    before = result.segmentationNode.GetSegmentation().GetNumberOfSegments()
    segmentId = reviewState.addReaderMicrobleed(
        result.segmentationNode, result.tableNode, click.outputs.labelMap, click.outputs.candidates, tuple(truth[0])
    )
    assert result.segmentationNode.GetSegmentation().GetNumberOfSegments() == before + 1
    added = candidateTable.readRows(result.tableNode)[-1]
    assert added.segmentId == segmentId and added.status == candidateTable.STATUS_ADDED
    assert np.linalg.norm(np.subtract(added.centerRas, truth[0])) < 2.0


def test_engine_error_reaches_the_module_as_its_one_line_message(tmp_path):
    argv = commandBuilder.buildPredictCommand(
        sys.executable, CASE, tmp_path, modelPath=tmp_path / "no-such-bundle", device="CPU"
    )
    with pytest.raises(inferenceJob.EngineError, match=r"^model bundle not found: .*no-such-bundle$"):
        inferenceJob.runBlocking(argv)


# A volume as Slicer holds a DICOM series (stored LPS, tilted), under a parent transform.


def _lps_tilted(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same scan stored as a DICOM series lies: i to the left, j to the back (LPS), and the head turned 30
    degrees about the world's origin; returns the array, its affine and the turn (4x4)."""
    flip = np.eye(4)
    flip[0, 0] = flip[1, 1] = -1
    flip[:3, 3] = [data.shape[0] - 1, data.shape[1] - 1, 0]  # voxel (i, j) of the new array is (X-1-i, Y-1-j)
    a = np.radians(30.0)
    turn = np.eye(4)
    turn[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    return np.ascontiguousarray(data[::-1, ::-1, :]), turn @ affine @ flip, turn


def test_a_tilted_lps_volume_under_a_transform_gets_its_microbleeds_where_they_are(tmp_path: Path) -> None:
    image = nib.load(str(CASE))
    data, affine, turn = _lps_tilted(np.asarray(image.dataobj, dtype=np.float32), image.affine)
    truth = np.asarray(json.loads((CASE.parent / "truth.json").read_text())["centres_ras"], dtype=float)
    truth = truth @ turn[:3, :3].T  # the planted microbleeds turned with the head (volume's own frame)
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "series 7")
    updateVolumeNodeFromArray(volume, data, affine)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 25.0)
    transform.SetMatrixTransformToParent(shift)
    volume.SetAndObserveTransformNodeID(transform.GetID())

    prepared = _runEngine(volume, tmp_path / "run")
    written = nib.load(str(prepared.inputPath))
    np.testing.assert_allclose(written.affine, affine, atol=1e-4)  # the volume's own frame, not the transform's
    result = resultImport.importResults(scene, volume, prepared.outputs.labelMap, prepared.outputs.candidates)
    assert result.segmentationNode.GetTransformNodeID() == transform.GetID()
    rows = candidateTable.readRows(result.tableNode)
    assert len(rows) == len(truth)
    for centre in truth:
        assert min(np.linalg.norm(np.subtract(r.centerRas, centre)) for r in rows) < 2.0
    assert _segmentsHoldTheEngineLabels(result, volume, prepared)


@pytest.mark.parametrize(
    ("name", "stated", "bom"),
    [
        ("sub-01_swi.nii.gz", "swi.json", False),
        # BIDS has no SWI suffix: SWI magnitudes are often stored as T2starw, the sequence stated at the root (here by a
        # Windows editor, with a byte-order mark). The module read only the file's own sidecar: the T2* model, silently.
        ("sub-01_T2starw.nii.gz", "T2starw.json", True),
    ],
)
def test_a_bids_scan_loaded_into_slicer_is_read_as_plkd_predict_reads_the_file(tmp_path, name, stated, bom):
    from plkd.bundle import find_default_bundle
    from plkd.inference.modality import detect_modality

    # A tiny BIDS data set: the scan has no sidecar of its own; the data set's root states the sequence for every scan.
    root = tmp_path / "study"
    scan = root / "sub-01" / "anat" / name
    scan.parent.mkdir(parents=True)
    scan.write_bytes(CASE.read_bytes())
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0"}))
    sequence = {"ImageType": ["ORIGINAL", "PRIMARY", "M", "SWI"], "SequenceName": "*swi3d1r"}
    (root / stated).write_text(json.dumps(sequence), encoding="utf-8-sig" if bom else "utf-8")
    # Loaded as Slicer loads a file: a storage node reads it, and the node is named after it.
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name.removesuffix(".nii.gz"))
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(scan))
    volume.SetAndObserveStorageNodeID(storage.GetID())
    assert storage.ReadData(volume)
    # The module's run, with the shipped models and Modality "Auto", as the widget and the batch script start it.
    prepared = inferenceJob.prepareInputs(volume, None, tmp_path / "work")
    argv = inferenceJob.engineCommand(prepared, sys.executable, "", "CPU", None, "Auto")
    inferenceJob.runBlocking(argv)
    module = json.loads(prepared.outputs.candidates.read_text(encoding="utf-8"))
    # What `plkd predict` on the file itself records under --modality auto without --model (its decision, then the
    # installed model of that contrast; the whole run is test_bids_sidecars' and test_shipped_models_modality's).
    cli = {**detect_modality(scan).as_dict(), "stated": "auto", "model_modality": "SWI", "model_reason": None}

    swi = json.loads((find_default_bundle("SWI") / "manifest.json").read_text(encoding="utf-8"))["name"]
    assert module["model"].startswith(swi)
    decision = module["modality"]
    assert (decision["modality"], decision["source"]) == ("SWI", "sidecar")
    assert decision["reason"].startswith(f"sidecar ../../{stated} ")  # the inherited file, named as plkd names it
    assert decision["metadata_from"] == str(scan)
    assert {k: v for k, v in decision.items() if k != "metadata_from"} == cli
    # What the reader sees: the result's table records the model and the reason, as the log and the report show them.
    result = resultImport.importResults(scene, volume, prepared.outputs.labelMap, prepared.outputs.candidates)
    shown = resultImport.describeModelChoice(resultImport.modelChoiceOf(result.tableNode))
    assert shown.startswith(f"SWI model (sidecar ../../{stated} ")
