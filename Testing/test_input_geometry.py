"""Input geometry as the networks see it and as the outputs keep it: grids with two equally thick axes, ..."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from planted_microbleeds import brain_with_microbleeds

from plkd.cli import main
from plkd.volumes import Volume, network_axes, network_slice_axis

SHIPPED_T2S = Path(__file__).resolve().parents[1] / "PLKDTraining" / "plkd" / "bundled" / "cmb-t2s"


def _geometry(header: nib.Nifti1Header) -> tuple:
    return (
        int(header["qform_code"]),
        int(header["sform_code"]),
        header.get_qform().tolist(),
        header.get_sform().tolist(),
        header["pixdim"][:4].tolist(),
        header.get_dim_info(),
        header.get_xyzt_units(),
    )


def _block_mean(vol: Volume, factor: int, axes: tuple[int, ...]) -> Volume:
    """``vol`` acquired with ``factor``-times coarser voxels along ``axes`` (block means, the same field of view)."""
    data, affine = vol.data, vol.affine.copy()
    for ax in axes:
        n = data.shape[ax] // factor * factor
        data = np.take(data, range(n), axis=ax)
        shape = list(data.shape)
        shape[ax : ax + 1] = [n // factor, factor]
        data = data.reshape(shape).mean(axis=ax + 1)
        affine[:3, 3] += affine[:3, ax] * (factor - 1) / 2.0
        affine[:3, ax] *= factor
    return Volume(np.ascontiguousarray(data, dtype=np.float32), affine)


@pytest.mark.parametrize(
    ("spacing", "z_axis"),
    [((3.0, 3.0, 1.0), 1), ((3.0, 1.0, 3.0), 2), ((1.0, 2.0, 2.0), 2), ((2.0, 2.01, 1.0), 1)],
)
def test_of_two_equally_thick_axes_one_is_the_networks_slice_axis(spacing, z_axis) -> None:
    """A 3×3×1 mm scan (two thick axes) reached the networks in RAS order, its one fine axis as their slice axis and
    both thick ones in-plane: nothing like the thick slices the students learnt. Now the thick axis that comes last
    in RAS order (S, else A) is Z, also when the file stores the grid sagittally or LPS."""
    affine = np.diag([*spacing, 1.0])
    for turn in (
        np.eye(4),
        np.diag([-1.0, -1.0, 1.0, 1.0]),
        np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0.0], [0, 0, 0, 1]]),
    ):
        stored = affine @ turn  # the same world grid stored in another axis order or direction
        ornt, perm, turned = network_axes(stored, (10, 10, 10))
        assert perm[2] == z_axis, turn
        assert spacing_of(turned)[2] == pytest.approx(max(spacing))
        # lowres/tune/cv thin the same axis: the stored axis that runs along world axis z_axis
        assert np.argmax(np.abs(stored[:3, network_slice_axis(stored)])) == z_axis


def spacing_of(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((affine[:3, :3] ** 2).sum(axis=0))


def test_a_scan_with_two_thick_axes_has_its_microbleeds_found_and_its_header_kept(tmp_path: Path) -> None:
    """Two microbleeds (3 and 2.5 mm) planted in a 1 mm brain, then acquired with 3×3×1 mm voxels: kept in RAS order
    (fine axis as Z) the shipped model found neither. Now both are found at their places, the JSON says which axis
    was taken as the slice axis (and the warning line says it once), and the label map keeps the input's header."""
    image, mask, planted = brain_with_microbleeds(2024, {"3 mm": 3.0, "2.5 mm": 2.5})
    thick, thick_mask = _block_mean(image, 3, (0, 1)), _block_mean(mask, 3, (0, 1))
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(thick.shape)
    header.set_qform(thick.affine, code=1)
    header.set_sform(thick.affine, code=2)
    header.set_dim_info(slice=2)
    header.set_xyzt_units("mm", "sec")
    scan = tmp_path / "thick_T2S.nii.gz"
    nib.save(nib.Nifti1Image(thick.data, None, header), str(scan))
    mask_path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image((thick_mask.data >= 0.5).astype(np.uint8), thick.affine), str(mask_path))
    args = ["predict", str(scan), "-o", str(tmp_path / "out"), "--model", str(SHIPPED_T2S), "--mask", str(mask_path)]
    assert main([*args, "--device", "cpu", "--progress", "none", "--threads", "1"]) == 0
    doc = json.loads((tmp_path / "out" / "thick_T2S_cmb.json").read_text())
    kept = [np.asarray(c["center_ras"]) for c in doc["candidates"] if c["kept"]]
    for name, centre in planted.items():
        assert kept and min(np.linalg.norm(k - centre) for k in kept) <= 3.0, (name, kept)
    said = [n for n in doc["notes"] if "two axes are equally coarse" in n]
    assert len(said) == 1 and "anterior-posterior axis as their slice axis" in said[0], doc["notes"]
    label = nib.load(str(tmp_path / "out" / "thick_T2S_cmb.nii.gz"))
    assert label.shape == thick.shape
    assert _geometry(label.header) == _geometry(nib.load(str(scan)).header)


def _slicer_reads(path: Path) -> np.ndarray | None:
    """The IJK → RAS matrix of ``path`` as 3D Slicer loads it (its volume archetype storage node, ITK's NIfTI reader,
    from the slicer-core wheel), or None when Slicer cannot read it."""
    slicer = pytest.importorskip("slicer")
    import vtk

    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    volume.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(volume):
        return None
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_a_nifti_2_scan_is_said_to_be_unreadable_in_slicer_and_its_outputs_stay_nifti_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """3D Slicer reads NIfTI through ITK, whose NIfTI reader has no NIfTI-2 (ITK 5.4; the slicer-core wheel fails
    on the file): neither a NIfTI-2 scan nor its outputs, kept NIfTI-2 so that the header stays exact (double
    precision), open there, and nothing said so. Now one warning line and a JSON note say it and how to review.
    The same scan as NIfTI-1 opens in Slicer with the placement plkd uses, and so does its label map."""
    from tiny_case import BUNDLE, case_arrays

    data, affine = case_arrays()
    affine = affine.copy()
    affine[:3, 3] += [0.3, -0.2, 0.1]
    names = {}
    for klass, stem in ((nib.Nifti2Image, "n2_T2S"), (nib.Nifti1Image, "n1_T2S")):
        img = klass(data, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        names[stem] = tmp_path / f"{stem}.nii.gz"
        nib.save(img, str(names[stem]))
    args = ["predict", *map(str, names.values()), "-o", str(tmp_path / "out"), "--model", str(BUNDLE)]
    assert main([*args, "--device", "cpu", "--progress", "none", "--threads", "1"]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "NIfTI-2" in r.getMessage()]
    assert len(warned) == 1 and "n2_T2S.nii.gz" in warned[0] and "3D Slicer" in warned[0], warned
    for stem, nifti_2 in (("n2_T2S", True), ("n1_T2S", False)):
        doc = json.loads((tmp_path / "out" / f"{stem}_cmb.json").read_text())
        assert any("NIfTI-2" in n for n in doc["notes"]) == nifti_2, doc["notes"]
        label = tmp_path / "out" / f"{stem}_cmb.nii.gz"
        assert isinstance(nib.load(str(label)), nib.Nifti2Image) == nifti_2
        for path in (names[stem], label):
            placed = _slicer_reads(path)
            if nifti_2:
                assert placed is None, path  # when Slicer reads NIfTI-2, the note must go
            else:
                np.testing.assert_allclose(placed, nib.load(str(names[stem])).affine, atol=1e-4)


def _series_with_an_odd_slice(folder: Path, uid: str, index: int, odd) -> tuple[np.ndarray, np.ndarray, list]:
    """An 8-slice oblique series (1×1×2 mm) whose slice ``index`` is written apart (``IMX0000.dcm``, same series) at
    its regular position on the grid ``odd(affine)``; returns ``(data, affine, position)`` to write it again."""
    from test_predict_dicom import LPS, _case, _oblique_affine, write_series

    data, _affine, _truth = _case()
    affine = _oblique_affine((1.0, 1.0, 2.0))
    write_series(folder, data[..., :8] * 10, affine, uid)
    (folder / f"IM{index:04d}.dcm").unlink()
    position = [list(LPS @ (affine[:3, 3] + index * affine[:3, 2]))]
    write_series(
        folder, data[..., index : index + 1] * 10, odd(affine), f"{uid}.9", position, {"0020|000e": uid}, "IMX"
    )
    return data, affine, position


def test_a_dicom_series_whose_slices_are_not_oriented_alike_is_refused_in_one_line(tmp_path: Path) -> None:
    """A series with one slice turned 12° in its plane (a second stack or a localizer slice in the series) at the
    regular position was read on the first file's orientation: that slice's pixels were put where they are not,
    without a word. Now such a series is refused naming the file."""
    pytest.importorskip("SimpleITK")
    from test_predict_dicom import write_series

    from plkd.dicom import find_series, load_dicom_series
    from plkd.errors import InputError

    def turned(affine: np.ndarray) -> np.ndarray:
        turn, out = np.radians(12.0), affine.copy()
        out[:3, :3] = (
            np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]]) @ out[:3, :3]
        )
        return out

    uid = "1.2.826.0.1.3680043.8.498.77"
    data, affine, position = _series_with_an_odd_slice(tmp_path, uid, 3, turned)
    (series,) = find_series(tmp_path)
    assert len(series.files) == 8
    with pytest.raises(InputError, match=r"not all oriented alike.*IMX0000\.dcm.*12") as err:
        load_dicom_series(series)
    assert "\n" not in str(err.value)
    # The same series without the turned slice is read as before.
    (tmp_path / "IMX0000.dcm").unlink()
    write_series(tmp_path, data[..., 3:4] * 10, affine, f"{uid}.9", position, {"0020|000e": uid}, "IMX")
    vol, _record = load_dicom_series(find_series(tmp_path)[0])
    np.testing.assert_allclose(vol.affine, affine, atol=1e-4)


def test_a_dicom_series_whose_slices_have_other_pixel_sizes_is_refused_in_one_line(tmp_path: Path) -> None:
    """One slice of 1.2 mm pixels in a series of 1 mm ones (another reconstruction in the series) was read with the
    first file's pixel size, its picture stretched onto the others'. Now such a series is refused naming the file."""
    pytest.importorskip("SimpleITK")
    from plkd.dicom import find_series, load_dicom_series
    from plkd.errors import InputError

    def coarser(affine: np.ndarray) -> np.ndarray:
        out = affine.copy()
        out[:3, :2] *= 1.2
        return out

    _series_with_an_odd_slice(tmp_path, "1.2.826.0.1.3680043.8.498.79", 5, coarser)
    (series,) = find_series(tmp_path)
    with pytest.raises(InputError, match=r"pixel sizes.*IMX0000\.dcm.*1\.2") as err:
        load_dicom_series(series)
    assert "\n" not in str(err.value)
