"""Microbleeds: how many, how large, where, and how they darken the image.

Counts are heavy-tailed (many subjects with none or a few, some with dozens), diameters follow
the published distribution of real microbleeds (median 2.7 mm, 5-95 % 1.4-4.8 mm, up to 10 mm)
and locations the published regional frequencies, grouped into the MARS classes.

Two signal models, both integrated over each voxel by 3×3×3 sub-samples (partial volume):

- ``gaussian``: a Gaussian-shaped signal drop (common practice for synthetic microbleeds);
- ``dipole``: a sphere of radius ``a`` with susceptibility ``Δχ`` dephases the surrounding
  signal, ``ΔB = B0·Δχ/3·(a/r)³·(3cos²θ − 1)``, voxel magnitude ``|mean exp(−iγ·ΔB·TE)|``; the
  blooming grows with B0, TE and Δχ. The deposit itself gives (almost) no signal.

The label is the visible blob: voxels whose signal drops by at least :data:`LABEL_DROP`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plkd.synth.anatomy import MARS_CLASS, REGION_CODE, WarpedAnatomy
from plkd.synth.domain import STANDARD, Domain
from plkd.synth.grid import SynthGrid

#: Relative signal drop that makes a voxel part of a microbleed's visible (labelled) blob.
LABEL_DROP = 0.3

#: Regional frequencies of microbleeds in published series (white matter split subcortical/deep).
REGION_WEIGHTS: dict[str, float] = {
    "subcortical_wm": 0.30,
    "deep_wm": 0.10,
    "cortex": 0.33,
    "cerebellum": 0.08,
    "basal_ganglia": 0.08,
    "thalamus": 0.05,
    "brainstem": 0.04,
}

MODELS = ("gaussian", "dipole")
MAX_DIAMETER_MM = 10.0
GYROMAGNETIC = 2.0 * np.pi * 42.577e6  # rad / s / T
# Signal left inside a haemosiderin deposit (very short T2*).
_INSIDE = 0.03
_SUB = np.array([-1.0, 0.0, 1.0]) / 3.0


@dataclass
class Microbleed:
    """One microbleed in subject space (world mm)."""

    centre: np.ndarray
    diameter: float  # intended visible (blooming) diameter, mm
    region: str
    params: dict[str, float] = field(default_factory=dict)

    @property
    def location(self) -> str:
        """MARS class: lobar, deep or infratentorial."""
        return MARS_CLASS[self.region]


def draw_count(rng: np.random.Generator) -> int:
    """Heavy-tailed microbleed count: ~25 % none, ~45 % 1-3, ~20 % 4-10, ~10 % 11-40."""
    u = rng.uniform()
    if u < 0.25:
        return 0
    if u < 0.70:
        return int(rng.integers(1, 4))
    if u < 0.90:
        return int(rng.integers(4, 11))
    return int(np.round(np.exp(rng.uniform(np.log(11), np.log(40)))))


def draw_diameter(rng: np.random.Generator, domain: Domain = STANDARD) -> float:
    """Visible diameter (mm): median 2.7, 5-95 % ≈ 1.4-4.8, a thin tail up to 10 mm.

    The published range is skewed (1.4 is further below the median than 4.8 is above it in log
    terms), so the log-diameter is a split normal: sigma 0.40 below the median, 0.35 above.
    A ``domain`` with ``large_share > 0`` first draws that share log-uniformly over its
    ``large_range_mm`` (the whole definition), so large microbleeds are common in training.
    """
    if domain.large_share > 0 and rng.uniform() < domain.large_share:
        lo, hi = domain.large_range_mm
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    if rng.uniform() < 0.01:
        return float(rng.uniform(4.8, MAX_DIAMETER_MM))
    z = rng.standard_normal()
    return float(np.clip(2.7 * np.exp((0.40 if z < 0 else 0.35) * z), 1.0, MAX_DIAMETER_MM))


def place_microbleeds(
    rng: np.random.Generator,
    n: int,
    anat: WarpedAnatomy,
    grid: SynthGrid,
    avoid: list[tuple[np.ndarray, float]],
    max_tries: int = 400,
    domain: Domain = STANDARD,
) -> list[Microbleed]:
    """Choose ``n`` non-overlapping microbleeds in parenchyma with realistic regions and sizes.

    ``avoid`` lists (centre, radius) of foci (calcifications) they must keep clear of. Each
    microbleed is at least half surrounded by parenchyma and clear of the brain edge.
    """
    names = list(REGION_WEIGHTS)
    weights = np.array([REGION_WEIGHTS[r] for r in names])
    weights /= weights.sum()
    candidates = {r: np.flatnonzero(anat.region.ravel() == REGION_CODE[r]) for r in names}
    h = grid.fine_spacing
    gap = 1.0 + 2.0 * float(grid.spacing.max())  # keeps labelled blobs apart even on thick slices
    tissue = anat.gm + anat.wm
    out: list[Microbleed] = []
    for _ in range(n):
        for _try in range(max_tries):
            region = names[int(rng.choice(len(names), p=weights))]
            if candidates[region].size == 0:
                continue
            diameter = draw_diameter(rng, domain)
            flat = int(candidates[region][rng.integers(candidates[region].size)])
            idx = np.array(np.unravel_index(flat, anat.region.shape))
            centre = grid.lo + (idx + 0.5 + rng.uniform(-0.5, 0.5, 3)) * h
            radius = diameter / 2.0
            if any(np.linalg.norm(centre - m.centre) < radius + m.diameter / 2.0 + gap for m in out):
                continue
            if any(np.linalg.norm(centre - p) < radius + r + gap for p, r in avoid):
                continue
            if not _surrounded(tissue, anat.mask, idx, radius + 1.0, h):
                continue
            out.append(Microbleed(centre=centre, diameter=diameter, region=region))
            break
    return out


def _surrounded(tissue: np.ndarray, mask: np.ndarray, idx: np.ndarray, radius: float, h: np.ndarray) -> bool:
    """Mostly parenchyma around the centre (≥ half) and well inside the brain mask."""
    half = np.ceil(radius / h).astype(int)
    lo, hi = idx - half, idx + half + 1
    if np.any(lo < 0) or np.any(hi > np.array(tissue.shape)):
        return False
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    offs = np.meshgrid(*[np.arange(-k, k + 1) * s for k, s in zip(half, h, strict=True)], indexing="ij")
    ball = offs[0] ** 2 + offs[1] ** 2 + offs[2] ** 2 <= radius**2
    if tissue[tuple(idx)] < 0.6:
        return False
    return float(tissue[sl][ball].mean()) >= 0.55 and float(mask[sl][ball].min()) >= 0.99


def _subsamples(grid: SynthGrid, centre: np.ndarray, half_mm: float) -> tuple[tuple[slice, ...], list[np.ndarray]]:
    """The fine-grid box around ``centre`` and its 3×3×3 sub-sample offsets from the centre (mm)."""
    h = grid.fine_spacing
    c = grid.fine_index(centre)[0]
    lo = np.maximum(np.floor(c - half_mm / h).astype(int), 0)
    hi = np.minimum(np.ceil(c + half_mm / h).astype(int) + 1, np.array(grid.fine_shape))
    axes = []
    for a in range(3):
        vox = grid.lo[a] + (np.arange(lo[a], hi[a]) + 0.5) * h[a] - centre[a]
        axes.append((vox[:, None] + _SUB[None, :] * h[a]).ravel())  # (n*3,)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    return box, axes


def _voxel_mean(values: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    x, y, z = shape
    return values.reshape(x, 3, y, 3, z, 3).mean(axis=(1, 3, 5))


def _gaussian_factor(grid: SynthGrid, centre: np.ndarray, sigma: float, depth: float):
    box, axes = _subsamples(grid, centre, 4.0 * sigma + float(grid.fine_spacing.max()))
    g = [np.exp(-(a**2) / (2.0 * sigma**2)) for a in axes]
    drop = depth * g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    shape = tuple(len(a) // 3 for a in axes)
    return box, (1.0 - _voxel_mean(drop, shape)).astype(np.float32)  # type: ignore[arg-type]


def _generalised_factor(grid: SynthGrid, centre: np.ndarray, scale: float, beta: float, depth: float):
    """``1 - depth·exp(-(r/scale)^beta)`` voxel-averaged: beta 2 is a Gaussian, larger is a sharper edge."""
    reach = scale * float(np.log(depth / 0.005)) ** (1.0 / beta) + float(grid.fine_spacing.max())
    box, axes = _subsamples(grid, centre, reach)
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    r = np.sqrt(x * x + y * y + z * z)
    drop = depth * np.exp(-((r / scale) ** beta))
    shape = tuple(len(a) // 3 for a in axes)
    return box, (1.0 - _voxel_mean(drop, shape)).astype(np.float32)  # type: ignore[arg-type]


def _dipole_factor(grid: SynthGrid, centre: np.ndarray, radius: float, phase: float, half_mm: float):
    """Voxel magnitude around a magnetised sphere; ``phase`` = γ·B0·Δχ/3·TE (rad)."""
    box, axes = _subsamples(grid, centre, half_mm)
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    r2 = x * x + y * y + z * z
    r2s = np.maximum(r2, 1e-12)
    cos2 = z * z / r2s
    phi = phase * (radius**3 / r2s**1.5) * (3.0 * cos2 - 1.0)
    sig = np.where(r2 <= radius * radius, _INSIDE + 0j, np.exp(-1j * phi))
    shape = tuple(len(a) // 3 for a in axes)
    return box, np.abs(_voxel_mean(sig, shape)).astype(np.float32)  # type: ignore[arg-type]


def _visible_diameter(factor: np.ndarray, voxel_volume: float) -> float:
    n = int(np.count_nonzero(factor <= 1.0 - LABEL_DROP))
    return float((6.0 * n * voxel_volume / np.pi) ** (1.0 / 3.0))


def render_microbleed(
    mb: Microbleed,
    grid: SynthGrid,
    model: str,
    rng: np.random.Generator,
    field_t: float,
    te_ms: float,
    domain: Domain = STANDARD,
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Multiplicative signal factor of one microbleed on its fine-grid box; fills ``mb.params``.

    With a ``domain`` that mixes models (``dipole_share``), each microbleed draws its own: the
    dipole model, or a generalised-Gaussian drop with random edge sharpness and peak drop whose
    visible radius (drop ≥ :data:`LABEL_DROP`) is the wanted one.
    """
    h = grid.fine_spacing
    vvol = float(np.prod(h))
    radius = mb.diameter / 2.0
    if domain.dipole_share is not None:
        if rng.uniform() >= domain.dipole_share:
            depth = float(rng.uniform(*domain.peak_drop))
            beta = float(rng.uniform(*domain.edge_exponent))
            scale = radius / float(np.log(depth / LABEL_DROP)) ** (1.0 / beta)
            mb.params = {"model": "generalised_gaussian", "depth": round(depth, 3), "edge_exponent": round(beta, 2)}
            return _generalised_factor(grid, mb.centre, scale, beta, depth)
        model = "dipole"
    if model == "gaussian":
        depth = float(rng.uniform(0.6, 0.95))
        sigma = radius / np.sqrt(2.0 * np.log(depth / LABEL_DROP))
        mb.params = {"model": "gaussian", "depth": round(depth, 3), "sigma_mm": round(float(sigma), 3)}
        return _gaussian_factor(grid, mb.centre, float(sigma), depth)
    if model != "dipole":
        raise ValueError(f"unknown microbleed model {model!r}")
    chi_ppm = float(np.exp(rng.uniform(*np.log(domain.chi_ppm))))
    phase = GYROMAGNETIC * field_t * chi_ppm * 1e-6 / 3.0 * te_ms * 1e-3
    half = 1.6 * radius + 2.0 * float(h.max())
    # Deposit radius for the wanted blooming size: start from the dephasing estimate
    # r_bloom⁴ ≈ 4.5·phase·a³·h, then correct by a few secant-like steps on the rendered blob.
    a = float(min(radius, (radius**4 / (4.5 * phase * float(h.mean()))) ** (1.0 / 3.0)))
    best: tuple[float, float] | None = None
    for _ in range(5):
        box, fac = _dipole_factor(grid, mb.centre, a, phase, half)
        got = _visible_diameter(fac, vvol)
        err = abs(np.log(max(got, 1e-3) / mb.diameter))
        if best is None or err < best[0]:
            best = (err, a)
        if err < 0.08:
            break
        a = float(np.clip(a * (mb.diameter / max(got, 0.3)) ** 1.2, 0.05, radius))
    a = best[1]  # type: ignore[index]
    box, fac = _dipole_factor(grid, mb.centre, a, phase, half)
    mb.params = {
        "model": "dipole",
        "deposit_radius_mm": round(a, 3),
        "chi_ppm": round(chi_ppm, 3),
        "field_t": field_t,
        "te_ms": round(te_ms, 2),
    }
    return box, fac


def microbleed_record(mb: Microbleed) -> dict[str, Any]:
    """Fields common to every manifest record of a microbleed (the caller adds ids and geometry)."""
    return {"region": mb.region, "location": mb.location, "target_diameter_mm": round(mb.diameter, 2), **mb.params}
