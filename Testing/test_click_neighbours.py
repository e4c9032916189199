"""The dark spot at a click (and at a whole-scan candidate) is its own: beside a larger, darker microbleed its
intensity region ran across the tissue between them into the other one. A reader's click on a missed 3 mm
microbleed 7 mm from a found 8 mm one was answered "already found" (the 8 mm one) and added nothing.

A textured 1 mm block with the two microbleeds (Gaussian profiles; labelled extents 1.5 mm apart).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plkd.bundle import load_bundle
from plkd.inference import Predictor
from plkd.inference.click import ExistingPrediction, dark_blob
from plkd.inference.preprocess import prepare
from plkd.volumes import Volume

SHIPPED_BUNDLE = Path(__file__).resolve().parents[1] / "PLKDTraining" / "plkd" / "bundled" / "cmb-t2s"
SHAPE = (48, 48, 40)
LARGE, SMALL = np.array([22, 24, 20]), np.array([29, 24, 20])
GRID = np.indices(SHAPE).reshape(3, -1).T


def _distance(centre: np.ndarray) -> np.ndarray:
    return np.linalg.norm(GRID - centre, axis=1).reshape(SHAPE)


def _image() -> np.ndarray:
    rng = np.random.default_rng(5)
    image = 1000.0 * (1.0 + 0.03 * rng.standard_normal(SHAPE))
    for centre, diameter, drop in ((LARGE, 8.0, 0.65), (SMALL, 3.0, 0.35)):
        image *= 1.0 - drop * np.exp(-((_distance(centre) / (diameter / 2)) ** 2) * np.log(2.0))
    return image.astype(np.float32)


@pytest.mark.parametrize("clicked", ["small", "large"])
def test_the_region_of_a_spot_stops_short_of_its_neighbour(clicked: str) -> None:
    prep = prepare(Volume(_image(), np.eye(4)), np.ones(SHAPE, dtype=bool), np.ones(3))
    assert np.allclose(prep.affine, np.eye(4))  # model grid = this grid
    mine, other, radius = (SMALL, LARGE, 1.5) if clicked == "small" else (LARGE, SMALL, 4.0)
    blob = dark_blob(prep.data, mine.astype(np.float64), prep.spacing)
    assert blob is not None
    region = blob.voxels
    into_other = int((np.linalg.norm(region - other, axis=1) <= (4.0 if clicked == "small" else 1.5)).sum())
    assert into_other == 0, f"{into_other} voxels of the other microbleed in the {clicked} one's region"
    own = int((np.linalg.norm(region - mine, axis=1) <= radius).sum())
    assert own >= 0.6 * int((_distance(mine) <= radius).sum())


def test_a_click_on_a_missed_microbleed_beside_a_found_one_adds_it() -> None:
    volume = Volume(_image(), np.eye(4))
    found = (_distance(LARGE) <= 4.0).astype(np.int32) * 3  # the earlier prediction's microbleed 3
    earlier = ExistingPrediction(labels=found, candidates=[{"id": 3, "label": 3, "kept": True}], source="e.json")
    predictor = Predictor(load_bundle(SHIPPED_BUNDLE), device="cpu", locate=False, progress="none")
    mask = Volume(np.ones(SHAPE, dtype=np.uint8), np.eye(4))
    result = predictor.segment_at(volume, SMALL.astype(np.float64), mask, existing=earlier)
    rec = result.candidates[0]
    assert "existing_label" not in rec, rec["reason"]  # it was "already found (candidate 3)"
    assert rec["segmented"] and result.label_map[tuple(SMALL)] == 1
    assert not np.any((result.label_map > 0) & (found > 0))  # none of the found one's voxels
    assert np.linalg.norm(np.asarray(rec["center_ras"]) - SMALL) <= 1.5


def test_a_click_whose_nearest_probability_lies_too_far_says_nothing_was_segmented() -> None:
    """The model's probability peaking in a corner of the box searched (beyond 4 mm) gave no voxel, while the note
    said half the peak had been used to outline the microbleed."""
    from plkd.inference.segmentation import PatchResult

    prep = prepare(Volume(_image(), np.eye(4)), np.ones(SHAPE, dtype=bool), np.ones(3))
    prob = np.zeros(SHAPE, dtype=np.float32)
    prob[tuple(SMALL + 4)] = 0.4  # 6.9 mm from the click, inside the 4 mm box's corner
    predictor = Predictor(load_bundle(SHIPPED_BUNDLE), device="cpu", locate=False, progress="none")
    notes: list[str] = []
    empty = PatchResult(0.1, np.zeros((0, 3), dtype=int), 0.4)
    result = predictor._relative_component(prob, SMALL.astype(np.float64), prep, empty, notes)
    assert result.voxels.shape[0] == 0
    assert notes and notes[-1].startswith("nothing to segment at the clicked point"), notes
