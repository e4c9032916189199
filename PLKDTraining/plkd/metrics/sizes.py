"""Microbleed size bins of the result tables: the sphere-equivalent diameter of a labelled blob.

A blob of volume ``V`` mm³ has the diameter ``(6 V / π)^(1/3)`` of the sphere of that volume; the
volume is the voxel count times the voxel volume in mm³ (``|det|`` of the affine's 3×3 part), so an
anisotropic or oblique grid gives millimetres, not voxels. Bins include their lower edge: exactly
3 mm is "3-5 mm", exactly 5 mm "5-10 mm". Blobs over 10 mm (no microbleed is: Greenberg et al.,
Lancet Neurol 2009) get their own bin instead of swelling "5-10 mm". A microbleed cut by the
image border is measured by its part inside, so it looks smaller than it is.
"""

from __future__ import annotations

import math

import numpy as np

#: ``(lower mm, upper mm, name)``: lower edge included, upper excluded.
SIZE_BINS: tuple[tuple[float, float, str], ...] = (
    (0.0, 3.0, "<3 mm"),
    (3.0, 5.0, "3-5 mm"),
    (5.0, 10.0, "5-10 mm"),
    (10.0, math.inf, ">10 mm"),
)
SIZE_NAMES: tuple[str, ...] = tuple(b[2] for b in SIZE_BINS)


def equivalent_diameter_mm(n_voxels: np.ndarray | int, affine: np.ndarray) -> np.ndarray:
    """Sphere-equivalent diameter (mm) of blobs of ``n_voxels`` voxels on the grid of ``affine`` (4×4)."""
    voxel_mm3 = abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))
    return (6.0 * np.asarray(n_voxels, dtype=np.float64) * voxel_mm3 / math.pi) ** (1.0 / 3.0)


def size_bin(diameter_mm: float) -> str:
    """The name of the bin of ``diameter_mm`` (rounded to 1e-6 mm first, so a blob of exactly 3 mm
    computed as 2.9999999999999996 is not binned below its edge)."""
    d = round(float(diameter_mm), 6)
    if not d >= 0:
        raise ValueError(f"a diameter must be a non-negative number of mm, not {diameter_mm!r}")
    return next(name for lo, hi, name in SIZE_BINS if lo <= d < hi)
