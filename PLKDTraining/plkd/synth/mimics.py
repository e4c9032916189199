"""Microbleed mimics, darkened into the image but never labelled.

- **veins**: thin dark tubes along random smooth curves that continue across slices; about half
  run through-plane, so an axial (and above all a thick) slice shows a dark dot; SWI shows more
  and darker veins;
- **physiological iron**: diffuse, bilateral, symmetric hypointensity of the globus pallidus,
  putamen, red nucleus, substantia nigra and dentate nucleus;
- **calcifications**: small dark foci at typical sites (choroid plexus, pineal, pallidum), often
  symmetric (magnitude only: their opposite phase sign is not simulated);
- **air-tissue dropout**: broad signal loss near the orbitofrontal and inferior temporal surface;
- **cavernoma-like lesions** (``wide`` domain only): dark lobulated lesions of 11-20 mm, larger
  than the 10 mm that defines a microbleed, so a detector must learn to leave them unlabelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from plkd.synth.anatomy import IRON_NUCLEI, LANDMARKS, REGION_CODE, Deformation, WarpedAnatomy
from plkd.synth.domain import STANDARD, Domain
from plkd.synth.grid import SynthGrid
from plkd.synth.lesions import Microbleed


@dataclass
class Mimic:
    """A mimic in subject space; ``points`` (N, 3) for a vein, else a blob of ``size`` mm (sigma)."""

    kind: str
    centre: np.ndarray
    depth: float
    size: float
    points: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


def site_mimics(
    rng: np.random.Generator, deformation: Deformation, modality: str, domain: Domain = STANDARD
) -> tuple[list[Mimic], float]:
    """Calcifications, air-tissue dropout and iron records at anatomical sites; returns them and the iron depth."""
    swi = modality == "SWI"
    out: list[Mimic] = []

    def at(name: str, jitter: float) -> np.ndarray:
        p = np.asarray(LANDMARKS[name], dtype=np.float64) + rng.uniform(-jitter, jitter, 3)
        return deformation.to_subject(p)[0]

    def calc(site: str, side: str | None) -> None:
        name = site if side is None else f"{site}_{side}"
        lo, hi = domain.calcification_radius
        radius = float(rng.uniform(lo, max(hi, 2.5) if site == "pineal" else hi))
        out.append(
            Mimic(
                "calcification",
                at(name, 1.5),
                float(rng.uniform(0.55, 0.9)),
                0.6 * radius,
                info={"site": site, "side": side},
            )
        )

    for site, p_both, p_one in (("choroid_plexus", 0.4, 0.15), ("globus_pallidus", 0.08, 0.04)):
        u = rng.uniform()
        if u < p_both:
            calc(site, "left")
            calc(site, "right")
        elif u < p_both + p_one:
            calc(site, str(rng.choice(["left", "right"])))
    if rng.uniform() < 0.35:
        calc("pineal", None)

    for site, prob in (("orbitofrontal", 0.7), ("inferior_temporal", 0.5)):
        if rng.uniform() < prob:
            base = float(rng.uniform(0.25, 0.7 if swi else 0.6))
            for side in ("left", "right"):
                depth = float(np.clip(base * rng.uniform(0.8, 1.2), 0.0, 0.85))
                out.append(
                    Mimic(
                        "air_tissue_dropout",
                        at(f"{site}_{side}", 3.0),
                        depth,
                        float(rng.uniform(6.0, 10.0)),
                        info={"site": site, "side": side},
                    )
                )

    iron_depth = float(rng.uniform(0.2, 0.5) if swi else rng.uniform(0.08, 0.3))
    for structure, ((cx, cy, cz), _radii), weight in ((k, v[0], v[1]) for k, v in IRON_NUCLEI.items()):
        for side, sx in (("left", -1.0), ("right", 1.0)):
            centre = deformation.to_subject(np.array([sx * cx, cy, cz]))[0]
            out.append(Mimic("iron", centre, iron_depth * weight, 0.0, info={"structure": structure, "side": side}))
    return out, iron_depth


def draw_veins(
    rng: np.random.Generator,
    anat: WarpedAnatomy,
    grid: SynthGrid,
    modality: str,
    microbleeds: list[Microbleed],
    centre: np.ndarray,
    domain: Domain = STANDARD,
) -> list[Mimic]:
    """Random smooth dark tubes in the white matter, clear of every microbleed."""
    swi = modality == "SWI"
    n = int(rng.integers(15, 46) if swi else rng.integers(6, 21))
    n = int(round(n * domain.vein_count_scale))
    radius_range = domain.vein_radius_swi if swi else domain.vein_radius_t2s
    wm = np.flatnonzero(np.isin(anat.region.ravel(), [REGION_CODE["subcortical_wm"], REGION_CODE["deep_wm"]]))
    if wm.size == 0:
        return []
    h = grid.fine_spacing
    gap = 1.0 + 2.0 * float(grid.spacing.max())
    tissue = anat.gm + anat.wm
    veins: list[Mimic] = []
    for _ in range(n * 4):
        if len(veins) >= n:
            break
        radius = float(rng.uniform(*radius_range))
        start = grid.lo + (np.array(np.unravel_index(int(wm[rng.integers(wm.size)]), anat.region.shape)) + 0.5) * h
        through = rng.uniform() < (0.35 if swi else 0.5)
        if through:
            tilt = rng.normal(0.0, 0.25, 2)
            d = np.array([tilt[0], tilt[1], rng.choice([-1.0, 1.0])])
        else:  # medullary veins run radially, roughly in-plane
            d = (start - centre) * np.array([1.0, 1.0, 0.3]) + rng.normal(0.0, 5.0, 3)
        d /= np.linalg.norm(d)
        length = float(rng.uniform(12.0, 50.0))
        pts = [start]
        step = 0.4
        for _s in range(int(length / step)):
            d = d + rng.normal(0.0, 0.03, 3)
            d /= np.linalg.norm(d)
            p = pts[-1] + step * d
            ijk = np.floor((p - grid.lo) / h).astype(int)
            if np.any(ijk < 0) or np.any(ijk >= np.array(grid.fine_shape)):
                break
            if anat.mask[tuple(ijk)] < 0.5 or tissue[tuple(ijk)] < 0.3:
                break
            if any(np.linalg.norm(p - m.centre) < m.diameter / 2.0 + radius + gap for m in microbleeds):
                break
            pts.append(p)
        if len(pts) * step < 8.0:
            continue
        arr = np.array(pts)
        depth = float(rng.uniform(0.45, 0.85) if swi else rng.uniform(0.2, 0.55))
        info = {
            "orientation": "through-plane" if through else "in-plane",
            "length_mm": round(len(pts) * step, 1),
            "radius_mm": round(radius, 2),
        }
        veins.append(Mimic("vein", arr[len(arr) // 2], depth, 0.8 * radius, points=arr, info=info))
    return veins


def draw_cavernomas(
    rng: np.random.Generator,
    anat: WarpedAnatomy,
    grid: SynthGrid,
    microbleeds: list[Microbleed],
    domain: Domain = STANDARD,
) -> list[Mimic]:
    """At most one cavernoma-like lesion (probability ``domain.cavernoma_p``): 3-6 dark lobes
    within a sphere of 11-20 mm in parenchyma, clear of every microbleed. Never labelled."""
    if domain.cavernoma_p <= 0 or rng.uniform() >= domain.cavernoma_p:
        return []
    tissue = np.flatnonzero((anat.gm + anat.wm).ravel() > 0.8)
    if tissue.size == 0:
        return []
    h = grid.fine_spacing
    gap = 2.0 + 2.0 * float(grid.spacing.max())
    for _ in range(50):
        diameter = float(rng.uniform(*domain.cavernoma_diameter_mm))
        idx = np.array(np.unravel_index(int(tissue[rng.integers(tissue.size)]), anat.mask.shape))
        centre = grid.lo + (idx + 0.5) * h
        half = np.ceil(diameter / 2.0 / h).astype(int)
        if np.any(idx - half < 0) or np.any(idx + half >= np.array(anat.mask.shape)):
            continue
        if anat.mask[tuple(slice(int(a - b), int(a + b + 1)) for a, b in zip(idx, half, strict=True))].min() < 0.99:
            continue
        if any(np.linalg.norm(centre - m.centre) < diameter / 2.0 + m.diameter / 2.0 + gap for m in microbleeds):
            continue
        n_lobes = int(rng.integers(3, 7))
        lobes = centre + rng.normal(0.0, diameter / 6.0, (n_lobes, 3))
        info = {"diameter_mm": round(diameter, 1), "lobes": n_lobes}
        return [Mimic("cavernoma", centre, float(rng.uniform(0.5, 0.9)), diameter / 5.0, points=lobes, info=info)]
    return []


def render_mimics(
    signal_factor: np.ndarray, mimics: list[Mimic], grid: SynthGrid, anat: WarpedAnatomy, iron_depth: float
) -> None:
    """Multiply the darkening of every mimic into ``signal_factor`` (fine grid, in place)."""
    if iron_depth > 0:
        signal_factor *= 1.0 - np.float32(iron_depth) * anat.iron
    for m in mimics:
        if m.kind == "vein":
            _render_tube(signal_factor, m, grid)
        elif m.kind in ("calcification", "air_tissue_dropout"):
            _render_blob(signal_factor, m, grid)
        elif m.kind == "cavernoma":
            for lobe in m.points if m.points is not None else [m.centre]:
                _render_blob(signal_factor, Mimic("lobe", lobe, m.depth, m.size), grid)


def _render_blob(out: np.ndarray, m: Mimic, grid: SynthGrid) -> None:
    h = grid.fine_spacing
    # A voxel averages the blob over its extent: widen by the box-car variance, keep the integral.
    sig = np.sqrt(m.size**2 + h**2 / 12.0)
    depth = m.depth * float(np.prod(m.size / sig))
    c = grid.fine_index(m.centre)[0]
    lo = np.maximum(np.floor(c - 4 * sig / h).astype(int), 0)
    hi = np.minimum(np.ceil(c + 4 * sig / h).astype(int) + 1, np.array(grid.fine_shape))
    if np.any(hi <= lo):
        return
    g = [np.exp(-(((np.arange(lo[a], hi[a]) - c[a]) * h[a]) ** 2) / (2 * sig[a] ** 2)) for a in range(3)]
    drop = depth * g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] *= (1.0 - drop).astype(np.float32)


def _render_tube(out: np.ndarray, m: Mimic, grid: SynthGrid) -> None:
    h = grid.fine_spacing
    sig = float(np.sqrt(m.size**2 + float(np.mean(h**2)) / 12.0))
    depth = m.depth * (m.size / sig) ** 2
    reach = 3.0 * sig
    pts = m.points if m.points is not None else m.centre[None]
    # Voxels within reach of the curve: small cubes around each curve point, deduplicated.
    k = np.ceil(reach / h).astype(int)
    offs = np.stack(np.meshgrid(*[np.arange(-a, a + 1) for a in k], indexing="ij"), axis=-1).reshape(-1, 3)
    base = np.round(grid.fine_index(pts)).astype(int)
    vox = np.unique((base[:, None, :] + offs[None, :, :]).reshape(-1, 3), axis=0)
    keep = np.all((vox >= 0) & (vox < np.array(grid.fine_shape)), axis=1)
    vox = vox[keep]
    if vox.size == 0:
        return
    world = grid.lo + (vox + 0.5) * h
    dist, _ = cKDTree(pts).query(world, distance_upper_bound=reach)
    near = np.isfinite(dist)
    vox, dist = vox[near], dist[near]
    factor = (1.0 - depth * np.exp(-(dist**2) / (2.0 * sig**2))).astype(np.float32)
    out[vox[:, 0], vox[:, 1], vox[:, 2]] *= factor
