"""Resampling between voxel grids through world (RAS) coordinates.

Used to bring inputs to the model grid (cubic, the "SR" step of the paper), to bring label
maps back to the input grid (nearest neighbour) and to compare volumes whose grids differ.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from plkd.volumes import Volume, spacing_from_affine


def grid_with_spacing(
    affine: np.ndarray, shape: tuple[int, ...], spacing: np.ndarray
) -> tuple[np.ndarray, tuple[int, ...]]:
    """A grid covering the same field of view with new voxel sizes along the same axes.

    Voxel centres are placed so that the field of view (from the first voxel's outer edge to
    the last voxel's outer edge) is preserved; returns ``(affine, shape)``.
    """
    affine = np.asarray(affine, dtype=np.float64)
    old = spacing_from_affine(affine)
    new = np.asarray(spacing, dtype=np.float64)
    extent = old * np.asarray(shape[:3], dtype=np.float64)
    new_shape = tuple(max(1, int(round(e / s))) for e, s in zip(extent, new, strict=True))
    direction = affine[:3, :3] / old
    new_affine = np.eye(4)
    new_affine[:3, :3] = direction * new
    # Keep the outer edge of voxel 0 fixed: old corner = origin - 0.5*old step.
    corner = affine[:3, 3] - direction @ (0.5 * old)
    new_affine[:3, 3] = corner + direction @ (0.5 * new)
    return new_affine, new_shape


def resample_array(
    data: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: tuple[int, ...],
    order: int = 3,
    cval: float = 0.0,
) -> np.ndarray:
    """Sample ``data`` (on ``src_affine``) at the voxel centres of the destination grid.

    ``order`` 0 = nearest neighbour (labels), 1 = linear, 3 = cubic B-spline (images). Points
    outside the source take ``cval``.
    """
    vox_to_vox = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)
    src = np.asarray(data)
    if order == 0:
        out = ndimage.affine_transform(
            src,
            vox_to_vox[:3, :3],
            offset=vox_to_vox[:3, 3],
            output_shape=tuple(dst_shape[:3]),
            order=0,
            mode="constant",
            cval=cval,
        )
        return out
    work = src.astype(np.float32, copy=False)
    out = ndimage.affine_transform(
        work,
        vox_to_vox[:3, :3],
        offset=vox_to_vox[:3, 3],
        output_shape=tuple(dst_shape[:3]),
        order=order,
        mode="nearest" if cval is None else "constant",
        cval=0.0 if cval is None else cval,
        prefilter=order > 1,
    )
    return out.astype(np.float32, copy=False)


def resample_volume(vol: Volume, dst_affine: np.ndarray, dst_shape: tuple[int, ...], order: int = 3) -> Volume:
    """Resample a :class:`Volume` onto another grid (see :func:`resample_array`)."""
    data = resample_array(vol.data, vol.affine, dst_affine, dst_shape, order=order)
    return Volume(data=data, affine=np.asarray(dst_affine, dtype=np.float64).copy(), header=None, notes=list(vol.notes))


def resample_to_spacing(vol: Volume, spacing: float | tuple[float, float, float], order: int = 3) -> Volume:
    """Resample a volume to new voxel sizes over the same field of view and orientation."""
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
    affine, shape = grid_with_spacing(vol.affine, vol.shape, sp)
    return resample_volume(vol, affine, shape, order=order)
