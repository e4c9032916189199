"""The blob candidate source: large dark microbleeds the 20-voxel screening FCN cannot see."""

from __future__ import annotations

import numpy as np

from plkd.inference.blobs import blob_candidates, blob_settings
from plkd.inference.candidates import Candidate, add_blob_candidates
from plkd.normalise import normalise_intensity


def _brain(shape=(64, 64, 48), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoidal 'brain' with tissue texture and noise (1 mm voxels), and its mask."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float64)
    centre = (np.asarray(shape) - 1) / 2
    r = np.sqrt(sum(((g - c) / (0.45 * n)) ** 2 for g, c, n in zip(grid, centre, shape, strict=True)))
    mask = r <= 1.0
    img = np.where(mask, 100.0, 0.0) * (1 + 0.05 * rng.standard_normal(shape))
    return img, mask


def _ball(img: np.ndarray, centre, diameter_mm: float, drop: float, spacing=(1.0, 1.0, 1.0)) -> None:
    grid = np.indices(img.shape, dtype=np.float64)
    d = np.sqrt(sum(((g - c) * h) ** 2 for g, c, h in zip(grid, centre, spacing, strict=True)))
    img *= 1.0 - drop * np.exp(-((d / (diameter_mm / 2)) ** 4))


def test_large_dark_microbleeds_are_proposed_near_their_centres():
    img, mask = _brain()
    large = [(22.0, 30.0, 20.0), (42.0, 34.0, 28.0)]
    _ball(img, large[0], 8.0, 0.7)
    _ball(img, large[1], 6.0, 0.6)
    data = normalise_intensity(img, mask)
    pos, resp = blob_candidates(data, mask, (1.0, 1.0, 1.0))
    assert len(pos) <= blob_settings()["limit"]
    assert np.all(np.diff(resp) <= 0)  # strongest first
    for c in large:
        assert np.linalg.norm(pos - np.asarray(c), axis=1).min() <= 1.5
    # The two strongest responses are the two microbleeds, far above texture and noise.
    assert {int(np.argmin(np.linalg.norm(pos[:2] - np.asarray(c), axis=1))) for c in large} == {0, 1}


def test_blobs_on_the_brain_edge_and_outside_are_not_proposed():
    img, mask = _brain(seed=1)
    data = normalise_intensity(img, mask)
    pos, _ = blob_candidates(data, mask, (1.0, 1.0, 1.0), min_response=0.0)
    edge = ~np.pad(mask, 3)[3:-3, 3:-3, 3:-3]
    inner = np.ones_like(mask)
    for shift in np.ndindex(7, 7, 7):  # brain everywhere within ±3 voxels
        inner &= np.roll(mask, np.asarray(shift) - 3, axis=(0, 1, 2))
    assert not edge.any() or all(inner[tuple(p.astype(int))] or mask[tuple(p.astype(int))] for p in pos)
    assert all(mask[tuple(p.astype(int))] for p in pos)
    assert blob_candidates(data, mask, (1.0, 1.0, 1.0), limit=0)[0].shape == (0, 3)


def test_anisotropic_spacing_is_handled_in_mm():
    img, mask = _brain(shape=(64, 64, 16))
    # 1 × 1 × 3 mm voxels: an 8 mm ball is 8 voxels wide in-plane and under 3 slices thick.
    _ball(img, (30.0, 30.0, 8.0), 8.0, 0.7, spacing=(1.0, 1.0, 3.0))
    data = normalise_intensity(img, mask)
    pos, _ = blob_candidates(data, mask, (1.0, 1.0, 3.0))
    assert np.linalg.norm((pos - (30.0, 30.0, 8.0)) * (1, 1, 3), axis=1).min() <= 3.0


def test_a_blob_takes_over_the_fcn_candidate_on_its_rim_and_new_ones_are_added():
    fcn = [Candidate(np.array([10.0, 10.0, 10.0]), 0.9), Candidate(np.array([40.0, 40.0, 10.0]), 0.6)]
    blobs = np.array([[12.0, 11.0, 10.0], [25.0, 25.0, 10.0]])
    added = add_blob_candidates(fcn, blobs, np.array([0.1, 0.05]), np.ones(3), min_distance_mm=4.0)
    assert added == 1 and len(fcn) == 3
    assert fcn[0].source == "screening+blob" and np.allclose(fcn[0].position, blobs[0]) and fcn[0].score == 0.9
    assert fcn[1].source == "screening"
    assert fcn[2].source == "blob" and fcn[2].score == 0.05


def test_candidates_at_the_end_of_the_field_of_view_are_not_kept():
    from plkd.inference.predictor import fov_edge_veto
    from plkd.volumes import Volume

    # An LPS-stored crop of 40 × 40 × 10 voxels of 0.5 × 0.5 × 4 mm.
    affine = np.diag([-0.5, -0.5, 4.0, 1.0])
    affine[:3, 3] = (10.0, 10.0, -20.0)
    vol = Volume(np.zeros((40, 40, 10), np.float32), affine)

    def ras(i, j, k):
        return affine[:3, :3] @ np.array([i, j, k], float) + affine[:3, 3]

    assert fov_edge_veto(vol, ras(20, 20, 5)) is None  # the middle
    assert fov_edge_veto(vol, ras(20, 3, 5)) is not None  # 1.75 mm of image beyond it in-plane
    assert fov_edge_veto(vol, ras(20, 6, 5)) is None  # 3.25 mm
    assert "edge of the field of view" in fov_edge_veto(vol, ras(20, 20, 0))  # first 4 mm slice: 2 mm
    assert fov_edge_veto(vol, ras(20, 20, 1)) is None  # second slice: 6 mm
