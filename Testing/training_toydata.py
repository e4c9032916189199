"""A tiny synthetic data set in the ``plkd synth`` layout for the training tests (seconds to write)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from plkd.volumes import save_volume

SHAPE = (40, 40, 30)


def write_toy_dataset(root: Path, n_subjects: int = 3, seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> Path:
    """Noise volumes with a brain-like ellipsoid mask, 3 dark balls (labelled) and one dark tube (a mimic)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).astype(float)
    centre = (np.asarray(shape) - 1) / 2
    mask = (((grid - centre) / (np.asarray(shape) * 0.45)) ** 2).sum(-1) <= 1.0
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    subjects = {}
    for i in range(n_subjects):
        sid = f"sub-{i + 1:04d}"
        img = 100 + 5 * rng.standard_normal(shape)
        label = np.zeros(shape, np.uint8)
        bleeds = []
        for j in range(3):
            c = centre + rng.uniform(-8, 8, size=3) * np.array([1, 1, 0.6])
            r = rng.uniform(1.2, 2.0)
            ball = ((grid - c) ** 2).sum(-1) <= r * r
            img[ball] = 30 + 5 * rng.standard_normal(int(ball.sum()))
            label[ball] = 1
            bleeds.append(
                {
                    "id": j + 1,
                    "center_ras": [float(v) for v in c],
                    "center_voxel": [float(v) for v in c],
                    "diameter_mm": 2 * r,
                    "region": "toy",
                    "location": "lobar",
                }
            )
        tube_xy = centre[:2] + rng.uniform(-10, 10, size=2)
        tube = ((grid[..., :2] - tube_xy) ** 2).sum(-1) <= 1.0
        img[tube & ~label.astype(bool)] = 45
        img[~mask] = 0
        label[~mask] = 0
        folder = root / sid
        save_volume(folder / f"{sid}_space-T2S_desc-masked_T2S.nii.gz", img.astype(np.float32), affine)
        save_volume(folder / f"{sid}_space-T2S_CMB.nii.gz", label, affine)
        save_volume(folder / f"{sid}_space-T2S_desc-brain_mask.nii.gz", mask.astype(np.uint8), affine)
        mimic = {"kind": "vein", "center_ras": [float(tube_xy[0]), float(tube_xy[1]), float(centre[2])]}
        subjects[sid] = {"seed": seed + i, "microbleeds": bleeds, "mimics": [mimic]}
    manifest = {"format": "plkd-synth/1", "modality": "T2S", "spacing_mm": [1.0, 1.0, 1.0], "subjects": subjects}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return root


#: ``plkd train`` options of the training tests: the tiny configuration, no progress bars.
TINY_TRAIN = ["--config", "tiny", "--progress", "none"]


def train_stage(stage: str, data: Path, run: Path, *extra: str) -> int:
    """Exit status of ``plkd train STAGE --data DATA --out RUN`` with :data:`TINY_TRAIN` and ``extra``."""
    from plkd.cli import main

    return main(["train", stage, "--data", str(data), "--out", str(run), *TINY_TRAIN, *extra])


def started_run(root: Path) -> tuple[Path, Path]:
    """A toy data set of 3 subjects under ``root`` and a run on it whose screening stage has finished."""
    data = write_toy_dataset(root / "data", n_subjects=3)
    run = root / "run"
    assert train_stage("screening", data, run) == 0
    return data, run
