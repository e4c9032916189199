"""A large microbleed's intensity outline must not swallow a smaller microbleed beside it: the network kept the two
apart, and ``plkd predict`` must keep two microbleeds (two labels, two kept candidates), whatever outline it draws.

The image is a 1 mm block with an 8 mm microbleed and a fainter 3 mm one 8 mm away (2.5 mm of tissue between their
labelled extents, so two microbleeds for ``plkd evaluate``). Screening and the segmenter are replaced by what the
shipped networks give there (a rim beside the large one's centre, the small one whole), so the test checks the
outline and stitching alone, in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plkd.bundle import load_bundle
from plkd.inference import Predictor
from plkd.inference.candidates import Candidate
from plkd.inference.predictor import labels_to_input, stitch_outlines
from plkd.inference.preprocess import prepare
from plkd.inference.segmentation import PatchResult
from plkd.metrics.components import find_components
from plkd.volumes import Volume

SHIPPED_BUNDLE = Path(__file__).resolve().parents[1] / "PLKDTraining" / "plkd" / "bundled" / "cmb-t2s"

SHAPE = (48, 48, 40)
LARGE = np.array([24, 24, 20])
GRID = np.indices(SHAPE).reshape(3, -1).T


def _dip(centre: np.ndarray, diameter_mm: float, drop: float) -> np.ndarray:
    """A Gaussian-profile dark spot (the drop halves at ``diameter_mm``) as a signal factor."""
    r = np.linalg.norm(GRID - centre, axis=1).reshape(SHAPE) / (diameter_mm / 2)
    return 1.0 - drop * np.exp(-(r**2) * np.log(2.0))


def _ball(centre: np.ndarray, radius: float) -> np.ndarray:
    return np.argwhere(np.linalg.norm(GRID - centre, axis=1).reshape(SHAPE) <= radius)


@pytest.mark.parametrize("distance", [7, 8])
def test_a_small_microbleed_beside_a_large_one_stays_its_own(monkeypatch: pytest.MonkeyPatch, distance: int) -> None:
    small = LARGE + np.array([distance, 0, 0])
    rng = np.random.default_rng(3)
    image = 1000.0 * (1.0 + 0.03 * rng.standard_normal(SHAPE)) * _dip(LARGE, 8.0, 0.75) * _dip(small, 3.0, 0.4)
    truth = np.zeros(SHAPE, dtype=bool)
    truth[tuple(_ball(LARGE, 4.0).T)] = True
    truth[tuple(_ball(small, 1.5).T)] = True
    assert find_components(truth).n == 2  # two microbleeds for plkd evaluate

    predictor = Predictor(
        load_bundle(SHIPPED_BUNDLE), device="cpu", thresholds={"segmentation": 0.5}, locate=False, progress="none"
    )
    volume = Volume(image.astype(np.float32), np.eye(4))
    mask = Volume(np.ones(SHAPE, dtype=np.uint8), np.eye(4))
    large_voxels = _ball(LARGE, 4.0)
    rim = large_voxels[large_voxels[:, 0] <= LARGE[0] - 1]  # beside the centre, away from the small one
    masks = {tuple(LARGE): PatchResult(0.8, rim, 0.9), tuple(small): PatchResult(0.9, _ball(small, 1.5), 0.9)}

    def screen(prep, *_args):  # noqa: ANN001, ANN202
        return [Candidate(np.asarray(p, dtype=np.float64), 0.9) for p in masks], False

    def segment(name, prep, positions, prob_model, thr):  # noqa: ANN001, ANN202
        assert np.allclose(prep.affine, np.eye(4)) and prep.data.shape == SHAPE  # model grid = input grid
        return [masks[tuple(int(v) for v in np.round(p))] for p in positions]

    monkeypatch.setattr(predictor, "_screen", screen)
    monkeypatch.setattr(predictor, "_segment", segment)
    result = predictor.predict(volume, mask)

    kept = [c for c in result.candidates if c["kept"]]
    assert len(kept) == 2, [(c["id"], c["reason"], c.get("merged_into")) for c in result.candidates]
    assert int(result.label_map.max()) == 2 and find_components(result.label_map > 0).n == 2
    at_small = result.label_map[tuple(small)]
    on_large = result.label_map[tuple(large_voxels.T)]
    at_large = np.bincount(on_large[on_large > 0], minlength=1).argmax()  # the label that outlines it
    assert at_small > 0 and at_large > 0 and at_small != at_large
    for c in kept:  # the JSON's counts are the label map's
        assert c["voxels"] == int((result.label_map == c["label"]).sum())
        assert c["segmentation"] in ("network", "intensity")


def _box(x0: int, x1: int) -> np.ndarray:
    """Voxels of a block x0..x1 (inclusive) across the middle of the image."""
    return np.argwhere(np.ones((x1 - x0 + 1, 5, 5), dtype=bool)) + np.array([x0, 22, 18])


def test_a_duplicates_outline_never_bridges_two_microbleeds() -> None:
    """A candidate merged into a large microbleed adds its outline to it: an intensity region reaching a neighbour
    joined the two microbleeds in the label map (one component for plkd evaluate and on the input grid, where the
    weaker was then merged away) though every candidate kept its fate."""
    image = 1000.0 * (1.0 + 0.03 * np.random.default_rng(0).standard_normal(SHAPE))
    prep = prepare(Volume(image.astype(np.float32), np.eye(4)), np.ones(SHAPE, dtype=bool), np.ones(3))
    volume = Volume(image.astype(np.float32), np.eye(4))
    network = [
        PatchResult(0.9, _box(16, 19), 0.9),
        PatchResult(0.8, _box(30, 32), 0.9),
        PatchResult(0.7, _box(17, 18), 0.9),
    ]
    outlined = [PatchResult(0.9, _box(16, 24), 0.9), network[1], PatchResult(0.7, _box(20, 29), 0.9)]
    positions = [r.voxels.mean(axis=0) for r in network]
    labels, fate, results, methods = stitch_outlines(
        volume, prep, positions, network, outlined, ["intensity", "network", "intensity"], 0.5
    )
    assert [f.label for f in fate] == [1, 2, 0] and fate[2].merged_into == 0
    assert find_components(labels > 0).n == 2  # the two microbleeds stay apart
    assert methods[2] == "network" and results[2] is network[2]


def test_an_outline_never_joins_two_microbleeds_on_a_thick_input_grid() -> None:
    """Apart on the 1 mm model grid, an intensity outline 4 mm tall and a small microbleed 4 mm above it fall into
    touching 4 mm slices of the input, where touching microbleeds are merged into one: the outline must not do that
    (with the network's rim the two stay two)."""
    shape, affine = (40, 40, 12), np.diag([1.0, 1.0, 4.0, 1.0])
    image = 1000.0 * (1.0 + 0.03 * np.random.default_rng(0).standard_normal(shape))
    volume = Volume(image.astype(np.float32), affine)
    prep = prepare(volume, np.ones(shape, dtype=bool), np.ones(3))
    grid = np.indices(prep.data.shape).reshape(3, -1).T
    ras = prep.voxel_to_ras(grid.astype(np.float64))

    def block(z0: float, z1: float) -> np.ndarray:
        inside = np.all((ras[:, :2] >= 23.5) & (ras[:, :2] <= 26.5), axis=1) & (ras[:, 2] >= z0) & (ras[:, 2] <= z1)
        return grid[inside]

    rim, region, small = block(12.9, 13.6), block(12.9, 18.6), block(20.9, 21.6)
    network = [PatchResult(0.8, rim, 0.9), PatchResult(0.9, small, 0.9)]
    outlined = [PatchResult(0.8, region, 0.9), network[1]]
    positions = [r.voxels.mean(axis=0) for r in network]
    labels, fate, results, methods = stitch_outlines(
        volume, prep, positions, network, outlined, ["intensity", "network"], 0.5
    )
    assert [f.label for f in fate] == [2, 1]
    on_input, _ = labels_to_input(labels, prep, volume, [])
    assert find_components(on_input > 0).n == 2  # two microbleeds on the input grid, as with the network's masks
    assert methods == ["network", "network"]
