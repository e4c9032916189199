"""The shipped test case and tiny model (``Testing/data``): paths, the planted microbleeds' centres, the voxels."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: A two-stage bundle of tiny networks (seconds on a CPU).
BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"
#: A small skull-stripped T2*-like scan with microbleeds planted at known places.
CASE = ROOT / "Testing" / "data" / "tiny-case" / "tiny_T2S.nii.gz"
#: The planted microbleeds' centres, RAS mm, shape (n, 3).
TRUTH = np.array(json.loads((CASE.parent / "truth.json").read_text())["centres_ras"])


def case_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The case's voxels (float32, as stored) and its 4x4 voxel-to-RAS affine."""
    img = nib.load(str(CASE))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine
