"""A T2*-like MNI ICBM152 2009a template, made from its tissue maps as the simulator does.

Registration compares the scan with the template by mutual information, which tolerates any
monotone intensity mapping but still works best when the two images share their tissue
ordering. On T2*-weighted GRE and SWI magnitude CSF is brightest and grey matter brighter
than white matter (:mod:`plkd.synth.contrast`), so the template is the tissue mix
``wm + GREY * gm + CSF * csf`` (white matter = 1) with mid-range values of the simulator's
per-subject draws. The tissue maps ship at 2 mm (``data/``), enough for a 3-4 mm registration.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from plkd.errors import PLKDError
from plkd.location.atlas import DATA_DIR, TISSUE_FILE

#: Grey-matter and CSF signal relative to white matter (middle of the simulated T2*/SWI ranges).
GREY = 1.25
CSF = 1.7


@dataclass(frozen=True)
class Template:
    """T2*-like image and brain mask (``[i, j, k]``, float32 / bool) with their voxel-to-RAS affine."""

    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """The shipped 2 mm template (cached); raises :class:`PLKDError` when the package lacks it."""
    path = DATA_DIR / TISSUE_FILE
    if not path.is_file():
        raise PLKDError(f"the MNI tissue maps {path} are missing; reinstall plkd")
    img = nib.load(str(path))
    maps = np.asarray(img.dataobj, dtype=np.float32) / 255.0
    gm, wm, csf = maps[..., 0], maps[..., 1], maps[..., 2]
    image = (wm + np.float32(GREY) * gm + np.float32(CSF) * csf).astype(np.float32)
    return Template(image=image, mask=(gm + wm + csf) >= 0.5, affine=np.asarray(img.affine, dtype=np.float64))
