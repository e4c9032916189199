"""MNI ICBM152 2009a anatomy, approximate regions, and a random smooth deformation per subject.

The T1, grey- and white-matter maps ship inside nilearn's wheel; they are found by path (no
nilearn import, which is slow) and cached in-process. Regions (cortex, subcortical and deep
white matter, basal ganglia, thalamus, brainstem, cerebellum, CSF) are approximated from the
tissue maps and MNI coordinates: good enough to place microbleeds with a realistic location
distribution, not an atlas.

A subject is the template seen through ``T(y) = c + A (y - c - t) + d(y)``: ``y`` is a point of
the subject (scanner) space, ``A`` a small rotation + anisotropic scaling, ``t`` a shift and
``d`` a smooth displacement of a few mm. Maps are pulled back through ``T`` onto the subject grid.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from plkd.errors import PLKDError
from plkd.synth.fields import SmoothField

#: Region codes of the region map.
REGIONS: dict[int, str] = {
    0: "background",
    1: "csf",
    2: "cortex",
    3: "subcortical_wm",
    4: "deep_wm",
    5: "basal_ganglia",
    6: "thalamus",
    7: "brainstem",
    8: "cerebellum",
}
REGION_CODE: dict[str, int] = {name: code for code, name in REGIONS.items()}

#: MARS location class of each region where a microbleed can sit.
MARS_CLASS: dict[str, str] = {
    "cortex": "lobar",
    "subcortical_wm": "lobar",
    "deep_wm": "deep",
    "basal_ganglia": "deep",
    "thalamus": "deep",
    "brainstem": "infratentorial",
    "cerebellum": "infratentorial",
}

#: White matter farther than this from the cortex counts as deep (periventricular, capsules, corpus callosum).
DEEP_WM_MM = 7.0

_MAP_NAME = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"

# Deep grey-matter structures as ellipsoids in MNI mm: (centre x (mirrored), y, z), radii.
_PUTAMEN = ((25.0, 2.0, 1.0), (5.0, 14.0, 9.0))
_PALLIDUM = ((19.0, -3.0, -1.0), (3.5, 7.0, 5.0))
_CAUDATE_HEAD = ((13.0, 13.0, 9.0), (4.5, 9.0, 8.0))
_CAUDATE_BODY = ((17.0, -6.0, 20.0), (3.0, 9.0, 4.0))
_THALAMUS = ((11.0, -18.0, 7.0), (7.0, 11.0, 7.0))
# Iron-rich nuclei (physiological iron, a microbleed mimic): structure -> (ellipsoid, weight).
IRON_NUCLEI: dict[str, tuple[tuple[tuple[float, float, float], tuple[float, float, float]], float]] = {
    "globus_pallidus": (_PALLIDUM, 1.0),
    "putamen": (_PUTAMEN, 0.45),
    "red_nucleus": (((5.0, -19.0, -8.0), (3.0, 3.0, 3.0)), 0.7),
    "substantia_nigra": (((11.0, -18.0, -12.0), (3.0, 6.0, 2.5)), 0.7),
    "dentate_nucleus": (((14.0, -57.0, -34.0), (5.0, 6.0, 4.0)), 0.8),
}

#: Landmarks (MNI mm) for mimics that sit at fixed anatomical sites.
LANDMARKS: dict[str, tuple[float, float, float]] = {
    "choroid_plexus_left": (-27.0, -42.0, 14.0),
    "choroid_plexus_right": (27.0, -42.0, 14.0),
    "pineal": (0.0, -31.0, 2.0),
    "globus_pallidus_left": (-19.0, -3.0, -1.0),
    "globus_pallidus_right": (19.0, -3.0, -1.0),
    # Air-tissue dropout centres lie just below the brain surface, near the sinuses and mastoids.
    "orbitofrontal_left": (-16.0, 36.0, -31.0),
    "orbitofrontal_right": (16.0, 36.0, -31.0),
    "inferior_temporal_left": (-44.0, -12.0, -47.0),
    "inferior_temporal_right": (44.0, -12.0, -47.0),
}


@dataclass(frozen=True)
class Template:
    """The cropped MNI maps (1 mm, axis-aligned) with derived region and iron maps."""

    mask: np.ndarray  # float32 0/1, brain (the T1 map is skull-stripped)
    gm: np.ndarray  # float32 grey-matter probability 0..1
    wm: np.ndarray  # float32 white-matter probability 0..1
    region: np.ndarray  # uint8 region codes (see REGIONS)
    iron: np.ndarray  # float32 0..1 relative physiological iron
    origin: np.ndarray  # world (MNI mm) of voxel (0, 0, 0)
    brain_lo: np.ndarray  # world bounding box of the brain
    brain_hi: np.ndarray
    centre: np.ndarray  # world centre of mass of the brain
    hull: np.ndarray  # (N, 3) world points whose convex hull holds the brain


def nilearn_data_dir() -> Path:
    """The folder of nilearn's bundled data, found without importing nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise PLKDError("the simulator needs the MNI maps shipped with nilearn: pip install plkd[synth]")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    missing = [n for n in ("t1", "gm", "wm") if not (folder / _MAP_NAME.format(n)).is_file()]
    if missing:
        raise PLKDError(
            f"nilearn at {folder.parent.parent} lacks the MNI ICBM152 2009a maps; reinstall it: pip install plkd[synth]"
        )
    return folder


def _ellipsoid(world: tuple[np.ndarray, np.ndarray, np.ndarray], centre, radii, mirror: bool = True) -> np.ndarray:
    x, y, z = world
    cx, cy, cz = centre
    rx, ry, rz = radii
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=bool)
    for sx in (-1.0, 1.0) if mirror and cx != 0 else (1.0,):
        out |= ((x - sx * cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0
    return out


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """Load, crop and annotate the MNI maps (cached: later calls are free)."""
    folder = nilearn_data_dir()
    imgs = {n: nib.load(str(folder / _MAP_NAME.format(n))) for n in ("t1", "gm", "wm")}
    affine = np.asarray(imgs["t1"].affine, dtype=np.float64)
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise PLKDError("unexpected MNI template geometry (expected 1 mm axis-aligned RAS)")
    t1 = np.asarray(imgs["t1"].dataobj)
    inside = t1 > 0
    idx = np.nonzero(inside)
    lo = np.array([i.min() for i in idx]) - 2
    hi = np.array([i.max() for i in idx]) + 3
    lo = np.maximum(lo, 0)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    mask = inside[sl].astype(np.float32)
    gm = np.asarray(imgs["gm"].dataobj)[sl].astype(np.float32) / 255.0
    wm = np.asarray(imgs["wm"].dataobj)[sl].astype(np.float32) / 255.0
    gm *= mask
    wm *= mask
    origin = affine[:3, 3] + lo
    axes = [origin[a] + np.arange(mask.shape[a], dtype=np.float32) for a in range(3)]
    world = np.meshgrid(*axes, indexing="ij", sparse=True)
    region = _region_map(mask, gm, wm, world)
    iron = _iron_map(world)
    pts = np.argwhere(inside[sl])
    brain_lo = origin + pts.min(axis=0)
    brain_hi = origin + pts.max(axis=0)
    centre = origin + pts.mean(axis=0)
    hull = origin + pts[ConvexHull(pts).vertices]
    return Template(mask, gm, wm, region, iron, origin, brain_lo, brain_hi, centre, hull)


def _region_map(mask: np.ndarray, gm: np.ndarray, wm: np.ndarray, world) -> np.ndarray:
    x, y, z = world
    tissue = gm + wm
    region = np.zeros(mask.shape, dtype=np.uint8)
    region[mask > 0] = REGION_CODE["csf"]
    parenchyma = (mask > 0) & (tissue >= 0.5)
    # Tentorium: highest near the midline, sloping down laterally and posteriorly.
    tent = -3.0 - 0.45 * np.abs(x) - 0.3 * np.maximum(0.0, -y - 60.0)
    below_tent = (z < tent) & (y < -36.0)
    brainstem = (np.abs(x) < 15.0) & (y > -46.0) & (y < -8.0) & (z < -4.0) & (z - 0.6 * (y + 46.0) < -2.0)
    # Medulla and lower pons run below the template's field of view near the midline.
    brainstem = brainstem | ((np.abs(x) < 13.0) & (y > -48.0) & (y < -18.0) & (z < -40.0))
    cerebellum = below_tent & ~brainstem
    grey = gm >= wm
    region[parenchyma & grey] = REGION_CODE["cortex"]
    region[parenchyma & ~grey] = REGION_CODE["subcortical_wm"]
    # Deep white matter: far from the cortex (periventricular, capsules, corpus callosum).
    bg = np.zeros(mask.shape, dtype=bool)
    for centre, radii in (_PUTAMEN, _PALLIDUM, _CAUDATE_HEAD, _CAUDATE_BODY):
        bg |= _ellipsoid(world, centre, radii)
    deep_grey = bg | _ellipsoid(world, *_THALAMUS)
    cortex = (gm >= 0.5) & ~below_tent & ~brainstem & ~deep_grey
    dist = ndimage.distance_transform_edt(~cortex)
    region[parenchyma & ~grey & (dist > DEEP_WM_MM)] = REGION_CODE["deep_wm"]
    region[parenchyma & bg] = REGION_CODE["basal_ganglia"]
    region[parenchyma & _ellipsoid(world, *_THALAMUS) & ~bg] = REGION_CODE["thalamus"]
    region[parenchyma & brainstem] = REGION_CODE["brainstem"]
    region[parenchyma & cerebellum] = REGION_CODE["cerebellum"]
    return region


def _iron_map(world) -> np.ndarray:
    shape = np.broadcast_shapes(*(w.shape for w in world))
    iron = np.zeros(shape, dtype=np.float32)
    for (centre, radii), weight in IRON_NUCLEI.values():
        iron = np.maximum(iron, weight * _ellipsoid(world, centre, radii).astype(np.float32))
    # Soft edges: physiological iron fades into the surrounding tissue.
    return ndimage.gaussian_filter(iron, 1.2).astype(np.float32)


@dataclass(frozen=True)
class Deformation:
    """Subject-to-template map ``T(y) = c + A (y - c - t) + d(y)`` (all in mm)."""

    centre: np.ndarray
    matrix: np.ndarray
    shift: np.ndarray
    disp: tuple[SmoothField, SmoothField, SmoothField]

    @classmethod
    def random(cls, rng: np.random.Generator, template: Template, strength: float = 1.0) -> Deformation:
        """A random deformation: rotation up to ~6°, scaling ±6 %, shift ±4 mm, displacement ~1-3 mm rms."""
        angles = np.deg2rad(rng.uniform(-6.0, 6.0, size=3) * strength)
        scale = 1.0 + rng.uniform(-0.06, 0.06, size=3) * strength
        matrix = _rotation(angles) @ np.diag(1.0 / scale)
        shift = rng.uniform(-4.0, 4.0, size=3) * strength
        lo = template.brain_lo - 20.0
        hi = template.brain_hi + 20.0
        rms = rng.uniform(1.0, 3.0) * strength
        disp = tuple(SmoothField.random(rng, lo, hi, order=4, rms=rms, decay=1.5) for _ in range(3))
        return cls(template.centre.copy(), matrix, shift, disp)  # type: ignore[arg-type]

    def to_template(self, points: np.ndarray) -> np.ndarray:
        """Map subject points ``(N, 3)`` to template (MNI) points."""
        p = np.atleast_2d(np.asarray(points, dtype=np.float64))
        d = np.stack([f.at(p) for f in self.disp], axis=1)
        return self.centre + (p - self.centre - self.shift) @ self.matrix.T + d

    def to_subject(self, points: np.ndarray, iterations: int = 8) -> np.ndarray:
        """Map template points ``(N, 3)`` into the subject (fixed-point inversion of ``T``)."""
        q = np.atleast_2d(np.asarray(points, dtype=np.float64))
        inv = np.linalg.inv(self.matrix)
        y = self.centre + self.shift + (q - self.centre) @ inv.T
        for _ in range(iterations):
            y = y - (self.to_template(y) - q) @ inv.T
        return y

    def subject_box(self, template: Template, margin: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
        """A subject-space box (mm) that holds the whole deformed brain."""
        y = self.to_subject(template.hull)
        return y.min(axis=0) - margin, y.max(axis=0) + margin


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class WarpedAnatomy:
    """Template maps pulled back onto a subject grid."""

    mask: np.ndarray  # float32 brain fraction 0..1
    gm: np.ndarray
    wm: np.ndarray
    region: np.ndarray  # uint8
    iron: np.ndarray


def warp_template(template: Template, deformation: Deformation, axes: list[np.ndarray]) -> WarpedAnatomy:
    """Sample the template maps at ``T(y)`` for every voxel centre ``y`` of the grid spanned by ``axes`` (mm)."""
    shape = tuple(len(a) for a in axes)
    c, m, t = deformation.centre, deformation.matrix, deformation.shift
    rel = [np.asarray(axes[j], dtype=np.float64) - c[j] - t[j] for j in range(3)]
    coords = np.empty((3, *shape), dtype=np.float32)
    for k in range(3):
        # Affine part by broadcasting three 1-D vectors, then the smooth displacement.
        comp = (
            (m[k, 0] * rel[0])[:, None, None] + (m[k, 1] * rel[1])[None, :, None] + (m[k, 2] * rel[2])[None, None, :]
        ).astype(np.float32)
        comp += deformation.disp[k].on_grid(*axes)
        comp += np.float32(c[k] - template.origin[k])  # template voxel index (1 mm, axis-aligned)
        coords[k] = comp

    def sample(arr: np.ndarray, order: int) -> np.ndarray:
        out = np.empty(shape, dtype=arr.dtype)
        ndimage.map_coordinates(arr, coords, output=out, order=order, mode="constant", cval=0, prefilter=False)
        return out

    return WarpedAnatomy(
        mask=sample(template.mask, 1),
        gm=sample(template.gm, 1),
        wm=sample(template.wm, 1),
        region=sample(template.region, 0),
        iron=sample(template.iron, 1),
    )
