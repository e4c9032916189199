"""A magnitude scan whose air is padded with a negative constant (the data type's minimum, -32768, or -1024, as some
resampling and conversion tools fill what lies outside the acquisition), or with one brighter than any tissue, is a
magnitude scan: its padding is air. So is a background of NaN (SPM's implicit mask).

Negative padding was refused as "a phase image" (most of its non-zero voxels are negative), although README promises
that a background filled with another constant counts as zeros, and a 4-D multi-echo file padded so became a bright
background after root-sum-of-squares; bright padding was refused as "no brain tissue found"."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tiny_case import BUNDLE, TRUTH, case_arrays

from plkd.cli import main
from plkd.errors import InputError
from plkd.inference.brainmask import resolve_brain_mask
from plkd.volumes import Volume, load_volume


def _case() -> tuple[np.ndarray, np.ndarray]:
    data, affine = case_arrays()
    return np.rint(data), affine


def _padded(data: np.ndarray, fill: float) -> np.ndarray:
    """``data`` with its air (exact zeros connected to the border: the tiny case is skull-stripped) set to ``fill``."""
    out = data.copy()
    out[data == 0] = fill
    return out


def test_a_scan_padded_with_the_int16_minimum_is_analysed_as_its_zero_padded_self(tmp_path: Path, capsys) -> None:
    data, affine = _case()
    path = tmp_path / "padded_T2S.nii.gz"
    nib.save(nib.Nifti1Image(_padded(data, -32768).astype(np.int16), affine), str(path))
    out = tmp_path / "out"
    args = ["predict", str(path), "-o", str(out), "--model", str(BUNDLE), "--device", "cpu", "--progress", "none"]
    assert main(args) == 0, capsys.readouterr().err
    doc = json.loads((out / "padded_T2S_cmb.json").read_text())
    kept = np.array([c["center_ras"] for c in doc["candidates"] if c["kept"]])
    assert len(kept) == len(TRUTH)
    assert max(np.linalg.norm(kept - t, axis=1).min() for t in TRUTH) < 1.5  # every planted ball, where it lies
    assert any("-32768" in n and "air" in n for n in doc["notes"]), doc["notes"]
    vol = load_volume(path)
    assert float(vol.data.min()) == 0.0 and np.array_equal(vol.data, data)  # the padding reads as 0, nothing else


def test_a_multi_echo_file_padded_with_minus_1024_keeps_dark_air(tmp_path: Path) -> None:
    data, affine = _case()
    echoes = np.stack([_padded(data * f, -1024) for f in (1.0, 0.7, 0.5)], axis=-1).astype(np.int16)
    path = tmp_path / "me_T2S.nii.gz"
    nib.save(nib.Nifti1Image(echoes, affine), str(path))
    vol = load_volume(path)
    assert float(vol.data[data == 0].max()) == 0.0  # air, not sqrt(3) * 1024
    assert np.allclose(vol.data[data > 0], np.sqrt(1 + 0.49 + 0.25) * data[data > 0], rtol=1e-3, atol=1)


def test_a_scan_padded_brighter_than_any_tissue_gets_the_brain_mask_of_its_zero_padded_self(tmp_path: Path) -> None:
    data, affine = _case()
    path = tmp_path / "bright_T2S.nii.gz"
    nib.save(nib.Nifti1Image(_padded(data, 4095).astype(np.uint16), affine), str(path))
    vol = load_volume(path)
    assert np.array_equal(vol.data, data) and any("4095" in n and "air" in n for n in vol.notes)
    mask, _note = resolve_brain_mask(vol)
    expected, _ = resolve_brain_mask(Volume(data, affine))
    assert np.array_equal(mask, expected)


def test_a_background_of_nan_is_air_and_a_nan_inside_is_still_refused(tmp_path: Path, capsys) -> None:
    data, affine = _case()
    path = tmp_path / "spm_T2S.nii.gz"
    nib.save(nib.Nifti1Image(_padded(data, np.nan), affine), str(path))  # SPM's implicit mask
    vol = load_volume(path)
    assert np.array_equal(vol.data, data) and any("NaN" in n and "air" in n for n in vol.notes)
    inside = data.copy()
    inside[24, 24, 16] = np.nan
    nib.save(nib.Nifti1Image(inside, affine), str(path))
    with pytest.raises(InputError, match="1 NaN/Inf voxel"):
        load_volume(path)


@pytest.mark.parametrize("offset", [-40.0, 300.0])
def test_an_offset_of_the_whole_image_is_no_padding(tmp_path: Path, offset: float) -> None:
    data, affine = _case()
    path = tmp_path / "offset_T2S.nii.gz"
    nib.save(nib.Nifti1Image(data + np.float32(offset), affine), str(path))
    vol = load_volume(path)
    assert np.array_equal(vol.data, data + np.float32(offset)) and not any("air" in n for n in vol.notes)
    mask, note = resolve_brain_mask(vol)
    assert np.array_equal(mask, resolve_brain_mask(Volume(data, affine))[0]) and f"filled with {offset:g}" in note


@pytest.mark.parametrize("fill", [-4096.0, 0.0])
def test_a_phase_image_is_still_refused_whatever_fills_its_air(tmp_path: Path, fill: float) -> None:
    data, affine = _case()
    rng = np.random.default_rng(3)
    phase = np.where(data > 0, rng.uniform(-4096, 4096, data.shape), fill).astype(np.int16)
    path = tmp_path / "phase.nii.gz"
    nib.save(nib.Nifti1Image(phase, affine), str(path))
    with pytest.raises(InputError, match="phase image"):
        load_volume(path)


def _hole(data: np.ndarray, fill: float) -> np.ndarray:
    """``data`` padded with ``fill`` and holding a 3×3×3 block of ``fill`` in the brain, away from the microbleeds."""
    out = _padded(data, fill)
    out[30:33, 11:14, 17:20] = fill  # parenchyma, >= 12 mm from every planted microbleed
    assert np.all(data[29:34, 10:15, 16:21] > 0)  # enclosed by tissue
    return out


@pytest.mark.parametrize(("fill", "dtype"), [(np.nan, np.float32), (-32768.0, np.int16)])
def test_padding_inside_the_brain_is_refused_not_read_as_a_black_microbleed(
    tmp_path: Path, fill: float, dtype: type, capsys
) -> None:
    # An SPM image with NaN voxels inside its implicit mask, or a dropout stored as the padding value: read as 0
    # (air) the hole became a black dot that the model kept as a microbleed (probability 0.9996) without a word.
    data, affine = _case()
    path = tmp_path / "hole_T2S.nii.gz"
    nib.save(nib.Nifti1Image(_hole(data, fill).astype(dtype), affine), str(path))
    out = tmp_path / "out"
    args = ["predict", str(path), "-o", str(out), "--model", str(BUNDLE), "--device", "cpu", "--progress", "none"]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("plkd: error:")]
    assert len(err) == 1 and "27 voxel(s)" in err[0] and "inside the scan" in err[0] and "(31, 12, 18)" in err[0]
    assert not list(out.glob("hole_T2S_cmb*"))
    # Every echo of a 4-D file counts: a hole in one echo darkened the root-sum-of-squares as well.
    echoes = np.stack([_padded(data, fill), _hole(data, fill)], axis=3).astype(dtype)
    nib.save(nib.Nifti1Image(echoes, affine), str(path))
    with pytest.raises(InputError, match="inside the scan"):
        load_volume(path)
    # Padding reaching the border through padding stays air (a bay of the background at the brain's edge).
    bay = _padded(data, fill)
    bay[20:23, 0:14, 14:17] = fill
    nib.save(nib.Nifti1Image(bay.astype(dtype), affine), str(path))
    assert load_volume(path).data[21, 12, 15] == 0
