"""Labels and masks against their image's grid: another storage order is turned exactly, float rounding of
the header is the same grid, any other difference is refused in one line (never resampled silently)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from plkd.cli import main
from plkd.data.datasets import find_subjects, load_subject
from plkd.errors import InputError
from plkd.inference.brainmask import resolve_brain_mask
from plkd.volumes import Volume, load_label, load_volume, on_grid_of


def _oblique_affine() -> np.ndarray:
    """An oblique (12° about z, -7° about x), anisotropic RAS-like grid with an offset."""
    a, b = np.deg2rad(12.0), np.deg2rad(-7.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([0.9, 1.0, 2.5])
    aff[:3, 3] = [-60.0, -80.5, -30.25]
    return aff


def _stored(data: np.ndarray, affine: np.ndarray, codes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels stored in the axis order and directions ``codes`` (e.g. "LPS", "ASL")."""
    ornt = ornt_transform(axcodes2ornt(nib.aff2axcodes(affine)), axcodes2ornt(tuple(codes)))
    return apply_orientation(data, ornt), affine @ inv_ornt_aff(ornt, data.shape)


def _image_and_label(shape: tuple[int, int, int] = (14, 12, 10)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    image = (rng.random(shape) * 100 + 10).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    label[2:4, 3:5, 1:3] = 1  # two microbleeds in a corner, so a wrong flip or transpose moves them
    label[9, 6, 4] = 2
    return image, label, _oblique_affine()


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.mark.parametrize("codes", ["LPS", "ASL", "SPR", "RAI"])
def test_label_stored_in_another_order_is_turned_onto_the_image_exactly(tmp_path: Path, codes: str) -> None:
    image, label, affine = _image_and_label()
    vol = load_volume(_save(tmp_path / "img.nii.gz", image, affine))
    stored, stored_affine = _stored(label, affine, codes)
    assert nib.aff2axcodes(stored_affine) == tuple(codes) and not np.array_equal(stored, label)
    lab = load_label(_save(tmp_path / "lab.nii.gz", stored, stored_affine))
    turned = on_grid_of(vol, lab, what="label")
    np.testing.assert_array_equal(turned.data, label)  # every voxel where it was, none interpolated
    np.testing.assert_allclose(turned.affine, vol.affine, atol=1e-6)
    # A brain mask stored so is turned the same way (plkd predict --mask).
    mask, _ = resolve_brain_mask(vol, lab)
    np.testing.assert_array_equal(mask, label > 0)


def test_float_rounding_of_the_header_is_the_same_grid(tmp_path: Path) -> None:
    image, label, affine = _image_and_label()
    vol = load_volume(_save(tmp_path / "img.nii.gz", image, affine))
    nudged = affine.copy()
    nudged[:3, :] += 1e-6  # a header written by another tool: float32 rounding of the sform
    lab = on_grid_of(vol, Volume(label.astype(np.float32), nudged), what="label")
    np.testing.assert_array_equal(lab.data, label)
    np.testing.assert_array_equal(lab.affine, vol.affine)  # one placement for what is derived from both


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("shift", "0.3 mm apart"),
        ("tilt", "mm apart"),
        ("spacing", "resample it onto the image"),
        ("turned_shift", "stored LPS vs the image.s .* stored RAS; their headers place the voxels up to 1 mm apart"),
    ],
)
def test_label_on_another_grid_is_refused_in_one_line(tmp_path: Path, change: str, message: str) -> None:
    """A label a few tenths of a voxel off (the old element-wise 1e-3 tolerance let the rotation part drift by
    up to 0.2 mm across a 200-voxel grid) or on other voxels is refused, naming both grids."""
    image, label, affine = _image_and_label((200, 8, 7))
    other = affine.copy()
    data = label
    if change == "shift":
        other[:3, 3] += [0.3, 0.0, 0.0]
    elif change == "tilt":
        other[:3, 0] += 9e-4  # within the old per-element tolerance, 0.3 mm at the far end of axis 0
    elif change == "spacing":
        other[:3, 2] *= 0.5
        data = np.repeat(label, 2, axis=2)
    else:
        data, other = _stored(label, affine, "LPS")
        other[:3, 3] += [0.0, 0.0, 1.0]
    img = _save(tmp_path / "img.nii.gz", image, affine)
    lab = _save(tmp_path / "lab.nii.gz", data, other)
    with pytest.raises(InputError, match=message) as err:
        on_grid_of(load_volume(img), load_label(lab), what="label")
    assert "\n" not in str(err.value) and "stored" in str(err.value)


def test_lowres_and_data_sets_accept_a_label_stored_otherwise(tmp_path: Path, capsys) -> None:
    image, label, affine = _image_and_label()
    img = _save(tmp_path / "data" / "s01.nii.gz", image, affine)
    _save(tmp_path / "data" / "s01_label.nii.gz", *_stored(label, affine, "PIL"))
    # Training, tuning and cross-validation read subjects through load_subject.
    (subject,) = find_subjects(tmp_path / "data")
    _, lab, _ = load_subject(subject)
    np.testing.assert_array_equal(lab.data, label)

    lab_path = tmp_path / "data" / "s01_label.nii.gz"
    out, label_out = tmp_path / "o" / "s01.nii.gz", tmp_path / "o" / "s01_label.nii.gz"
    args = ["lowres", str(img), "--thickness-mm", "5", "--label", str(lab_path), "--out", str(out)]
    assert main([*args, "--label-out", str(label_out), "--progress", "none"]) == 0
    thick, thick_label = nib.load(str(out)), nib.load(str(label_out))
    np.testing.assert_allclose(thick_label.affine, thick.affine, atol=1e-6)  # one grid, the image's
    assert thick_label.shape == thick.shape == (14, 12, 5)
    assert set(np.unique(np.asanyarray(thick_label.dataobj))) == {0, 1, 2}

    # Another grid: one error line, nothing written.
    shifted = affine.copy()
    shifted[:3, 3] += 2.0
    _save(lab_path, label, shifted)
    label_out.unlink()
    out.unlink()
    assert main([*args, "--label-out", str(label_out), "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("plkd: error: label s01_label.nii.gz does not lie on the image's grid") and "\n" not in err
    assert not out.exists() and not label_out.exists()


def test_evaluate_a_prediction_stored_in_another_order_without_a_false_note(tmp_path: Path) -> None:
    """A cubic prediction stored PIL against a RAS reference: scored exactly, and no note that 'their headers
    place them 35 mm apart, one header is wrong' (it compared the two affines, not the voxels they place)."""
    label = np.zeros((20, 20, 20), dtype=np.uint8)
    label[3:5, 3:5, 3:5] = 1
    label[15, 12, 6] = 2
    label[10, 16, 14] = 3
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -10.0
    _save(tmp_path / "truth" / "s01_label.nii.gz", label, affine)
    _save(tmp_path / "pred" / "s01_cmb.nii.gz", *_stored(label, affine, "PIL"))
    out = tmp_path / "r.json"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "truth"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["pooled"]["TP"] == 3 and result["pooled"]["FP"] == 0 and result["pooled"]["Dice"] == 1.0
    assert result["notes"] == []


@pytest.mark.parametrize(("tilt", "warned"), [(9e-4, True), (1e-7, False)])
def test_qform_sform_difference_is_measured_where_it_moves_the_image(tilt: float, warned: bool) -> None:
    """A qform tilted against the sform by under 1e-3 per element moves a 256-voxel grid's far corner by 0.33 mm
    (a viewer reading the qform shows it there): warned; float rounding is not."""
    from plkd.inference.inputs import orientation_warnings

    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    qform = affine.copy()
    qform[:2, :2] = [[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]]  # a small rotation about z
    img = nib.Nifti1Image(np.zeros((256, 256, 4), dtype=np.float32), affine)
    img.set_sform(affine, code=1)
    img.set_qform(qform, code=1)
    vol = Volume(np.zeros((256, 256, 4), dtype=np.float32), affine, header=img.header)
    warnings = orientation_warnings(vol, "scan.nii.gz")
    assert bool(warnings) == warned
    if warned:
        assert "placing the image up to 0.325 mm apart" in warnings[0]


def test_label_saved_with_nibabels_affine_of_an_unoriented_image_is_refused_not_flipped(tmp_path: Path) -> None:
    """An image without orientation (codes 0) sits at (-i*dx, -j*dy, k*dz) as ITK and Slicer place it; a label
    saved with nibabel's img.affine of it (x flipped, centred) holds the image's array order, so turning it
    by its header would mirror every microbleed left-right: refused, saying which one lacks an orientation."""
    image, label, _ = _image_and_label()
    img = nib.Nifti1Image(image, np.eye(4))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    nib.save(img, str(tmp_path / "img.nii.gz"))
    nibabel_affine = nib.load(str(tmp_path / "img.nii.gz")).affine  # nibabel's fallback: LAS, centred
    assert nib.aff2axcodes(nibabel_affine) == ("L", "A", "S")
    lab = _save(tmp_path / "lab.nii.gz", label, nibabel_affine)
    with pytest.raises(InputError, match=r"the image has no orientation: qform_code = sform_code = 0.*mm apart"):
        on_grid_of(load_volume(tmp_path / "img.nii.gz"), load_label(lab), what="label")


def test_header_fixed_by_nibabel_is_said_once_naming_the_file(tmp_path: Path, caplog, capfd) -> None:
    """pixdim 0 (or negative) in a header without orientation: nibabel sets it to 1 and printed that twice
    ("Level 35: ..." among them), without the file's name and outside the JSON; now one plkd warning."""
    path = tmp_path / "zeropix.nii"
    img = nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32) + 1, np.eye(4))
    nib.save(img, str(path))
    hdr = nib.load(str(path)).header.copy()
    hdr["qform_code"] = hdr["sform_code"] = 0
    hdr["pixdim"][1:4] = [0.0, 1.0, 1.0]
    hdr["vox_offset"] = 352  # a loaded header says 0
    with open(path, "r+b") as f:  # the raw header: nibabel would repair it on saving
        f.write(hdr.binaryblock)
    caplog.set_level("INFO", logger="plkd")
    vol = load_volume(path)
    np.testing.assert_allclose(vol.spacing, (1.0, 1.0, 1.0))
    said = [r.getMessage() for r in caplog.records if "pixdim" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("image zeropix.nii: header fixed as nibabel reads it")
    assert all(r.name.startswith("plkd") for r in caplog.records if "pixdim" in r.getMessage())
    assert "pixdim" not in capfd.readouterr().err  # nibabel's own handler printed it as well
