#!/usr/bin/env python3
"""Build the tiny model bundle and the tiny test case used by the inference tests.

    python scripts/make_tiny_bundle.py [--out Testing/data] [--steps 600]

Writes ``Testing/data/tiny-bundle/`` (a screening FCN, an E2U-Net teacher and an x4 student,
fp16, well under 500 kB) and ``Testing/data/tiny-case/`` (one 48×48×32 volume with three planted
microbleeds and its label). Takes about a minute on two CPU cores, deterministic for a seed.

The volumes are deliberately simple phantoms: a skull-stripped ellipsoidal "brain" with smooth
texture and noise, and small dark balls (radius 1-1.8 mm) as microbleeds. The training loop is
a minimal one written here on purpose (dense BCE for the screening FCN, Dice + BCE on candidate
patches for the segmenters, the x4 student trained on LR@4 inputs from ``plkd.lowres``), not the
full PLKD schedule of ``plkd.training``: the tiny bundle exists to test the inference plumbing
quickly, not to reproduce the paper. The functions ``phantom`` and ``random_centres`` are
imported by the tests to build fresh volumes on any grid.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual PyTorch alias
from scipy import ndimage

from plkd.bundle import save_bundle
from plkd.lowres import simulate_lowres
from plkd.models import E2UNet, ScreeningFCN, patch_probability
from plkd.normalise import normalise_intensity
from plkd.volumes import save_volume

SHAPE = (48, 48, 32)
SEG_PATCH = (48, 48, 24)
#: Segmenters are trained on smaller crops (they are fully convolutional) to keep training short.
TRAIN_PATCH = (32, 32, 16)
BALL_RADII_MM = (1.0, 1.8)
BALL_CONTRAST = 0.25  # intensity inside a ball relative to tissue: dark, like a microbleed on T2*


def random_centres(rng: np.random.Generator, n: int, box_mm: np.ndarray, min_gap_mm: float = 8.0) -> np.ndarray:
    """``n`` RAS points inside the central part (±``box_mm``) of the brain, ≥ ``min_gap_mm`` apart."""
    pts: list[np.ndarray] = []
    while len(pts) < n:
        p = rng.uniform(-box_mm, box_mm)
        if all(np.linalg.norm(p - q) >= min_gap_mm for q in pts):
            pts.append(p)
    return np.asarray(pts, dtype=np.float64).reshape(-1, 3)


def phantom(
    shape: tuple[int, int, int],
    affine: np.ndarray,
    centres_ras: np.ndarray,
    radii_mm: np.ndarray,
    seed: int,
    brain_radii_mm: tuple[float, float, float] = (21.0, 21.0, 14.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Image (float32, 0 outside the brain) and binary label on any grid, defined in RAS mm.

    The brain is an ellipsoid centred at RAS (0, 0, 0); each voxel is supersampled along its
    axes (≈0.5 mm steps) so thick slices show the partial-volume blur of a real acquisition.
    The label marks voxels whose centre lies inside a ball.
    """
    rng = np.random.default_rng(seed)
    aff = np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    subs = [np.linspace(-0.5, 0.5, int(np.ceil(s / 0.5)) + 2)[1:-1] for s in spacing]
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=-1)
    img = np.zeros(shape, dtype=np.float64)
    brain_frac = np.zeros(shape, dtype=np.float64)
    count = 0
    for du in subs[0]:
        for dv in subs[1]:
            for dw in subs[2]:
                ras = (ijk + np.array([du, dv, dw])) @ aff[:3, :3].T + aff[:3, 3]
                inside = ((ras / np.asarray(brain_radii_mm)) ** 2).sum(-1) <= 1.0
                val = inside.astype(np.float64)
                for c, r in zip(centres_ras, radii_mm, strict=True):
                    ball = ((ras - c) ** 2).sum(-1) <= r**2
                    val = np.where(ball & inside, BALL_CONTRAST, val)
                img += val
                brain_frac += inside
                count += 1
    img /= count
    brain_frac /= count
    texture = ndimage.gaussian_filter(rng.normal(size=shape), sigma=3.0 / spacing)
    texture /= texture.std() + 1e-6
    noise = rng.normal(scale=0.04, size=shape)
    image = 800.0 * img * (1.0 + 0.06 * texture) + 800.0 * noise * (brain_frac > 0)
    image = np.where(brain_frac >= 0.5, np.maximum(image, 1.0), 0.0)
    ras_c = ijk @ aff[:3, :3].T + aff[:3, 3]
    label = np.zeros(shape, dtype=np.uint8)
    for c, r in zip(centres_ras, radii_mm, strict=True):
        label[((ras_c - c) ** 2).sum(-1) <= r**2] = 1
    return image.astype(np.float32), label


def tiny_subject(seed: int, n_balls: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 48×48×32 1-mm subject: ``(image, label, affine, centres_ras)``."""
    rng = np.random.default_rng(seed)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -(np.asarray(SHAPE) - 1) / 2.0
    centres = random_centres(rng, n_balls, np.array([12.0, 12.0, 6.0]))
    radii = rng.uniform(*BALL_RADII_MM, size=n_balls)
    image, label = phantom(SHAPE, affine, centres, radii, seed)
    return image, label, affine, centres


def _screen_target(centres_vox: np.ndarray, out_shape: tuple[int, ...], fcn: ScreeningFCN) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in out_shape], indexing="ij"), -1).reshape(-1, 3)
    pos = fcn.output_to_input_coords(idx)
    d = np.sqrt(((pos[:, None, :] - centres_vox[None]) ** 2).sum(-1)).min(axis=1)
    return (d <= 2.0).astype(np.float32).reshape(out_shape)


def _seg_patch(img: np.ndarray, lab: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = np.asarray(TRAIN_PATCH)
    origin = np.round(centre).astype(int) - size // 2
    out_i, out_l = np.zeros(TRAIN_PATCH, np.float32), np.zeros(TRAIN_PATCH, np.float32)
    lo, hi = np.maximum(origin, 0), np.minimum(origin + size, img.shape)
    src = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    dst = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, origin, strict=True))
    out_i[dst], out_l[dst] = img[src], lab[src]
    return out_i, out_l


def train(out: Path, steps: int, seed: int) -> None:
    """Train the three tiny networks on fresh phantoms and write the bundle and the test case."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    subjects = []
    for s in range(12):
        image, label, affine, centres = tiny_subject(1000 + s, n_balls=int(rng.integers(2, 5)))
        mask = image > 0
        norm = normalise_intensity(image, mask)
        lr = normalise_intensity(simulate_lowres(image, 4, axis=2), mask)
        cvox = np.c_[centres, np.ones(len(centres))] @ np.linalg.inv(affine).T
        # The brain's edge is the commonest false alarm of a dark-spot detector: sample it as negatives.
        edge = np.argwhere(mask & ~ndimage.binary_erosion(mask, iterations=2))
        subjects.append((norm, lr, label.astype(np.float32), np.argwhere(mask), edge, cvox[:, :3]))

    t0 = time.perf_counter()
    fcn = ScreeningFCN(width=8)
    opt = torch.optim.Adam(fcn.parameters(), lr=3e-3)
    for step in range(steps):
        norm, lr, _lab, _inside, _edge, cvox = subjects[step % len(subjects)]
        x = norm if step % 2 == 0 else lr  # the screener sees HR and LR@4 inputs alike
        # A random 32×32×24 crop (even offsets keep the stride-2 output grid aligned) is cheaper
        # than the whole volume and still holds a ball most of the time.
        off = 2 * rng.integers(0, (np.asarray(x.shape) - (32, 32, 24)) // 2 + 1)
        x = x[off[0] : off[0] + 32, off[1] : off[1] + 32, off[2] : off[2] + 24]
        target = torch.from_numpy(_screen_target(cvox - off, fcn.output_shape(x.shape), fcn))[None, None]
        logits = fcn(torch.from_numpy(np.ascontiguousarray(x))[None, None])
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(5.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"screening: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    nets = {}
    for name, use_lr in (("teacher", False), ("student_x4", True)):
        t0 = time.perf_counter()
        net = E2UNet(base_channels=4, depth=3)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _step in range(steps):
            xs, ys = [], []
            for _ in range(4):
                norm, lr, lab, inside, edge, cvox = subjects[int(rng.integers(len(subjects)))]
                u = rng.random()
                if u < 0.5:
                    centre = cvox[int(rng.integers(len(cvox)))] + rng.uniform(-2, 2, 3)
                else:  # a negative at the brain's edge or anywhere (may still catch a ball, labelled so)
                    pool = edge if u < 0.75 else inside
                    centre = pool[int(rng.integers(len(pool)))].astype(float)
                xi, yi = _seg_patch(lr if use_lr else norm, lab, centre)
                xs.append(xi)
                ys.append(yi)
            x = torch.from_numpy(np.stack(xs))[:, None]
            y = torch.from_numpy(np.stack(ys))[:, None]
            logits = net(x)["logits"]
            p = torch.sigmoid(logits)
            dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
            has = (y.flatten(1).amax(1) > 0).float()
            patch_loss = F.binary_cross_entropy(patch_probability(logits).clamp(1e-6, 1 - 1e-6), has)
            loss = dice + F.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.tensor(2.0)) + patch_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        nets[name] = net
        print(f"{name}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    bundle_dir = out / "tiny-bundle"
    save_bundle(
        bundle_dir,
        {
            "screening": {"module": fcn, "role": "screening", "lr_factor": None},
            "teacher": {"module": nets["teacher"], "role": "segmenter", "lr_factor": 1},
            "student_x4": {"module": nets["student_x4"], "role": "segmenter", "lr_factor": 4},
        },
        manifest={
            "name": "tiny-test-bundle",
            "modality": "T2S",
            "spacing_mm": [1.0, 1.0, 1.0],
            "patch_size": {"screening": [20, 20, 16], "segmentation": list(SEG_PATCH)},
            "thresholds": {"screening": 0.5, "segmentation": 0.5, "voxel": 0.5, "min_distance_mm": 4.0},
            # Trained on 2-3.6 mm balls only: the large-blob candidate source would feed it
            # phantom texture it never learnt to reject.
            "candidates": {"blob": {"limit": 0}},
            "training": {"data": "tiny dark-ball phantoms (scripts/make_tiny_bundle.py)", "steps": steps, "seed": seed},
            "disclaimer": "Test fixture trained on toy phantoms; detects dark balls, not microbleeds.",
        },
        half=True,
        overwrite=True,
    )

    case = out / "tiny-case"
    image, label, affine, centres = tiny_subject(7, n_balls=3)
    save_volume(case / "tiny_T2S.nii.gz", image, affine)
    save_volume(case / "tiny_CMB.nii.gz", label, affine, dtype=np.uint8)
    (case / "truth.json").write_text(json.dumps({"centres_ras": np.round(centres, 3).tolist()}, indent=2) + "\n")
    print(f"wrote {bundle_dir} and {case}", file=sys.stderr)


def main() -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "Testing" / "data")
    parser.add_argument("--steps", type=int, default=600, help="training steps per network")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # One thread: on a shared 2-core machine OpenMP threads waiting at barriers cost more than they gain.
    torch.set_num_threads(1)
    train(args.out, args.steps, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
