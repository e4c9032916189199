"""Intensity normalisation shared by training and inference (they must never differ)."""

from __future__ import annotations

import numpy as np

#: Percentiles (within the brain) that define the intensity range, for new training runs: the
#: bright end is clipped (hot voxels, vessels with inflow), the dark end is not, because the darkest
#: voxels of a T2*/SWI brain are the microbleeds themselves (docs/results.md, step 11).
CLIP_PERCENTILES = (0.0, 99.5)
#: What every bundle and training run made before the percentiles were recorded used: the darkest
#: 0.5 % of the brain, microbleed cores among them, clipped to one value.
LEGACY_CLIP_PERCENTILES = (0.5, 99.5)


def normalise_intensity(
    data: np.ndarray,
    mask: np.ndarray | None = None,
    clip_percentiles: tuple[float, float] | list[float] = CLIP_PERCENTILES,
) -> np.ndarray:
    """Z-score an image using the brain's robust statistics; outside the mask becomes 0.

    Intensities are clipped to the ``clip_percentiles`` (low, high; default 0-99.5) of the
    brain, then shifted and scaled to zero mean and unit standard deviation inside the brain.
    Scanner units, bias-free gain and modality scaling therefore do not matter, tiny units (1e-9) included. ``data`` and
    ``mask`` have the same shape; returns float32 of that shape.

    The low percentile sets how dark anything can look: microbleeds are the darkest voxels of
    a T2*/SWI brain, so every voxel below it (microbleed cores among them) becomes the same
    value, whose z-score depends on how many veins, iron and dropout the brain holds, not on the
    microbleed. A bundle records the percentiles its networks see (``manifest.normalisation``;
    docs/results.md, step 11). Raises ``ValueError`` for percentiles
    that are not increasing within [0, 100].
    """
    lo_p, hi_p = (float(v) for v in clip_percentiles)
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise ValueError(f"clip percentiles must increase within [0, 100], not {clip_percentiles}")
    arr = np.asarray(data, dtype=np.float32)
    m = np.ones(arr.shape, dtype=bool) if mask is None else np.asarray(mask) > 0
    if not m.any():
        m = np.ones(arr.shape, dtype=bool)
    vals = arr[m]
    lo, hi = np.percentile(vals, (lo_p, hi_p))
    clipped = np.clip(arr, lo, hi)
    inside = clipped[m]
    mean = float(inside.mean())
    std = float(inside.std())
    scale = max(abs(float(lo)), abs(float(hi)))
    if std <= 1e-6 and hi > lo and 0.0 < scale < 1.0:
        # Tiny units (a reconstruction's raw magnitude, about 1e-9): the spread is real but below the guard against a
        # constant brain, or lost in float32 squares; brought to about 1 first, the image normalises as in any unit.
        return normalise_intensity(arr / np.float32(scale), mask, clip_percentiles)
    out = (clipped - mean) / (std if std > 1e-6 else 1.0)
    out[~m] = 0.0
    return out.astype(np.float32, copy=False)
