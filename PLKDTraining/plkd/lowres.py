"""Low-resolution data: the paper's LR@k volumes and physical thick-slice volumes.

Two kinds of low resolution are produced, both only along the slice (through-plane) axis:

* :func:`simulate_lowres` keeps the HR grid. ``mode="interp"`` is the paper's LR@k: keep every
  k-th slice, then cubic-interpolate back to the HR grid. ``mode="slab"`` averages each block of
  k slices instead (a thick slice integrates the signal of its whole slab: partial volume) and
  interpolates back the same way. These are the training inputs of the students.
* :func:`thick_slab_volume` / :func:`thick_slab_labels` produce a true thick-slice volume on its
  own coarse grid (e.g. 1 mm → 3 mm slices) with the right affine, so evaluation on 3 mm or
  4 mm slices sees the kind of input a scanner writes.

Geometry. A low-resolution sample is placed at the centre of what it represents: in slab mode
the centre of its k slices, in interp mode the HR slice it copies. Up-sampling evaluates the
cubic B-spline through the LR samples at every HR slice centre, so structures do not shift.
Beyond the first/last LR sample the spline continues with the edge value (scipy ``"nearest"``
mode).

All operations are separable 1-D linear maps along one axis, so they are applied as a small
(n_out × n_in) weight matrix multiplied along that axis: a whole 1 mm brain takes a few tens
of milliseconds, which matters because training simulates LR inputs thousands of times.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import numpy as np
from scipy import ndimage

from plkd.errors import PLKDError
from plkd.metrics.components import label_components
from plkd.resample import grid_with_spacing
from plkd.volumes import Volume, network_slice_axis, spacing_from_affine

#: LR@k modes of :func:`simulate_lowres`.
MODES = ("interp", "slab")
#: Noise models of the thick-slice noise.
NOISE_KINDS = ("rician", "gaussian")
#: Percentile of the absolute HR intensities used as the reference for ``noise_std``.
NOISE_REFERENCE_PERCENTILE = 99.0


#: NIfTI ``descrip`` of an LR@k image written on its HR grid by ``plkd lowres --factor K``: its voxels are as
#: thin as HR ones, so only this says which student it is for (``plkd predict``, ``plkd tune`` read it).
LR_DESCRIP = "plkd lowres LR@{factor}"
_LR_DESCRIP_RE = re.compile(r"plkd lowres LR@(\d+)")


def mark_lr_factor(header: Any, factor: int) -> Any:
    """A copy of the NIfTI ``header`` whose ``descrip`` says the image is LR@``factor`` on the HR grid.

    The earlier description follows the mark (cut to the field's 80 bytes): scanners' sequence names there
    (``swi3d1r``) still tell ``plkd predict --modality auto`` the contrast."""
    marked = header.copy()
    earlier = _LR_DESCRIP_RE.sub("", _descrip(header)).strip("; ")
    text = LR_DESCRIP.format(factor=int(factor)) + (f"; {earlier}" if earlier else "")
    marked["descrip"] = text.encode("ascii", "replace")[:80]
    return marked


def declared_lr_factor(header: Any) -> int | None:
    """The k of an LR@k image marked by :func:`mark_lr_factor`, or ``None`` (no header, or no such mark)."""
    m = _LR_DESCRIP_RE.search(_descrip(header)) if header is not None else None
    return int(m.group(1)) if m else None


def _descrip(header: Any) -> str:
    try:
        raw = np.asarray(header["descrip"]).tobytes()
    except (KeyError, ValueError, TypeError):
        return ""
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


# ----------------------------------------------------------------------------------------------
# 1-D weight matrices (cached: training calls these with the same sizes over and over)


@functools.lru_cache(maxsize=256)
def _cubic_upsample_matrix(n_hr: int, n_lr: int, factor: int, first_centre: float) -> np.ndarray:
    """(n_hr, n_lr) weights of cubic B-spline interpolation from LR samples to HR slice centres.

    LR sample ``m`` sits at HR index ``first_centre + m * factor``; HR slice ``z`` therefore
    sits at LR coordinate ``(z - first_centre) / factor``. Interpolating each unit vector gives
    one column: spline interpolation (with its prefilter) is linear, so this is exact.
    """
    coords = (np.arange(n_hr, dtype=np.float64) - first_centre) / factor
    eye = np.eye(n_lr, dtype=np.float64)
    cols = [ndimage.map_coordinates(eye[m], [coords], order=3, mode="nearest", prefilter=True) for m in range(n_lr)]
    w = np.stack(cols, axis=1).astype(np.float32)
    w.setflags(write=False)
    return w


@functools.lru_cache(maxsize=256)
def _downsample_matrix(n: int, factor: int, mode: str, phase: int) -> np.ndarray:
    """(ceil(n / k), n) weights taking slice ``phase`` of each block of k (interp) or its mean (slab).

    Slices past the end (when n is not a multiple of k) are the last slice repeated, i.e. the
    volume is padded by edge replication; the padding is folded into the weights.
    """
    n_lr = math.ceil(n / factor)
    w = np.zeros((n_lr, n), dtype=np.float32)
    rows = np.arange(n_lr)
    if mode == "interp":
        w[rows, np.minimum(rows * factor + phase, n - 1)] = 1.0
    else:
        for j in range(factor):
            np.add.at(w, (rows, np.minimum(rows * factor + j, n - 1)), 1.0 / factor)
    w.setflags(write=False)
    return w


@functools.lru_cache(maxsize=256)
def _slab_average_matrix(n_in: int, n_out: int, ratio: float) -> np.ndarray:
    """(n_out, n_in) weights averaging input slices over slabs ``ratio`` input slices thick.

    Slab ``j`` covers ``[j * ratio, (j + 1) * ratio)`` in units of input slices, measured from the
    outer edge of slice 0. Each input slice contributes its overlap length; rows are normalised
    so that a slab running past the last input slice averages the part it covers.
    """
    lo_in = np.arange(n_in, dtype=np.float64)
    lo_out = np.arange(n_out, dtype=np.float64) * ratio
    overlap = np.minimum(lo_out[:, None] + ratio, lo_in[None, :] + 1.0) - np.maximum(lo_out[:, None], lo_in[None, :])
    w = np.clip(overlap, 0.0, None)
    covered = w.sum(axis=1, keepdims=True)
    if np.any(covered <= 0):
        raise PLKDError("thick-slice grid extends past the input volume")  # cannot happen with grid_with_spacing
    w = (w / covered).astype(np.float32)
    w.setflags(write=False)
    return w


def _apply_along(data: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """``weights @ data`` along ``axis`` (weights: (n_out, n_in)), float32, axis order kept."""
    moved = np.moveaxis(np.asarray(data, dtype=np.float32), axis, -1)
    out = moved @ weights.T
    return np.ascontiguousarray(np.moveaxis(out, -1, axis))


# ----------------------------------------------------------------------------------------------
# Noise


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def add_noise(
    data: np.ndarray,
    noise_std: float,
    *,
    reference: float | None = None,
    kind: str = "rician",
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Add acquisition noise whose standard deviation is ``noise_std × reference``.

    ``reference`` defaults to the 99th percentile of ``|data|`` (a robust "bright tissue"
    level), so ``noise_std=0.03`` means 3 % of the bright-tissue intensity whatever the units.
    ``kind="rician"`` (magnitude MRI) returns ``|data + n1 + i·n2|``; it is meant for magnitude
    images (non-negative). ``kind="gaussian"`` adds ``n1`` only, e.g. for normalised data.
    """
    if not (noise_std >= 0 and math.isfinite(noise_std)):
        raise PLKDError(f"noise standard deviation must be a number ≥ 0, not {noise_std}")
    if kind not in NOISE_KINDS:
        raise PLKDError(f"noise kind must be one of {', '.join(NOISE_KINDS)}, not {kind!r}")
    data = np.asarray(data, dtype=np.float32)
    if noise_std == 0:
        return data
    if reference is None:
        reference = float(np.percentile(np.abs(data), NOISE_REFERENCE_PERCENTILE)) or float(np.max(np.abs(data)))
    sigma = float(noise_std) * float(reference)
    gen = _rng(rng)
    real = data + gen.normal(0.0, sigma, data.shape).astype(np.float32)
    if kind == "gaussian":
        return real
    imag = gen.normal(0.0, sigma, data.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag)


# ----------------------------------------------------------------------------------------------
# LR@k on the HR grid


def _check_factor(factor: int) -> int:
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise PLKDError(f"low-resolution factor must be a whole number ≥ 1, not {factor}")
    return int(factor)


def simulate_lowres(
    hr: np.ndarray,
    factor: int,
    *,
    axis: int = 2,
    mode: str = "interp",
    offset: int | None = None,
    noise_std: float = 0.0,
    noise: str = "rician",
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """The LR@k version of ``hr`` on the HR grid (same shape, float32).

    ``mode="interp"`` (the paper): keep slices ``offset, offset + k, offset + 2k, …`` along
    ``axis`` and cubic-interpolate back to every HR slice. ``offset`` (the sampling phase,
    ``0 … k-1``) defaults to ``(k - 1) // 2``, the slice nearest the centre of each block of k.
    ``mode="slab"``: average each block of k slices (a thick slice integrates its slab), place
    the average at the block centre and cubic-interpolate back.

    A slice count that is not a multiple of k is padded at the end by repeating the last slice
    (as a scanner's last slab would extend past the anatomy) and the result is evaluated on the
    original slices only, i.e. cropped back. ``noise_std`` (see :func:`add_noise`, relative to
    the 99th percentile of ``|hr|``) is added to the low-resolution samples before
    up-sampling, so it is smoothed like real thick-slice noise. ``factor=1`` returns the input
    (plus noise, if any). ``axis`` may be negative, and ``hr`` may have extra leading axes.
    """
    k = _check_factor(factor)
    if mode not in MODES:
        raise PLKDError(f"low-resolution mode must be one of {', '.join(MODES)}, not {mode!r}")
    hr = np.asarray(hr)
    if hr.ndim == 0:
        raise PLKDError("simulate_lowres needs an array with at least one axis")
    axis = axis % hr.ndim
    n = hr.shape[axis]
    reference = None
    if noise_std:
        reference = float(np.percentile(np.abs(hr), NOISE_REFERENCE_PERCENTILE)) or float(np.max(np.abs(hr)) or 1.0)
    if mode == "slab" and offset is not None:
        raise PLKDError("a sampling offset applies to mode 'interp' only; 'slab' averages every slice")
    if k == 1:
        return add_noise(np.array(hr, dtype=np.float32), noise_std, reference=reference, kind=noise, rng=rng)
    phase = 0 if mode == "slab" else (k - 1) // 2 if offset is None else int(offset)
    if not 0 <= phase < k:
        raise PLKDError(f"sampling offset must be between 0 and {k - 1} for factor {k}, not {offset}")

    n_lr = math.ceil(n / k)
    first_centre = float(phase) if mode == "interp" else (k - 1) / 2.0
    moved = np.moveaxis(hr.astype(np.float32, copy=False), axis, -1)
    lr = moved @ _downsample_matrix(n, k, mode, phase).T
    lr = add_noise(lr, noise_std, reference=reference, kind=noise, rng=rng)
    out = lr @ _cubic_upsample_matrix(n, n_lr, k, first_centre).T
    return np.ascontiguousarray(np.moveaxis(out, -1, axis))


def lowres_pair(
    hr_patch: np.ndarray,
    factor: int,
    mode: str = "interp",
    rng: np.random.Generator | int | None = None,
    *,
    axis: int = -1,
    noise_std: float = 0.0,
    random_phase: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``(hr, lr)`` for distillation: the HR patch (float32) and its LR@k version on the same grid.

    With a generator and ``random_phase`` the interp sampling offset is drawn at random, so a
    student sees every alignment of the thick slices with the anatomy. The slice axis is the
    last one (Z) by default, which also suits channel-first ``(C, X, Y, Z)`` patches. Patches
    lose context at their two Z faces; cut them with a margin of ``factor`` slices (or simulate
    on the whole volume) where the border matters.
    """
    hr = np.asarray(hr_patch, dtype=np.float32)
    k = _check_factor(factor)
    offset = None
    if rng is not None and random_phase and mode == "interp" and k > 1:
        rng = _rng(rng)
        offset = int(rng.integers(0, k))
    lr = simulate_lowres(hr, k, axis=axis, mode=mode, offset=offset, noise_std=noise_std, rng=rng)
    return hr, lr


# ----------------------------------------------------------------------------------------------
# True thick-slice volumes on their own grid


def default_slice_axis(affine: np.ndarray) -> int:
    """The array axis made thick by default: an anisotropic grid's one coarsest axis (slice/in-plane ratio at
    least :data:`plkd.volumes.ISOTROPIC_RATIO`), else (isotropic, or two axes equally coarse: 1×1×0.5 mm) the
    array axis closest to world superior-inferior.

    So an isotropic HR volume gives axial thick slices however it is stored: thinning stored Z of a
    sagittally stored volume made thick left-right slices, which no axial protocol acquires and which the
    students (trained on axial thick slices, :func:`plkd.volumes.network_slice_axis`) never saw.
    """
    return network_slice_axis(affine)


def _thick_geometry(
    vol: Volume, thickness_mm: float, axis: int | None
) -> tuple[int, np.ndarray, tuple[int, ...], float]:
    try:
        thickness_mm = float(thickness_mm)
    except (TypeError, ValueError):
        raise PLKDError(f"slice thickness must be a number of mm, not {thickness_mm!r}") from None
    if not (math.isfinite(thickness_mm) and thickness_mm > 0):
        raise PLKDError(f"slice thickness must be a positive number of mm, not {thickness_mm}")
    ax = default_slice_axis(vol.affine) if axis is None else int(axis) % 3
    spacing = spacing_from_affine(vol.affine)
    if thickness_mm < spacing[ax] - 1e-6:
        raise PLKDError(
            f"slice thickness {thickness_mm:g} mm is thinner than the input's {spacing[ax]:.3g} mm slices; "
            "thick slices can only be made coarser"
        )
    new_spacing = spacing.copy()
    new_spacing[ax] = float(thickness_mm)
    affine, shape = grid_with_spacing(vol.affine, vol.shape, new_spacing)
    return ax, affine, shape, thickness_mm / float(spacing[ax])


def thick_slab_volume(
    vol: Volume,
    thickness_mm: float,
    *,
    axis: int | None = None,
    noise_std: float = 0.0,
    noise: str = "rician",
    rng: np.random.Generator | int | None = None,
) -> Volume:
    """A true thick-slice volume: slices ``thickness_mm`` thick on their own coarser grid.

    Each thick slice is the average of the HR slices its slab covers, weighted by overlap
    (fractional weights when the thickness is not a multiple of the spacing). The grid keeps
    the field of view's outer edge at the first slice (:func:`plkd.resample.grid_with_spacing`),
    so the slice count is ``round(extent / thickness)`` and each thick slice's affine centre is
    the centre of its slab; a last slab running past the volume averages the part it covers.
    ``axis`` defaults to :func:`default_slice_axis`. Noise as in :func:`add_noise`, added at
    the thick-slice level.
    """
    ax, affine, shape, ratio = _thick_geometry(vol, thickness_mm, axis)
    weights = _slab_average_matrix(vol.shape[ax], shape[ax], ratio)
    data = _apply_along(vol.data, weights, ax)
    data = add_noise(data, noise_std, kind=noise, rng=rng)
    notes = [*vol.notes, f"thick slices: {thickness_mm:g} mm along array axis {ax}"]
    return Volume(data=data, affine=affine, path=None, header=vol.header, notes=notes)


def label_steps(data: np.ndarray) -> np.ndarray:
    """A label map's values in steps of 0.5 (int64: 0 background, 1 for 0.5, 2 for 1, ...): the label values 0, 0.5
    (rater agreement, as VALDO's references hold it and ``plkd evaluate`` reads it) and whole numbers, each value
    rounded to the nearest of them (a float label's 0.999 is 1)."""
    return np.rint(np.asarray(data, dtype=np.float64) * 2.0).astype(np.int64)


def round_label_values(data: np.ndarray) -> np.ndarray:
    """``data`` rounded to the label values 0, 0.5 and whole numbers (float64); ``np.rint`` made 0.5 a 0."""
    return label_steps(data) / 2.0


def thick_slab_labels(
    label: Volume,
    thickness_mm: float,
    *,
    axis: int | None = None,
    min_fraction: float = 0.5,
    keep_every_lesion: bool = True,
    halves: bool = True,
) -> Volume:
    """A label map on the grid of :func:`thick_slab_volume` (same arguments give the same grid).

    A thick voxel takes a label value when that value covers at least ``min_fraction`` of it
    (the fraction of its slab, weighted like the image); where several values qualify the one
    covering most wins. With ``keep_every_lesion`` every lesion (connected component of one
    value, the connectivity of the metrics) that would vanish at that threshold keeps its best-covered thick
    voxel(s), so a 2 mm microbleed split between two 4 mm slabs is still there to detect.
    Values are rounded to the label values (0, 0.5 for rater agreement, whole numbers; rounding them to integers
    turned every 0.5 microbleed into background), or to whole numbers without ``halves`` (a brain mask); the
    result is float32.
    """
    if not 0.0 < min_fraction <= 1.0:
        raise PLKDError(f"minimum label fraction must be in (0, 1], not {min_fraction}")
    ax, affine, shape, ratio = _thick_geometry(label, thickness_mm, axis)
    weights = _slab_average_matrix(label.shape[ax], shape[ax], ratio)
    # In steps of 0.5 (a microbleed of 0.5 is step 1); a mask in whole steps (step 2 for 1).
    values = label_steps(label.data) if halves else 2 * np.rint(np.asarray(label.data)).astype(np.int64)
    out = np.zeros(shape, dtype=np.float32)
    best = np.zeros(shape, dtype=np.float32)
    if values.min() < 0:
        raise PLKDError("label map has negative values; labels must be 0 (background) or positive integers")
    boxes = ndimage.find_objects(values)
    for index, box in enumerate(boxes):
        if box is None:
            continue
        value = index + 1
        # The box along the slab axis is widened to the whole axis: thick slabs mix any slice.
        box = tuple(slice(None) if a == ax else s for a, s in enumerate(box))
        region = values[box] == value
        frac = _apply_along(region, weights, ax)
        take = (frac >= min_fraction - 1e-6) & (frac > best[box])
        out[box][take] = value / 2.0
        best[box][take] = frac[take]
        if not keep_every_lesion:
            continue
        comps, _ = label_components(region)
        for c, cbox in enumerate(ndimage.find_objects(comps), start=1):
            if cbox is None:
                continue
            cbox = tuple(slice(None) if a == ax else s for a, s in enumerate(cbox))
            frac_c = _apply_along(comps[cbox] == c, weights, ax)
            out_c, best_c = out[box][cbox], best[box][cbox]  # views into the result
            if np.any((out_c == value / 2.0) & (frac_c > 0)):
                continue  # the lesion already shows
            top = frac_c >= frac_c.max() - 1e-6
            out_c[top] = value / 2.0
            best_c[top] = np.maximum(best_c[top], frac_c[top])
    notes = [*label.notes, f"thick-slice labels: {thickness_mm:g} mm, covered ≥ {min_fraction:g}"]
    return Volume(data=out, affine=affine, path=None, header=label.header, notes=notes)
