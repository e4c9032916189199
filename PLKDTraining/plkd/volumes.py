"""Reading, validating and writing NIfTI volumes, keeping the affine exactly.

Arrays are indexed ``[i, j, k]`` as nibabel stores them; the affine maps ``(i, j, k, 1)`` to
RAS+ millimetres. Nothing here reorients data: outputs are written on the grid of their input
so that a label map overlays its image exactly, whatever the orientation (oblique, LPS-stored,
anisotropic).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from plkd.atomic import atomic_path
from plkd.errors import InputError

log = logging.getLogger(__name__)

#: Voxel sizes outside this range (mm) are rejected as a broken header, not a real scan.
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0

#: How a 4-D multi-echo input becomes 3-D: ``"rss"`` (root-sum-of-squares over echoes),
#: ``"last"`` or an echo number counted from 1, as scanners and BIDS (``echo-1``) count.
EchoChoice = str | int


@dataclass
class Volume:
    """A 3-D image on a voxel grid with its voxel-to-RAS affine."""

    data: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    header: nib.Nifti1Header | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid size in voxels."""
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each array axis (column norms of the affine)."""
        return spacing_from_affine(self.affine)

    def with_data(self, data: np.ndarray) -> Volume:
        """A volume with the same grid and new voxel values."""
        if data.shape[:3] != self.data.shape[:3]:
            raise ValueError(f"shape {data.shape} does not match grid {self.data.shape}")
        return Volume(data=data, affine=self.affine.copy(), path=None, header=self.header, notes=list(self.notes))


def spacing_from_affine(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each array axis of a 4×4 voxel-to-world affine."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def slice_axis(affine: np.ndarray) -> int:
    """The array axis with the largest voxel size: the through-plane axis of a thick-slice scan."""
    return int(np.argmax(spacing_from_affine(affine)))


def anisotropy_ratio(affine: np.ndarray) -> float:
    """Slice thickness divided by the finer in-plane voxel size (1.0 for isotropic data)."""
    sp = spacing_from_affine(affine)
    ax = int(np.argmax(sp))
    in_plane = np.delete(sp, ax)
    return float(sp[ax] / in_plane.min())


def header_affine(header: nib.Nifti1Header) -> np.ndarray:
    """The voxel → RAS+ affine (mm) of a NIfTI header, as the NIfTI reference library reads it.

    The sform when its code is set, else the qform when its code is set (nibabel's order).
    With both codes 0 the image has no orientation; nifti1_io, and with it ITK, Slicer and
    ITK-SNAP, then places voxel ``(i, j, k)`` at ``(i·dx, j·dy, k·dz)`` (NIfTI-1 "method 1").
    nibabel's own fallback flips x and centres the grid instead, which would put candidate
    centres and label maps in another place than those viewers show the image, so the
    nifti1_io rule is used here.
    """
    if int(header["sform_code"]) > 0:
        return np.asarray(header.get_sform(), dtype=np.float64)
    if int(header["qform_code"]) > 0:
        return np.asarray(header.get_qform(), dtype=np.float64)
    zooms = np.abs(np.asarray(header["pixdim"][1:4], dtype=np.float64))
    return np.diag([*np.where(zooms > 0, zooms, 1.0), 1.0])


def _read_nifti(path: str | os.PathLike[str], what: str) -> nib.Nifti1Image:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if p.is_dir():
        raise InputError(f"{what} is a folder, not a NIfTI file: {p}")
    try:
        img = nib.load(str(p))
        # Read the data now so a truncated or corrupt file fails here, with its name.
        arr = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for broken files
        raise InputError(f"cannot read {what} {p.name} as NIfTI: {exc.__class__.__name__}: {exc}") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{what} {p.name} is not a NIfTI image ({type(img).__name__})")
    img._plkd_array = arr  # type: ignore[attr-defined]  # read once, reused by callers
    return img


def _to_3d(arr: np.ndarray, name: str, echo: EchoChoice, notes: list[str]) -> np.ndarray:
    # Drop trailing singleton dimensions (4-D files with one volume are common).
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:
        return arr
    if arr.ndim == 4:
        n = arr.shape[3]
        if echo == "rss":
            notes.append(f"{name}: combined {n} echoes by root-sum-of-squares")
            arr = np.sqrt(np.sum(np.abs(arr.astype(np.float64)) ** 2, axis=3))
        elif echo == "last":
            notes.append(f"{name}: used the last of {n} echoes")
            arr = arr[..., n - 1]
        else:
            try:
                idx = int(echo)
            except (TypeError, ValueError):
                raise InputError(f"--echo must be 'rss', 'last' or an echo number, not {echo!r}") from None
            if idx < 1:
                raise InputError(f"echoes are numbered from 1 (as scanners and BIDS count them), not {idx}")
            if idx > n:
                raise InputError(f"{name} has {n} echoes; echo {idx} does not exist (use 1..{n})")
            notes.append(f"{name}: used echo {idx} of {n}")
            arr = arr[..., idx - 1]
        for note in notes[-1:]:
            log.info(note)
        return arr
    raise InputError(f"{name} is {arr.ndim}-D with shape {arr.shape}; a 3-D volume (or 4-D multi-echo) is required")


def validate_intensities(data: np.ndarray, name: str) -> None:
    """Refuse empty, non-finite, complex or constant images with one line naming the problem."""
    if data.size == 0:
        raise InputError(f"{name} is empty (shape {data.shape})")
    if np.iscomplexobj(data):
        raise InputError(f"{name} holds complex values; give the magnitude image")
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_):
        raise InputError(f"{name} has unsupported data type {data.dtype}")
    if np.issubdtype(data.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise InputError(f"{name} contains {bad} NaN/Inf voxel(s)")
    lo, hi = float(np.min(data)), float(np.max(data))
    if lo == hi:
        raise InputError(f"{name} is constant (every voxel = {lo:g}); nothing to analyse")


def validate_geometry(affine: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    """Refuse absurd voxel sizes and singular affines."""
    if not np.all(np.isfinite(affine)):
        raise InputError(f"{name} has a non-finite affine")
    sp = spacing_from_affine(affine)
    if np.any(sp < MIN_SPACING_MM) or np.any(sp > MAX_SPACING_MM):
        raise InputError(
            f"{name} has absurd voxel spacing {tuple(round(float(s), 4) for s in sp)} mm "
            f"(expected {MIN_SPACING_MM}-{MAX_SPACING_MM} mm per axis)"
        )
    if abs(np.linalg.det(np.asarray(affine)[:3, :3])) < 1e-12:
        raise InputError(f"{name} has a singular affine")
    if min(shape[:3]) < 1:
        raise InputError(f"{name} has an empty grid {shape}")


def load_volume(path: str | os.PathLike[str], *, echo: EchoChoice = "rss", what: str = "image") -> Volume:
    """Load and validate a 3-D (or 4-D multi-echo) intensity image as float32.

    Raises :class:`InputError` with one line naming the problem for a missing or corrupt file,
    a 2-D/5-D image, NaN/Inf, a constant or empty image or absurd voxel spacing.
    """
    img = _read_nifti(path, what)
    name = f"{what} {Path(path).name}"
    notes: list[str] = []
    arr = _to_3d(np.asarray(img._plkd_array), name, echo, notes)  # type: ignore[attr-defined]
    if arr.ndim != 3:
        raise InputError(f"{name} is {arr.ndim}-D; a 3-D volume is required")
    affine = header_affine(img.header)
    validate_geometry(affine, arr.shape, name)
    validate_intensities(arr, name)
    return Volume(
        data=np.ascontiguousarray(arr, dtype=np.float32),
        affine=affine,
        path=Path(path),
        header=img.header.copy(),
        notes=notes,
    )


def load_label(path: str | os.PathLike[str], *, what: str = "label map", allow_empty: bool = True) -> Volume:
    """Load a label map or mask (any numeric type); values are kept as float32.

    An all-zero map is allowed for reference labels (a subject without microbleeds) but refused
    with ``allow_empty=False`` (a brain mask must contain brain).
    """
    img = _read_nifti(path, what)
    name = f"{what} {Path(path).name}"
    arr = np.asarray(img._plkd_array)  # type: ignore[attr-defined]
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise InputError(f"{name} is {arr.ndim}-D with shape {arr.shape}; a 3-D map is required")
    affine = header_affine(img.header)
    validate_geometry(affine, arr.shape, name)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN/Inf values")
    if not allow_empty and not np.any(arr):
        raise InputError(f"{name} is empty (no non-zero voxel)")
    return Volume(data=arr.astype(np.float32), affine=affine, path=Path(path), header=img.header.copy())


def check_same_grid(a: Volume, b: Volume, what: str = "mask", atol: float = 1e-3) -> None:
    """Refuse a second volume (e.g. a brain mask) whose grid differs from the image's."""
    if a.shape != b.shape or not np.allclose(a.affine, b.affine, atol=atol):
        raise InputError(f"{what} grid {b.shape} does not match the image grid {a.shape} (shape or affine differ)")


def save_volume(
    path: str | os.PathLike[str],
    data: np.ndarray,
    affine: np.ndarray,
    *,
    dtype: np.dtype | type | None = None,
    header: nib.Nifti1Header | None = None,
) -> Path:
    """Write ``data`` as NIfTI atomically on the grid ``affine`` (voxel → RAS+ mm, 4×4).

    When ``header`` (e.g. the input's) describes this grid (:func:`header_affine` equals
    ``affine``), its geometry is kept exactly: qform and sform with their codes (0 stays 0),
    pixdim including qfac, units, ``dim_info`` and slice timing, so the output overlays its
    input in every viewer. Only the data type, scaling and display range are replaced. Without
    such a header, qform and sform are set to ``affine`` with the header's sform code (1,
    scanner, when there is none).
    """
    arr = np.asarray(data if dtype is None else np.asarray(data).astype(dtype))
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype == np.int64:
        arr = arr.astype(np.int32)
    # A NIfTI-2 input gives a NIfTI-2 output: converting its header would drop the qform.
    klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    hdr = klass.header_class.from_header(header) if header is not None else None
    affine = np.asarray(affine, dtype=np.float64)
    if hdr is not None and np.allclose(header_affine(hdr), affine, atol=1e-4):
        img = klass(arr, None, header=hdr)
    else:
        code = max(int(hdr["sform_code"]), int(hdr["qform_code"])) if hdr is not None else 0
        img = klass(arr, affine, header=hdr)
        img.set_qform(affine, code=code or 1)
        img.set_sform(affine, code=code or 1)
    img.set_data_dtype(arr.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"] = img.header["cal_max"] = 0.0
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)
