"""World-space resampling and intensity normalisation shared by training and inference."""

from __future__ import annotations

import numpy as np
import pytest

from plkd.normalise import normalise_intensity
from plkd.resample import grid_with_spacing, resample_array, resample_to_spacing
from plkd.volumes import Volume


def _world_centre(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    idx = np.argwhere(data > 0.5 * data.max()).mean(axis=0)
    return (affine @ np.append(idx, 1.0))[:3]


def test_grid_with_spacing_keeps_field_of_view():
    aff = np.diag([-0.5, 0.5, 3.0, 1.0])
    aff[:3, 3] = [20.0, -10.0, 5.0]
    new_aff, new_shape = grid_with_spacing(aff, (40, 40, 10), np.array([1.0, 1.0, 1.0]))
    assert new_shape == (20, 20, 30)
    # The outer corner of voxel 0 is unchanged: origin - half a voxel along each axis.
    np.testing.assert_allclose(new_aff[:3, 3] - np.diag(new_aff)[:3] / 2, aff[:3, 3] - np.diag(aff)[:3] / 2)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_resampling_keeps_a_blob_in_place(order):
    aff = np.diag([0.5, 0.5, 3.0, 1.0])
    aff[:3, 3] = [-7.0, 3.0, 11.0]
    data = np.zeros((40, 40, 12), np.float32)
    data[18:23, 14:19, 5:7] = 1.0
    vol = Volume(data, aff)
    iso = resample_to_spacing(vol, 1.0, order=order)
    assert iso.spacing == pytest.approx([1.0, 1.0, 1.0])
    assert np.linalg.norm(_world_centre(iso.data, iso.affine) - _world_centre(data, aff)) < 0.75


def test_nearest_neighbour_keeps_integer_labels():
    labels = np.zeros((10, 10, 10), np.int16)
    labels[2:4, 2:4, 2:4] = 1
    labels[6:8, 6:8, 6:8] = 2
    out = resample_array(labels, np.eye(4), np.diag([0.5, 0.5, 0.5, 1]), (20, 20, 20), order=0)
    assert set(np.unique(out)) == {0, 1, 2}
    assert out.dtype == labels.dtype


def test_normalisation_is_robust_and_masked(rng):
    data = rng.normal(500.0, 50.0, (20, 20, 20)).astype(np.float32)
    data[0, 0, 0] = 1e6  # a hot voxel must not dominate the scale
    mask = np.zeros(data.shape, bool)
    mask[2:18, 2:18, 2:18] = True
    out = normalise_intensity(data, mask)
    assert out.dtype == np.float32
    assert abs(float(out[mask].mean())) < 1e-3
    assert float(out[mask].std()) == pytest.approx(1.0, abs=1e-3)
    assert not out[~mask].any()
    # Gain does not matter: the same scan times 3 normalises to the same values.
    np.testing.assert_allclose(normalise_intensity(3 * data, mask), out, atol=1e-4)
