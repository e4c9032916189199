"""The module's run on a volume as Slicer holds a DICOM series (stored LPS, tilted) and under a parent transform:
the segments land on the planted microbleeds, voxel for voxel as the engine wrote them (slicer-core + ``plkd``).
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

from CMBSegmentationLib import candidateTable, commandBuilder, inferenceJob, resultImport  # noqa: E402
from CMBSegmentationLib.volumeIO import arrayFromVolumeNode, updateVolumeNodeFromArray  # noqa: E402

DATA = REPO / "Testing" / "data"
CASE = DATA / "tiny-case" / "tiny_T2S.nii.gz"
BUNDLE = DATA / "tiny-bundle"


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

    prepared = inferenceJob.prepareInputs(volume, None, tmp_path / "run")
    written = nib.load(str(prepared.inputPath))
    np.testing.assert_allclose(written.affine, affine, atol=1e-4)  # the volume's own frame, not the transform's
    argv = commandBuilder.buildPredictCommand(
        sys.executable, prepared.inputPath, prepared.outputDir, modelPath=BUNDLE, device="CPU", threshold=0.5
    )
    inferenceJob.runBlocking(argv)
    result = resultImport.importResults(scene, volume, prepared.outputs.labelMap, prepared.outputs.candidates)
    assert result.segmentationNode.GetTransformNodeID() == transform.GetID()
    rows = candidateTable.readRows(result.tableNode)
    assert len(rows) == len(truth)
    for centre in truth:
        assert min(np.linalg.norm(np.subtract(r.centerRas, centre)) for r in rows) < 2.0
    labels = np.asarray(nib.load(str(prepared.outputs.labelMap)).dataobj)
    labelNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    for segmentId in result.segmentIds:
        ids.InsertNextValue(segmentId)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        result.segmentationNode, ids, labelNode, volume
    )
    assert np.array_equal(arrayFromVolumeNode(labelNode) > 0, labels > 0)
