"""Volume I/O: exact geometry, multi-echo handling, one-line errors, atomic writes."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from plkd.atomic import atomic_path, write_json_atomic
from plkd.errors import InputError
from plkd.volumes import anisotropy_ratio, load_label, load_volume, on_grid_of, save_volume, slice_axis


def _oblique_lps_affine() -> np.ndarray:
    """An oblique, LPS-stored (negative diagonal), anisotropic voxel-to-RAS affine."""
    theta = np.deg2rad(17.0)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-0.45, -0.45, 3.0])
    aff[:3, 3] = [101.3, 87.2, -40.5]
    return aff


def _write(path, data, affine=None) -> str:
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return str(path)


def test_round_trip_keeps_oblique_lps_affine_exactly(tmp_path, rng):
    aff = _oblique_lps_affine()
    data = rng.normal(100, 10, (12, 10, 6)).astype(np.float32)
    src = _write(tmp_path / "in.nii.gz", data, aff)
    vol = load_volume(src)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-6)
    np.testing.assert_allclose(vol.spacing, [0.45, 0.45, 3.0], atol=1e-6)
    assert slice_axis(vol.affine) == 2
    assert anisotropy_ratio(vol.affine) == pytest.approx(3.0 / 0.45, rel=1e-5)

    out = save_volume(tmp_path / "out.nii.gz", vol.data, vol.affine, header=vol.header)
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, aff, atol=1e-6)
    np.testing.assert_array_equal(back.get_fdata(dtype=np.float32), data)
    src_hdr = nib.load(src).header
    for key in ("sform_code", "qform_code", "pixdim", "srow_x", "srow_y", "srow_z", "quatern_b", "qoffset_x"):
        np.testing.assert_array_equal(back.header[key], src_hdr[key], err_msg=key)


def test_label_maps_are_written_as_integers(tmp_path):
    labels = np.zeros((5, 5, 5), dtype=np.int64)
    labels[1, 1, 1] = 3
    out = save_volume(tmp_path / "lab.nii.gz", labels, np.eye(4))
    img = nib.load(str(out))
    assert np.issubdtype(img.get_data_dtype(), np.integer)
    assert int(np.asarray(img.dataobj)[1, 1, 1]) == 3


def test_multi_echo_combined_by_rss_and_says_so(tmp_path, rng):
    echoes = rng.uniform(1, 2, (6, 6, 4, 3)).astype(np.float32)
    src = _write(tmp_path / "gre.nii", echoes)
    vol = load_volume(src)
    np.testing.assert_allclose(vol.data, np.sqrt((echoes.astype(np.float64) ** 2).sum(axis=3)), rtol=1e-6)
    assert any("root-sum-of-squares" in note for note in vol.notes)

    second = load_volume(src, echo=2)  # echoes count from 1, as scanners and BIDS count them
    np.testing.assert_array_equal(second.data, echoes[..., 1])
    assert any("echo 2 of 3" in note for note in second.notes)
    np.testing.assert_array_equal(load_volume(src, echo=1).data, echoes[..., 0])
    with pytest.raises(InputError, match="3 echoes"):
        load_volume(src, echo=4)
    with pytest.raises(InputError, match="numbered from 1"):
        load_volume(src, echo=0)


def test_four_d_images_that_are_not_echoes_are_said(tmp_path, rng, caplog):
    tissue = rng.uniform(50, 100, (8, 8, 6)).astype(np.float32)
    te_ms = np.array([5.0, 15.0, 25.0, 35.0])
    echoes = np.stack([tissue * np.exp(-t / 40.0) for t in te_ms], axis=-1)  # T2* decay
    phase = rng.uniform(0, 4095, tissue.shape).astype(np.float32)  # a Siemens-style phase volume
    series = np.stack([tissue * rng.uniform(0.99, 1.01) for _ in range(4)], axis=-1)  # flat over time
    cases = {
        "echoes.nii": (echoes, False),
        "mag_phase.nii": (np.stack([tissue, phase], axis=-1), True),
        "series.nii": (series, True),
        "long.nii": (np.repeat(echoes[..., :1], 20, axis=-1) * np.linspace(1, 0.5, 20), True),
    }
    for name, (data, doubted) in cases.items():
        caplog.clear()
        with caplog.at_level("WARNING", logger="plkd"):
            load_volume(_write(tmp_path / name, data))
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert bool(warned) == doubted, (name, warned)
        assert len(warned) <= 1 and all("\n" not in w for w in warned)


def test_singleton_fourth_dimension_is_dropped(tmp_path, rng):
    src = _write(tmp_path / "one.nii.gz", rng.uniform(1, 2, (4, 4, 4, 1)).astype(np.float32))
    assert load_volume(src).shape == (4, 4, 4)


@pytest.mark.parametrize(
    ("data", "affine", "message"),
    [
        (np.ones((4, 4), np.float32) * np.arange(4), None, "2-D"),
        (np.ones((3, 3, 3, 2, 2), np.float32), None, "5-D"),
        (np.where(np.eye(4)[:, :, None] > 0, np.nan, 1.0) * np.ones((4, 4, 4)), None, "NaN/Inf"),
        (np.full((4, 4, 4), 7.0, np.float32), None, "constant"),
        (np.arange(64, dtype=np.float32).reshape(4, 4, 4), np.diag([1, 1, 150.0, 1]), "absurd voxel spacing"),
        (np.arange(64, dtype=np.float32).reshape(4, 4, 4), np.diag([0.001, 1, 1, 1]), "absurd voxel spacing"),
        (np.arange(64).reshape(4, 4, 4) * (1 + 1j), None, "complex"),
        (np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]), None, r"colour \(R/G/B\) image"),
    ],
)
def test_bad_images_fail_with_one_line(tmp_path, data, affine, message):
    src = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(src))
    with pytest.raises(InputError, match=message) as info:
        load_volume(src)
    assert "\n" not in str(info.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_volume(tmp_path / "nope.nii.gz")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"this is not a nifti file")
    with pytest.raises(InputError, match="cannot read"):
        load_volume(broken)
    truncated = tmp_path / "trunc.nii"
    _write(truncated, np.arange(1000, dtype=np.float32).reshape(10, 10, 10))
    truncated.write_bytes(truncated.read_bytes()[:600])
    with pytest.raises(InputError, match="cannot read|truncated"):
        load_volume(truncated)


def test_empty_mask_is_refused_but_empty_reference_is_allowed(tmp_path):
    src = _write(tmp_path / "mask.nii.gz", np.zeros((4, 4, 4), np.uint8))
    assert not load_label(src).data.any()
    with pytest.raises(InputError, match="empty"):
        load_label(src, what="brain mask", allow_empty=False)


def test_grid_mismatch_is_reported(tmp_path, rng):
    a = load_volume(_write(tmp_path / "a.nii.gz", rng.uniform(1, 2, (4, 4, 4)).astype(np.float32)))
    b = load_label(_write(tmp_path / "b.nii.gz", np.ones((4, 4, 5), np.uint8)))
    with pytest.raises(InputError, match="does not lie on the image's grid"):
        on_grid_of(a, b)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "result.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert not target.exists()
    assert os.listdir(target.parent) == []


def test_json_is_written_atomically_with_nan_as_null(tmp_path):
    target = tmp_path / "r.json"
    write_json_atomic(target, {"f1": float("nan"), "n": np.int64(3), "v": [np.float32(0.5)]})
    assert target.read_text().replace(" ", "").replace("\n", "") == '{"f1":null,"n":3,"v":[0.5]}'
