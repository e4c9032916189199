"""The brain mask used to normalise intensities, restrict candidates and crop the work volume.

A mask given by the user always wins (it must be on the image's grid and non-empty; a probability
map, with fractional values, is cut at half its maximum, with a warning; whole numbers with more than
:data:`MAX_MASK_LABELS` distinct values are an image and refused). Without
one, the image's *background* is found first: air (below 15 % of the bright tissue level after
1 mm smoothing) or exact zeros, connected to the edge of the field of view (a constant other than 0
filling most of the field of view's faces is subtracted first, so it counts as zeros). Then:

- no background (under 2 % of the field of view): the field of view lies inside the head, as in
  a crop around a finding; the whole field of view is used (a threshold would split tissue from
  tissue and drop most of it);
- a background of exact zeros around tissue with no dark skull inside: a skull-stripped image;
  its non-zero region (holes filled) is the mask;
- otherwise (air around a head, air filled with zeros, or a defaced / zero-padded head whose
  zeros cover only part of the background) a simple documented *fallback*: the smoothed image
  thresholded with Otsu's method, opened, reduced to its largest connected component, closed and
  hole-filled. When it keeps under 20 % of the head, the whole head is used instead, with a
  warning. The fallback is not a skull-stripping tool; give a proper mask with ``--mask``.

The sentence returned with the mask says which case applied; suspicious cases are also logged
as warnings.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from plkd.errors import InputError
from plkd.volumes import Volume, background_fill_value, on_grid_of

log = logging.getLogger(__name__)

#: Smoothed intensities below this share of the bright tissue level (99th percentile) count as air.
AIR_FRACTION = 0.15
#: A background (air or zeros touching the field of view's edge) below this share of the field
#: of view means there is none: the field of view lies inside the head.
NO_BACKGROUND_FRACTION = 0.02
#: A background at least this much made of exact zeros is zero fill (skull stripping or zeroed air).
ZERO_BACKGROUND_FRACTION = 0.9
#: Dark (air-like) voxels enclosed by the head above this share of it: a skull is still there.
SKULL_FRACTION = 0.02
#: A fallback mask keeping less of the head than this is not trusted: the whole head is used.
MIN_HEAD_FRACTION = 0.2
#: A user's mask holding fractional values (a probability map) is brain at or above this share of its maximum.
SOFT_MASK_THRESHOLD = 0.5
#: A user's mask of whole numbers with more distinct non-zero values than this is an MR image, not a mask or label
#: map (FreeSurfer's finest parcellation has about 190 labels; a 16-bit magnitude image thousands of values).
MAX_MASK_LABELS = 1000


def _ball(radius_vox: np.ndarray) -> np.ndarray:
    r = np.maximum(np.round(radius_vox).astype(int), 1)
    grids = np.ogrid[tuple(slice(-n, n + 1) for n in r)]
    return sum((g / max(n, 1)) ** 2 for g, n in zip(grids, r, strict=True)) <= 1.0


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising the between-class variance of a histogram."""
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a boolean mask (empty stays empty)."""
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def border_connected(mask: np.ndarray) -> np.ndarray:
    """The parts of a boolean mask 6-connected to a face of the array."""
    labels, _n = ndimage.label(mask)
    faces = np.concatenate(
        [labels.take(i, axis=a).ravel() for a in range(labels.ndim) for i in (0, labels.shape[a] - 1)]
    )
    keep = np.unique(faces[faces > 0])
    return np.isin(labels, keep)


def threshold_mask(smooth: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The fallback: Otsu threshold, 3 mm opening, largest component, closing, holes filled."""
    lo, hi = np.percentile(smooth, [1, 99.5])
    thr = otsu_threshold(np.clip(smooth, lo, hi).ravel())
    mask = smooth > thr
    radius = 3.0 / spacing  # 3 mm: detach thin bridges to the scalp
    mask = ndimage.binary_opening(mask, structure=_ball(radius))
    mask = largest_component(mask)
    mask = ndimage.binary_closing(mask, structure=_ball(radius), border_value=0)
    return ndimage.binary_fill_holes(mask)


def compute_brain_mask(volume: Volume) -> tuple[np.ndarray, str]:
    """A brain mask for ``volume`` (boolean, its grid) and one sentence saying how it was obtained.

    A background filled with a constant other than 0 (some converters and resampling tools fill
    with the minimum or an offset) is treated as zero fill: the constant is subtracted first.
    """
    data = np.asarray(volume.data, dtype=np.float32)
    fill = background_fill_value(data)
    if fill != 0.0:
        mask, note = compute_brain_mask(Volume(data - np.float32(fill), volume.affine))
        return mask, f"{note}; the background is filled with {fill:g}, taken as 0"
    spacing = volume.spacing
    zeros = data == 0
    smooth = ndimage.gaussian_filter(data, sigma=1.0 / spacing)
    level = float(np.percentile(smooth[~zeros], 99)) if (~zeros).any() else 0.0
    background = border_connected((smooth < AIR_FRACTION * level) | zeros)
    fov = data.size
    if background.sum() < NO_BACKGROUND_FRACTION * fov:
        return np.ones(data.shape, dtype=bool), (
            "brain mask: the whole field of view (no air or zero fill around the tissue, so the image is taken "
            "as lying inside the head, e.g. a crop); give --mask to restrict it"
        )
    head = ndimage.binary_fill_holes(~background)
    zero_share = float((background & zeros).sum() / background.sum())
    pct_zero = 100 * float(zeros.mean())
    if zero_share >= ZERO_BACKGROUND_FRACTION:
        enclosed_dark = (data < AIR_FRACTION * level) & head & ~zeros  # unsmoothed: a skull is a few mm thin
        if enclosed_dark.sum() < SKULL_FRACTION * head.sum():
            mask = ndimage.binary_fill_holes(~zeros)
            return mask, f"brain mask: non-zero region of the skull-stripped input ({pct_zero:.0f}% of voxels are 0)"
        how = f"the {pct_zero:.0f}% of voxels that are 0 look like zero-filled air around an unstripped head"
    elif (background & zeros).sum() >= 0.01 * fov:
        how = (
            f"{pct_zero:.0f}% of voxels are 0 at the edge of the field of view while the rest of the background is "
            "air: a defaced or zero-padded image, not skull-stripped"
        )
    else:
        how = "the image has air around the head"
    mask = threshold_mask(smooth, spacing) & head
    share = float(mask.sum() / max(head.sum(), 1))
    if share < MIN_HEAD_FRACTION:
        warning = (
            f"the threshold brain mask kept only {100 * share:.0f}% of the head, so the whole head "
            f"({100 * head.mean():.0f}% of the field of view) is searched; false alarms outside the brain are "
            "possible (give --mask for a proper brain mask)"
        )
        log.warning(warning)
        return head, f"brain mask: {how}; {warning}"
    return mask, f"brain mask: computed by the threshold fallback ({how}; give --mask for a proper brain mask)"


#: A brain region (the mask searched, ml) below this is a crop, a partial field of view or a tight mask, not a whole
#: brain (adults: 1000-1500 ml). Intensities are normalised over the region as over a whole brain, and on the
#: shipped model's synthetic test subject a 650 ml region lost one of the two microbleeds the whole scan showed
#: (p 0.76 -> below 0.05), a 64 ml crop both.
MIN_WHOLE_BRAIN_ML = 700.0


def small_brain_warning(mask: np.ndarray, affine: np.ndarray) -> str | None:
    """The warning for a brain region smaller than :data:`MIN_WHOLE_BRAIN_ML`, or ``None``."""
    ml = float(np.count_nonzero(mask)) * abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1e3
    if ml >= MIN_WHOLE_BRAIN_ML:
        return None
    return (
        f"the brain region searched holds only {ml:.0f} ml (a whole adult brain 1000-1500 ml): intensities are "
        "normalised over it as over a whole brain, so on a crop, a partial field of view or a tight mask "
        "microbleeds can be missed; give the whole scan (and its whole-brain mask)"
    )


def resolve_brain_mask(
    volume: Volume, mask: Volume | None = None, *, warn_small: bool = True
) -> tuple[np.ndarray, str]:
    """The user's mask (validated) or a computed one; raises :class:`InputError` when empty.

    A region smaller than :data:`MIN_WHOLE_BRAIN_ML` is searched with one warning (also in the sentence returned)
    unless ``warn_small`` is False (training, which takes the brain of each subject as the predictor would).
    """
    m, note = _resolve_brain_mask(volume, mask)
    if warn_small and (warning := small_brain_warning(m, volume.affine)) is not None:
        log.warning(warning)
        note = f"{note}; {warning}"
    return m, note


def _resolve_brain_mask(volume: Volume, mask: Volume | None) -> tuple[np.ndarray, str]:
    if mask is not None:
        mask = on_grid_of(volume, mask, "brain mask")
        data = np.asarray(mask.data)
        m = data > 0
        caveat = ""
        negative = data[data < 0]
        if negative.size and np.all(negative == np.round(negative)) and np.all(data[m] == np.round(data[m])):
            # A 0/255 mask stored as signed 8-bit integers reads 255 as -1: refused as "empty", which it was not.
            m = data != 0
            caveat = (
                f"the brain mask holds negative values ({_listed(np.unique(negative))}; a 0/255 mask stored as signed "
                "8-bit integers reads 255 as -1): every non-zero voxel is taken as brain"
            )
            log.warning(caveat)
        if not m.any():
            raise InputError("brain mask is empty (no non-zero voxel)")
        inside = data[m]
        if np.any(inside != np.round(inside)):
            # A probability or partial-volume map (SPM, FAST, soft skull-stripping): its faint tail
            # reaches into skull and scalp, where "> 0" would search for microbleeds too.
            m = data >= SOFT_MASK_THRESHOLD * float(inside.max())
            warning = (
                f"the brain mask holds fractional values (a probability map?); voxels at or above "
                f"{SOFT_MASK_THRESHOLD:g} of its maximum are taken as brain "
                f"({int(m.sum())} of its {inside.size} non-zero voxels)"
            )
            log.warning(warning)
            return m, f"brain mask: given by the user; {warning}"
        distinct = np.unique(inside).size
        if distinct > MAX_MASK_LABELS:
            # An image given as the mask (the scan itself, a T1): every voxel above 0 was searched, skull and scalp
            # included, without a word.
            raise InputError(
                f"the brain mask holds {distinct} distinct whole-number values: it is an image, not a mask or label "
                "map; give the brain mask"
            )
        return m, "brain mask: given by the user" + (f"; {caveat}" if caveat else "")
    m, note = compute_brain_mask(volume)
    if not m.any():
        raise InputError("no brain tissue found in the image; give a brain mask with --mask")
    return m, note


def _listed(values: np.ndarray, most: int = 3) -> str:
    """``-1``, ``-2, -1`` or ``-9, -8, -7, ...``: a few of the values, for a message."""
    text = ", ".join(f"{float(v):g}" for v in values[:most])
    return text + (", ..." if values.size > most else "")
