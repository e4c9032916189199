"""Small synthetic brains with microbleeds painted at known places, for tests of the shipped models."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from plkd.synth import generate_subject
from plkd.volumes import Volume

#: Crop of the synthetic brain around its centre (voxels, 1 mm): small enough for a test in seconds.
CROP = (80, 80, 56)


def paint(image: Volume, centre_ras: np.ndarray, diameter_mm: float, drop: float) -> None:
    """Multiply a dipole-like dark ball (soft edge, ``drop`` at its centre) into the image."""
    inv = np.linalg.inv(image.affine)
    grid = np.indices(image.shape, dtype=np.float64).reshape(3, -1).T
    centre_vox = inv[:3, :3] @ centre_ras + inv[:3, 3]
    d = np.linalg.norm((grid - centre_vox) @ image.affine[:3, :3].T, axis=1).reshape(image.shape)
    image.data *= (1.0 - drop * np.exp(-((d / (diameter_mm / 2.0)) ** 3) * np.log(drop / 0.3))).astype(np.float32)


def brain_with_microbleeds(
    seed: int, diameters_mm: dict[str, float], *, modality: str = "T2S", drop: float = 0.75
) -> tuple[Volume, Volume, dict[str, np.ndarray]]:
    """A synthetic brain without microbleeds of its own (mimics kept), cropped around its centre,
    with one microbleed painted per entry of ``diameters_mm`` (name → diameter in mm).

    Returns ``(image, brain mask, {name: centre RAS mm})``. The microbleeds go to plain parenchyma
    (smoothed signal near the brain's median, brain all around), at least 25 mm apart and 10 mm
    or more from the crop's border: where microbleeds are, not in the bright CSF of a ventricle
    nor where the field of view ends.
    """
    s = generate_subject(seed, n_microbleeds=0, spacing=1.0, modality=modality)
    shape = np.asarray(s.image.shape)
    lo = shape // 2 - np.asarray(CROP) // 2
    box = tuple(slice(int(a), int(a) + n) for a, n in zip(lo, CROP, strict=True))
    affine = s.image.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ lo
    image = Volume(np.ascontiguousarray(s.image.data[box]), affine)
    mask = Volume(np.ascontiguousarray(s.mask.data[box]), affine.copy())
    smooth, inside = ndimage.gaussian_filter(image.data, 2.0), mask.data > 0
    plain = inside & (np.abs(smooth - np.median(smooth[inside])) < 0.3 * smooth[inside].std())
    plain &= ndimage.uniform_filter(inside.astype(np.float32), size=13, mode="constant") > 0.999
    plain[:12], plain[-12:], plain[:, :12], plain[:, -12:], plain[:, :, :10], plain[:, :, -10:] = (False,) * 6
    spots = np.argwhere(plain)
    chosen: list[np.ndarray] = []
    for k in range(len(diameters_mm)):
        start = spots[len(spots) // 3] if k == 0 else None
        pick = (
            start
            if start is not None
            else next(p for p in spots[::-1] if all(np.linalg.norm(p - c) >= 25 for c in chosen))
        )
        chosen.append(pick)
    to_ras = lambda v: affine[:3, :3] @ v + affine[:3, 3]  # noqa: E731
    planted = {name: to_ras(p.astype(float)) for name, p in zip(diameters_mm, chosen, strict=True)}
    for name, diameter in diameters_mm.items():
        paint(image, planted[name], diameter, drop)
    return image, mask, planted
