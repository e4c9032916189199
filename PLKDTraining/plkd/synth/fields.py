"""Smooth random fields as a few low-frequency cosine terms.

A field is ``f(x) = sum_k c_k * cos(pi*k_x*u_x) * cos(pi*k_y*u_y) * cos(pi*k_z*u_z)`` with
``u = (x - lo) / (hi - lo)`` in the box ``[lo, hi]`` (mm). Being separable it is evaluated on a
whole grid by three small tensor contractions (cheap even for millions of voxels), and being
analytic it can also be evaluated at any point, which the deformation needs to map template
landmarks into a subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SmoothField:
    """A smooth scalar field on a box in mm; ``coeffs[kx, ky, kz]`` weight ``cos(pi*k*u)`` terms."""

    coeffs: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        lo: np.ndarray,
        hi: np.ndarray,
        order: int,
        rms: float,
        decay: float = 1.0,
        constant: bool = False,
    ) -> SmoothField:
        """A random field with root-mean-square ``rms`` over the box.

        ``order`` is the highest cosine index per axis; higher frequencies are damped by
        ``1 / (1 + |k|)**decay`` so the field stays smooth. ``constant`` keeps the k = 0 term
        (an offset); without it the field has zero mean.
        """
        k = np.arange(order + 1)
        kk = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
        weight = 1.0 / (1.0 + kk) ** decay
        if not constant:
            weight[0, 0, 0] = 0.0
        coeffs = rng.standard_normal(weight.shape) * weight
        # Mean square of a product of cosines over the box: 1 for k = 0 and 1/2 for each k > 0.
        ms = np.prod(np.where(np.stack(np.meshgrid(k, k, k, indexing="ij")) == 0, 1.0, 0.5), axis=0)
        norm = np.sqrt(float(np.sum(coeffs**2 * ms)))
        if norm > 0:
            coeffs *= rms / norm
        return cls(coeffs=coeffs, lo=np.asarray(lo, dtype=np.float64), hi=np.asarray(hi, dtype=np.float64))

    def _basis(self, x: np.ndarray, axis: int) -> np.ndarray:
        u = (np.asarray(x, dtype=np.float64) - self.lo[axis]) / (self.hi[axis] - self.lo[axis])
        k = np.arange(self.coeffs.shape[axis])
        return np.cos(np.pi * u[:, None] * k[None, :])

    def on_grid(self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
        """Values on the grid spanned by 1-D coordinate vectors (mm), shape ``(len(xs), len(ys), len(zs))``."""
        bx, by, bz = self._basis(xs, 0), self._basis(ys, 1), self._basis(zs, 2)
        t = np.tensordot(bx, self.coeffs, axes=(1, 0))  # (X, ky, kz)
        t = np.tensordot(t, by, axes=(1, 1))  # (X, kz, Y)
        t = np.tensordot(t, bz, axes=(1, 1))  # (X, Y, Z)
        return t.astype(np.float32)

    def at(self, points: np.ndarray) -> np.ndarray:
        """Values at points ``(N, 3)`` in mm."""
        p = np.atleast_2d(np.asarray(points, dtype=np.float64))
        bx, by, bz = self._basis(p[:, 0], 0), self._basis(p[:, 1], 1), self._basis(p[:, 2], 2)
        return np.einsum("na,nb,nc,abc->n", bx, by, bz, self.coeffs)

    def bound(self) -> float:
        """An upper bound of ``|f|`` anywhere (sum of absolute coefficients)."""
        return float(np.sum(np.abs(self.coeffs)))
