"""numpy/nibabel (RAS) ↔ SimpleITK (LPS) conversions.

nibabel arrays are indexed ``[i, j, k]`` with a voxel-to-RAS affine; SimpleITK images are
indexed ``[k, j, i]`` in numpy and place voxels in LPS physical space (x and y negated).
Everything in :mod:`plkd.location` works in RAS mm at its interface and converts here only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: RAS → LPS (and back): negate x and y.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def import_sitk() -> Any:
    """SimpleITK, imported lazily (its import costs ~0.2 s and it is needed only for location)."""
    import SimpleITK as sitk  # noqa: N813 - the library's own name

    return sitk


def image_from_array(data: np.ndarray, affine: np.ndarray) -> Any:
    """A SimpleITK float32 image of ``data`` (``[i, j, k]``) placed by a voxel-to-RAS ``affine``.

    A slightly sheared affine (not representable by ITK's orthonormal direction) is replaced by
    its nearest rotation (polar decomposition); voxel sizes are the affine's column norms.
    """
    sitk = import_sitk()
    affine = np.asarray(affine, dtype=np.float64)
    lps = RAS_TO_LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    u, _s, vt = np.linalg.svd(lps / spacing)
    direction = u @ vt
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, dtype=np.float32).transpose(2, 1, 0)))
    img.SetSpacing([float(v) for v in spacing])
    img.SetDirection([float(v) for v in direction.ravel()])
    img.SetOrigin([float(v) for v in RAS_TO_LPS @ affine[:3, 3]])
    return img


def array_from_image(img: Any) -> np.ndarray:
    """The voxel values of a SimpleITK image as ``[i, j, k]``."""
    sitk = import_sitk()
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0)


def affine_of_image(img: Any) -> np.ndarray:
    """Voxel-to-RAS affine of a SimpleITK image."""
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    out = np.eye(4)
    out[:3, :3] = RAS_TO_LPS @ direction @ np.diag(img.GetSpacing())
    out[:3, 3] = RAS_TO_LPS @ np.asarray(img.GetOrigin(), dtype=np.float64)
    return out


def transform_points_ras(transform: Any, points_ras: np.ndarray) -> np.ndarray:
    """Apply a SimpleITK transform (which maps LPS points) to RAS points ``(N, 3)``; returns RAS."""
    pts = np.atleast_2d(np.asarray(points_ras, dtype=np.float64)) @ RAS_TO_LPS
    out = np.array([transform.TransformPoint([float(v) for v in p]) for p in pts], dtype=np.float64)
    return out.reshape(-1, 3) @ RAS_TO_LPS
