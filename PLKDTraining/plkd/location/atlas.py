"""The shipped MARS region atlas on MNI ICBM152 2009a and point lookup.

The atlas is Sundaresan et al.'s MARS parcellation (MIT licence), brought from FSL's MNI152
onto ICBM152 2009a by ``scripts/convert_mars_atlas.py`` (see ``data/README.md`` for source,
licence and the measured difference between the two templates). Regions and their MARS class
follow Gregoire et al., Neurology 2009: lobes (cortex and subcortical white matter) are lobar;
basal ganglia, thalamus, internal/external capsule, corpus callosum and deep/periventricular
white matter are deep; brainstem and cerebellum are infratentorial.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from plkd.errors import PLKDError

DATA_DIR = Path(__file__).resolve().parent / "data"
ATLAS_FILE = "mars_icbm152_2009a.nii.gz"
TISSUE_FILE = "icbm152_2009a_tissue_2mm.nii.gz"
SIDECAR_FILE = "mars_icbm152_2009a.json"

#: Atlas label → region name (the published map's label order).
LABELS: dict[int, str] = {
    1: "brainstem",
    2: "cerebellum",
    3: "basal ganglia",
    4: "thalamus",
    5: "internal capsule",
    6: "external capsule",
    7: "corpus callosum",
    8: "deep white matter",
    9: "frontal",
    10: "parietal",
    11: "temporal",
    12: "occipital",
    13: "insula",
}

#: Region name → MARS class.
MARS_CLASS: dict[str, str] = {
    **{name: "infratentorial" for name in ("brainstem", "cerebellum")},
    **{
        name: "deep"
        for name in (
            "basal ganglia",
            "thalamus",
            "internal capsule",
            "external capsule",
            "corpus callosum",
            "deep white matter",
        )
    },
    **{name: "lobar" for name in ("frontal", "parietal", "temporal", "occipital", "insula")},
}

#: The location classes, in report order; "unknown" when a point cannot be placed.
CLASSES = ("lobar", "deep", "infratentorial", "unknown")

#: A point on an unlabelled voxel takes the nearest label within this distance (mm).
SNAP_MM = 3.0


@dataclass(frozen=True)
class Atlas:
    """Region labels (uint8, ``[i, j, k]``) on a 1 mm grid with its voxel-to-RAS (MNI mm) affine."""

    labels: np.ndarray
    affine: np.ndarray

    def lookup(self, points_mni: np.ndarray) -> list[str | None]:
        """Region name at each MNI point ``(N, 3)`` (RAS mm), or ``None`` outside the brain.

        A point on an unlabelled voxel (just outside the atlas brain) takes the nearest label
        within :data:`SNAP_MM`; farther out it is ``None``.
        """
        pts = np.atleast_2d(np.asarray(points_mni, dtype=np.float64))
        inv = np.linalg.inv(self.affine)
        vox = pts @ inv[:3, :3].T + inv[:3, 3]
        r = int(np.ceil(SNAP_MM))
        offsets = np.argwhere(np.ones((2 * r + 1,) * 3, dtype=bool)) - r
        dist = np.linalg.norm(offsets, axis=1)
        order = np.argsort(dist, kind="stable")
        offsets, dist = offsets[order], dist[order]
        offsets = offsets[dist <= SNAP_MM]
        shape = np.asarray(self.labels.shape)
        out: list[str | None] = []
        for v in vox:
            if not np.all(np.isfinite(v)):
                out.append(None)
                continue
            idx = np.round(v).astype(int) + offsets
            inside = np.all((idx >= 0) & (idx < shape), axis=1)
            values = self.labels[tuple(idx[inside].T)]
            hit = np.flatnonzero(values)
            out.append(LABELS.get(int(values[hit[0]])) if hit.size else None)
        return out


@functools.lru_cache(maxsize=1)
def load_atlas() -> Atlas:
    """The shipped atlas (cached); raises :class:`PLKDError` when the package lacks it."""
    path = DATA_DIR / ATLAS_FILE
    if not path.is_file():
        raise PLKDError(f"the MARS atlas {path} is missing; reinstall plkd")
    img = nib.load(str(path))
    return Atlas(np.asarray(img.dataobj, dtype=np.uint8), np.asarray(img.affine, dtype=np.float64))


def location_of(region: str | None) -> str:
    """MARS class of a region name; ``"unknown"`` for ``None`` or an unlisted name."""
    return MARS_CLASS.get(region or "", "unknown")
