"""A microbleed label map brought onto its image's grid: the one rule of training, ``plkd tune`` and ``plkd cv``
(all read subjects through :func:`plkd.data.datasets.load_subject`).

Accepted, in this order:

1. the image's own grid (float rounding of the header included) — taken as it is;
2. the same voxels stored in another axis order or direction (LPS vs RAS, sagittal vs axial storage, as
   dcm2niix, ITK or Slicer may write a label) — turned exactly (:func:`plkd.volumes.on_grid_of`, nibabel's
   ``apply_orientation``: no interpolation), with a note;
3. another voxel size covering the same field of view (a label drawn on a 0.5 mm upsampled copy of a 1 mm
   scan, or on a 2 mm copy) — resampled onto the image's grid by :func:`resample_label`, which keeps every
   microbleed, with one warning line and a note.

Anything else (another field of view, a shift or rotation of the same voxel size: most often a header that lost
or changed its orientation, or the label of another scan) is refused in one line naming both grids.

Why resample rather than refuse (3): the label still says where each microbleed is in the scanner's space, and a
researcher who annotated on an upsampled copy has no other label to give; nnU-Net refuses such pairs, and a
nearest-neighbour resampling (what its users then do by hand) loses microbleeds smaller than a target voxel
(a 0.5 mm label kept 6 of 8 on the 1 mm grid in plkd's training test). Why not further: a shifted or rotated
grid of the same voxel size is a disagreement between headers, not a choice of resolution, and resampling
through it would score or train every microbleed where a wrong header puts it.

``plkd evaluate`` has no image: it scores on the reference's own grid and moves the prediction onto it
(:mod:`plkd.metrics.evaluation`), turning the same voxels exactly by the same test
(:func:`plkd.volumes.reorientation_onto`); a 0.5 mm reference of a 1 mm prediction so counts the same
microbleeds found, missed and false as ``plkd cv`` and ``plkd tune`` count on the scan's grid, the voxel Dice
being measured on each one's grid.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
from scipy import ndimage

from plkd.metrics.components import binarise_reference, label_components
from plkd.resample import resample_array
from plkd.volumes import Volume, on_grid_of, reorientation_onto, spacing_from_affine

log = logging.getLogger(__name__)

#: Two fields of view are one when each corner of one lies within this many voxels (of the image) of a corner of
#: the other along every image axis: half a voxel, what resampling tools that keep the first voxel's centre rather
#: than its outer edge move the field of view by.
SAME_FIELD_TOLERANCE_VOXELS = 0.5

_SAID: set[str] = set()  # label files whose resampling was said (one warning line per file, per process)


def _corners(shape: tuple[int, ...]) -> np.ndarray:
    """The 8 outer corners ``(8, 3)`` of a grid's field of view in its voxel coordinates."""
    return np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in shape[:3]], indexing="ij")).reshape(3, -1).T


def same_field_of_view(
    affine: np.ndarray, shape: tuple[int, ...], other_affine: np.ndarray, other_shape: tuple[int, ...]
) -> bool:
    """Whether the grid ``(other_affine, other_shape)`` covers the field of view of ``(affine, shape)``: every
    corner of each within :data:`SAME_FIELD_TOLERANCE_VOXELS` voxels of a corner of the other, along every axis
    of the first grid (so a rotated box is not the same field of view)."""
    to_vox = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(other_affine, dtype=np.float64)
    theirs = _corners(other_shape) @ to_vox[:3, :3].T + to_vox[:3, 3]
    mine = _corners(shape)
    apart = np.abs(theirs[:, None, :] - mine[None, :, :]).max(axis=2)  # (8 theirs, 8 mine), in voxels
    return bool(np.all(apart.min(axis=1) <= SAME_FIELD_TOLERANCE_VOXELS)) and bool(
        np.all(apart.min(axis=0) <= SAME_FIELD_TOLERANCE_VOXELS)
    )


def _shape_along(affine: np.ndarray, other_affine: np.ndarray, other_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``other_shape`` reordered to the axes of the grid ``affine`` (each of its axes to the closest one)."""
    to_vox = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(other_affine, dtype=np.float64)
    out = [0, 0, 0]
    for axis in range(3):
        out[int(np.argmax(np.abs(to_vox[:3, axis])))] = int(other_shape[axis])
    return tuple(out)


def other_voxels_same_field(image: Volume, label: Volume) -> bool:
    """Whether ``label`` is drawn on another voxel size over ``image``'s field of view (case 3 of this module's
    rule): not the same voxels in any storage order, another number of voxels along some image axis, and
    :func:`same_field_of_view`."""
    if reorientation_onto(image.affine, image.shape, label.affine, label.shape) is not None:
        return False
    if _shape_along(image.affine, label.affine, label.shape) == tuple(image.shape[:3]):
        return False  # the same voxel size placed elsewhere: headers that disagree, never resampled
    return same_field_of_view(image.affine, image.shape, label.affine, label.shape)


def resample_label(label: Volume, affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(foreground, positives)``: the microbleeds of ``label`` on the grid ``affine``/``shape`` as a boolean map,
    and the ``(M, 3)`` voxel centres of its microbleeds (one per connected component of the label as given,
    :data:`plkd.metrics.components.CONNECTIVITY`).

    Values are rounded to the label values first (:func:`binarise_reference`). The components are found before
    resampling and their centres carried through world space; the map is resampled linearly and cut at 0.5 and
    each centre voxel is kept, so a microbleed smaller than a target voxel is not lost (nearest-neighbour
    resampling lost 2 of 8 going from 0.5 mm to 1 mm). Centres outside the grid are clipped onto its border.
    """
    fg = binarise_reference(label.data)
    comps, n = label_components(fg)
    if n:
        centres = np.asarray(ndimage.center_of_mass(fg, comps, index=range(1, n + 1)), dtype=np.float64)
        to_grid = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(label.affine, dtype=np.float64)
        vox = np.rint(centres.reshape(-1, 3) @ to_grid[:3, :3].T + to_grid[:3, 3]).astype(np.int64)
        positives = np.clip(vox, 0, np.asarray(shape[:3]) - 1)
    else:
        positives = np.zeros((0, 3), dtype=np.int64)
    out = resample_array(fg.astype(np.float32), label.affine, affine, tuple(shape), order=1) >= 0.5
    out[tuple(positives.T)] = True
    return out, positives


def _values_on_grid(label: Volume, image: Volume) -> tuple[np.ndarray, int, int]:
    """The label map on the image's grid (:func:`resample_label`), each microbleed holding the largest value of
    the label's microbleeds whose centre falls in it (0.5 for rater agreement, 1, an instance number), float32;
    with the number of microbleeds before and after (fewer when two merged on the coarser grid)."""
    fg, positives = resample_label(label, image.affine, image.shape)
    before_ids, n_before = label_components(binarise_reference(label.data))
    peaks = ndimage.maximum(np.asarray(label.data, dtype=np.float64), before_ids, index=range(1, n_before + 1))
    after_ids, n_after = label_components(fg)
    value = np.ones(n_after + 1, dtype=np.float64)  # a component without a centre in it (none expected): 1
    value[0] = 0.0
    seen = np.zeros(n_after + 1, dtype=bool)
    for (i, j, k), peak in zip(positives, np.atleast_1d(peaks), strict=True):
        target = after_ids[i, j, k]
        value[target] = max(value[target], float(peak)) if seen[target] else float(peak)
        seen[target] = True
    return value[after_ids].astype(np.float32), n_before, n_after


def _grid_words(vol: Volume) -> str:
    return "x".join(f"{v:.3g}" for v in spacing_from_affine(vol.affine)) + " mm"


def label_onto_image(image: Volume, label: Volume, what: str, *, warn: bool = True) -> Volume:
    """``label`` on ``image``'s grid by the rule of this module's docstring, or :class:`InputError` (one line).

    ``what`` names the label in messages (``"label of sub-01"``, ``"reference sub-01_CMB.nii.gz"``). The turned or
    resampled volume carries a sentence about it in ``notes`` for the caller's JSON; a resampling is also said in
    one warning line (once per label file in a process: ``plkd cv`` reads a subject in several folds), unless
    ``warn`` is false (a caller that logs its notes itself).
    """
    if not other_voxels_same_field(image, label):
        return on_grid_of(image, label, what=what)  # the same grid, turned exactly, or refused in one line
    data, n_before, n_after = _values_on_grid(label, image)
    merged = (
        f"; {n_before - n_after} pair(s) of them touch on the image's grid and count as one"
        if n_after < n_before
        else ""
    )
    note = (
        f"{what}: drawn on {_grid_words(label)} voxels (stored {''.join(nib.aff2axcodes(label.affine))}) over the "
        f"image's field of view; resampled onto the image's {_grid_words(image)} grid keeping each of its "
        f"{n_before} microbleed(s){merged}"
    )
    key = str(label.path) if label.path is not None else note
    if warn and key not in _SAID:
        _SAID.add(key)
        log.warning("%s", note)
    return Volume(data, image.affine.copy(), label.path, header=image.header, notes=[*label.notes, note])
