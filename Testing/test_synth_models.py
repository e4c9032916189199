"""plkd.synth building blocks: size/count distributions, signal models, grids, fields, deformation."""

from __future__ import annotations

import numpy as np
import pytest

from plkd.errors import PLKDError
from plkd.synth.fields import SmoothField
from plkd.synth.grid import SynthGrid
from plkd.synth.lesions import (
    LABEL_DROP,
    Microbleed,
    _dipole_factor,
    _visible_diameter,
    draw_count,
    draw_diameter,
    render_microbleed,
)


def test_diameter_distribution_matches_published_series():
    rng = np.random.default_rng(0)
    d = np.array([draw_diameter(rng) for _ in range(20000)])
    p5, p50, p95 = np.percentile(d, [5, 50, 95])
    assert abs(p50 - 2.7) < 0.15
    assert abs(p5 - 1.4) < 0.25 and abs(p95 - 4.8) < 0.4
    assert d.max() <= 10.0


def test_count_distribution_is_heavy_tailed():
    rng = np.random.default_rng(0)
    c = np.array([draw_count(rng) for _ in range(4000)])
    assert 0.2 < np.mean(c == 0) < 0.3
    with_cmb = c[c > 0]
    assert np.mean(with_cmb < 4) > 0.5  # most affected subjects have a few
    assert c.max() >= 30 and c.mean() > np.median(c)


def test_dipole_blooming_grows_with_field_and_echo_time():
    grid = SynthGrid.covering(np.zeros(3), np.full(3, 24.0), np.full(3, 0.5), fine=0.5)
    centre = np.full(3, 12.1)
    vvol = 0.125
    sizes = [_visible_diameter(_dipole_factor(grid, centre, 0.5, phase, 8.0)[1], vvol) for phase in (1.0, 4.0, 16.0)]
    assert sizes[0] < sizes[1] < sizes[2]
    assert sizes[0] > 2 * 0.5  # blooming: the dark blob is larger than the deposit
    # Far from the deposit the signal is untouched.
    box, fac = _dipole_factor(grid, centre, 0.5, 4.0, 8.0)
    assert fac.min() < 0.1 and fac[0, 0, 0] > 0.99


@pytest.mark.parametrize("model", ["gaussian", "dipole"])
def test_rendered_blob_has_the_drawn_size(model):
    grid = SynthGrid.covering(np.zeros(3), np.full(3, 30.0), np.full(3, 0.5), fine=0.5)
    rng = np.random.default_rng(3)
    for diameter in (2.0, 3.0, 5.0):
        mb = Microbleed(centre=np.array([15.2, 14.9, 15.1]), diameter=diameter, region="cortex")
        _, fac = render_microbleed(mb, grid, model, rng, field_t=3.0, te_ms=20.0)
        got = _visible_diameter(fac, 0.125)
        assert abs(got - diameter) / diameter < 0.2, (model, diameter, got)
        assert mb.params["model"] == model
        assert fac.max() <= 1.0 + 1e-6 and fac.min() <= 1.0 - LABEL_DROP


def test_grid_average_and_affine():
    grid = SynthGrid.covering(np.array([-10.0, -20.0, -30.0]), np.array([10.0, 0.0, -6.0]), np.array([1.0, 1.0, 3.0]))
    assert grid.factor == (1, 1, 3) and grid.shape == (20, 20, 8) and grid.fine_shape == (20, 20, 24)
    axes = grid.fine_axes()
    zfine = np.broadcast_to(axes[2][None, None, :], grid.fine_shape).astype(np.float32)
    zout = grid.average(zfine)
    aff = grid.affine()
    expected = aff[2, 2] * np.arange(8) + aff[2, 3]
    assert np.allclose(zout[0, 0], expected, atol=1e-4)  # output voxel centre = mean of its slab
    assert np.array_equal(grid.output_index(np.array([[-9.9, -0.1, -29.0]]))[0], [0, 19, 0])


def test_smooth_field_rms_and_point_evaluation():
    rng = np.random.default_rng(1)
    lo, hi = np.zeros(3), np.array([100.0, 120.0, 90.0])
    f = SmoothField.random(rng, lo, hi, order=3, rms=2.0)
    axes = [np.linspace(lo[a], hi[a], 41) for a in range(3)]
    grid = f.on_grid(*axes)
    assert abs(float(np.sqrt(np.mean(grid.astype(np.float64) ** 2))) - 2.0) < 0.4
    pts = np.array([[axes[0][3], axes[1][7], axes[2][11]], [axes[0][40], axes[1][0], axes[2][20]]])
    assert np.allclose(f.at(pts), [grid[3, 7, 11], grid[40, 0, 20]], atol=1e-4)


def test_deformation_inverse_round_trip():
    pytest.importorskip("nilearn")
    from plkd.synth.anatomy import Deformation, load_template

    template = load_template()
    d = Deformation.random(np.random.default_rng(2), template)
    pts = np.array([[0.0, 0.0, 0.0], [30.0, -40.0, 20.0], [-50.0, 10.0, -30.0]])
    back = d.to_template(d.to_subject(pts))
    assert np.allclose(back, pts, atol=0.01)
    assert np.all(np.linalg.norm(d.to_subject(pts) - pts, axis=1) < 20.0)  # a plausible head, not a scramble


def test_missing_nilearn_is_a_clear_error(monkeypatch):
    import importlib.util

    from plkd.synth import anatomy

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nilearn" else real(name, *a))
    with pytest.raises(PLKDError, match=r"pip install plkd\[synth\]"):
        anatomy.nilearn_data_dir()
