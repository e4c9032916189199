"""A kept candidate whose network mask is a rim beside a large dark microbleed gets the microbleed's intensity
region as its outline (its volume and Dice were a third of the truth on ../shared/cases/large-cmb); a mask that
holds the spot, and a candidate below the threshold, are left as the network made them."""

from __future__ import annotations

import numpy as np

from plkd.inference.predictor import outline_undersegmented
from plkd.inference.preprocess import prepare
from plkd.inference.segmentation import PatchResult
from plkd.volumes import Volume

SHAPE = (48, 48, 40)
CENTRE = np.array([24, 24, 20])
DIAMETER_MM = 7.5


def _prepared():
    """A textured 1 mm brain block with one shallow Gaussian-profile microbleed (drop halved at its diameter)."""
    rng = np.random.default_rng(3)
    grid = np.indices(SHAPE).reshape(3, -1).T
    r = np.linalg.norm(grid - CENTRE, axis=1).reshape(SHAPE) / (DIAMETER_MM / 2)
    image = 1000.0 * (1.0 + 0.03 * rng.standard_normal(SHAPE)) * (1.0 - 0.65 * np.exp(-(r**2) * np.log(2.0)))
    mask = np.ones(SHAPE, dtype=bool)
    prep = prepare(Volume(image.astype(np.float32), np.eye(4)), mask, np.ones(3))
    truth = np.argwhere(r <= 1.0)
    return prep, truth


def _model_grid(prep, voxels: np.ndarray) -> np.ndarray:
    """Input voxel indices → the prepared (model-grid) indices of the same points."""
    return np.round(prep.ras_to_voxel(voxels.astype(np.float64))).astype(int)


def test_a_rim_beside_a_large_microbleed_is_replaced_by_its_intensity_region() -> None:
    prep, truth = _prepared()
    centre = _model_grid(prep, CENTRE[None])[0]
    truth_model = _model_grid(prep, truth)
    rim = truth_model[truth_model[:, 0] >= centre[0] + 1]  # the half beside the centre, as the networks outlined
    position = centre.astype(np.float64)
    kept = PatchResult(0.9, rim, 0.9)
    (result,), (method,) = outline_undersegmented(prep, [position], [kept], threshold=0.5)
    assert method == "intensity"
    held = {tuple(v) for v in result.voxels.tolist()} & {tuple(v) for v in truth_model.tolist()}
    assert len(held) >= 0.6 * len(truth_model), (len(held), len(truth_model))
    assert np.linalg.norm(result.voxels.mean(axis=0) - centre) <= 1.0  # centred, not 1.8 mm off as the rim
    assert result.probability == 0.9  # the outline never changes whether it is kept

    below = PatchResult(0.2, rim, 0.3)
    (result,), (method,) = outline_undersegmented(prep, [position], [below], threshold=0.5)
    assert method == "network" and result is below


def test_a_mask_that_holds_the_microbleed_is_kept_as_the_network_made_it() -> None:
    prep, truth = _prepared()
    centre = _model_grid(prep, CENTRE[None])[0]
    whole = _model_grid(prep, truth)
    full = PatchResult(0.9, whole, 0.95)
    (result,), (method,) = outline_undersegmented(prep, [centre.astype(np.float64)], [full], threshold=0.5)
    assert method == "network" and result is full
