"""Training takes each subject's brain as plkd predict does, so the networks learn the intensities they are given.

Without a brain mask file, training used to take "not 0 on the model grid" as the brain: a scan resampled to the
model grid is nowhere exactly 0 (spline ringing), and an unstripped head's skull and air are not 0 either, so the
intensities were z-scored over most of the field of view while the predictor z-scores them over the brain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plkd.data.datasets import find_subjects, load_subject
from plkd.errors import InputError
from plkd.inference.brainmask import resolve_brain_mask
from plkd.inference.preprocess import prepare
from plkd.training.config import load_config
from plkd.training.sampling import prepare_subject
from plkd.volumes import save_volume

MICROBLEED_MM = np.array([30.0, 34.0, 31.0])


def _head(spacing: tuple[float, float, float], stripped: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 72 x 72 x 60 mm head on a grid of ``spacing`` mm: brain (100 +- 5) with one dark microbleed (r 2.5 mm),
    and around it either zeros (skull-stripped) or a dark skull, bright scalp and noisy air. Returns image, label."""
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing)
    shape = tuple(int(round(e / s)) for e, s in zip((72.0, 72.0, 60.0), sp, strict=True))
    mm = np.stack(np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, sp, strict=True)), indexing="ij"), -1)
    radius = (((mm - np.array([36.0, 36.0, 30.0])) / np.array([24.0, 28.0, 22.0])) ** 2).sum(-1)
    brain, head = radius <= 1.0, radius <= 1.35
    image = np.where(brain, 100 + 5 * rng.standard_normal(shape), 0.0)
    if not stripped:
        image = np.where(head & ~brain, 15 + 3 * rng.standard_normal(shape), image)  # dark skull
        image = np.where((radius > 1.2) & head, 160.0, image)  # bright scalp
        image = np.where(~head, np.abs(6 * rng.standard_normal(shape)), image)  # Rician-like air
    bleed = ((mm - MICROBLEED_MM) ** 2).sum(-1) <= 2.5**2
    image[bleed] = 30.0
    return image.astype(np.float32), bleed.astype(np.uint8)


@pytest.mark.parametrize(
    ("spacing", "stripped"),
    [((0.5, 0.5, 2.0), True), ((1.0, 1.0, 1.0), False)],
    ids=["skull-stripped-0.5x0.5x2mm", "unstripped-1mm"],
)
def test_training_normalises_over_the_brain_the_predictor_uses(tmp_path: Path, spacing, stripped) -> None:
    image, label = _head(spacing, stripped)
    affine = np.diag([*spacing, 1.0])
    save_volume(tmp_path / "case01.nii.gz", image, affine)
    save_volume(tmp_path / "case01_label.nii.gz", label, affine)
    (subject,) = find_subjects(tmp_path)
    assert subject.mask is None  # no mask file: both must find the brain themselves
    cfg = load_config("tiny")
    trained = prepare_subject(subject, cfg, seed=0)

    volume, _, _ = load_subject(subject)
    predicted = prepare(volume, resolve_brain_mask(volume)[0], np.asarray(cfg["data"]["spacing_mm"], dtype=float))
    # Same brain: the predictor crops to it, training keeps the field of view.
    assert abs(int(trained.mask.sum()) - int(predicted.mask.sum())) <= 0.03 * predicted.mask.sum()

    def value_at(data: np.ndarray, grid_affine: np.ndarray, world: np.ndarray) -> float:
        ijk = np.rint(np.linalg.solve(grid_affine[:3, :3], world - grid_affine[:3, 3])).astype(int)
        return float(data[tuple(ijk)])

    # The microbleed core and ordinary brain have the same z-scores in training as at prediction.
    for world in (MICROBLEED_MM, np.array([36.0, 24.0, 30.0])):
        seen_in_training = value_at(trained.image, trained.affine, world)
        seen_at_prediction = value_at(predicted.data, predicted.affine, world)
        assert seen_in_training == pytest.approx(seen_at_prediction, abs=0.1 * max(1.0, abs(seen_at_prediction)))
    # Random patches and dark spots come from the brain, not from the air or the skull.
    assert np.all(trained.mask[tuple(trained.dark_spots.T)])
    assert value_at(trained.mask.astype(float), trained.affine, np.array([3.0, 3.0, 3.0])) == 0


def test_a_brain_mask_that_is_an_image_is_refused_naming_the_subject(tmp_path: Path) -> None:
    # Read as plkd predict reads a mask, an image given as the mask is refused; the error named no subject of the set.
    image, label = _head((1.0, 1.0, 1.0), stripped=True)
    save_volume(tmp_path / "case01.nii.gz", image, np.eye(4))
    save_volume(tmp_path / "case01_label.nii.gz", label, np.eye(4))
    save_volume(tmp_path / "case01_mask.nii.gz", np.rint(image * 100).astype(np.int16), np.eye(4))
    (subject,) = find_subjects(tmp_path)
    with pytest.raises(InputError, match=r"^case01: the brain mask holds \d+ distinct whole-number values"):
        prepare_subject(subject, load_config("tiny"), seed=0)
