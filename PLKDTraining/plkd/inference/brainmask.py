"""The brain mask used to normalise intensities, restrict candidates and crop the work volume.

A mask given by the user always wins (it must be on the image's grid and non-empty). Without
one, an already skull-stripped image (a large share of exact zeros, as every skull-stripping
tool writes) gives its non-zero region. Otherwise a simple documented *fallback* is used: a
smoothed image thresholded with Otsu's method, opened, reduced to its largest connected
component, closed and hole-filled. The fallback is not a skull-stripping tool; for images
with a lot of bright extra-cerebral tissue give a proper mask with ``--mask``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from plkd.errors import InputError
from plkd.volumes import Volume, check_same_grid

#: An image with at least this share of exact zeros is taken as already skull-stripped.
SKULL_STRIPPED_ZERO_FRACTION = 0.05


def _ball(radius_vox: np.ndarray) -> np.ndarray:
    r = np.maximum(np.round(radius_vox).astype(int), 1)
    grids = np.ogrid[tuple(slice(-n, n + 1) for n in r)]
    return sum((g / max(n, 1)) ** 2 for g, n in zip(grids, r, strict=True)) <= 1.0


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising the between-class variance of a histogram."""
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a boolean mask (empty stays empty)."""
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def compute_brain_mask(volume: Volume) -> tuple[np.ndarray, str]:
    """A brain mask for ``volume`` and one sentence saying how it was obtained."""
    data = volume.data
    zeros = float(np.mean(data == 0))
    if zeros >= SKULL_STRIPPED_ZERO_FRACTION:
        mask = data != 0
        # Fill holes slice by slice along every axis is costly; a 3-D fill is enough for
        # dark lesions that happen to be exactly zero.
        mask = ndimage.binary_fill_holes(mask)
        return mask, f"brain mask: non-zero region of the skull-stripped input ({100 * zeros:.0f}% of voxels are 0)"
    spacing = volume.spacing
    smooth = ndimage.gaussian_filter(data.astype(np.float32), sigma=1.0 / spacing)
    lo, hi = np.percentile(smooth, [1, 99.5])
    thr = otsu_threshold(np.clip(smooth, lo, hi).ravel())
    mask = smooth > thr
    radius = 3.0 / spacing  # 3 mm: detach thin bridges to the scalp
    mask = ndimage.binary_opening(mask, structure=_ball(radius))
    mask = largest_component(mask)
    mask = ndimage.binary_closing(mask, structure=_ball(radius), border_value=0)
    mask = ndimage.binary_fill_holes(mask)
    return mask, "brain mask: computed by the threshold fallback (give --mask for a proper skull-stripped mask)"


def resolve_brain_mask(volume: Volume, mask: Volume | None = None) -> tuple[np.ndarray, str]:
    """The user's mask (validated) or a computed one; raises :class:`InputError` when empty."""
    if mask is not None:
        check_same_grid(volume, mask, "brain mask")
        m = np.asarray(mask.data) > 0
        if not m.any():
            raise InputError("brain mask is empty (no non-zero voxel)")
        return m, "brain mask: given by the user"
    m, note = compute_brain_mask(volume)
    if not m.any():
        raise InputError("no brain tissue found in the image; give a brain mask with --mask")
    return m, note
