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


@pytest.mark.parametrize("gain", [1e-9, 1e-20, 1e-30])
def test_an_image_in_tiny_units_normalises_as_in_scanner_units(rng, gain):
    # A magnitude image straight from a reconstruction (values about 1e-9) or a float image scaled to any small unit:
    # its standard deviation fell below the fixed 1e-6 that guards a constant brain (or to 0 in float32 squares), so
    # it was not divided at all and every voxel became about 0: "0 microbleeds" without a word.
    data = rng.normal(500.0, 50.0, (20, 20, 20)).astype(np.float32)
    data[10, 10, 10] = 50.0  # a microbleed core
    mask = np.zeros(data.shape, bool)
    mask[2:18, 2:18, 2:18] = True
    expected = normalise_intensity(data, mask)
    np.testing.assert_allclose(normalise_intensity(data * np.float32(gain), mask), expected, atol=1e-4)


def _brain_with_dark_spots(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tissue at 500 ± 20 with 2 % of its voxels dark (veins, iron) at 150-300 and one microbleed core at 20."""
    data = rng.normal(500.0, 20.0, (30, 30, 30)).astype(np.float32)
    dark = rng.random(data.shape) < 0.02
    data[dark] = rng.uniform(150.0, 300.0, int(dark.sum()))
    data[15, 15, 15] = 20.0
    return data, np.ones(data.shape, bool)


def test_low_clip_percentile_sets_how_dark_a_microbleed_core_looks(rng):
    data, mask = _brain_with_dark_spots(rng)
    clipped = normalise_intensity(data, mask, (0.5, 99.5))
    unclipped = normalise_intensity(data, mask, (0.0, 100.0))
    # At 0.5 % the core is one of the many clipped dark voxels; without the low clip it is the darkest.
    assert clipped[15, 15, 15] == pytest.approx(float(clipped.min()))
    assert np.count_nonzero(clipped <= clipped.min() + 1e-6) > 100
    assert unclipped[15, 15, 15] < clipped[15, 15, 15] - 3.0
    assert np.count_nonzero(unclipped <= unclipped.min() + 1e-6) == 1
    default = normalise_intensity(data, mask)  # 0-99.5: the dark end is not clipped
    assert np.count_nonzero(default <= default.min() + 1e-6) == 1
    assert default[15, 15, 15] < clipped[15, 15, 15] - 3.0


@pytest.mark.parametrize("bad", [(5.0, 5.0), (-1.0, 99.0), (1.0, 101.0)])
def test_clip_percentiles_must_increase_within_0_100(bad):
    with pytest.raises(ValueError, match="clip percentiles"):
        normalise_intensity(np.ones((4, 4, 4), np.float32), None, bad)
