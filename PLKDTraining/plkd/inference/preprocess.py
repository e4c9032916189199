"""Bring an input volume to the network's model grid, exactly as training prepares its data.

Steps: brain mask → crop to the brain's bounding box (plus a margin) → turn the array to the
closest RAS axis order (transpose and flip, no interpolation) → move the slice axis (the largest
voxel size) to the last array axis, Z → cubic resampling to the bundle's voxel
size (the paper's "SR" step for thick-slice inputs) → ``normalise_intensity(data, mask)``.

The result keeps a voxel-to-RAS affine, so any position on the model grid maps back to the
input through world coordinates; this also undoes the transposition without extra book-keeping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from plkd.lowres import declared_lr_factor
from plkd.normalise import CLIP_PERCENTILES, normalise_intensity
from plkd.resample import grid_with_spacing, resample_array
from plkd.volumes import Volume, spacing_from_affine, tied_slice_axes
from plkd.volumes import network_axes as network_axes  # re-exported: training and tuning turn data as prepare does
from plkd.volumes import network_slice_axis as network_slice_axis

log = logging.getLogger(__name__)

#: The world axis each array axis of a RAS-ordered grid runs along, as a note names it.
_RAS_AXIS = ("left-right", "anterior-posterior", "superior-inferior")

#: Margin (mm) kept around the brain's bounding box when cropping.
CROP_MARGIN_MM = 8.0
#: Relative voxel-size difference below which no resampling is done.
SPACING_TOLERANCE = 0.01


def effective_lr_factor(affine: np.ndarray, model_spacing: np.ndarray) -> float:
    """How many model-grid slices one input slice spans: the LR factor its student was trained for.

    LR@k training data are 1-mm (model grid) volumes with k× thicker slices, so the factor is the
    slice thickness over the coarser of the in-plane voxel size and the model grid's: a
    0.47×0.47×1 mm scan is HR data for a 1-mm model (factor 1, the teacher), while its plain
    slice/in-plane ratio would say 2. Never below 1.
    """
    sp = spacing_from_affine(affine)
    axis = int(np.argmax(sp))
    in_plane = float(np.delete(sp, axis).min())
    model = np.broadcast_to(np.asarray(model_spacing, dtype=np.float64), (3,))
    return max(1.0, float(sp[axis] / max(in_plane, float(model[:2].min()))))


@dataclass
class PreparedVolume:
    """A normalised volume on the model grid, restricted to the brain's bounding box.

    ``data`` and ``mask`` are ``(X, Y, Z)`` with Z the slice axis; ``affine`` maps their
    voxel indices to RAS mm.
    """

    data: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    lr_factor: float
    permutation: tuple[int, int, int]
    input_box: tuple[slice, slice, slice]
    notes: list[str] = field(default_factory=list)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size of the model grid (mm)."""
        return spacing_from_affine(self.affine)

    def ras_to_voxel(self, ras: np.ndarray) -> np.ndarray:
        """RAS mm ``(n, 3)`` → continuous voxel indices on this grid."""
        pts = np.atleast_2d(np.asarray(ras, dtype=np.float64))
        inv = np.linalg.inv(self.affine)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def voxel_to_ras(self, vox: np.ndarray) -> np.ndarray:
        """Voxel indices ``(n, 3)`` on this grid → RAS mm."""
        pts = np.atleast_2d(np.asarray(vox, dtype=np.float64))
        return pts @ self.affine[:3, :3].T + self.affine[:3, 3]


def to_closest_ras(
    data: np.ndarray, mask: np.ndarray, affine: np.ndarray
) -> tuple[list[int], bool, np.ndarray, np.ndarray, np.ndarray]:
    """Transpose and flip ``data`` and ``mask`` so that array axes 0, 1, 2 point as nearly as possible
    to R, A and S (nibabel's ``io_orientation`` / ``apply_orientation``; no interpolation), with the
    affine that keeps every voxel at its RAS position. Returns ``(order, changed, data, mask, affine)``:
    ``order[a]`` is the input axis that became axis ``a``, ``changed`` whether anything moved.
    """
    ornt = io_orientation(affine)
    order = [int(np.flatnonzero(ornt[:, 0] == w)[0]) for w in range(3)]
    changed = order != [0, 1, 2] or bool(np.any(ornt[:, 1] < 0))
    new_affine = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(ornt, data.shape)
    return order, changed, apply_orientation(data, ornt), apply_orientation(mask, ornt), new_affine


def crop_box(
    mask: np.ndarray, affine: np.ndarray, margin_mm: float = CROP_MARGIN_MM, points_vox: np.ndarray | None = None
) -> tuple[slice, slice, slice]:
    """Bounding box of ``mask`` (and of any extra voxel positions) grown by ``margin_mm``."""
    idx = np.argwhere(mask)
    if points_vox is not None and len(points_vox):
        idx = np.vstack([idx, np.round(np.atleast_2d(points_vox)).astype(int)])
    margin = np.ceil(margin_mm / spacing_from_affine(affine)).astype(int)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))  # type: ignore[return-value]


def prepare(
    volume: Volume,
    brain_mask: np.ndarray,
    model_spacing: np.ndarray,
    extra_points_ras: np.ndarray | None = None,
    clip_percentiles: tuple[float, float] | list[float] = CLIP_PERCENTILES,
) -> PreparedVolume:
    """Crop, transpose, resample and normalise ``volume`` for the networks (see module doc).

    ``clip_percentiles`` are the bundle's (``manifest.normalisation``), passed to
    :func:`plkd.normalise.normalise_intensity`.
    """
    notes: list[str] = []
    affine = np.asarray(volume.affine, dtype=np.float64)
    lr_factor = effective_lr_factor(affine, model_spacing)
    declared = declared_lr_factor(volume.header)
    if declared is not None and declared > lr_factor:
        # LR@k brought back to the HR grid (plkd lowres --factor k): its voxels look HR, its content is not.
        notes.append(
            f"the header marks the image as LR@{declared} (plkd lowres: {declared}-times thicker slices brought back "
            f"to this grid): its LR factor is {declared} for the choice of segmenter unless --lr-factor or --student "
            "says otherwise"
        )
        lr_factor = float(declared)

    points_vox = None
    if extra_points_ras is not None:
        inv = np.linalg.inv(affine)
        points_vox = np.atleast_2d(extra_points_ras) @ inv[:3, :3].T + inv[:3, 3]
        points_vox = np.clip(points_vox, 0, np.asarray(volume.shape) - 1)
    box = crop_box(brain_mask, affine, points_vox=points_vox)
    data = volume.data[box]
    mask = brain_mask[box]
    start = np.array([s.start for s in box], dtype=np.float64)
    affine = affine.copy()
    affine[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]

    # The networks see the brain as they were trained on it (RAS: x to the right, y anterior, z superior)
    # however the file stores it (LPS, LAS as dcm2niix writes, sagittal order, ...); otherwise the same
    # scan stored two ways gives two different results.
    # The turn and the slice axis are network_axes', which training uses too.
    target = np.broadcast_to(np.asarray(model_spacing, dtype=np.float64), (3,))
    _, moved, _ = network_axes(affine, data.shape, float(target.min()))
    order, changed, data, mask, affine = to_closest_ras(data, mask, affine)
    tied = tied_slice_axes(affine, float(target.min()))
    if tied:
        sp = spacing_from_affine(affine)
        other = [a for a in tied if a != moved[2]][0]
        note = (
            "two axes are equally coarse ({} mm along left-right, anterior-posterior, superior-inferior): the networks "
            "take the {} axis as their slice axis and see the {} axis upsampled in-plane, which they were not trained "
            "on; microbleeds smaller than {:.3g} mm may be missed".format(
                "x".join(f"{s:.3g}" for s in sp), _RAS_AXIS[moved[2]], _RAS_AXIS[other], sp.max()
            )
        )
        log.warning(note)
        notes.append(note)
    if changed:
        notes.append("turned the array to RAS axis order for the networks (the grid of the outputs is unchanged)")
    if moved != [0, 1, 2]:
        data = np.transpose(data, moved)
        mask = np.transpose(mask, moved)
        affine = affine[:, moved + [3]]
        notes.append(f"moved the slice axis (array axis {order[moved[2]]} of the input) to Z for the networks")
    perm: tuple[int, int, int] = tuple(order[a] for a in moved)  # type: ignore[assignment]  # input axis of each

    spacing = spacing_from_affine(affine)
    if np.any(np.abs(spacing - target) > SPACING_TOLERANCE * target):
        new_affine, new_shape = grid_with_spacing(affine, data.shape, target)
        data = resample_array(data, affine, new_affine, new_shape, order=3, cval=0.0)
        mask = resample_array(mask.astype(np.float32), affine, new_affine, new_shape, order=1, cval=0.0) >= 0.5
        notes.append(
            "resampled from {} mm to {} mm (cubic)".format(
                "x".join(f"{s:.3g}" for s in spacing), "x".join(f"{s:.3g}" for s in target)
            )
        )
        affine = new_affine
    if not mask.any():
        # A brain thinner than one model voxel: keep the whole cropped box rather than nothing.
        mask = np.ones(data.shape, dtype=bool)
        notes.append("the brain mask vanished on the model grid; the whole field of view was used")
    data = normalise_intensity(data, mask, clip_percentiles)
    return PreparedVolume(
        data=np.ascontiguousarray(data, dtype=np.float32),
        mask=np.ascontiguousarray(mask, dtype=bool),
        affine=affine,
        lr_factor=lr_factor,
        permutation=perm,
        input_box=box,
        notes=notes,
    )
