"""A second candidate source: dark blobs of 4-12 mm from a multi-scale Laplacian-of-Gaussian.

The paper's screening FCN sees 20 voxels (20 mm on the 1 mm model grid) and is trained on
20×20×16 patches, so a microbleed of 6-10 mm fills its field of view and looks like tissue to it:
the shipped FCN proposed no candidate near any of them. Rather than widen the FCN (slower on every
scan, and still trained mostly on small microbleeds), large dark foci are proposed by the classic
scale-space blob detector (Lindeberg, "Feature detection with automatic scale selection", IJCV
1998): the scale-normalised Laplacian ``σ²·∇²G_σ * I`` peaks at the centre of a dark blob at a
scale proportional to its size (σ ≈ r/√5 for a ball of radius r). Its peaks join the FCN's
candidates; the E²U-Net then accepts or rejects each one as it does every other candidate, so
this source adds recall and leaves precision to stage 2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: Scales (mm) of the Laplacian: ball diameters of roughly 4.5-12 mm (σ ≈ r/√5).
BLOB_SCALES_MM = (1.0, 1.4, 2.0, 2.8)
#: Blob candidates added per scan at most (the strongest responses first).
MAX_BLOB_CANDIDATES = 20
#: Minimum scale-normalised response (brain z-score units) of a blob candidate.
MIN_BLOB_RESPONSE = 1.5
#: A blob candidate's 7 mm cube must be at least this much brain: a microbleed is at least half
#: surrounded by parenchyma and never lies on the brain's outer edge, where skull stripping and
#: partial volume leave dark rims.
MIN_BRAIN_FRACTION = 0.9


def blob_response(
    data: np.ndarray, spacing: Sequence[float], scales_mm: Sequence[float] = BLOB_SCALES_MM
) -> np.ndarray:
    """Maximum over scales of ``σ²·∇²G_σ * data`` (positive at dark blobs), shape of ``data``.

    ``data`` (X, Y, Z) is the intensity-normalised image (brain z-scores, 0 outside), ``spacing``
    its voxel size in mm; each ``σ`` is in mm and converted per axis, so anisotropic grids are
    handled. Coarse scales are computed on a grid decimated by 2 (then interpolated back), which
    changes the response by less than its noise and makes the four scales cost about two.
    """
    arr = np.asarray(data, dtype=np.float32)
    sp = np.asarray(spacing, dtype=np.float64)
    best = np.full(arr.shape, -np.inf, dtype=np.float32)
    half = None
    for sigma in scales_mm:
        sig_vox = float(sigma) / sp
        if np.all(sig_vox >= 1.6) and min(arr.shape) >= 8:
            if half is None:
                half = ndimage.zoom(arr, 0.5, order=1)
            resp_half = ndimage.gaussian_laplace(half, sigma=sig_vox / 2.0) * np.float32(sigma**2)
            zoom = np.asarray(arr.shape) / np.asarray(resp_half.shape)
            resp = ndimage.zoom(resp_half, zoom, order=1)[: arr.shape[0], : arr.shape[1], : arr.shape[2]]
        else:
            resp = ndimage.gaussian_laplace(arr, sigma=sig_vox) * np.float32(sigma**2)
        np.maximum(best, resp, out=best)
    return best


def blob_candidates(
    data: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    *,
    scales_mm: Sequence[float] = BLOB_SCALES_MM,
    limit: int = MAX_BLOB_CANDIDATES,
    min_response: float = MIN_BLOB_RESPONSE,
    min_distance_mm: float = 6.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel positions ``(M, 3)`` and responses ``(M,)`` of the strongest dark blobs in ``mask``.

    Peaks are local maxima of :func:`blob_response` over a 3×3×3 neighbourhood, at least
    ``min_response``, at least ``min_distance_mm`` apart (greedy, strongest first), at most ``limit``.
    A peak counts only where the image itself is dark (below the brain mean), which keeps
    bright-dark edges, such as the ventricle walls, from proposing the dark side of the edge,
    and only well inside the brain (:data:`MIN_BRAIN_FRACTION` of a 7 mm cube around it).
    """
    if limit <= 0:
        return np.zeros((0, 3), dtype=np.float64), np.zeros(0)
    resp = blob_response(data, spacing, scales_mm)
    peak = resp == ndimage.maximum_filter(resp, size=3)
    keep = peak & (resp >= min_response) & (np.asarray(mask) > 0) & (np.asarray(data) < 0)
    idx = np.argwhere(keep)
    if idx.shape[0]:
        size = np.maximum(np.round(7.0 / np.asarray(spacing, dtype=np.float64)).astype(int) | 1, 1)
        brain = ndimage.uniform_filter(np.asarray(mask, dtype=np.float32), size=tuple(int(v) for v in size))
        idx = idx[brain[tuple(idx.T)] >= MIN_BRAIN_FRACTION]
    if idx.shape[0] == 0:
        return np.zeros((0, 3), dtype=np.float64), np.zeros(0)
    values = resp[tuple(idx.T)]
    order = np.argsort(-values, kind="stable")
    idx, values = idx[order], values[order]
    sp = np.asarray(spacing, dtype=np.float64)
    chosen: list[int] = []
    for i, p in enumerate(idx * sp):
        if any(np.sum((idx[j] * sp - p) ** 2) < min_distance_mm**2 for j in chosen):
            continue
        chosen.append(i)
        if len(chosen) >= limit:
            break
    return idx[chosen].astype(np.float64), values[chosen].astype(np.float64)


def blob_settings(entry: dict | None = None) -> dict:
    """The blob source's settings: a manifest's ``candidates.blob`` record over the defaults.

    ``{"scales_mm": [...], "limit": int, "min_response": float}``; ``limit`` 0 turns the source
    off (a bundle whose segmenter never saw large microbleeds).
    """
    own = entry or {}
    return {
        "scales_mm": [float(v) for v in own.get("scales_mm", BLOB_SCALES_MM)],
        "limit": int(own.get("limit", MAX_BLOB_CANDIDATES)),
        "min_response": float(own.get("min_response", MIN_BLOB_RESPONSE)),
    }
