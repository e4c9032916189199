"""A click in Slicer reuses the registration to MNI of the result it is made on, and only while the volume is the one
that registration was made for (``CMBSegmentationLib.scanRegistration``).

Real MRML scene (slicer-core); the whole-scan run and the clicks are real ``plkd predict`` runs with the tiny bundle,
started from the argv the module builds (in this process, to spare the busy test machine a torch start per run). The
volume is the MNI template seen through a known rotation, scaling and shift (``test_location._moved_scan``), so the
registration succeeds, with one dark spot for the runs to find.
"""

from __future__ import annotations

import gzip
import itertools
import json
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "CMBSegmentation"))

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package has no MRML classes (slicer-core missing)", allow_module_level=True)

from test_location import _moved_scan  # noqa: E402

from CMBSegmentationLib import (  # noqa: E402
    clickReview,
    commandBuilder,
    inferenceJob,
    resultImport,
    reviewState,
    scanRegistration,
)
from CMBSegmentationLib.volumeIO import (  # noqa: E402
    arrayFromVolumeNode,
    ijkToRas,
    numpyToMatrix,
    updateVolumeNodeFromArray,
)
from plkd.cli import main  # noqa: E402
from plkd.inference.outputs import files_sha256  # noqa: E402

BUNDLE = REPO / "Testing" / "data" / "tiny-bundle"
SPOT = (slice(40, 44), slice(50, 54), slice(30, 34))


def _engine(argv: list[str]) -> dict:
    """Run the module's ``python -m plkd predict ...`` argv; return the candidates file it wrote."""
    assert argv[1:3] == ["-m", "plkd"]
    assert main(argv[3:]) == 0
    outputDir = Path(argv[argv.index("--output-dir") + 1])
    (path,) = outputDir.glob("*_cmb.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    """A scene holding the volume and the result of a whole-scan run as the module imports it (Apply)."""
    image, affine, _toMni, _ = _moved_scan(np.random.default_rng(5))
    image = image.copy()
    image[SPOT] *= 0.2
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "moved T2*")
    updateVolumeNodeFromArray(volume, image, affine)
    prepared = inferenceJob.prepareInputs(volume, None, tmp_path_factory.mktemp("apply"))
    argv = commandBuilder.buildPredictCommand(
        sys.executable, prepared.inputPath, prepared.outputDir, modelPath=BUNDLE, device="CPU"
    )
    whole = _engine(argv)
    assert whole["location"]["status"] == "ok" and whole["input_sha256"] == files_sha256([prepared.inputPath])
    result = resultImport.importResults(scene, volume, prepared.outputs.labelMap, prepared.outputs.candidates)
    # The scene goes with its nodes: the only Python reference to it, it would be deleted under them.
    return volume, result.segmentationNode, result.tableNode, whole, tmp_path_factory.mktemp("clicks"), scene


def _spotRas(volume) -> tuple[float, float, float]:
    affine = ijkToRas(volume)
    return tuple(float(v) for v in affine[:3, :3] @ np.array([42.0, 52.0, 32.0]) + affine[:3, 3])


def _click(volume, seg, table, folder: Path) -> tuple[dict, inferenceJob.PreparedRun]:
    """One click on the spot as the module makes it: inputs and snapshot written, engine run, its answer applied."""
    point = _spotRas(volume)
    prepared = clickReview.prepareClickInputs(volume, seg, table, folder)
    argv = commandBuilder.buildSinglePointCommand(
        sys.executable, prepared.inputPath, prepared.outputDir, point, modelPath=BUNDLE, device="CPU",
        existingPath=prepared.existingPath,
    )  # fmt: skip
    doc = _engine(argv)
    clickReview.applyClickResult(
        seg, table, prepared.outputs.labelMap, prepared.outputs.candidates, point, prepared.existingPath,
        reviewState.reviewThreshold(table),
    )  # fmt: skip
    return doc, prepared


def test_a_click_reuses_the_registration_of_the_result_and_not_once_the_volume_changed(applied):
    volume, seg, table, whole, folder, _scene = applied
    doc, _prepared = _click(volume, seg, table, folder / "same")
    assert doc["location"]["registration"].get("reused_from") == clickReview.SNAPSHOT_CANDIDATES
    assert np.allclose(doc["location"]["scan_to_mni"], whole["location"]["scan_to_mni"])
    assert doc["candidates"][0]["center_mni"] is not None
    assert scanRegistration.recordedRegistration(seg)["input_sha256"] == whole["input_sha256"]

    # One voxel far from the spot edited: another scan as far as anyone can tell, so it is registered again.
    image = arrayFromVolumeNode(volume)
    image[2, 2, 2] += 1.0
    updateVolumeNodeFromArray(volume, image, ijkToRas(volume))
    doc, prepared = _click(volume, seg, table, folder / "edited")
    assert doc["location"]["status"] == "ok" and "reused_from" not in doc["location"]["registration"]
    # That click's own registration is kept for the next one, with the sha256 of the volume as it is now.
    assert scanRegistration.recordedRegistration(seg)["input_sha256"] == files_sha256([prepared.inputPath])


def _snapshotAndInput(volume, seg, table, folder: Path) -> tuple[str | None, str]:
    """(sha256 the click's snapshot says its registration was made from, sha256 of the file the click writes)."""
    prepared = clickReview.prepareClickInputs(volume, seg, table, folder)
    snapshot = json.loads(prepared.existingPath.with_name(clickReview.SNAPSHOT_CANDIDATES).read_text())
    return snapshot.get("input_sha256"), files_sha256([prepared.inputPath])


def test_the_identity_follows_the_voxels_and_grid_the_engine_sees(applied, monkeypatch):
    """The engine reuses a registration only for equal sha256s (``test_click``): they stay equal for the same volume
    written again (also seconds later, to another file name, or under a parent transform, which the engine never
    sees), and differ once its placement changes (origin moved, transform hardened)."""
    volume, seg, table, _whole, folder, _scene = applied
    current = scanRegistration.recordedRegistration(seg)["input_sha256"]
    clock = itertools.count(1_000_000_000, 3600)
    # A gzip stream stamped with the time (or the temporary file's name) would differ from one write to the next.
    monkeypatch.setattr(gzip, "time", types.SimpleNamespace(time=lambda: float(next(clock))))
    recorded, written = _snapshotAndInput(volume, seg, table, folder / "again")
    assert recorded == written == current

    transform = volume.GetScene().AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = (12.0, -7.0, 5.0)
    transform.SetMatrixTransformToParent(numpyToMatrix(shift))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    recorded, written = _snapshotAndInput(volume, seg, table, folder / "parent")
    assert recorded == written

    slicer.vtkSlicerTransformLogic().hardenTransform(volume)
    recorded, written = _snapshotAndInput(volume, seg, table, folder / "hardened")
    assert recorded == current and written != recorded

    volume.SetAndObserveTransformNodeID(transform.GetID())
    transform.SetMatrixTransformToParent(numpyToMatrix(np.linalg.inv(shift)))
    slicer.vtkSlicerTransformLogic().hardenTransform(volume)  # back where it was, bit for bit or not
    origin = list(volume.GetOrigin())
    volume.SetOrigin(origin[0] + 0.5, origin[1], origin[2])
    recorded, written = _snapshotAndInput(volume, seg, table, folder / "moved")
    assert recorded == current and written != recorded


def test_a_result_replaced_by_a_run_without_registration_keeps_none(applied, tmp_path):
    """A result imported again from a run that made no registration (none located, or an older engine) does not keep
    the registration of the result it replaced."""
    volume, seg, _table, _whole, _folder, scene = applied
    other = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    attribute = scanRegistration.ATTRIBUTE_REGISTRATION
    other.SetAttribute(attribute, seg.GetAttribute(attribute))
    assert scanRegistration.snapshotFields(other)
    labels = tmp_path / "none_cmb.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(volume.GetImageData().GetDimensions(), np.int16), ijkToRas(volume)), labels)
    candidates = tmp_path / "none_cmb.json"
    candidates.write_text(json.dumps({"candidates": [], "input_sha256": "0" * 64, "location": {"status": "skipped"}}))
    resultImport.importResults(scene, volume, labels, candidates, other, replace=True)
    assert scanRegistration.recordedRegistration(other) is None and scanRegistration.snapshotFields(other) == {}
