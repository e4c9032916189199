"""Volumes loaded from files as Slicer loads them: an export says so when the volume lies elsewhere than its NIfTI
file places it for other tools, and the batch names each volume after its whole file name.

Slicer reads a NIfTI file through ITK, which takes the qform when the sform has another code (2, "aligned") and
another matrix; nibabel, FSL and ``plkd predict`` take the sform. The batch (``slicer.util.loadVolume``) and the module
then write label maps and centres where Slicer placed the scan, millimetres away from where those tools show it.
Real MRML scene (slicer-core): the volume is read as ``slicer.util.loadVolume`` reads it (its reader,
``qSlicerVolumesReader::load``, calls ``vtkSlicerVolumesLogic::AddArchetypeVolume(file, base name, options)``).
"""

from __future__ import annotations

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

from CMBSegmentationLib import batchInputs, reportExport, resultImport  # noqa: E402
from CMBSegmentationLib.volumeIO import arrayFromVolumeNode, ijkToRas  # noqa: E402

QFORM = np.array([[-1.0, 0, 0, 12.0], [0, 1.0, 0, -14.0], [0, 0, 2.0, -9.0], [0, 0, 0, 1]])
SHAPE = (24, 28, 10)


def _scanFile(path: Path, sform_shift: float) -> Path:
    """A scan whose sform (code 2) lies ``sform_shift`` mm to the right of its qform (code 1)."""
    image = np.full(SHAPE, 400.0, np.float32)
    image[10:13, 12:15, 4:6] = 80.0
    sform = QFORM.copy()
    sform[0, 3] += sform_shift
    nifti = (nib.Nifti1Pair if path.suffix == ".hdr" else nib.Nifti1Image)(image, None)  # a pair: .hdr + .img
    nifti.set_qform(QFORM, code=1)
    nifti.set_sform(sform, code=2)
    nib.save(nifti, str(path))
    return path


def _slicerLoadVolume(scene):
    """``slicer.util.loadVolume(fileName, properties)`` as Slicer runs it: ``qSlicerVolumesReader::load`` (Slicer's
    Modules/Loadable/Volumes) names the node ``QFileInfo(fileName).baseName()`` (up to the first dot) unless the
    properties give a ``name``, turns the properties into option bits and calls
    ``vtkSlicerVolumesLogic::AddArchetypeVolume``; it raises RuntimeError when nothing was loaded."""
    logic = slicer.vtkSlicerVolumesLogic()
    logic.SetMRMLScene(scene)
    bits = {"labelmap": 0x1, "center": 0x2, "singleFile": 0x4, "autoWindowLevel": 0x8, "discardOrientation": 0x10}

    def loadVolume(file_name, properties=None):
        properties = properties or {}
        name = properties.get("name", Path(file_name).name.split(".")[0])
        options = sum(bit for key, bit in bits.items() if properties.get(key))
        node = logic.AddArchetypeVolume(str(file_name), name, options)
        if node is None:
            raise RuntimeError(f"Failed to load node from file: {file_name}")
        return node

    return loadVolume


def _loadVolume(scene, path: Path):
    """What ``slicer.util.loadVolume(path)`` does with no properties."""
    return _slicerLoadVolume(scene)(path)


def _export(scene, volume, folder: Path) -> dict:
    """Import a one-microbleed result on ``volume``'s grid and export it; return the report."""
    labels = np.zeros(SHAPE, np.int16)
    labels[arrayFromVolumeNode(volume) < 100] = 1
    folder.mkdir()
    nib.save(nib.Nifti1Image(labels, ijkToRas(volume)), str(folder / "scan_cmb.nii.gz"))
    candidate = {"id": 1, "label": 1, "center_ras": [0.0, 0.0, 0.0], "volume_mm3": 36.0, "probability": 0.9}
    (folder / "scan_cmb.json").write_text(json.dumps({"candidates": [candidate]}))
    result = resultImport.importResults(scene, volume, folder / "scan_cmb.nii.gz", folder / "scan_cmb.json")
    files = reportExport.exportReview(result.segmentationNode, result.tableNode, volume, folder / "out", "scan")
    return json.loads(files.reportJson.read_text())


@pytest.mark.parametrize("name", ["scan.nii.gz", "scan.hdr"])  # a NIfTI pair too: the batch takes it
@pytest.mark.parametrize("shift", [0.0, 5.0])
def test_the_export_says_when_the_volume_lies_elsewhere_than_its_file_for_other_tools(tmp_path, shift, name):
    scene = slicer.vtkMRMLScene()
    path = _scanFile(tmp_path / name, shift)
    volume = _loadVolume(scene, path)
    # Slicer places the dark spot by the qform (with k reversed: its voxel order is not the file's); nibabel by the
    # sform.
    affine = ijkToRas(volume)
    spot = affine[:3, :3] @ np.argwhere(arrayFromVolumeNode(volume) < 100).mean(axis=0) + affine[:3, 3]
    fileSpot = np.array([11.0, 13.0, 4.5])
    assert np.allclose(spot, QFORM[:3, :3] @ fileSpot + QFORM[:3, 3])
    assert not np.allclose(affine, QFORM)
    assert np.allclose(
        nib.load(str(path)).affine[:3, :3] @ fileSpot + nib.load(str(path)).affine[:3, 3] - spot, [shift, 0, 0]
    )
    report = _export(scene, volume, tmp_path / "result")
    notes = [n for n in report["notes"] if "tools that read its sform" in n]
    if shift:
        assert len(notes) == 1 and "up to 5.0 mm" in notes[0] and name in notes[0]
    else:
        assert notes == []


def _batchScript():
    """The batch script (``Slicer --python-script``) as a module; it imports nothing of Slicer's Qt at the top."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "batchProcess", REPO / "CMBSegmentation/Resources/Scripts/batchProcess.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_batch_names_each_volume_after_its_whole_file_name(tmp_path, capsys):
    # Slicer's reader names a node up to the first dot of its file: the reports of sub-01.ses-1.nii.gz and
    # sub-01.ses-2.nii.gz both said "input": "sub-01".
    batch = _batchScript()
    first = _scanFile(tmp_path / "sub-01.ses-1.nii.gz", 0.0)
    second = _scanFile(tmp_path / "sub-01.ses-2.nii.gz", 0.0)
    soft = nib.Nifti1Image(np.full(SHAPE, 0.75, np.float32), QFORM)
    nib.save(soft, str(tmp_path / "sub-01.ses-1_brainmask.nii.gz"))  # a probability map
    scene = slicer.vtkMRMLScene()
    loadVolume = _slicerLoadVolume(scene)
    volume, mask = batch.loadInputs(first, "_brainmask", loadVolume)
    assert volume.GetName() == "sub-01.ses-1" and mask.GetName() == "sub-01.ses-1_brainmask"
    assert mask.GetClassName() == "vtkMRMLScalarVolumeNode"  # its values reach the engine
    other, none = batch.loadInputs(second, "_brainmask", loadVolume)
    assert other.GetName() == "sub-01.ses-2" and none is None
    assert "sub-01.ses-2.nii.gz: warning: no brain mask sub-01.ses-2_brainmask" in capsys.readouterr().err
    assert _export(scene, volume, tmp_path / "result")["input"] == "sub-01.ses-1"


@pytest.mark.parametrize("stored", ["RAS", "LAS"])
def test_the_batch_pipeline_on_a_file_writes_outputs_that_overlay_the_file_in_other_tools(tmp_path, stored):
    """What ``processOne`` does with one file, but for ``CMBSegmentationLogic.process``'s Qt wrapper (its module
    file cannot be imported without Slicer's Qt): loaded as Slicer loads it, run by the engine with the module's
    command, imported, exported as the batch exports. Other tools (nibabel) must find each planted microbleed
    under a label of the exported label map, and the report must name the file. Stored "LAS" (a left-handed voxel
    order), the file comes into Slicer with its k axis reversed."""
    import shutil

    from CMBSegmentationLib import inferenceJob
    from plkd.cli import main

    batch = _batchScript()
    case = REPO / "Testing" / "data" / "tiny-case"
    scan = tmp_path / "in" / "sub-01.ses-1_T2S.nii.gz"
    scan.parent.mkdir()
    shutil.copy(case / "tiny_T2S.nii.gz", scan)
    if stored == "LAS":
        image = nib.load(str(scan))
        flip = np.diag([-1.0, 1.0, 1.0, 1.0])
        flip[0, 3] = image.shape[0] - 1
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[::-1], image.affine @ flip, image.header), str(scan))
    truth = np.asarray(json.loads((case / "truth.json").read_text())["centres_ras"], dtype=float)
    scene = slicer.vtkMRMLScene()
    volume, mask = batch.loadInputs(scan, "", _slicerLoadVolume(scene))
    prepared = inferenceJob.prepareInputs(volume, mask, tmp_path / "work")
    assert prepared.metadataPath == scan  # the engine reads the file's own metadata (modality)
    argv = inferenceJob.engineCommand(prepared, sys.executable, REPO / "Testing/data/tiny-bundle", "CPU", 0.5, "Auto")
    assert main(argv[3:]) == 0
    table = scene.AddNewNodeByClass("vtkMRMLTableNode")
    result = resultImport.importResults(
        scene, volume, prepared.outputs.labelMap, prepared.outputs.candidates, None, table
    )
    files = reportExport.exportReview(
        result.segmentationNode, table, volume, tmp_path / "out", batchInputs.outputBaseName(scan), None, overwrite=True
    )
    report = json.loads(files.reportJson.read_text())
    assert report["input"] == "sub-01.ses-1_T2S" and report["n_microbleeds"] == len(truth)
    assert not any("tools that read its sform" in note for note in report["notes"])
    labels = nib.load(str(files.labelMap))
    assert labels.shape == nib.load(str(scan)).shape
    data = np.asarray(labels.dataobj)
    labelled = np.argwhere(data > 0) @ labels.affine[:3, :3].T + labels.affine[:3, 3]  # RAS mm, as nibabel reads it
    for centre in truth:
        assert np.linalg.norm(labelled - centre, axis=1).min() < 1.5, f"no microbleed label near {centre}"
    found = np.array([[m["r_mm"], m["a_mm"], m["s_mm"]] for m in report["microbleeds"]])
    assert all(np.linalg.norm(found - centre, axis=1).min() < 2.0 for centre in truth)


def test_a_file_without_orientation_lies_where_slicer_the_engine_and_the_export_place_it(tmp_path: Path) -> None:
    """qform and sform codes 0: Slicer's reader (ITK) takes the identity in LPS, RAS (-i*dx, -j*dy, k*dz). plkd predict
    placed such a scan at (i*dx, j*dy, k*dz) (x and y mirrored: every JSON centre off the scan Slicer shows) while
    saying it followed ITK, and the export said the volume lay 40+ mm from where its file places it."""
    sys.path.insert(0, str(REPO / "PLKDTraining"))
    from plkd.volumes import header_affine

    image = np.full(SHAPE, 400.0, np.float32)
    image[10:13, 12:15, 4:6] = 80.0
    header = nib.Nifti1Header()
    header.set_data_shape(SHAPE)
    header.set_data_dtype(np.float32)
    header.set_zooms((0.9, 1.1, 2.0))
    header.set_qform(None, code=0)
    header.set_sform(None, code=0)
    path = tmp_path / "unoriented.nii.gz"
    nib.save(nib.Nifti1Image(image, None, header), str(path))
    scene = slicer.vtkMRMLScene()
    volume = _loadVolume(scene, path)
    np.testing.assert_allclose(ijkToRas(volume), header_affine(nib.load(str(path)).header), atol=1e-5)
    report = _export(scene, volume, tmp_path / "out")
    assert not any("places it for" in n for n in report["notes"]), report["notes"]


@pytest.mark.parametrize(("dtype", "high"), [(np.int64, 4000), (np.uint64, 4000), (np.int64, 2**40)])
def test_a_volume_of_64_bit_integers_is_written_for_the_engine_with_its_values(tmp_path: Path, dtype, high) -> None:
    # Apply on a volume of type long (a NRRD or a module's output) failed with nibabel's "Image data has type int64,
    # which may cause incompatibilities with other tools".
    from CMBSegmentationLib.volumeIO import updateVolumeNodeFromArray, writeVolumeNodeAsNifti

    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    values = (np.arange(np.prod(SHAPE)).reshape(SHAPE) * 7919 % high).astype(dtype)
    updateVolumeNodeFromArray(volume, values, QFORM)
    written = nib.load(str(writeVolumeNodeAsNifti(volume, tmp_path / "scan.nii.gz")))
    assert np.array_equal(np.asarray(written.dataobj), values) and np.allclose(written.affine, QFORM)


@pytest.mark.parametrize(
    ("stored", "affine"),
    [
        ("RAS", np.diag([1.0, 1.0, 2.0, 1.0])),
        ("LAS", np.diag([-1.0, 1.0, 2.0, 1.0])),  # dcm2niix's usual axial order (left-handed): Slicer reverses k
        ("LPI", np.diag([-1.0, -1.0, -2.0, 1.0])),
    ],
)
def test_the_exported_label_map_keeps_the_voxel_order_and_header_of_the_file_the_volume_was_loaded_from(
    tmp_path, stored, affine
):
    # Slicer loads a file stored with a left-handed voxel order (as dcm2niix writes axial scans) with its k axis
    # reversed: the exported label map lay where the scan lies, but in another voxel order and with another header than
    # the scan's file, so a voxel-wise use of the two files (numpy, fslmaths) put each microbleed on other voxels.
    image = np.full((20, 22, 8), 400, np.int16)
    image[3:5, 4:6, 2:3] = 80  # the microbleed, at these voxels of the file
    image[15, 18, 6] = 90  # an asymmetric mark: no flip of the voxels matches them but the real one
    nifti = nib.Nifti1Image(image, affine)
    nifti.header.set_qform(affine, code=1)
    nifti.header.set_sform(affine, code=2)
    nifti.header.set_slope_inter(2.0, 1.0)  # stored scaled: the label map must not be
    nifti.header.set_xyzt_units("mm", "sec")
    path = tmp_path / "scan.nii.gz"
    nib.save(nifti, str(path))
    scene = slicer.vtkMRMLScene()
    volume = _loadVolume(scene, path)
    labels = np.zeros(image.shape, np.int16)
    labels[arrayFromVolumeNode(volume) == 161] = 1  # the engine's answer, on the grid of the volume it was given
    assert labels.sum() == 4
    (tmp_path / "engine").mkdir()
    nib.save(nib.Nifti1Image(labels, ijkToRas(volume)), str(tmp_path / "engine" / "scan_cmb.nii.gz"))
    candidate = {"id": 1, "label": 1, "center_ras": [0.0, 0.0, 0.0], "volume_mm3": 8.0, "probability": 0.9}
    (tmp_path / "engine" / "scan_cmb.json").write_text(json.dumps({"candidates": [candidate]}))
    result = resultImport.importResults(
        scene, volume, tmp_path / "engine" / "scan_cmb.nii.gz", tmp_path / "engine" / "scan_cmb.json"
    )
    files = reportExport.exportReview(result.segmentationNode, result.tableNode, volume, tmp_path / "out", "scan")
    exported, original = nib.load(str(files.labelMap)), nib.load(str(path))
    assert np.array_equal(np.asarray(exported.dataobj), (image == 80).astype(np.int16))  # voxel for voxel
    assert exported.header.get_slope_inter() in ((1.0, 0.0), (None, None))
    for form in ("get_qform", "get_sform"):
        code, matrix = getattr(exported.header, form)(coded=True), getattr(original.header, form)(coded=True)
        assert code[1] == matrix[1] and np.allclose(code[0], matrix[0], atol=1e-6), form
    assert exported.header.get_xyzt_units() == ("mm", "sec")
    report = json.loads(files.reportJson.read_text())
    centre = affine[:3, :3] @ np.argwhere(image == 80).mean(axis=0) + affine[:3, 3]
    assert [report["microbleeds"][0][k] for k in ("r_mm", "a_mm", "s_mm")] == pytest.approx(centre, abs=1e-3)
