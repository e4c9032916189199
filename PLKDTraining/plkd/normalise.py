"""Intensity normalisation shared by training and inference (they must never differ)."""

from __future__ import annotations

import numpy as np

#: Percentiles (within the brain) that define the robust intensity range.
CLIP_PERCENTILES = (0.5, 99.5)


def normalise_intensity(data: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Z-score an image using the brain's robust statistics; outside the mask becomes 0.

    Intensities are clipped to the 0.5-99.5 percentiles of the brain, then shifted and scaled
    to zero mean and unit standard deviation inside the brain. Scanner units, bias-free gain
    and modality scaling therefore do not matter. Returns float32.
    """
    arr = np.asarray(data, dtype=np.float32)
    m = np.ones(arr.shape, dtype=bool) if mask is None else np.asarray(mask) > 0
    if not m.any():
        m = np.ones(arr.shape, dtype=bool)
    vals = arr[m]
    lo, hi = np.percentile(vals, CLIP_PERCENTILES)
    clipped = np.clip(arr, lo, hi)
    inside = clipped[m]
    mean = float(inside.mean())
    std = float(inside.std())
    out = (clipped - mean) / (std if std > 1e-6 else 1.0)
    out[~m] = 0.0
    return out.astype(np.float32, copy=False)
