"""``plkd predict --save-model-grid``: the model-grid label map numbers each microbleed as the input-grid map and the
JSON do. It held the stitching's numbers, so after two microbleeds merged on a 4 mm input grid its label 3 was the
merged duplicate and the JSON's microbleed 3 was its label 4.

Screening and the segmenter are replaced by fixed masks (the shipped networks' outlines are not the point), so the
test runs in a second on a tiny 1x1x4 mm volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plkd.bundle import load_bundle
from plkd.inference import Predictor
from plkd.inference.candidates import Candidate
from plkd.inference.outputs import output_paths, renumber_candidates, write_prediction
from plkd.inference.segmentation import PatchResult
from plkd.volumes import Volume, load_label

SHIPPED_BUNDLE = Path(__file__).resolve().parents[1] / "PLKDTraining" / "plkd" / "bundled" / "cmb-t2s"
SHAPE = (40, 40, 12)
AFFINE = np.diag([1.0, 1.0, 4.0, 1.0])
#: RAS centre (mm) → probability. The second and third are apart on the 1 mm model grid (a 1 mm gap at z 19) but
#: fall into touching 4 mm slices (z 16 and 20): one microbleed on the input grid.
CANDIDATES = {(10.0, 10.0, 20.0): 0.95, (25.0, 25.0, 17.0): 0.9, (25.0, 25.0, 21.0): 0.85, (30.0, 12.0, 28.0): 0.8}


def test_model_grid_labels_are_the_json_ids(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    image = 1000.0 * (1.0 + 0.03 * np.random.default_rng(0).standard_normal(SHAPE))
    volume = Volume(image.astype(np.float32), AFFINE, path=tmp_path / "scan.nii.gz")
    mask = Volume(np.ones(SHAPE, dtype=np.uint8), AFFINE)
    predictor = Predictor(
        load_bundle(SHIPPED_BUNDLE), device="cpu", thresholds={"segmentation": 0.5}, locate=False, progress="none"
    )

    def screen(prep, *_args):  # noqa: ANN001, ANN202
        return [Candidate(prep.ras_to_voxel(np.array(ras))[0], 0.9) for ras in CANDIDATES], False

    def segment(name, prep, positions, prob_model, thr):  # noqa: ANN001, ANN202
        grid = np.indices(prep.data.shape).reshape(3, -1).T
        return [
            PatchResult(p, grid[np.linalg.norm((grid - pos) * prep.spacing, axis=1) <= 1.2], 0.9)
            for pos, p in zip(positions, CANDIDATES.values(), strict=True)
        ]

    monkeypatch.setattr(predictor, "_screen", screen)
    monkeypatch.setattr(predictor, "_segment", segment)
    result = predictor.predict(volume, mask, model_grid=True)
    records = renumber_candidates(result.candidates)  # as the JSON holds them
    assert [c["reason"] for c in records] == ["kept", "kept", "duplicate", "kept"]  # merged on the 4 mm grid

    paths = output_paths(volume.path, tmp_path / "out")
    paths.label.parent.mkdir()
    write_prediction(result, volume, paths, "test", save_model_grid=True)
    model = load_label(paths.model_grid)
    kept = [c for c in records if c["kept"]]
    assert sorted(np.unique(model.data[model.data > 0]).astype(int).tolist()) == [c["id"] for c in kept]
    inv = np.linalg.inv(model.affine)
    for c in kept:  # each microbleed's model-grid value is its JSON id (and its label on the input grid)
        ras = np.asarray(
            next(r for r in CANDIDATES if np.hypot(r[0] - c["center_ras"][0], r[1] - c["center_ras"][1]) < 1)
        )
        at = np.round(inv[:3, :3] @ ras + inv[:3, 3]).astype(int)
        assert int(model.data[tuple(at)]) == c["id"] == c["label"]
