"""Reading a DICOM series as a :class:`plkd.volumes.Volume`, with SimpleITK (GDCM).

A series folder is a normal input in clinics. SimpleITK's series reader sorts the slices by
position, applies each file's Rescale Slope/Intercept (read as float32, so files scaled
differently keep their values) and gives the grid in ITK's LPS world; here it becomes
the RAS+ affine that every other part of plkd uses (``RAS = diag(-1, -1, 1) · LPS``), and a NIfTI
header holding that affine as qform and sform with code 1 (scanner), so outputs written on the
series' grid carry exactly its geometry. SimpleITK is imported only when DICOM is read.

A series is refused (:class:`plkd.errors.InputError`, one line) when its slices do not form one
regular 3-D grid: several images at one position (multi-echo or repeated acquisitions stored in
one series), unequal gaps between slices, or slices shifted sideways (a sheared grid), which
ITK's geometry would silently misplace.

An enhanced multi-frame file (Enhanced MR Image Storage and the like: one file, each slice a frame placed by its own
Plane Position in the Per-frame Functional Groups) is read with GDCM as one 3-D image, as 3D Slicer's DICOM reader
loads it; GDCM gives frames at unequal gaps a slice spacing of 1 mm without a word, so each frame's own position is
checked against the grid GDCM gives (:func:`frame_positions`) and the file refused when one lies elsewhere or the
positions cannot be read.
"""

from __future__ import annotations

import contextlib
import locale
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from plkd.errors import InputError
from plkd.volumes import Volume, clear_padding, validate_geometry, validate_intensities

log = logging.getLogger(__name__)

#: ITK's world is LPS; NIfTI's and plkd's is RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Largest relative spread of slice gaps accepted as one regular grid.
MAX_GAP_SPREAD = 0.01

_TAGS = {
    "series_description": "0008|103e",
    "series_number": "0020|0011",
    "modality": "0008|0060",
    "study_instance_uid": "0020|000d",
    "echo_time_ms": "0018|0081",
    # What the sequence was (plkd.inference.modality tells T2*-GRE from SWI with them).
    "sequence_name": "0018|0024",
    "image_type": "0008|0008",
    "protocol_name": "0018|1030",
    # The kind of sequence (plkd.inference.input_kinds.sequence_doubt): SE, IR, GR, EP; SK, SP, MP, ...
    "scanning_sequence": "0018|0020",
    "sequence_variant": "0018|0021",
}


#: SOP Classes of enhanced multi-frame images: one file holds every slice as a frame.
ENHANCED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.3": "Enhanced MR Color Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}


@dataclass(frozen=True)
class DicomSeries:
    """One series found in a folder: its UID and its files (as GDCM orders them)."""

    folder: Path
    uid: str
    files: tuple[Path, ...]


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True for a file with the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


@contextlib.contextmanager
def _keep_locale() -> Iterator[None]:
    """Restore the process locale after a GDCM call: some GDCM code sets the C locale, after which
    Python would read and write text files as ASCII."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _sitk() -> Any:
    try:
        import SimpleITK as sitk  # noqa: N813 - the library's own name
    except ImportError:  # pragma: no cover - a declared dependency
        raise InputError("reading DICOM needs SimpleITK: pip install SimpleITK") from None
    return sitk


def find_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """Every DICOM series directly in ``folder`` (not below), sorted by UID; ``[]`` when none."""
    sitk = _sitk()
    folder = Path(folder)
    series = []
    with _keep_locale():
        for uid in sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()):
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
            if files:
                series.append(DicomSeries(folder, uid, tuple(Path(f) for f in files)))
    return series


def series_tags(series: DicomSeries) -> dict[str, str]:
    """What the series is (the keys of the record :func:`load_dicom_series` gives: ``modality``, ``image_type``,
    ``series_description``, ...), read from the header of its first file only; ``{}`` when it cannot be read."""
    if not series.files:
        return {}
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(series.files[0]))
    try:
        with _keep_locale():
            reader.ReadImageInformation()
    except RuntimeError:
        return {}
    return {key: reader.GetMetaData(tag).strip() for key, tag in _TAGS.items() if reader.HasMetaDataKey(tag)}


def series_for_file(path: str | os.PathLike[str]) -> DicomSeries:
    """The series that the DICOM file ``path`` belongs to (files in the same folder)."""
    path = Path(path)
    for s in find_series(path.parent):
        if any(f.resolve() == path.resolve() for f in s.files):
            return s
    raise InputError(f"{path} is a DICOM file but no readable series holds it")


def _say_missing_files(reader: Any, n: int, name: str) -> None:
    """Warn when the series holds fewer files than its Images in Acquisition (0020,1002) count: a transfer
    or a copy that stopped early leaves a series whose last slices are missing, on a grid as regular as a
    whole one's, and the part of the brain they held is searched for no microbleed."""
    if not reader.HasMetaDataKey(0, "0020|1002"):
        return
    try:
        expected = int(reader.GetMetaData(0, "0020|1002").strip())
    except ValueError:
        return
    if expected > n:
        log.warning(
            "%s holds %d files but its Images in Acquisition (0020,1002) counts %d: slices may be missing (a "
            "transfer that stopped early?); the part they held is not searched",
            name,
            n,
            expected,
        )


#: Largest angle (degrees) between two files' row or column directions of one stack.
MAX_ORIENTATION_DEGREES = 0.1


def _numbers(reader: Any, i: int, tag: str, count: int) -> np.ndarray | None:
    """The ``count`` numbers of a multi-valued tag of file ``i``, or None when absent or not numbers."""
    if not reader.HasMetaDataKey(i, tag):
        return None
    try:
        values = np.array([float(v) for v in reader.GetMetaData(i, tag).split("\\")], dtype=np.float64)
    except ValueError:
        return None
    return values if values.shape == (count,) and np.all(np.isfinite(values)) else None


def _check_orientations(reader: Any, files: list[Path], name: str) -> None:
    """Refuse a series whose files' Image Orientation (Patient) (0020,0037) or Pixel Spacing (0028,0030) differ: ITK
    reads every slice on the first file's orientation and pixel size, so a slice of another stack, a localizer or
    another reconstruction was put where it is not, or stretched onto the others' pixels, without a word."""
    first: np.ndarray | None = None
    first_pixels: np.ndarray | None = None
    for i, path in enumerate(files):
        pixels = _numbers(reader, i, "0028|0030", 2)
        if pixels is not None and first_pixels is None:
            first_pixels = pixels
        elif pixels is not None and np.abs(pixels - first_pixels).max() > MAX_GAP_SPREAD * first_pixels.min():
            shown = "x".join(f"{v:.4g}" for v in pixels), "x".join(f"{v:.4g}" for v in first_pixels)
            raise InputError(
                f"{name}: its slices have other pixel sizes ({path.name}: {shown[0]} mm, {files[0].name}: {shown[1]} "
                "mm; another reconstruction in the series); export each as its own series or convert it with dcm2niix"
            )
        cosines = _numbers(reader, i, "0020|0037", 6)
        if cosines is None:
            continue
        axes = cosines.reshape(2, 3) / np.linalg.norm(cosines.reshape(2, 3), axis=1, keepdims=True)
        if first is None:
            first = axes
            continue
        angle = float(np.degrees(np.arccos(np.clip((axes * first).sum(axis=1), -1.0, 1.0))).max())
        if angle > MAX_ORIENTATION_DEGREES:
            raise InputError(
                f"{name}: its slices are not all oriented alike ({path.name} is turned {angle:.3g}° from "
                f"{files[0].name}: another stack or a localizer in the series); export each stack as its own series "
                "or convert it with dcm2niix"
            )


def _check_slices(reader: Any, n: int, name: str, direction_lps: np.ndarray) -> None:
    positions = []
    for i in range(n):
        if reader.HasMetaDataKey(i, "0020|0032"):
            positions.append([float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")])
    if len(positions) != n or n < 2:
        return
    along = np.asarray(positions) @ direction_lps[:, 2]
    if len(np.unique(np.round(along, 3))) < n:
        raise InputError(
            f"{name} holds {n} images at {len(np.unique(np.round(along, 3)))} slice positions (several echoes or "
            "acquisitions in one series); export each echo as its own series or convert with dcm2niix first"
        )
    order = np.argsort(along)
    steps = np.diff(np.asarray(positions)[order], axis=0)
    gaps = steps @ direction_lps[:, 2]
    sideways = np.linalg.norm(steps - gaps[:, None] * direction_lps[:, 2], axis=1)
    if np.any(sideways > MAX_GAP_SPREAD * np.abs(gaps) + 1e-3):
        raise InputError(
            f"{name}: its slices are shifted sideways from one to the next (a sheared, gantry-tilted grid); "
            "convert it with dcm2niix, which corrects such series"
        )
    if gaps.max() - gaps.min() > MAX_GAP_SPREAD * abs(gaps.mean()):
        raise InputError(
            f"{name} has unequal slice gaps ({gaps.min():.3g}-{gaps.max():.3g} mm), so it is not one regular grid; "
            "convert it with dcm2niix, which resamples or splits such series"
        )


def _execute(sitk: Any, reader: Any, name: str) -> Any:
    """``reader.Execute()`` with ITK's own warnings silenced: "Non uniform sampling or missing slices detected" came
    as three lines on stderr before plkd's one-line error saying the same (:func:`_check_slices`)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        with _keep_locale():
            return reader.Execute()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read {name}: {first}") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _duplicate_files(reader: Any, n: int) -> list[int]:
    """Indices of the files (in the reader's order) whose SOP Instance UID (0008,0018) an earlier file holds."""
    seen: set[str] = set()
    copies = []
    for i in range(n):
        if not reader.HasMetaDataKey(i, "0008|0018"):
            continue
        uid = reader.GetMetaData(i, "0008|0018").strip().rstrip("\x00")
        if uid in seen:
            copies.append(i)
        seen.add(uid)
    return copies


def frame_positions(path: str | os.PathLike[str]) -> np.ndarray | None:
    """Each frame's Image Position (Patient) (LPS mm, ``(frames, 3)``, in the order stored) of an enhanced
    multi-frame file: its Per-frame Functional Groups' Plane Position items, read with pydicom (SimpleITK gives no
    sequence items; the pixel data are not read). Items without a position are left out (the caller compares the
    count with the frames); None when the file has no such sequence, cannot be read, or a position is not three
    finite numbers."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        groups = pydicom.dcmread(str(path), stop_before_pixels=True).get("PerFrameFunctionalGroupsSequence")
        if not groups:
            return None
        positions = [
            [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
            for item in groups
            if "PlanePositionSequence" in item and item.PlanePositionSequence
        ]
    except (InvalidDicomError, OSError, AttributeError, TypeError, ValueError):
        return None
    if not positions or any(len(xyz) != 3 or not np.all(np.isfinite(xyz)) for xyz in positions):
        return None
    return np.asarray(positions, dtype=np.float64)


def _frame_info(sitk: Any, path: Path) -> tuple[int, str]:
    """``(Number of Frames, SOP Class UID)`` of one DICOM file (1 and ``""`` when not said or unreadable)."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        with _keep_locale():
            reader.ReadImageInformation()
    except RuntimeError:
        return 1, ""
    sop = reader.GetMetaData("0008|0016").strip().rstrip("\x00") if reader.HasMetaDataKey("0008|0016") else ""
    try:
        frames = int(reader.GetMetaData("0028|0008").strip()) if reader.HasMetaDataKey("0028|0008") else 1
    except ValueError:
        frames = 1
    return frames, sop


def _check_frames(path: Path, image: Any, frames: int, name: str) -> None:
    """Refuse a multi-frame file whose frames' own positions are not the grid GDCM gives ``image`` (its origin,
    spacing and direction; a spacing of 1 mm where the gaps are unequal) in the order stored: several frames at one
    position (echoes), an unequal gap, frames out of order, a sheared stack; or whose positions cannot be read."""
    convert = "convert it with dcm2niix, which places each frame by its own position"
    positions = frame_positions(path)
    if positions is None or len(positions) != frames:
        found = 0 if positions is None else len(positions)
        raise InputError(
            f"{name} is a multi-frame file of {frames} frames whose frame positions plkd cannot read ({found} found in "
            f"its Per-frame Functional Groups), so where each slice lies is not known; {convert}"
        )
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    along = positions @ direction[:, 2]
    if len(np.unique(np.round(along, 3))) < frames:
        raise InputError(
            f"{name} holds {frames} frames at {len(np.unique(np.round(along, 3)))} slice positions (several echoes or "
            f"acquisitions in one file); {convert}, or export each echo on its own"
        )
    step = float(image.GetSpacing()[2])
    expected = np.asarray(image.GetOrigin(), dtype=np.float64) + np.arange(frames)[:, None] * step * direction[:, 2]
    off = np.linalg.norm(positions - expected, axis=1)
    worst = int(np.argmax(off))
    if off[worst] > MAX_GAP_SPREAD * step + 1e-3:
        raise InputError(
            f"{name}: its frames are not one regular grid in the order stored (frame {worst + 1} of {frames} lies "
            f"{off[worst]:.3g} mm from where GDCM's grid places it: unequal gaps, frames out of order or a sheared "
            f"stack); {convert}"
        )


def load_dicom_series(series: DicomSeries, *, what: str = "image") -> tuple[Volume, dict[str, Any]]:
    """Read a series: ``(volume, record)``, a float32 :class:`Volume` indexed ``[i, j, k]`` with a
    RAS+ affine (mm) and a record naming the series (UID, description, number, files) for the
    JSON written beside its outputs.

    ``i``/``j`` run along the image rows/columns of the files and ``k`` along the slices, as in
    ITK; the affine is ITK's LPS geometry (origin, spacing, direction) turned to RAS. The volume's
    header (NIfTI-1, qform = sform, code 1) is what its outputs are written with.
    A series of one enhanced multi-frame file is read as one 3-D image whose frames are the slices
    (:func:`_check_frames`).
    Raises :class:`InputError` for an unreadable or irregular series.
    """
    sitk = _sitk()
    name = f"{what} {series.folder.name} (DICOM series {series.uid})"
    frames, sop = _frame_info(sitk, series.files[0]) if series.files else (1, "")
    if frames > 1:
        return _load_multiframe(sitk, series, name, frames, sop)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    # Each file is rescaled with its own slope/intercept; left to itself, the reader takes the pixel
    # type of the first file (int16 when its slope is 1) and truncates the fractional values (or
    # clips the large ones) of every file scaled otherwise.
    reader.SetOutputPixelType(sitk.sitkFloat32)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = _execute(sitk, reader, name)
    files = list(series.files)
    copies = _duplicate_files(reader, len(files))
    if copies:
        # The same image twice (a copy "IM0005 (1).dcm", a series exported twice into one folder) was refused as
        # "several echoes in one series"; each image is read once.
        log.warning(
            "%s: %d file(s) repeat an image of the series (same SOP Instance UID, e.g. %s): each image is read once",
            name,
            len(copies),
            files[copies[0]].name,
        )
        files = [f for i, f in enumerate(files) if i not in set(copies)]
        reader.SetFileNames([str(f) for f in files])
        image = _execute(sitk, reader, name)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} values per voxel (colour?); "
            "a grey-level magnitude series is required"
        )
    if image.GetDimension() != 3:
        raise InputError(f"{name} is {image.GetDimension()}-D; a 3-D series is required")
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    _check_orientations(reader, files, name)
    _check_slices(reader, len(files), name, direction)
    _say_missing_files(reader, len(files), name)
    meta = {key: reader.GetMetaData(0, tag).strip() for key, tag in _TAGS.items() if reader.HasMetaDataKey(0, tag)}
    note = f"{name}: {len(files)} files read with SimpleITK; {meta.get('series_description', '')}".rstrip("; ")
    return _volume(sitk, image, series, name, meta, len(files), note)


def _load_multiframe(sitk: Any, series: DicomSeries, name: str, frames: int, sop: str) -> tuple[Volume, dict[str, Any]]:
    """A series of one multi-frame file (see :func:`load_dicom_series`)."""
    kind = ENHANCED_SOP_CLASSES.get(sop, f"SOP Class {sop or 'unknown'}")
    if len(series.files) > 1:
        raise InputError(
            f"{name} holds {len(series.files)} multi-frame files ({kind}, {frames} frames in the first): plkd reads a "
            "series of one multi-frame file or of one file per slice; convert it with dcm2niix first"
        )
    path = series.files[0]
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    reader.SetOutputPixelType(sitk.sitkFloat32)
    image = _execute(sitk, reader, name)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} values per voxel (colour?); "
            "a grey-level magnitude series is required"
        )
    if image.GetDimension() != 3 or image.GetSize()[2] != frames:
        raise InputError(
            f"{name} is a multi-frame file ({kind}) of {frames} frames read as an image of size {image.GetSize()}; "
            "convert it with dcm2niix first"
        )
    _check_frames(path, image, frames, name)
    meta = {key: reader.GetMetaData(tag).strip() for key, tag in _TAGS.items() if reader.HasMetaDataKey(tag)}
    note = (
        f"{name}: one multi-frame file ({kind}) of {frames} frames read with SimpleITK, each frame's position checked"
    )
    note = f"{note}; {meta.get('series_description', '')}".rstrip("; ")
    return _volume(sitk, image, series, name, meta, 1, note)


def _volume(
    sitk: Any, image: Any, series: DicomSeries, name: str, meta: dict[str, str], n_files: int, note: str
) -> tuple[Volume, dict[str, Any]]:
    """The :class:`Volume` and record of a series read as ``image`` (ITK, LPS)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine_lps[:3, 3] = image.GetOrigin()
    affine = LPS_TO_RAS @ affine_lps
    data = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0), dtype=np.float32)
    validate_geometry(affine, data.shape, name)
    padding: list[str] = []  # a Pixel Padding Value such as -2000 or -32768 outside the acquisition: air
    data = clear_padding(data, name, padding)
    validate_intensities(data, name)
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm")
    record = {"folder": str(series.folder), "series_instance_uid": series.uid, "files": n_files, **meta}
    return Volume(data=data, affine=affine, path=series.folder, header=header, notes=[note, *padding]), record
