"""Acquisition-geometry augmentation: a training patch as another scanner grid would deliver it.

At inference every input is resampled in world space onto the 1-mm model grid, cubic B-spline
(:func:`plkd.inference.preprocess.prepare` → :func:`plkd.resample.resample_array`, ``order=3``),
and that grid keeps the input's axis directions with its slice axis as Z. So a scan with
0.4-1.2 mm pixels, 1-5 mm slices and an oblique stack reaches the networks as (a) the anatomy
rotated against the network's axes, (b) blurred and aliased by the scanner's own sampling, plus
noise, and (c) interpolated back to 1 mm. This module simulates that chain on one patch:

1. **Rotate** the HR anatomy (1-mm patch around the centre voxel) by ``R`` into the acquisition
   frame, cubic B-spline, onto a 1-mm grid that is the output patch grid plus margins. The label
   goes the same way with nearest neighbour, so image and truth stay aligned and the centre
   voxel (the rotation's fixed point) keeps its label: positive patches stay centred.
2. **Acquire**: each acquisition voxel (``inplane_mm × inplane_mm × thickness_mm``, first sample
   at a random fraction of a voxel from the grid origin) averages the 1-mm voxels under its
   point-spread function: a box of the pixel size in-plane; through-plane the slice profile,
   ``box`` (a contiguous slab, as ``plkd.lowres`` ``slab``), ``gaussian`` (FWHM = thickness, a
   soft RF slice profile) or ``thin`` (a 1-mm slice every ``thickness_mm``: gaps, as the paper's
   LR@k ``interp``). The HR voxels are treated as piecewise constant, so weights are exact
   overlaps (box) or integrals (Gaussian, via ``erf``).
3. **Noise**: Gaussian, ``noise_std`` × the 99th percentile of ``|patch|`` per acquisition sample
   (the convention of :func:`plkd.lowres.simulate_lowres`; Gaussian because patches are signed
   z-scores).
4. **Reconstruct** on the 1-mm output grid with the inference's cubic B-spline (with its
   prefilter). Edges extend with the nearest sample, and the margins of step 1 keep every
   output voxel clear of them: the patch has no artificial zero border.

In the acquisition frame steps 2-4 are separable, so each is a small ``(n_out, n_in)`` weight
matrix applied along one axis (as in :mod:`plkd.lowres`); only step 1 is a 3-D interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage, special
from scipy.spatial.transform import Rotation

from plkd.lowres import NOISE_REFERENCE_PERCENTILE, add_noise

#: Through-plane slice profiles (see the module docstring).
PROFILES = ("box", "gaussian", "thin")
#: Acquisition samples beyond each end of the output patch: the cubic B-spline uses 2 on each
#: side of a point.
_EXTRA_SAMPLES = 2
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True)
class GeometryParams:
    """One patch's simulated acquisition.

    ``rotation`` (3×3) maps acquisition-frame offsets (mm, the network's X, Y, Z) to HR patch
    offsets (mm = voxels on the 1-mm grid). ``phase`` is where acquisition sample 0 lies, per
    axis, as a fraction of an acquisition voxel from the output grid's first voxel centre.
    """

    inplane_mm: float
    thickness_mm: float
    profile: str = "box"
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    phase: tuple[float, float, float] = (0.0, 0.0, 0.0)
    noise_std: float = 0.0
    noise_seed: int = 0

    @property
    def spacing(self) -> np.ndarray:
        """Acquisition voxel size (mm) along the network's X, Y, Z."""
        return np.array([self.inplane_mm, self.inplane_mm, self.thickness_mm], dtype=np.float64)


def draw_geometry(
    rng: np.random.Generator,
    cfg: dict[str, Any],
    *,
    factor: int | None = None,
    noise_std: float | None = None,
) -> GeometryParams:
    """Draw one acquisition from the ``augment`` section (``inplane_mm``, ``thickness_mm``, ...).

    With ``factor`` (a student's or the screening's LR@k patch) the slices are ``factor`` times
    the in-plane voxel (at least 1 mm) thick, so the predictor would route the scan to the
    student for ``factor``; otherwise the thickness is drawn from ``thickness_mm``. A share
    ``oblique_p`` of the stacks is tilted against the anatomy, about a random axis (uniform on
    the sphere) by up to ``oblique_deg``; the others are aligned with it, as stacks planned on
    the anatomy are (and cost no 3-D interpolation). ``noise_std`` defaults to
    ``geometry_noise_std``. The same number of values is drawn whatever the outcome.
    """
    u = rng.random(8)
    axis = rng.normal(size=3)
    seed = int(rng.integers(0, 2**31 - 1))
    inplane = float(cfg["inplane_mm"][0] + u[0] * (cfg["inplane_mm"][1] - cfg["inplane_mm"][0]))
    if factor is not None:
        thickness = float(factor) * max(inplane, 1.0)
    else:
        thickness = float(cfg["thickness_mm"][0] + u[1] * (cfg["thickness_mm"][1] - cfg["thickness_mm"][0]))
    profiles = list(cfg["slice_profiles"])
    profile = str(profiles[min(int(u[2] * len(profiles)), len(profiles) - 1)])
    norm = float(np.linalg.norm(axis))
    tilted = u[7] < float(cfg["oblique_p"])
    angle = math.radians(float(cfg["oblique_deg"])) * float(u[3]) if tilted else 0.0
    rotvec = axis / norm * angle if norm > 1e-9 else np.zeros(3)
    return GeometryParams(
        inplane_mm=inplane,
        thickness_mm=thickness,
        profile=profile,
        rotation=Rotation.from_rotvec(rotvec).as_matrix(),
        phase=(float(u[4]), float(u[5]), float(u[6])),
        noise_std=float(cfg["geometry_noise_std"] if noise_std is None else noise_std),
        noise_seed=seed,
    )


# ----------------------------------------------------------------------------------------------
# Per-axis geometry


@dataclass(frozen=True)
class _Axis:
    """One axis of the acquisition: sample positions and the 1-mm span they need (output-grid mm)."""

    samples: np.ndarray  # acquisition sample centres
    lo: int  # first 1-mm position of the rotated HR grid (≤ 0)
    hi: int  # last 1-mm position (≥ n_out - 1)


def _psf_half_width(width: float, profile: str) -> float:
    return 3.0 * width * _FWHM_TO_SIGMA if profile == "gaussian" else width / 2.0


def _axis_geometry(n_out: int, spacing: float, phase: float, width: float, profile: str) -> _Axis:
    first = phase * spacing
    j0 = math.floor((-_EXTRA_SAMPLES * spacing - first) / spacing)
    j1 = math.ceil((n_out - 1 + _EXTRA_SAMPLES * spacing - first) / spacing)
    samples = first + spacing * np.arange(j0, j1 + 1, dtype=np.float64)
    half = _psf_half_width(width, profile) + 0.5
    return _Axis(samples=samples, lo=math.floor(samples[0] - half), hi=math.ceil(samples[-1] + half))


def _psf_matrix(ax: _Axis, width: float, profile: str) -> np.ndarray:
    """``(n_samples, n_hr)``: each sample's average of the 1-mm voxels at ``ax.lo … ax.hi``.

    Voxel ``i`` covers ``[i - 0.5, i + 0.5]``; its weight is its overlap with the box (``box``,
    ``thin``) or the integral of the Gaussian over it (``gaussian``, FWHM ``width``).
    """
    pos = np.arange(ax.lo, ax.hi + 1, dtype=np.float64)
    lo_edge = pos[None, :] - 0.5 - ax.samples[:, None]
    hi_edge = lo_edge + 1.0
    if profile == "gaussian":
        scale = math.sqrt(2.0) * max(width * _FWHM_TO_SIGMA, 1e-6)
        w = 0.5 * (special.erf(hi_edge / scale) - special.erf(lo_edge / scale))
    else:
        w = np.clip(np.minimum(hi_edge, width / 2.0) - np.maximum(lo_edge, -width / 2.0), 0.0, None)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _reconstruction_matrix(ax: _Axis, n_out: int, spacing: float) -> np.ndarray:
    """``(n_out, n_samples)`` cubic B-spline interpolation (with prefilter) at the output voxels.

    Interpolating the identity gives the weights: spline interpolation is linear, and along the
    second axis it is evaluated at its knots, where it reproduces the data exactly.
    """
    n = len(ax.samples)
    coords = (np.arange(n_out, dtype=np.float64) - ax.samples[0]) / spacing
    grid = np.meshgrid(coords, np.arange(n, dtype=np.float64), indexing="ij")
    return ndimage.map_coordinates(np.eye(n), grid, order=3, mode="nearest").astype(np.float32)


def _along(data: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Contract ``weights`` (n_new, n_old) with ``data`` along ``axis``."""
    return np.moveaxis(np.tensordot(weights, data, axes=([1], [axis])), 0, axis)


# ----------------------------------------------------------------------------------------------
# Rotation of the HR anatomy


def source_shape(out_shape: Sequence[int], params: GeometryParams) -> tuple[int, int, int]:
    """Size of the HR patch (cut around the centre voxel) that the acquisition of ``out_shape`` reads.

    Covers the rotated 1-mm grid with its margins plus the cubic spline's 2 voxels, so no sample
    falls outside it (the volume's own border is still zero-padded by the caller's cut).
    """
    axes = _axes(out_shape, params)
    centre = np.asarray(out_shape) // 2
    half = np.array([max(centre[a] - ax.lo, ax.hi - centre[a]) for a, ax in enumerate(axes)], dtype=np.float64)
    reach = np.abs(params.rotation) @ half + 3.0
    return tuple(int(2 * math.ceil(r) + 1) for r in reach)  # type: ignore[return-value]


def _psfs(params: GeometryParams) -> list[tuple[float, str]]:
    """``(width mm, profile)`` of the point-spread function along X, Y, Z: box pixels in-plane."""
    slice_width = 1.0 if params.profile == "thin" else params.thickness_mm
    return [(params.inplane_mm, "box"), (params.inplane_mm, "box"), (slice_width, params.profile)]


def _axes(out_shape: Sequence[int], params: GeometryParams) -> list[_Axis]:
    return [
        _axis_geometry(int(n), float(s), float(ph), w, prof)
        for n, s, ph, (w, prof) in zip(out_shape, params.spacing, params.phase, _psfs(params), strict=True)
    ]


def rotate_patch(
    src: np.ndarray,
    out_shape: Sequence[int],
    rotation: np.ndarray,
    order: int,
    pad_lo: Sequence[int] = (0, 0, 0),
    pad_hi: Sequence[int] = (0, 0, 0),
) -> np.ndarray:
    """Sample ``src`` (centre voxel at ``shape // 2``) on a 1-mm grid rotated by ``rotation`` about it.

    The result has ``out_shape`` plus ``pad_lo``/``pad_hi`` voxels per axis; its voxel
    ``pad_lo + out_shape // 2`` is the centre. ``order`` 3 (images) or 0 (labels, exact at the
    centre); samples past ``src`` take its nearest voxel.
    """
    centre_out = np.asarray(out_shape) // 2 + np.asarray(pad_lo)
    shape = tuple(int(n + a + b) for n, a, b in zip(out_shape, pad_lo, pad_hi, strict=True))
    rot = np.asarray(rotation, dtype=np.float64)
    centre_src = np.asarray(src.shape) // 2
    if np.allclose(rot, np.eye(3)):
        start = centre_src - centre_out
        if np.all(start >= 0) and np.all(start + shape <= np.asarray(src.shape)):
            return np.array(src[tuple(slice(int(s), int(s) + n) for s, n in zip(start, shape, strict=True))])
    offset = centre_src - rot @ centre_out
    if order > 1:  # the spline prefilter in float32: half the time of scipy's float64 default
        src = ndimage.spline_filter(src, order, output=np.float32, mode="nearest")
    return ndimage.affine_transform(
        src, rot, offset=offset, output_shape=shape, order=order, mode="nearest", prefilter=False
    )


# ----------------------------------------------------------------------------------------------
# The whole chain


def acquire(src: np.ndarray, out_shape: Sequence[int], params: GeometryParams) -> tuple[np.ndarray, np.ndarray]:
    """``(anatomy, acquired)``: the ``out_shape`` 1-mm patch rotated by ``params``, and as acquired.

    ``src`` is the HR patch around the centre voxel, at least :func:`source_shape` in size.
    ``anatomy`` is the rotated HR patch without acquisition (a teacher's input next to a
    student's ``acquired`` one); ``acquired`` went through steps 2-4 of the module docstring.
    Both are float32 on the same grid.
    """
    axes = _axes(out_shape, params)
    pad_lo = [-ax.lo for ax in axes]
    pad_hi = [ax.hi - (int(n) - 1) for n, ax in zip(out_shape, axes, strict=True)]
    data = rotate_patch(src, out_shape, params.rotation, 3, pad_lo, pad_hi).astype(np.float32, copy=False)
    anatomy = data[tuple(slice(lo, lo + int(n)) for lo, n in zip(pad_lo, out_shape, strict=True))]
    reference = float(np.percentile(np.abs(anatomy), NOISE_REFERENCE_PERCENTILE)) or 1.0
    recon = [
        _reconstruction_matrix(ax, int(n), float(sp)) for ax, n, sp in zip(axes, out_shape, params.spacing, strict=True)
    ]
    psfs = [_psf_matrix(ax, w, prof) for ax, (w, prof) in zip(axes, _psfs(params), strict=True)]
    # Acquisition and reconstruction are linear, so signal and noise go through them apart: the
    # signal through one fused (n_out, n_hr) matrix per axis, the noise (drawn on the acquisition
    # samples) through the reconstruction only. Axes that shrink the data most go first.
    acquired = _along_all(data, [u @ d for u, d in zip(recon, psfs, strict=True)])
    if params.noise_std > 0:
        shape = tuple(len(ax.samples) for ax in axes)
        noise = add_noise(
            np.zeros(shape, np.float32), params.noise_std, reference=reference, kind="gaussian", rng=params.noise_seed
        )
        acquired = acquired + _along_all(noise, recon)
    return np.ascontiguousarray(anatomy), np.ascontiguousarray(acquired, dtype=np.float32)


def _along_all(data: np.ndarray, weights: Sequence[np.ndarray]) -> np.ndarray:
    """Apply one ``(n_new, n_old)`` matrix per axis, the most shrinking first (fewest operations)."""
    for a in sorted(range(len(weights)), key=lambda k: weights[k].shape[0] / weights[k].shape[1]):
        data = _along(data, weights[a], a)
    return data
