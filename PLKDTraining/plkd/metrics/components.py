"""Connected components of label maps and their centres of mass.

Every detection metric in :mod:`plkd.metrics` works on components: a binarised map is split
into connected components and each is summarised by its centre of mass.

One microbleed is one :data:`CONNECTIVITY`-connected component everywhere in plkd: the positives
training samples and checks, the reference microbleeds ``plkd tune`` calibrates against, the
outline ``plkd predict`` writes per candidate, and the microbleeds ``plkd evaluate`` and the
FROC curve count. Training once counted 26-connected components while evaluation counted
6-connected ones, so two microbleeds touching at a corner were one positive in training and two
in the scores (and one diagonally connected prediction two detections, one of them a false
positive). Use :func:`label_components` (or :func:`structure` with no argument), never a
``ndimage.label`` of one's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from plkd.errors import InputError

#: Prediction maps (probabilities, binary masks or 1..N instance maps) are foreground at >= this.
PREDICTION_THRESHOLD = 0.5

#: Voxels of one microbleed touch by a face, an edge or a corner (26-connectivity). It is the
#: connectivity of the VALDO challenge's released evaluation code (WhereIsValdo/valdo-eval-2021,
#: ``compare_segmentations.py``: ``-c`` defaults to 3, "all neighbors", for every task), and it keeps
#: a small blob that steps across thick slices by one in-plane voxel one microbleed.
CONNECTIVITY = 26


def structure(connectivity: int = CONNECTIVITY) -> np.ndarray:
    """The 3-D neighbourhood for ``connectivity`` 6 (faces), 18 (+ edges) or 26 (+ corners)."""
    rank = {6: 1, 18: 2, 26: 3}.get(int(connectivity))
    if rank is None:
        raise ValueError(f"connectivity must be 6, 18 or 26, not {connectivity}")
    return ndimage.generate_binary_structure(3, rank)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """``(labels, n)``: the microbleeds (:data:`CONNECTIVITY`-connected components) of a 3-D boolean mask,
    labelled 1..n in array order (``scipy.ndimage.label``)."""
    labels, n = ndimage.label(np.asarray(mask, dtype=bool), structure=structure())
    return labels, int(n)


def binarise_prediction(data: np.ndarray, threshold: float = PREDICTION_THRESHOLD) -> np.ndarray:
    """Foreground of a prediction: values >= ``threshold`` (probabilities, 0/1 masks, 1..N labels)."""
    return np.asarray(data) >= threshold


#: A label map holds at most this many distinct values (instance labels included).
MAX_LABEL_VALUES = 512
#: A label value this close to a label value (0, 0.5 for rater agreement, a whole number) is that value: a label
#: saved as floats carries rounding (0.999 for 1).
LABEL_VALUE_TOLERANCE = 0.05


def check_label_values(data: np.ndarray, name: str) -> None:
    """Refuse a microbleed label map that is not one: values must be 0, 0.5 (rater agreement) or whole numbers,
    each within :data:`LABEL_VALUE_TOLERANCE`, none negative, and at most :data:`MAX_LABEL_VALUES` of them.

    One rule for every reader of labels (training, ``plkd tune``, ``plkd cv``, ``plkd evaluate``): an image given
    as a label has many distinct values, a probability map or an interpolated label values between the label
    values, which :func:`binarise_reference` would cut at 0.25 without a word. ``name`` starts the message
    (e.g. ``"label of sub-01 (path)"``). Raises :class:`plkd.errors.InputError`.
    """
    values = np.unique(np.asarray(data))
    off = np.abs(values * 2 - np.round(values * 2)) / 2  # distance to the nearest label value
    if values.size > MAX_LABEL_VALUES:
        raise InputError(
            f"{name} is not a label map ({values.size} distinct values, e.g. {values[values.size // 2]:g}); "
            "give the microbleed label, not an image"
        )
    if values.size and values[0] < -LABEL_VALUE_TOLERANCE:
        # Read as background: a microbleed labelled -1 (a 0/255 mask stored as int8 reads 255 as -1) was scored as
        # no microbleed, and a reference of them as an empty one.
        raise InputError(
            f"{name} holds negative values (down to {values[0]:g}): labels are 0 (background) and positive values "
            "(a 0/255 mask stored as signed 8-bit integers reads 255 as -1); give the label map with positive labels"
        )
    if np.any(off > LABEL_VALUE_TOLERANCE):
        raise InputError(
            f"{name} holds values between the label values 0, 0.5 and whole numbers (e.g. "
            f"{values[np.argmax(off)]:g}): a probability map or an interpolated label? Give the label map"
        )


def binarise_reference(data: np.ndarray) -> np.ndarray:
    """Foreground of a reference label map: every voxel that is not 0 once rounded to the label values (0, 0.5
    for rater agreement, 1, 2, ...), i.e. ``>= 0.25``.

    A reference saved as floats may carry rounding noise (1e-6 on every background voxel after a resampling or a
    scaled NIfTI): read as ``> 0``, its whole field of view became one microbleed.
    """
    arr = np.asarray(data)
    # Integer labels are exact (no float copy of a whole reference); floats are compared in their own type.
    return arr > 0 if arr.dtype.kind in "biu" else arr >= 0.25


@dataclass
class Components:
    """Connected components of one binary map.

    ``labels`` holds 0 for background and 1..n for the components; ``centres_vox`` is the
    ``(n, 3)`` centre of mass of each component in voxel indices; ``sizes`` the voxel counts.
    """

    labels: np.ndarray
    n: int
    centres_vox: np.ndarray
    sizes: np.ndarray

    def centres_mm(self, zooms: np.ndarray | tuple[float, float, float]) -> np.ndarray:
        """Centres in mm as the VALDO rule defines them: voxel indices times the voxel size."""
        return self.centres_vox * np.asarray(zooms, dtype=np.float64)[None, :3]

    def centres_world(self, affine: np.ndarray) -> np.ndarray:
        """Centres in world (RAS) mm through the voxel-to-world affine."""
        aff = np.asarray(affine, dtype=np.float64)
        return self.centres_vox @ aff[:3, :3].T + aff[:3, 3]

    def max_values(self, data: np.ndarray) -> np.ndarray:
        """The largest value of ``data`` inside each component, shape ``(n,)``."""
        out = np.full(self.n + 1, -np.inf)
        fg = self.labels > 0
        np.maximum.at(out, self.labels[fg], np.asarray(data, dtype=np.float64)[fg])
        return out[1:]


def find_components(mask: np.ndarray, connectivity: int = CONNECTIVITY) -> Components:
    """Label the connected components of a boolean ``mask`` and compute their centres of mass."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"a 3-D map is required, got shape {mask.shape}")
    labels, n = ndimage.label(mask, structure=structure(connectivity))
    # Work on the foreground voxels only: microbleeds fill a tiny fraction of a brain volume,
    # so per-component sums by bincount are much faster than scipy's full-volume measurements.
    coords = np.nonzero(labels)
    lab = labels[coords]
    sizes = np.bincount(lab, minlength=n + 1)[1:].astype(np.int64)
    centres = np.zeros((n, 3), dtype=np.float64)
    if n:
        for axis in range(3):
            centres[:, axis] = np.bincount(lab, weights=coords[axis], minlength=n + 1)[1:] / sizes
    return Components(labels=labels, n=int(n), centres_vox=centres, sizes=sizes)


def reference_weights(reference: np.ndarray, comps: Components) -> np.ndarray:
    """Rater-agreement weight of each reference component.

    VALDO references may hold fractional values (0.5 where only some raters marked a
    microbleed, 1.0 where all did). The weight of a component is its largest value, so a
    component with a 1.0 core and a 0.5 rim counts fully. Maps holding larger integers
    (instance labels 1..N, or a 0/255 mask) are not agreement maps: every component weighs 1.
    """
    if comps.n == 0:
        return np.zeros(0, dtype=np.float64)
    values = np.rint(comps.max_values(np.asarray(reference, dtype=np.float64)) * 2.0) / 2.0  # 0.5 steps: no noise
    if float(np.max(reference)) > 1.25:
        return np.ones(comps.n, dtype=np.float64)
    return np.clip(values, 0.0, 1.0)


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` (n, 3) and ``b`` (m, 3): shape (n, m)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 3)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))
