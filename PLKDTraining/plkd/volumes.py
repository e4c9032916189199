"""Reading, validating and writing NIfTI volumes, keeping the affine exactly.

Arrays are indexed ``[i, j, k]`` as nibabel stores them; the affine maps ``(i, j, k, 1)`` to
RAS+ millimetres. Nothing here reorients data: outputs are written on the grid of their input
so that a label map overlays its image exactly, whatever the orientation (oblique, LPS-stored,
anisotropic).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from plkd.atomic import atomic_path
from plkd.errors import InputError
from plkd.naming import is_pair_name, pair_files, strip_nifti_suffix

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


#: Below this slice/in-plane ratio a volume counts as isotropic: it has no slice axis of its own.
ISOTROPIC_RATIO = 1.2
#: Voxel sizes that differ by less than this fraction are equal when the slice axis is chosen.
SLICE_TIE_TOLERANCE = 0.01


def network_axes(
    affine: np.ndarray, shape: tuple[int, ...], model_spacing_mm: float = 1.0
) -> tuple[np.ndarray, list[int], np.ndarray]:
    """How :func:`plkd.inference.preprocess.prepare` turns a grid for the networks: ``(ornt, perm, new_affine)``,
    the nibabel orientation that brings the array axes to R, A, S, then the axis order ``perm`` that moves an
    anisotropic grid's slice axis to Z, and the affine of the result. Training (:mod:`plkd.training.sampling`)
    turns its subjects the same way, so a data set stored sagittally is learnt in the frame it is predicted in.

    The slice axis is the one coarsest axis. Two axes whose voxel sizes agree within
    :data:`SLICE_TIE_TOLERANCE` are a tie (:func:`tied_slice_axes`): when they are no coarser than the model grid
    (``model_spacing_mm``: 1×1×0.5 mm for a 1 mm model) the scan is high-resolution data and has no slice axis, the
    grid stays in RAS order as an isotropic one does (the tie was broken by axis number, which turned a 1×1×0.5 mm
    scan on its side, x as Z). When they are coarser (3×3×1 mm) the one that comes last in RAS order (S, else A)
    becomes Z: the students learnt thick slices along Z, and a scan kept in RAS order reached them with its fine
    axis as Z and both thick ones in-plane (two planted 3 and 2.5 mm microbleeds were missed, both found now)."""
    ornt = io_orientation(affine)
    new_affine = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(ornt, shape)
    perm = [0, 1, 2]
    if anisotropy_ratio(new_affine) >= ISOTROPIC_RATIO:
        sp = spacing_from_affine(new_affine)
        coarse = np.flatnonzero(sp >= sp.max() * (1.0 - SLICE_TIE_TOLERANCE))
        tied = tied_slice_axes(new_affine, model_spacing_mm)
        if len(coarse) == 1 or tied:
            axis = int(coarse[-1])
            perm = [a for a in range(3) if a != axis] + [axis]
    return ornt, perm, new_affine[:, perm + [3]]


def tied_slice_axes(affine: np.ndarray, model_spacing_mm: float = 1.0) -> list[int]:
    """The two array axes of a grid whose voxel sizes agree, within :data:`SLICE_TIE_TOLERANCE`, with the coarsest
    when they are coarser than the finest axis and the model grid by :data:`ISOTROPIC_RATIO` or more (3×3×1 mm for
    a 1 mm model; :func:`network_axes` takes the last as Z); else an empty list (1×1×0.5 mm, isotropic, one
    coarsest axis)."""
    sp = spacing_from_affine(affine)
    coarse = np.flatnonzero(sp >= sp.max() * (1.0 - SLICE_TIE_TOLERANCE))
    if len(coarse) != 2 or sp.max() < ISOTROPIC_RATIO * max(float(sp.min()), float(model_spacing_mm)):
        return []
    return [int(a) for a in coarse]


def network_slice_axis(affine: np.ndarray) -> int:
    """The array axis of a volume that the networks see as Z (the slice axis): an anisotropic grid's one coarsest
    axis, or of two equally coarse axes coarser than 1 mm (3×3×1 mm) the one closer to superior (S, else A), else
    (isotropic, or two axes equally coarse at 1 mm or finer, 1×1×0.5 mm) the axis closest to superior.
    Low-resolution versions of an HR image made for a student (``plkd tune``, ``plkd cv``, ``plkd lowres``) thin
    this axis: thinning array axis 2 of a sagittally stored image gave the student thick slices across its X axis,
    which it never learnt."""
    ornt, perm, _ = network_axes(affine, (2, 2, 2))
    turned_z = perm[2]  # axis of the RAS-ordered array that becomes Z
    return int(np.flatnonzero(ornt[:, 0] == turned_z)[0])


def sform_passed_over(header: nib.Nifti1Header) -> bool:
    """Whether a sform whose code is set places nothing (not finite, or singular: a matrix of zeros from a tool that set
    the code alone) while a qform is set: the image is then placed by the qform, as ITK (3D Slicer, ITK-SNAP) places
    it. Taken as it was, it had the scan refused for "absurd voxel spacing (0.0, 0.0, 0.0)"."""
    if int(header["sform_code"]) <= 0 or int(header["qform_code"]) <= 0:
        return False
    sform = np.asarray(header.get_sform(), dtype=np.float64)[:3, :3]
    return not np.all(np.isfinite(sform)) or abs(float(np.linalg.det(sform))) < 1e-12


def sform_note(header: nib.Nifti1Header, name: str) -> str | None:
    """The warning for :func:`sform_passed_over`, or None."""
    if not sform_passed_over(header):
        return None
    return (
        f"{name}: its sform (code {int(header['sform_code'])}) places nothing (a singular or non-finite matrix): the "
        "image is placed by its qform, as 3D Slicer and ITK-SNAP place it; the outputs keep both"
    )


def header_affine(header: nib.Nifti1Header) -> np.ndarray:
    """The voxel → RAS+ affine (mm) of a NIfTI header, as the NIfTI reference library reads it.

    The sform when its code is set, else the qform when its code is set (nibabel's order).
    With both codes 0 the image has no orientation. ITK, and with it 3D Slicer and ITK-SNAP, then
    takes the identity direction in its LPS world: voxel ``(i, j, k)`` at RAS ``(-i·dx, -j·dy, k·dz)``
    (checked with SimpleITK 5.4 and Slicer's own reader). That rule is used here, so candidate
    centres lie where those viewers show the image. nifti1_io's "method 1" places it at
    ``(i·dx, j·dy, k·dz)`` and nibabel's fallback flips x and centres the grid; plkd used the former,
    which put every centre of the JSON mirrored through the origin in x and y from where Slicer
    shows the scan, while its warning said it followed those viewers.
    """
    if int(header["sform_code"]) > 0 and not sform_passed_over(header):
        return np.asarray(header.get_sform(), dtype=np.float64)
    if int(header["qform_code"]) > 0:
        return np.asarray(header.get_qform(), dtype=np.float64)
    zooms = np.abs(np.asarray(header["pixdim"][1:4], dtype=np.float64))
    # 0 is 1 mm, as nibabel repairs it (and says so); NaN stays NaN, refused as a non-finite affine: it was 1 mm too.
    zooms = np.where((zooms > 0) | np.isnan(zooms), zooms, 1.0)
    return np.diag([-zooms[0], -zooms[1], zooms[2], 1.0])


class _HeaderFixes(logging.Handler):
    """Collects what nibabel says it fixed in a header (zero or negative pixdim, ...) while a file is read."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().strip()
        if text and text not in self.messages:
            self.messages.append(text)


@contextmanager
def nibabel_header_fixes() -> Iterator[list[str]]:
    """Within the block, what nibabel says it fixed in a header is collected in the list given, not printed.

    nibabel prints those on its own handler and again through the root logger ("Level 35: ..."), without
    the file's name, at every read of the file; :func:`load_volume` and :func:`load_label` say them once
    instead, as a plkd warning naming the file (a JSON note in ``plkd predict``), since they change where
    the image lies. Other reads of the same file discard them.
    """
    fixes = _HeaderFixes()
    nib_log = logging.getLogger("nibabel.global")
    handlers, propagate = nib_log.handlers[:], nib_log.propagate
    nib_log.handlers[:] = [fixes]
    nib_log.propagate = False
    try:
        yield fixes.messages
    finally:
        nib_log.handlers[:] = handlers
        nib_log.propagate = propagate


def _read_nifti(path: str | os.PathLike[str], what: str) -> nib.Nifti1Image:
    with nibabel_header_fixes() as fixes:
        img = _read_nifti_quietly(path, what)
    for text in fixes:
        log.warning("%s %s: header fixed as nibabel reads it: %s", what, Path(path).name, text)
    return img


#: The first two bytes of a gzip stream (RFC 1952).
_GZIP_MAGIC = b"\x1f\x8b"


def is_gzip_file(path: str | os.PathLike[str]) -> bool:
    """True when the file's content is gzip-compressed, whatever its name says; False when unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == _GZIP_MAGIC
    except OSError:
        return False


def open_nifti(path: str | os.PathLike[str]) -> tuple[nib.Nifti1Image, str | None]:
    """``(image, mismatch)``: the NIfTI file at ``path`` opened by its content, its voxel data left unread, and, when
    its name says otherwise (``.nii.gz`` not compressed, ``.nii`` compressed), a sentence saying so (else None).

    nibabel chooses gzip by the name alone, so a ``.nii.gz`` that a tool wrote uncompressed failed with "not a gzip
    file" while ITK-based tools (3D Slicer, ITK-SNAP, nnU-Net's reader) open it by its content; so does plkd. Raises
    what nibabel raises for a file that is no NIfTI.
    """
    p = Path(path)
    named_gz = p.name.lower().endswith(".gz")
    compressed = is_gzip_file(p)
    if compressed == named_gz or not p.name.lower().endswith((".nii", ".nii.gz")):
        return nib.load(str(p)), None
    import gzip

    fileobj = gzip.open(p, "rb") if compressed else open(p, "rb")  # noqa: SIM115 - read below, then closed
    head = fileobj.read(4)
    fileobj.seek(0)
    klass = nib.Nifti2Image if 540 in (int.from_bytes(head, "little"), int.from_bytes(head, "big")) else nib.Nifti1Image
    img = klass.from_file_map({"image": nib.fileholders.FileHolder(filename=str(p), fileobj=fileobj)})
    img._plkd_fileobj = fileobj  # type: ignore[attr-defined]  # closed once the data are read
    said = "gzip-compressed" if compressed else "not gzip-compressed"
    rename = strip_nifti_suffix(p.name) + (".nii.gz" if compressed else ".nii")
    return img, f"{p.name} is {said}, unlike what its name says: read by its content (rename it {rename})"


#: Where a NIfTI header's magic lies: NIfTI-1 at byte 344 (``n+1``, ``ni1``), NIfTI-2 at byte 4 (``n+2``, ``ni2``).
_NIFTI1_MAGIC = (b"n+1\x00", b"ni1\x00")
_NIFTI2_MAGIC = (b"n+2\x00", b"ni2\x00")


def is_nifti_pair_header(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (a ``.hdr``, or ``.hdr.gz``) is the header of a NIfTI pair (magic ``ni1``, ``ni2``), not of an
    Analyze 7.5 image; False when unreadable."""
    import gzip

    try:
        with gzip.open(path, "rb") if is_gzip_file(path) else open(path, "rb") as f:
            head = f.read(540)
    except (OSError, EOFError):
        return False
    return head[344:348] == _NIFTI1_MAGIC[1] or head[4:8] == _NIFTI2_MAGIC[1]


def _exception_text(exc: Exception) -> str:
    return f"{exc.__class__.__name__}: {exc}"


def _why_no_header(path: Path) -> str | None:
    """Why the file holds no NIfTI header (empty, too short, no NIfTI magic), read after gunzip when it is gzip;
    None when a header is there (then nibabel's own message says what is wrong)."""
    import gzip

    try:
        with gzip.open(path, "rb") if is_gzip_file(path) else open(path, "rb") as f:
            head = f.read(540)
    except (OSError, EOFError):
        return "its gzip stream is corrupt or cut short"
    if not head:
        return "the file is empty" if path.stat().st_size == 0 else "its gzip stream holds no data"
    if len(head) < 348:
        return f"only {len(head)} bytes, fewer than a NIfTI header's 348 (truncated?)"
    if head[344:348] not in _NIFTI1_MAGIC and head[4:8] not in _NIFTI2_MAGIC:
        return "no NIfTI header (its magic is missing): another format, or a damaged file"
    return None


def _other_format(img: object) -> str:
    """What a file nibabel opened, but that is no single-file NIfTI, is, and what to do (for the one-line error)."""
    if isinstance(img, nib.AnalyzeImage):
        return (
            "is an Analyze 7.5 image (.hdr + .img), whose header does not say where left and right are; convert it "
            "to NIfTI with a tool that knows its orientation (SPM, FSL's fslchfiletype) and check left and right"
        )
    return f"is not a NIfTI image ({type(img).__name__})"


def _read_nifti_quietly(path: str | os.PathLike[str], what: str) -> nib.Nifti1Image:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if p.is_dir():
        raise InputError(f"{what} is a folder, not a NIfTI file: {p}")
    if is_pair_name(p):
        for member in pair_files(p):
            if not member.exists():
                raise InputError(f"{what} {p.name} is one file of a NIfTI or Analyze pair; {member.name} is missing")
    try:
        img, mismatch = open_nifti(p)  # reads the header only
    except Exception as exc:  # nibabel raises many types for broken files
        raise InputError(f"cannot read {what} {p.name} as NIfTI: {_why_no_header(p) or _exception_text(exc)}") from None
    # A NIfTI pair (.hdr + .img, as SPM writes) is NIfTI: the same header, its voxels in the .img (a .nii is a
    # subclass). It was refused ("convert it") while nibabel, 3D Slicer and ITK-SNAP read it.
    if not isinstance(img, nib.Nifti1Pair | nib.Nifti2Pair):
        raise InputError(f"{what} {p.name} {_other_format(img)}")
    voxels = Path(img.file_map["image"].filename or p)
    try:
        # Before allocating what the header announces, check that the file can hold it.
        offset = int(getattr(img.dataobj, "offset", None) or img.header.get_data_offset() or 0)
        compressed = is_gzip_file(voxels)
        check_data_size(voxels, img.header, f"{what} {voxels.name}", offset=offset, compressed=compressed)
        try:
            # Read the data now so a truncated or corrupt file fails here, with its name.
            arr = np.asanyarray(img.dataobj)
        except MemoryError:
            gigabytes = _announced_bytes(img.header) / 1e9
            raise InputError(f"{what} {p.name} is too large to load ({gigabytes:.1f} GB)") from None
        except Exception as exc:  # nibabel raises many types for broken files
            raise InputError(f"cannot read {what} {p.name} as NIfTI: {exc.__class__.__name__}: {exc}") from None
    finally:
        if (fileobj := getattr(img, "_plkd_fileobj", None)) is not None:
            fileobj.close()
    if mismatch is not None:
        log.warning("%s %s", what, mismatch)
    img._plkd_array = arr  # type: ignore[attr-defined]  # read once, reused by callers
    return img


#: gzip cannot compress better than about 1032:1 (deflate's limit); a larger claim is a lie.
_GZIP_MAX_RATIO = 1032


def _announced_bytes(header: nib.Nifti1Header) -> int:
    """Bytes of voxel data the header announces (shape × bytes per voxel)."""
    n = 1
    for s in header.get_data_shape():
        n *= int(s)
    return n * int(header.get_data_dtype().itemsize)


def check_data_size(
    path: Path, header: nib.Nifti1Header, name: str, *, offset: int = 0, compressed: bool | None = None
) -> None:
    """Refuse a file that cannot hold the voxel data its header announces, before reading it.

    ``.nii``: the file size must reach ``vox_offset`` + the data. ``.nii.gz``: the data may not
    exceed what deflate can expand the file to, and when the gzip trailer (uncompressed size
    modulo 2**32) says less, the stream is counted (in bounded memory) to be sure. ``offset``
    is where the voxel data start (``vox_offset``); ``compressed``: whether the content is gzip (None: as the name
    says, ``.nii.gz``).
    """
    need = _announced_bytes(header)
    size = path.stat().st_size
    lower = path.name.lower()
    if compressed is None:
        compressed = lower.endswith(".gz")
    short = None
    if not compressed:
        if size < offset + need:
            short = f"{size - offset if size > offset else 0:,} bytes"
    else:
        if need > _GZIP_MAX_RATIO * size:
            short = f"a {size:,}-byte compressed file"
        elif _gzip_trailer_size(path) < (offset + need) % 2**32 or (offset + need) >= 2**32:
            have = _gunzipped_size(path, offset + need)
            if have < offset + need:
                short = f"{max(have - offset, 0):,} bytes"
    if short is not None:
        raise InputError(
            f"{name} is truncated: its header announces {need:,} bytes of voxel data, the file holds {short}"
        )


def _gzip_trailer_size(path: Path) -> int:
    """The gzip trailer's uncompressed size (mod 2**32); 0 when unreadable (then the stream is counted)."""
    try:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            return int.from_bytes(f.read(4), "little")
    except OSError:
        return 0


def _gunzipped_size(path: Path, limit: int) -> int:
    """Uncompressed size of a gzip file, counted up to ``limit`` bytes (1 MB blocks)."""
    import gzip

    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while total < limit:
                block = f.read(1 << 20)
                if not block:
                    break
                total += len(block)
    except (OSError, EOFError):
        pass  # a corrupt stream holds what could be read
    return total


#: More volumes than a multi-echo GRE protocol acquires (clinical ones: 1-12 echoes).
MAX_ECHOES = 16


def echo_series_doubt(arr: np.ndarray, name: str) -> str | None:
    """Why a 4-D image ``(X, Y, Z, N)`` does not look like the echoes of one multi-echo GRE, or None.

    The magnitude of successive echoes fades with T2* decay: over the tissue (voxels above the
    first volume's median) each echo's mean signal is at most 5 % above the one before, and the
    last is at least 5 % below the first. A time series (flat), a magnitude + phase pair (the
    phase does not fade) or a stack of other images breaks that, and so does more than
    :data:`MAX_ECHOES` volumes; combining them as echoes would give an image no scanner made.
    """
    n = arr.shape[3]
    if n > MAX_ECHOES:
        return f"{name} has {n} volumes, more than a multi-echo GRE acquires; a time series? give one 3-D image"
    first = np.abs(np.asarray(arr[..., 0], dtype=np.float64))
    tissue = first > np.median(first)
    if n < 2 or not tissue.any():
        return None
    means = np.array([float(np.abs(arr[..., i][tissue]).mean()) for i in range(n)])
    if np.all(means[1:] <= 1.05 * means[:-1]) and means[-1] <= 0.95 * means[0]:
        return None
    shown = ", ".join(f"{m:.4g}" for m in means[:6]) + (", ..." if n > 6 else "")
    return (
        f"{name}: its {n} volumes do not fade from echo to echo as a multi-echo GRE's do (mean tissue signal "
        f"{shown}); a time series or a magnitude + phase pair? give one 3-D magnitude image or choose --echo"
    )


def values_per_voxel_as_volumes(arr: np.ndarray) -> np.ndarray:
    """``(X, Y, Z, 1, N)`` → ``(X, Y, Z, N)``; other arrays unchanged.

    NIfTI keeps dimension 4 for time and stores several values per voxel along dimension 5, so a tool may write
    the echoes of one acquisition as one time point of N values; read as the 4-D file of N volumes (it was
    refused as 5-D)."""
    if arr.ndim == 5 and arr.shape[3] == 1:
        return arr[:, :, :, 0, :]
    return arr


def _to_3d(arr: np.ndarray, name: str, echo: EchoChoice, notes: list[str]) -> np.ndarray:
    # Drop trailing singleton dimensions (4-D files with one volume are common).
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:
        return arr
    if arr.ndim == 4:
        n = arr.shape[3]
        if (doubt := echo_series_doubt(arr, name)) is not None:
            log.warning(doubt)
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


#: Magnitudes above this are no scanner's (12-16 bit integers, a float rescale of them): a
#: broken scaling slope or a foreign file. Far below float32's overflow, so statistics stay finite.
MAX_ABS_INTENSITY = 1e9
#: A magnitude image (after interpolation or filtering) may hold a few negative voxels, small
#: next to its bright tissue. A phase map, a real/imaginary part or another signed image has
#: many, of a size comparable to its positive values.
SIGNED_MIN_FRACTION = 0.10
SIGNED_MIN_RATIO = 0.25
#: The smallest grid analysed: each axis needs this many voxels and this extent (mm); a single
#: slice or a 3×3×3 block has no neighbourhood around a microbleed to look at.
MIN_VOXELS_PER_AXIS = 4
MIN_EXTENT_MM = 4.0


#: A constant fills the background when it is the value of at least this share of the voxels on the faces.
FILL_FACE_FRACTION = 0.5


def background_fill_value(data: np.ndarray) -> float:
    """The constant that fills the background: the value of at least :data:`FILL_FACE_FRACTION` of the voxels on
    the six faces of the first three (spatial) axes, every volume of a 4-D file included, else 0 (air, or no
    background at all)."""
    faces = np.concatenate([np.take(data, i, axis=a).ravel() for a in range(3) for i in (0, data.shape[a] - 1)])
    values, counts = np.unique(faces, return_counts=True)
    top = int(np.argmax(counts))
    return float(values[top]) if counts[top] >= FILL_FACE_FRACTION * faces.size else 0.0


def clear_padding(data: np.ndarray, name: str, notes: list[str]) -> np.ndarray:
    """``data`` with what pads its background and cannot be signal set to 0, the air it stands for; a note says
    so. Any other ``data`` is returned as it is.

    Padding is the value of :func:`background_fill_value` when it is negative and lies further below every other
    voxel than half their range (the data type's minimum, -32768, or -1024, as some resampling and conversion
    tools fill what lies outside the acquisition: a magnitude image holds no negative values), when it is brighter
    than every other voxel (air never is), or when it is NaN (SPM's implicit mask; every NaN voxel is then taken
    as outside the scan, while a NaN in an image whose background is no NaN is still refused). Left in place,
    negative padding made most non-zero voxels negative, and the scan was refused as a phase image (in a 4-D
    multi-echo file root-sum-of-squares made it a bright background); bright padding left no brain to find once
    the fill was subtracted; NaN padding was refused as NaN voxels. A constant just below the darkest tissue is an
    offset of the whole image, left as it is: the brain mask allows for it
    (:func:`plkd.inference.brainmask.compute_brain_mask`).
    Padding enclosed by the scan (no path through padding to a face of the grid) is refused: see
    :func:`_refuse_enclosed_padding`.
    """
    if data.ndim < 3 or data.size == 0 or not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        return data
    fill = background_fill_value(data)
    if fill == 0:
        return data
    padded = np.isnan(data) if fill != fill else data == fill
    if padded.all():
        return data  # a constant image, refused as such
    rest = data[~padded]
    low, high = float(np.min(rest)), float(np.max(rest))
    if fill != fill:
        why = "an implicit mask as SPM writes it (not a number)"
    elif fill < 0 and low - fill > 0.5 * (high - low):
        why = "a negative constant far below every other voxel, which no magnitude image holds"
    elif fill > high:
        why = "a constant brighter than every other voxel, which air never is"
    else:
        return data  # an offset of the whole image (its darkest tissue lies just above the fill), or tissue
    value = "NaN" if fill != fill else f"{fill:g}"
    _refuse_enclosed_padding(padded, value, name)
    notes.append(f"{name}: {100 * float(padded.mean()):.0f}% of its voxels hold {value}, {why}; read as 0 (air)")
    log.info(notes[-1])
    return np.where(padded, np.zeros((), dtype=data.dtype), data)


def _refuse_enclosed_padding(padded: np.ndarray, value: str, name: str) -> None:
    """Refuse padding values that lie inside the scan: regions of ``padded`` (the voxels holding the fill, any volume
    of a 4-D file) that no path through padding links to a face of the grid. Padding surrounds what was acquired;
    enclosed by tissue, the fill is a voxel lost in the scan (a NaN hole of an SPM image, a dropout stored as
    -32768), and read as 0 it became a black dot that the networks took for a microbleed (probability 0.99 on the
    test model) without a word, while a lone NaN in an image whose background is no NaN is refused."""
    from scipy import ndimage

    spatial = padded.reshape(*padded.shape[:3], -1).any(axis=-1)
    labels, count = ndimage.label(spatial, structure=np.ones((3, 3, 3), dtype=bool))
    # The fill is what most of the faces hold (background_fill_value), so the padding outside touches them.
    faces = np.concatenate([np.take(labels, i, axis=a).ravel() for a in range(3) for i in (0, spatial.shape[a] - 1)])
    inside = sorted(set(range(1, count + 1)) - {int(v) for v in np.unique(faces)})
    if not inside:
        return
    enclosed = np.isin(labels, inside)
    sizes = np.bincount(labels[enclosed])
    largest = int(np.argmax(sizes))
    where = tuple(int(round(float(c))) for c in ndimage.center_of_mass(labels == largest))
    raise InputError(
        f"{name} has {int(enclosed.sum())} voxel(s) holding {value}, the value that pads its background, inside the "
        f"scan ({int(np.count_nonzero(sizes))} region(s), the largest around voxel {where}): lost voxels, which read "
        "as air would look like microbleeds; fill or mask them (or give the image without the implicit mask)"
    )


def validate_values(data: np.ndarray, name: str) -> tuple[float, float]:
    """Refuse values no magnitude image holds (complex, NaN/Inf, signed, absurd); returns (min, max)."""
    if data.size == 0:
        raise InputError(f"{name} is empty (shape {data.shape})")
    if np.iscomplexobj(data):
        raise InputError(f"{name} holds complex values; give the magnitude image")
    if data.dtype.names is not None:  # NIfTI RGB24 / RGBA32: a screenshot or colour overlay, not an MR image
        colours = "/".join(data.dtype.names)
        raise InputError(f"{name} is a colour ({colours}) image; give the grey-scale magnitude image")
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_):
        raise InputError(f"{name} has unsupported data type {data.dtype}")
    if np.issubdtype(data.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise InputError(f"{name} contains {bad} NaN/Inf voxel(s)")
    lo, hi = float(np.min(data)), float(np.max(data))
    if max(abs(lo), abs(hi)) > MAX_ABS_INTENSITY:
        raise InputError(
            f"{name} has values up to {max(abs(lo), abs(hi)):.3g}, which no scanner produces "
            "(a wrong scaling slope in the header?)"
        )
    if lo < 0:
        _refuse_signed(data, lo, hi, name)
    return lo, hi


#: An image holding fewer distinct values than this, all whole numbers, is a label map or a mask
#: (microbleed labels, a brain mask, a segmentation), not an MR image: noise alone gives any
#: magnitude image hundreds of values, even at 8 bits.
MIN_IMAGE_VALUES = 16


def validate_intensities(data: np.ndarray, name: str) -> None:
    """Refuse empty, non-finite, complex, signed (phase-like), absurd or constant images.

    Raises :class:`InputError` with one line naming the problem.
    """
    lo, hi = validate_values(data, name)
    if lo == hi or float(np.float32(lo)) == float(np.float32(hi)):
        raise InputError(f"{name} is constant (every voxel = {lo:g}); nothing to analyse")


def refuse_label_map(data: np.ndarray, name: str) -> None:
    """Refuse a label map or mask given as the image to analyse (fewer than :data:`MIN_IMAGE_VALUES`
    distinct values, all whole numbers): predicting on it gives "0 microbleeds" without a word.

    Checked on the scans ``plkd predict`` analyses (toy training data may be piecewise constant).
    Raises :class:`InputError` with one line naming the values.
    """
    flat = data.ravel(order="K")
    sample = flat[:: max(1, flat.size // 100_000)]  # a regular subsample settles most images at once
    if np.unique(sample).size >= MIN_IMAGE_VALUES:
        return
    values = np.unique(flat)
    if values.size >= MIN_IMAGE_VALUES or not np.all(values == np.round(values)):
        return
    shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
    raise InputError(
        f"{name} holds only {values.size} distinct whole-number values ({shown}): a label map or mask, "
        "not an MR image; give the T2*/SWI magnitude image"
    )


def _refuse_signed(data: np.ndarray, lo: float, hi: float, name: str) -> None:
    """Refuse a phase map, a real/imaginary part or any signed image given as a magnitude image."""
    flat = data.ravel(order="K")  # no copy of a Fortran-ordered (nibabel) array
    step = max(1, flat.size // 2_000_000)  # a regular subsample bounds the cost on large scans
    sample = flat[::step]
    sample = sample[sample != 0]
    if sample.size == 0:
        return
    fraction = float(np.count_nonzero(sample < 0)) / sample.size
    q01, q99 = (float(v) for v in np.percentile(sample, [1, 99]))
    if fraction >= SIGNED_MIN_FRACTION and -q01 >= SIGNED_MIN_RATIO * max(q99, 0.0):
        raise InputError(
            f"{name} has negative values in {fraction:.0%} of its non-zero voxels (range {lo:.4g} to {hi:.4g}): "
            "it looks like a phase image (or a real/imaginary part), not a magnitude image; give the magnitude image"
        )


def validate_extent(shape: tuple[int, ...], affine: np.ndarray, name: str) -> None:
    """Refuse a grid too small to hold a brain: a single slice, a few voxels (3×3×3)."""
    extent = np.asarray(shape[:3], dtype=np.float64) * spacing_from_affine(affine)
    if min(shape[:3]) < MIN_VOXELS_PER_AXIS or float(extent.min()) < MIN_EXTENT_MM:
        raise InputError(
            f"{name} covers only {' x '.join(str(int(s)) for s in shape[:3])} voxels "
            f"({' x '.join(f'{e:.3g}' for e in extent)} mm); a brain volume needs at least "
            f"{MIN_VOXELS_PER_AXIS} voxels and {MIN_EXTENT_MM:g} mm along every axis"
        )


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


def _length_units_doubt(header: nib.Nifti1Header, name: str) -> str | None:
    """A sentence when the header's ``xyzt_units`` give lengths in metres or micrometres, not millimetres, else None.

    plkd reads the affine as millimetres whatever the units code says, as nibabel (and NIfTI's reference library,
    nifti1_io) does; ITK-based viewers (3D Slicer, ITK-SNAP) scale it to millimetres, so there the image, its label
    map and the candidates' mm coordinates would appear 1000 times larger or smaller than plkd took them.
    """
    try:
        unit = header.get_xyzt_units()[0]
    except Exception:  # noqa: BLE001 - an unknown code is nibabel's to report
        return None
    if unit in ("mm", "unknown"):
        return None
    return (
        f"{name}: its header gives lengths in {unit} (xyzt_units), not mm; plkd reads the affine as mm, as nibabel "
        "does, while ITK-based viewers scale it; fix the units code if the voxel sizes are not in mm"
    )


def _with_slope(exc: InputError, img: nib.Nifti1Image) -> InputError:
    """``exc``, naming the header's negative ``scl_slope`` when it refuses negative values: such a slope turns a
    magnitude image negative, and the error spoke of a phase image only."""
    slope = getattr(img.dataobj, "slope", None)
    if slope is not None and np.isfinite(slope) and float(slope) < 0 and "negative values" in str(exc):
        return InputError(f"{exc} (its header's scl_slope is {float(slope):g}: a wrong scaling?)")
    return exc


def load_volume(path: str | os.PathLike[str], *, echo: EchoChoice = "rss", what: str = "image") -> Volume:
    """Load and validate a 3-D (or 4-D multi-echo) intensity image as float32.

    Raises :class:`InputError` with one line naming the problem for a missing, truncated or
    corrupt file, a 2-D/5-D image, a grid too small to hold a brain, NaN/Inf, complex or signed
    (phase-like) values, values no scanner produces, a constant or empty image or absurd spacing.
    """
    img = _read_nifti(path, what)
    name = f"{what} {Path(path).name}"
    notes: list[str] = []
    raw = clear_padding(values_per_voxel_as_volumes(np.asarray(img._plkd_array)), name, notes)  # type: ignore[attr-defined]
    if raw.ndim == 4:
        # On every echo before combining them: root-sum-of-squares would hide a phase image's sign.
        try:
            validate_values(raw, name)
        except InputError as exc:
            raise _with_slope(exc, img) from None
    arr = _to_3d(raw, name, echo, notes)
    if arr.ndim != 3:
        raise InputError(f"{name} is {arr.ndim}-D; a 3-D volume is required")
    affine = header_affine(img.header)
    if (passed_over := sform_note(img.header, name)) is not None:
        log.warning(passed_over)
    units = _length_units_doubt(img.header, name)
    try:
        validate_geometry(affine, arr.shape, name)
        validate_extent(arr.shape, affine, name)
    except InputError as exc:
        raise InputError(f"{exc} ({units})" if units else str(exc)) from None
    if units:
        log.warning(units)
    try:
        validate_intensities(arr, name)
    except InputError as exc:
        raise _with_slope(exc, img) from None
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
    if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InputError(f"{name} has data type {arr.dtype}; a label map holds integer (or real) labels")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN/Inf values")
    if arr.size and float(np.max(np.abs(arr))) > np.iinfo(np.int32).max:
        raise InputError(f"{name} holds values up to {float(np.max(np.abs(arr))):.3g}; labels must fit 32-bit integers")
    if not allow_empty and not np.any(arr):
        raise InputError(f"{name} is empty (no non-zero voxel)")
    return Volume(data=arr.astype(np.float32), affine=affine, path=Path(path), header=img.header.copy())


#: Two placements of one grid are the same grid when no voxel corner moves more than this share of the
#: smallest voxel size between them: float32 rounding of a header (sform, qform quaternion) moves corners
#: by about 1e-5 mm, a real difference of placement by a good part of a voxel.
SAME_GRID_TOLERANCE_VOXELS = 0.01


def grid_displacement_mm(affine_a: np.ndarray, affine_b: np.ndarray, shape: tuple[int, ...]) -> float:
    """How far (mm) the corners of a grid of ``shape`` voxels move between the placements ``affine_a`` and
    ``affine_b`` (4×4 voxel → RAS). The largest move of an affine map over a box is at a corner."""
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in shape[:3]], indexing="ij")).reshape(3, -1).T
    diff = np.asarray(affine_a, dtype=np.float64) - np.asarray(affine_b, dtype=np.float64)
    moved = corners @ diff[:3, :3].T + diff[:3, 3]
    return float(np.sqrt((moved**2).sum(axis=1)).max())


def same_grid_tolerance_mm(affine: np.ndarray) -> float:
    """The largest corner move (mm) under which two placements count as one grid (see
    :data:`SAME_GRID_TOLERANCE_VOXELS`)."""
    return SAME_GRID_TOLERANCE_VOXELS * float(spacing_from_affine(affine).min())


def _axis_turn(
    affine: np.ndarray, shape: tuple[int, ...], other_affine: np.ndarray, other_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(ornt, turned_affine)``: the nibabel orientation that transposes and flips the axes of the grid
    ``(other_affine, other_shape)`` to run along those of ``(affine, shape)``, and the affine of the turned
    array; ``None`` when no transposition and flips give the same axes and shape (other voxel size, rotation)."""
    to_voxels = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(other_affine, dtype=np.float64)
    signed = np.round(to_voxels[:3, :3])
    if not (np.all(np.abs(signed).sum(axis=0) == 1) and np.all(np.abs(signed).sum(axis=1) == 1)):
        return None
    ornt = np.array([[int(np.flatnonzero(signed[:, a])[0]), signed[:, a].sum()] for a in range(3)], dtype=np.float64)
    turned_shape = [0, 0, 0]
    for a in range(3):
        turned_shape[int(ornt[a, 0])] = int(other_shape[a])
    if tuple(turned_shape) != tuple(int(s) for s in shape[:3]):
        return None
    return ornt, np.asarray(other_affine, dtype=np.float64) @ inv_ornt_aff(ornt, other_shape[:3])


def reorientation_onto(
    affine: np.ndarray, shape: tuple[int, ...], other_affine: np.ndarray, other_shape: tuple[int, ...]
) -> np.ndarray | None:
    """The nibabel orientation (``(3, 2)``: target axis, flip) that turns an array on the grid
    ``(other_affine, other_shape)`` onto the grid ``(affine, shape)`` exactly, transposing and flipping axes
    only; ``None`` when the two grids do not hold the same voxel centres (other voxel size, shift, rotation).

    The identity orientation means the grids are already one (within :func:`same_grid_tolerance_mm`).
    """
    turn = _axis_turn(affine, shape, other_affine, other_shape)
    if turn is None or grid_displacement_mm(turn[1], affine, shape) > same_grid_tolerance_mm(affine):
        return None
    return turn[0]


def on_grid_of(image: Volume, other: Volume, what: str = "mask") -> Volume:
    """``other`` (a label map or mask) on ``image``'s voxel grid, or :class:`InputError`.

    Accepted: the same grid (every voxel corner within :data:`SAME_GRID_TOLERANCE_VOXELS` of a voxel,
    e.g. float rounding of the header; it takes the image's affine exactly), or the same voxel centres
    stored in another axis order or direction (LPS vs RAS, sagittal vs axial storage, as dcm2niix, ITK or
    Slicer may write a label):
    then the array is transposed and flipped onto the image's (nibabel ``apply_orientation``; no
    interpolation, every voxel kept) and takes the image's affine and header. Anything else (another
    voxel size, field of view, shift or rotation) is refused with one line naming both grids, since
    resampling a label map would move or drop microbleeds without a word.
    """
    ornt = reorientation_onto(image.affine, image.shape, other.affine, other.shape)
    if ornt is not None and np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        # One grid: it takes the image's affine, so that what is derived from both (thick-slice grids,
        # the model grid) is derived from one placement.
        return Volume(other.data, image.affine.copy(), other.path, header=other.header, notes=list(other.notes))
    if ornt is not None:
        log.info(
            "%s is stored %s, its image %s: turned to the image's axis order (same voxels, no interpolation)",
            what,
            "".join(nib.aff2axcodes(other.affine)),
            "".join(nib.aff2axcodes(image.affine)),
        )
        data = np.ascontiguousarray(apply_orientation(other.data, ornt), dtype=other.data.dtype)
        note = f"{what}: turned from {''.join(nib.aff2axcodes(other.affine))} to the image's axis order"
        return Volume(data, image.affine.copy(), other.path, header=image.header, notes=[*other.notes, note])
    raise InputError(f"{what} does not lie on the image's grid: {_grid_difference(image, other)}")


def _describe_grid(vol: Volume) -> str:
    spacing = "x".join(f"{s:.4g}" for s in vol.spacing)
    return f"{'x'.join(str(s) for s in vol.shape)} voxels of {spacing} mm stored {''.join(nib.aff2axcodes(vol.affine))}"


def _has_orientation(vol: Volume) -> bool:
    """Whether the volume's header sets a qform or sform code (no header: the affine is its orientation)."""
    h = vol.header
    return h is None or int(h["qform_code"]) > 0 or int(h["sform_code"]) > 0


def _grid_difference(image: Volume, other: Volume) -> str:
    """One clause saying how two grids differ (for :func:`on_grid_of`'s error)."""
    grids = f"{_describe_grid(other)} vs the image's {_describe_grid(image)}"
    unplaced = [who for who, vol in (("the image", image), ("it", other)) if not _has_orientation(vol)]
    if len(unplaced) == 1:
        # Most often a label saved with nibabel's img.affine of an image without one (x flipped, centred).
        grids += f" ({unplaced[0]} has no orientation: qform_code = sform_code = 0)"
    turn = _axis_turn(image.affine, image.shape, other.affine, other.shape)
    if turn is not None:
        shift = grid_displacement_mm(turn[1], image.affine, image.shape)
        return f"{grids}; their headers place the voxels up to {shift:.3g} mm apart: compare their qform/sform"
    if other.shape == image.shape:
        shift = grid_displacement_mm(image.affine, other.affine, image.shape)
        return f"{grids}; their headers place the voxels up to {shift:.3g} mm apart: compare their qform/sform"
    return f"{grids}; resample it onto the image (nearest neighbour) first"


def _onto_new_grid(out: nib.Nifti1Header, source: nib.Nifti1Header, affine: np.ndarray, shape: tuple[int, ...]) -> None:
    """``out`` (a copy of ``source`` holding data of ``shape``) made to describe the grid ``affine``.

    nibabel's ``Nifti1Image(data, affine, header)`` reset pixdim[4:] to 1 (a TR of 2.5 s became 1) and setting both
    transforms from ``affine`` gave the qform the sform's code (1 became 2) and the sform's matrix. Now each transform
    the source sets is carried onto the new voxels (the voxel map from the source's grid to ``affine``), with its own
    code; a source with neither gets both with code 1 (the grid has an origin that pixdim cannot hold). The slice
    timing fields go when the shape along ``dim_info``'s slice axis changed (they number the source's slices).
    """
    voxel_map = np.linalg.inv(header_affine(source)) @ np.asarray(affine, dtype=np.float64)
    qcode, scode = int(source["qform_code"]), int(source["sform_code"])
    if qcode == 0 and scode == 0:
        out.set_qform(affine, code=1)
        out.set_sform(affine, code=1)
    else:
        q = np.asarray(source.get_qform(), dtype=np.float64) @ voxel_map if qcode > 0 else affine
        out.set_qform(q, code=qcode)
        out.set_sform(np.asarray(source.get_sform(), dtype=np.float64) @ voxel_map if scode > 0 else affine, code=scode)
    out["pixdim"][4:] = source["pixdim"][4:]
    out["xyzt_units"] = source["xyzt_units"]
    slice_dim = source.get_dim_info()[2]
    old_shape = source.get_data_shape()
    if slice_dim is not None and slice_dim < len(old_shape) and old_shape[slice_dim] != shape[slice_dim]:
        out["slice_code"] = out["slice_start"] = out["slice_end"] = 0
        out["slice_duration"] = 0.0


#: NIfTI intent codes saying what several values per voxel (dimension 5) are: matrices, vectors, point sets,
#: quaternions, RGB(A), FNIRT fields. They do not describe an output with one value per voxel.
PER_VOXEL_VALUE_INTENTS = frozenset({1004, 1005, 1006, 1007, 1008, 1009, 1010, 2003, 2004, 2006})


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
    input in every viewer, and pixdim[4:] (the repetition time) also when a 4-D input gives a 3-D output. Only the
    data type, scaling and display range are replaced. With a
    header of another grid (``plkd lowres --thickness-mm``: same field of view, thicker slices),
    everything the new grid leaves true is kept (:func:`_onto_new_grid`): qform and sform each
    moved onto the new voxels with its own code, pixdim[4:] (the TR), units, ``descrip``; the
    slice timing fields go when the slices they number changed. Without a header, qform and sform
    are set to ``affine`` with code 1 (scanner).
    """
    return save_image(path, nifti_image(data, affine, dtype=dtype, header=header))


def save_image(path: str | os.PathLike[str], img: nib.Nifti1Image) -> Path:
    """Write a prepared image (:func:`nifti_image`) atomically; to a NIfTI pair's name (``x.hdr``, as ``plkd lowres
    --dataset`` keeps an input pair's name) as a pair, both files."""
    if is_pair_name(path):
        return _save_pair(Path(path), img)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def _save_pair(path: Path, img: nib.Nifti1Image) -> Path:
    """Write ``img`` as the NIfTI pair ``path`` names (its ``.hdr`` and ``.img``), each under a temporary name first:
    written through :func:`atomic_path` alone, the header was renamed into place and the voxels left under the
    temporary name (``.x.hdr.<…>.partial.img``), a header without its image."""
    header, voxels = pair_files(path)
    klass = nib.Nifti2Pair if isinstance(img, nib.Nifti2Image) else nib.Nifti1Pair
    pair = klass.from_image(img)
    with atomic_path(header) as tmp:
        tmp_voxels = pair_files(tmp)[1]
        try:
            nib.save(pair, str(tmp))
            os.replace(tmp_voxels, voxels)  # the voxels first: the header, renamed last, completes the pair
        except BaseException:
            tmp_voxels.unlink(missing_ok=True)
            raise
    return header


def nifti_image(
    data: np.ndarray,
    affine: np.ndarray,
    *,
    dtype: np.dtype | type | None = None,
    header: nib.Nifti1Header | None = None,
) -> nib.Nifti1Image:
    """The image :func:`save_volume` writes (its header as it will be stored), without writing it."""
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
    elif hdr is not None:
        img = klass(arr, None, header=hdr)
        _onto_new_grid(img.header, hdr, affine, arr.shape)
    else:
        img = klass(arr, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    if hdr is not None and arr.ndim == 3:
        # A 3-D output of a 4-D input (one volume, or echoes combined): nibabel resets pixdim[4:] to 1 as it gives
        # the header a 3-D shape, which dropped the repetition time (pixdim[4], as dcm2niix also writes it in 3-D).
        img.header["pixdim"][4:] = np.asarray(hdr["pixdim"], dtype=np.float64)[4:]
    if arr.ndim == 3 and int(img.header["intent_code"]) in PER_VOXEL_VALUE_INTENTS:
        # One value per voxel now: ITK (3D Slicer, ITK-SNAP) read a label map carrying a "vector" intent as a vector
        # image, and refused one carrying a displacement or matrix intent.
        img.header.set_intent("none", (), name="")
    img.set_data_dtype(arr.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"] = img.header["cal_max"] = 0.0
    return img
