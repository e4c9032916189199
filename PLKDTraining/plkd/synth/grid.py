"""The two grids of a synthetic subject: a fine rendering grid and the output grid.

Each output voxel is split into ``n`` fine voxels per axis (``n = round(spacing / fine)``); the
scene is rendered on the fine grid and averaged back, which is how a thick slice averages the
signal of its slab (partial volume), rather than sampling every k-th thin slice.
Both grids are axis-aligned RAS; world (mm) = ``lo + (index + 0.5) * step``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SynthGrid:
    """Output grid (``spacing``, ``shape``) and its ``factor``-times finer rendering grid over ``[lo, ...)``."""

    lo: np.ndarray
    spacing: np.ndarray
    shape: tuple[int, int, int]
    factor: tuple[int, int, int]

    @classmethod
    def covering(cls, lo: np.ndarray, hi: np.ndarray, spacing: np.ndarray, fine: float = 1.0) -> SynthGrid:
        """The grid with voxel size ``spacing`` covering the box ``[lo, hi]``, rendered at about ``fine`` mm."""
        spacing = np.asarray(spacing, dtype=np.float64)
        factor = tuple(max(1, int(round(s / fine))) for s in spacing)
        shape = tuple(int(np.ceil((h - l) / s)) for l, h, s in zip(lo, hi, spacing, strict=True))
        return cls(np.asarray(lo, dtype=np.float64), spacing, shape, factor)  # type: ignore[arg-type]

    @property
    def fine_spacing(self) -> np.ndarray:
        """Voxel size (mm) of the rendering grid."""
        return self.spacing / np.asarray(self.factor)

    @property
    def fine_shape(self) -> tuple[int, int, int]:
        """Shape of the rendering grid."""
        return tuple(s * f for s, f in zip(self.shape, self.factor, strict=True))  # type: ignore[return-value]

    def fine_axes(self) -> list[np.ndarray]:
        """World coordinate (mm) of the fine voxel centres along each axis."""
        h = self.fine_spacing
        return [self.lo[a] + (np.arange(self.fine_shape[a]) + 0.5) * h[a] for a in range(3)]

    def affine(self) -> np.ndarray:
        """Voxel-to-RAS affine of the output grid."""
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = self.lo + 0.5 * self.spacing
        return aff

    def fine_index(self, points: np.ndarray) -> np.ndarray:
        """Continuous fine-grid indices of world points ``(N, 3)``."""
        return (np.atleast_2d(points) - self.lo) / self.fine_spacing - 0.5

    def output_index(self, points: np.ndarray) -> np.ndarray:
        """Nearest output-grid voxel (int) of world points ``(N, 3)``."""
        return np.floor((np.atleast_2d(points) - self.lo) / self.spacing).astype(int)

    def average(self, fine: np.ndarray) -> np.ndarray:
        """Average fine-grid values over each output voxel."""
        if self.factor == (1, 1, 1):
            return np.asarray(fine, dtype=np.float32)
        (x, y, z), (a, b, c) = self.shape, self.factor
        return fine.reshape(x, a, y, b, z, c).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)
