"""What ``plkd predict`` analyses: files, folders (walked), glob patterns and DICOM series.

Folders are walked to any depth (VALDO, BIDS, ``plkd synth`` and nnU-Net layouts). In a walk only
images are taken: label maps, brain masks, earlier predictions, phase images and other contrasts
(T1w, FLAIR, ...) are skipped and reported, as are hidden folders, BIDS ``derivatives/`` and
``sourcedata/``, and the output folder itself. Linked folders are followed (each real folder once).
A walk of a DICOM folder takes the T2*/SWI magnitude series: localizers, other contrasts, phase images
and non-MR series are skipped by their tags (what each file or series is:
:mod:`plkd.inference.input_kinds`). A file named explicitly is always
taken, unless it is an output of plkd. A folder or glob pattern that gives no scan is listed in
:attr:`InputList.empty` (``plkd predict`` reports it as a failed input).

Every scan gets an output name (stem) unique in the run: its file name without extension, or,
when several inputs share that name (``sub-01/anat/T2S.nii`` and ``sub-02/anat/T2S.nii``), the
parent folders that tell them apart joined in front (``sub-01_T2S``, ``sub-02_T2S``). Inputs that
nothing tells apart (``scan.nii`` beside ``scan.nii.gz``) are refused before any work.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from plkd.dicom import DicomSeries, find_series, is_dicom_file, series_for_file, series_tags
from plkd.errors import InputError
from plkd.inference.input_kinds import OTHER_FORMATS, classify, classify_series
from plkd.naming import is_nifti, is_pair_name, is_plkd_prediction, pair_files, strip_nifti_suffix
from plkd.sidecars import as_nifti_name
from plkd.volumes import (
    Volume,
    grid_displacement_mm,
    is_nifti_pair_header,
    same_grid_tolerance_mm,
    sform_passed_over,
)

log = logging.getLogger(__name__)

#: Folder names never walked into: BIDS derivatives (processed outputs) and raw source data.
SKIPPED_FOLDERS = frozenset({"derivatives", "sourcedata"})
#: BIDS echo entity (``sub-01_echo-2_part-mag_MEGRE``): one echo of a multi-echo GRE stored per file.
#: dcm2niix's ``_eN`` (``x_megre_5_e2.nii.gz``, its phase ``..._e2_ph``) marks the same.
_ECHO = re.compile(r"_echo-(\d+)(?=_)|_e(\d+)(?=_ph\.|\.)", re.I)


@dataclass(frozen=True)
class ScanInput:
    """One scan to analyse: a NIfTI file or a DICOM series, and its unique output stem."""

    path: Path
    stem: str = ""
    series: DicomSeries | None = None
    #: What names the scan for ``--shard`` (:func:`plkd.inference.batch.shard_of`): its path relative to the input
    #: that found it (the folder walked, a glob pattern's fixed part), or a file's path as given when it was named,
    #: ``/``-separated, with ``#UID`` for a DICOM series. The same in every shard of a job array given the same
    #: inputs (and, for a walk or a pattern, wherever the study is mounted).
    key: str = ""
    #: Why a folder walk would not have taken this scan, for a file or series named explicitly (a quantitative map,
    #: another contrast, a prediction of another tool...): it is analysed with a warning. None when a walk takes it.
    caveat: str | None = None
    #: The image whose metadata are read for this scan instead of its own (``plkd predict --metadata-from``: the
    #: original of a copy, such as the file a Slicer volume was loaded from); None: the scan's own.
    metadata: Path | None = None
    #: The tags of the DICOM series :attr:`metadata` names (a file of it, or its folder), read as a DICOM input's own
    #: (:func:`plkd.dicom.series_tags`); None when :attr:`metadata` is no DICOM or there is none.
    metadata_tags: dict[str, str] | None = None

    @property
    def described_by(self) -> Path:
        """Where the scan's metadata are read (JSON sidecar with what it inherits, NIfTI header text, file name): the
        :attr:`metadata` image (by :func:`plkd.sidecars.as_nifti_name`; a DICOM series' folder), else the DICOM
        series' folder or the file."""
        if self.metadata is not None and self.metadata_tags is not None:
            return self.metadata if self.metadata.is_dir() else self.metadata.parent
        if self.metadata is not None:
            return as_nifti_name(self.metadata)
        return self.series.folder if self.series is not None else self.path

    @property
    def display(self) -> str:
        """How messages name the scan."""
        return f"{self.path} (DICOM series {self.series.uid})" if self.series is not None else str(self.path)


@dataclass
class InputList:
    """The scans of a run, and the files a folder walk skipped with the reason."""

    scans: list[ScanInput] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    #: ``(input as given, why)`` for each folder or glob pattern that gave no scan at all, and each folder of a
    #: walk that could not be read.
    empty: list[tuple[str, str]] = field(default_factory=list)

    def ignored_summary(self) -> str | None:
        """One line counting the skipped files by reason, or ``None`` when none was skipped."""
        if not self.skipped:
            return None
        return f"not analysed in the folders given: {count_reasons(self.skipped)} (-v lists them)"


def count_reasons(skipped: Sequence[tuple[Path, str]]) -> str:
    """``"label map or mask: 3, phase image: 1"``: the skipped files counted by reason, most first."""
    counts: dict[str, int] = defaultdict(int)
    for _path, reason in skipped:
        counts[reason] += 1
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def separate_echo_notes(scans: Sequence[ScanInput]) -> dict[Path, str]:
    """A warning for each NIfTI scan that is one echo of a multi-echo GRE stored one file per echo (BIDS
    ``echo-N``), when the run holds other echoes of it: each is analysed on its own, so the run gives one
    result per echo (the early ones show microbleeds least), not the combined image ``--echo`` makes of a
    4-D file."""
    groups: dict[tuple[Path, str], list[tuple[int, ScanInput]]] = defaultdict(list)
    for scan in scans:
        m = _ECHO.search(scan.path.name) if scan.series is None else None
        if m is not None:
            number = int(m.group(1) or m.group(2))
            groups[(scan.path.parent, _ECHO.sub("", scan.path.name, count=1).lower())].append((number, scan))
    notes = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        echoes = ", ".join(str(n) for n, _ in sorted(members, key=lambda m: m[0]))
        for n, scan in members:
            notes[scan.path] = (
                f"{scan.path.name} is echo {n} of a multi-echo GRE stored one echo per file (echoes {echoes} in this "
                "run): each echo is analysed on its own and gets its own result; for one result per scan give the "
                "echoes as one 4-D file (--echo rss, last or N) or only the echo to analyse"
            )
    return notes


def itk_placement(path: Path) -> np.ndarray | str | None:
    """Where ITK, and with it 3D Slicer and ITK-SNAP, places the voxels of the NIfTI file ``path``: its voxel → RAS
    affine, read from the header alone with SimpleITK; or, when ITK refuses the header, ITK's reason; None when this
    SimpleITK has no reader for the file (NIfTI-2), so nothing is known."""
    import SimpleITK as sitk  # noqa: N813 - the library's own name

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "unexpected scales in sform": plkd's warning says it
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
    except RuntimeError as exc:
        if "Unable to determine ImageIO reader" in str(exc):
            return None
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return (lines[-1] if lines else "unreadable").removeprefix("ITK ERROR: ")
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    placed = np.eye(4)
    n = reader.GetDimension()  # a 4-D or 5-D file has a direction of n x n
    placed[:3, :3] = np.reshape(reader.GetDirection(), (n, n))[:3, :3] @ np.diag(reader.GetSpacing()[:3])
    placed[:3, 3] = reader.GetOrigin()[:3]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ placed  # ITK's world is LPS


def _sform_doubt(h: object) -> str:
    """Why ITK passes over a sform of code 1: its voxel sizes are not pixdim's, or it is sheared (no rotation)."""
    sform = np.asarray(h.get_sform(), dtype=np.float64)[:3, :3]  # type: ignore[attr-defined]
    sizes = np.sqrt((sform**2).sum(axis=0))
    pixdim = np.abs(np.asarray(h["pixdim"][1:4], dtype=np.float64))  # type: ignore[index]
    unit = sform / np.where(sizes > 0, sizes, 1.0)
    if np.abs(unit.T @ unit - np.eye(3)).max() > 1e-3:
        return "its sform is sheared, no rotation"
    if not np.allclose(sizes, pixdim, rtol=1e-3):
        shown = "x".join(f"{v:.4g}" for v in sizes), "x".join(f"{v:.4g}" for v in pixdim)
        return f"its sform's voxel sizes ({shown[0]} mm) are not pixdim's ({shown[1]} mm)"
    return "its sform is no rotation"


def orientation_warnings(volume: Volume, name: str) -> list[str]:
    """Warnings about an input header that 3D Slicer cannot read (NIfTI-2) or whose orientation is missing or
    ambiguous (:func:`_placement_warnings`)."""
    nifti_2 = (
        [
            f"{name} is NIfTI-2: 3D Slicer and ITK-SNAP open neither it nor its outputs, which stay NIfTI-2 to keep "
            "its header exactly (ITK's NIfTI reader has no NIfTI-2); to review it there, save the scan as NIfTI-1 and "
            "run again"
        ]
        if isinstance(volume.header, nib.Nifti2Header)
        else []
    )
    return nifti_2 + _placement_warnings(volume, name)


def _placement_warnings(volume: Volume, name: str) -> list[str]:
    """Warnings about an input header whose orientation is missing or ambiguous.

    Both codes 0: no orientation at all (the grid is placed as ITK, 3D Slicer and ITK-SNAP place it, see
    :func:`plkd.volumes.header_affine`). Otherwise plkd places the image as nibabel does (the sform when its code is
    set, else the qform); where ITK (3D Slicer, ITK-SNAP: :func:`itk_placement`) places it elsewhere, the warning says
    how far, so that a reader knows where the JSON's centres lie there: qform and sform both set but different (ITK
    takes the sform only when its code is 1), or a sform of code 1 that ITK passes over for the qform (voxel sizes
    other than pixdim's, sheared), or a header ITK refuses. The outputs keep both forms and codes unchanged.
    """
    h = volume.header
    if h is None:
        return []
    q, s = int(h["qform_code"]), int(h["sform_code"])
    if q <= 0 and s <= 0:
        return [
            f"{name} has no orientation (qform_code = sform_code = 0): voxel (i, j, k) is placed at RAS "
            "(-i*dx, -j*dy, k*dz) mm as ITK-based viewers (3D Slicer, ITK-SNAP) show it, so left and right are not "
            "known; the outputs keep codes 0"
        ]
    tolerance = same_grid_tolerance_mm(volume.affine)
    itk = itk_placement(volume.path) if volume.path is not None and volume.path.is_file() else None
    if isinstance(itk, str):
        return [
            f"{name}: 3D Slicer and ITK-SNAP cannot open this header (ITK: {itk}); nor will they open the outputs, "
            "which keep it"
        ]
    itk_apart = 0.0 if itk is None else grid_displacement_mm(itk, volume.affine, volume.shape)
    form = "sform" if s > 0 else "qform"
    if q > 0 and s > 0 and not sform_passed_over(h):  # else placed by the qform, said as it was read
        # Where the two place the grid's corners, not their largest element: a tilt of 1e-3 moves a 256-voxel
        # grid's far corner by 0.25 mm, and a matrix element is no distance.
        apart = grid_displacement_mm(h.get_qform(), h.get_sform(), volume.shape)
        if apart > same_grid_tolerance_mm(volume.affine):
            # ITK (3D Slicer, ITK-SNAP) takes the sform only when its code is 1 (scanner) and it is a rotation with
            # pixdim's voxel sizes, else the qform (checked with SimpleITK 5.4, which says where it is placed here);
            # "may use the qform" left the reader to guess where the JSON's centres lie there.
            why = f"sform code {s}" if s != 1 else _sform_doubt(h)
            if itk is None:  # no reader for it here (NIfTI-2): ITK's rule of codes
                itk_apart = 0.0 if s == 1 else apart
            viewers = (
                "3D Slicer and ITK-SNAP use the sform too"
                if itk_apart <= tolerance
                else f"3D Slicer and ITK-SNAP use the qform ({why}), so there the JSON's centres lie up to "
                f"{itk_apart:.3g} mm from the scan and its label map"
            )
            return [
                f"{name}: its qform and sform differ, placing the image up to {apart:.3g} mm apart; plkd uses the "
                f"sform (as nibabel does); {viewers}; the outputs keep both"
            ]
    if itk_apart > tolerance:
        why = _sform_doubt(h) if s > 0 else "its qform"
        return [
            f"{name}: 3D Slicer and ITK-SNAP place the image up to {itk_apart:.3g} mm from where its {form} places it "
            f"({why}): plkd uses the {form} (as nibabel does), so there the JSON's centres lie up to "
            f"{itk_apart:.3g} mm from the scan and its label map; the outputs keep the header"
        ]
    return []


def caveat_warning(scan: ScanInput) -> str | None:
    """The warning for a scan named explicitly that a folder walk would have skipped (:attr:`ScanInput.caveat`), or
    None. It is analysed, as a file named is, but the models read T2*/SWI magnitude images: on a quantitative map
    (R2*, T2*, QSM: values in 1/s, ms, ppm; microbleeds bright on R2* and QSM) or another contrast, what is found
    means little, and the result must not pass for a reading of the scan."""
    if scan.caveat is None:
        return None
    return (
        f"{scan.path.name}: {scan.caveat}, not a T2*/SWI magnitude image by its name or metadata: a folder walk "
        "skips such files; it is analysed because it was named, but what the models find on it means little; give "
        "the magnitude image"
    )


def _walk(folder: Path, exclude: set[Path], found: InputList, root: Path) -> None:
    # Linked folders are followed (archives link subjects in from elsewhere: ``study/sub-01 -> /raw/4711``); each
    # real folder is walked once, so a link back up the tree or two links to one folder add nothing twice.
    seen = {folder.resolve()}

    def unreadable(exc: OSError) -> None:  # os.walk passed over such a folder without a word
        where = exc.filename or folder
        found.empty.append((str(where), f"cannot be read ({type(exc).__name__}): no scan in it is analysed"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable, followlinks=True):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            sub = (here / d).resolve()
            if d.startswith(".") or d.lower() in SKIPPED_FOLDERS or sub in exclude or sub in seen:
                continue
            seen.add(sub)
            keep.append(d)
        dirnames[:] = keep
        has_dicom = False
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = here / name
            if is_nifti(name):
                reason = classify(p)
                if reason:
                    found.skipped.append((p, reason))
                else:
                    found.scans.append(ScanInput(p, key=_key(p, root)))
            elif is_pair_name(name):  # a NIfTI pair (.hdr + .img, as SPM writes) is taken once, by its header
                header, voxels = pair_files(p)
                stem = strip_nifti_suffix(name)
                if p != header:
                    if not header.exists():
                        found.skipped.append((p, "not NIfTI or DICOM (an .img without its .hdr)"))
                elif not is_nifti_pair_header(p):
                    found.skipped.append((p, "Analyze 7.5 image (its header does not say where left and right are)"))
                elif not voxels.exists():
                    found.skipped.append((p, f"NIfTI header without its voxels ({voxels.name} is missing)"))
                elif single := next((n for n in filenames if is_nifti(n) and strip_nifti_suffix(n) == stem), None):
                    # The pair converted beside it, as plkd used to advise: one scan, not a run refused for two
                    # inputs of one output name.
                    found.skipped.append((p, f"NIfTI pair beside {single} (the same scan converted?), which is taken"))
                elif reason := classify(p):
                    found.skipped.append((p, reason))
                else:
                    found.scans.append(ScanInput(p, key=_key(p, root)))
            elif name.lower().endswith(".seg.nrrd"):  # a 3D Slicer segmentation (the module's exports too)
                found.skipped.append((p, "label map or mask"))
            elif name.lower().endswith(OTHER_FORMATS):
                ext = next(e for e in OTHER_FORMATS if name.lower().endswith(e))
                found.skipped.append((p, f"not NIfTI or DICOM ({ext}: convert it to NIfTI)"))
            elif not has_dicom and is_dicom_file(p):
                has_dicom = True
        if has_dicom:
            for series in find_series(here):
                reason = classify_series(series_tags(series))
                if reason:
                    found.skipped.append((series.folder / f"series {series.uid}", reason))
                else:
                    found.scans.append(
                        ScanInput(series.folder, series=series, key=_key(series.folder, root, series.uid))
                    )


def _key(path: Path, root: Path, uid: str | None = None) -> str:
    """:attr:`ScanInput.key`: ``path`` relative to ``root`` (both as given, links not followed), ``/``-separated."""
    rel = Path(os.path.relpath(path, root)).as_posix()
    return rel if uid is None else f"{rel}#{uid}"


def _named_key(path: Path, uid: str | None = None) -> str:
    """:attr:`ScanInput.key` of a file named on the command line: its path as given, normalised (``./``, ``a/../``
    and doubled separators gone; a relative path stays relative), ``/``-separated. Not its name alone: the files
    of a list such as ``sub-*/anat/T2S.nii`` (expanded by the shell) would all share one shard."""
    norm = Path(os.path.normpath(path)).as_posix()
    return norm if uid is None else f"{norm}#{uid}"


def _glob_root(pattern: str) -> Path:
    """The fixed part of a glob pattern, before its first wildcard (``data/*/anat/*.nii.gz`` → ``data``)."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return Path(*parts[:fixed]) if fixed else Path(".")


def named_caveat(reason: str | None) -> str | None:
    """What :attr:`ScanInput.caveat` keeps of the reason a walk would skip a scan named explicitly: phase images
    are left out, as their own warning (:func:`plkd.inference.modality.phase_reason`) says it with the evidence."""
    return None if reason is None or reason.startswith("phase") else reason


def with_metadata_from(scans: Sequence[ScanInput], source: str | os.PathLike[str]) -> ScanInput:
    """The one scan of ``scans``, read with the metadata of the image ``source`` (``plkd predict --metadata-from``):
    the copy of a scan written elsewhere (the Slicer module writes the volume it analyses to a working folder) is
    then told T2* from SWI, and checked for phase, projection and sequence, as ``source`` itself would be. ``source``
    is an image file in any format (read as :func:`plkd.sidecars.as_nifti_name` says), or a DICOM file or series
    folder (its series' tags are read, as for a DICOM input).

    Raises :class:`InputError` when ``source`` is no file, a folder without exactly one DICOM series, or when
    ``scans`` is not one NIfTI file (a DICOM series carries its own tags; one file cannot describe several scans).
    """
    path = Path(source)
    series: DicomSeries | None = None
    if path.is_dir():
        found = find_series(path)
        if len(found) != 1:
            held = f"{len(found)} DICOM series" if found else "no DICOM series"
            raise InputError(f"--metadata-from {source}: a folder holding {held}; give one image or one series")
        series = found[0]
    elif not path.is_file():
        raise InputError(f"--metadata-from {source}: no such file")
    elif not is_nifti(path.name) and is_dicom_file(path):
        series = series_for_file(path)
    if len(scans) != 1 or scans[0].series is not None:
        what = f"{len(scans)} scans" if len(scans) != 1 else "a DICOM series, which has its own tags"
        raise InputError(f"--metadata-from describes one NIfTI input (a copy of {path.name}); the inputs hold {what}")
    if series is not None:  # what a walk would say of the series (a localizer, a spin echo)
        tags = series_tags(series)
        return replace(scans[0], metadata=path, metadata_tags=tags, caveat=named_caveat(classify_series(tags)))
    # What a walk would say of the original (a phase image, a T1w), not of the copy's name.
    return replace(scans[0], metadata=path, caveat=named_caveat(classify(as_nifti_name(path))))


def _add(item: Path, exclude: set[Path], found: InputList, root: Path | None = None) -> None:
    """Add the scans of ``item`` (a folder, a file or a glob match); ``root``: what keys are relative to (the
    fixed part of the pattern for a match; else the folder walked; a file named has its path as given)."""
    if item.is_dir():
        _walk(item, exclude, found, item if root is None else root)
    elif item.is_file() and not is_nifti(item.name) and is_dicom_file(item):
        series = series_for_file(item)
        found.scans.append(
            ScanInput(
                item.parent,
                series=series,
                key=_named_key(item.parent, series.uid) if root is None else _key(item.parent, root, series.uid),
                caveat=named_caveat(classify_series(series_tags(series))),
            )
        )
    elif is_nifti(item.name) and is_plkd_prediction(item):
        # Never a scan, even named: a pattern over the inputs that also covers the output folder
        # (``'data/*/*.nii.gz' -o data/plkd``, quoted or expanded by the shell) matched the last run's outputs,
        # and each probability map was analysed as a T2* image, its result matched by the next run in turn.
        found.skipped.append((item, "plkd prediction"))
    else:  # a NIfTI file, or a name that fails later with "not found"/"cannot read"
        if is_pair_name(item) and pair_files(item)[0].exists():
            item = pair_files(item)[0]  # a NIfTI pair is one scan, named by its header (x.img → x.hdr)
        caveat = named_caveat(classify(item)) if item.is_file() else None
        key = _named_key(item) if root is None else _key(item, root)
        found.scans.append(ScanInput(item, key=key, caveat=caveat))


def expand_inputs(
    inputs: Sequence[str | os.PathLike[str]], output_dir: str | os.PathLike[str] | None = None
) -> InputList:
    """Files, folders and glob patterns → the scans (sorted, each once, unique stems).

    Raises :class:`InputError` naming the inputs when two of them cannot be given distinct
    output names.
    """
    exclude = {Path(output_dir).resolve()} if output_dir is not None else set()
    found = InputList()
    for item in inputs:
        p = Path(item)
        n_scans, n_skipped, n_empty = len(found.scans), len(found.skipped), len(found.empty)
        if not p.exists() and glob.has_magic(str(item)):
            matches = sorted(glob.glob(str(item), recursive=True))  # "**": any depth, as shells with globstar do
            for m in matches:
                _add(Path(m), exclude, found, _glob_root(str(item)))
            if not matches:
                found.empty.append((str(item), "matches no file"))
                continue
        else:
            _add(p, exclude, found)
        if (
            len(found.scans) == n_scans and len(found.empty) == n_empty and (p.is_dir() or not p.exists())
        ):  # a folder or a pattern without a scan
            left = found.skipped[n_skipped:]
            why = "holds no NIfTI image or DICOM series to analyse"
            found.empty.append((str(item), why + (f" (not analysed: {count_reasons(left)})" if left else "")))
    unique: dict[tuple[Path, str | None], ScanInput] = {}
    for s in found.scans:
        key = (s.path.resolve() if s.path.exists() else s.path, s.series.uid if s.series else None)
        unique.setdefault(key, s)
    scans = sorted(unique.values(), key=lambda s: (str(s.path), s.series.uid if s.series else ""))
    found.scans = assign_stems(scans)
    return found


def _base_stem(scan: ScanInput, uids_here: Sequence[str]) -> str:
    if scan.series is None:
        return strip_nifti_suffix(scan.path.name)
    name = _as_given(scan.path).name
    return name if len(uids_here) <= 1 else f"{name}_{uid_tail(scan.series.uid, uids_here)}"


def uid_tail(uid: str, uids: Sequence[str]) -> str:
    """The fewest last ``.``-parts of ``uid`` that no other of ``uids`` (the series of one folder) ends with.

    Usually the last part (``1.2.840.113619.2.5.7`` → ``7``); Siemens UIDs all end in ``.0.0.0``, so two series of one
    folder both gave ``0`` and the whole run was refused as two inputs nothing tells apart.
    """
    parts = uid.split(".")
    others = [o.split(".") for o in uids if o != uid]
    for k in range(1, len(parts) + 1):
        if all(o[-k:] != parts[-k:] for o in others):
            return ".".join(parts[-k:])
    return uid


def assign_stems(scans: list[ScanInput]) -> list[ScanInput]:
    """Give every scan an output stem unique in the run (case-insensitively, for macOS/Windows).

    A shared file name gets the fewest parent folders that tell the inputs apart, leaving out
    folders common to all of them (``sub-01/anat/T2S`` → ``sub-01_T2S``).
    """
    per_folder: dict[Path, list[str]] = defaultdict(list)
    for s in scans:
        if s.series is not None:
            per_folder[s.path.resolve()].append(s.series.uid)
    bases = [_base_stem(s, per_folder.get(s.path.resolve(), [])) for s in scans]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, b in enumerate(bases):
        groups[b.lower()].append(i)
    stems = list(bases)
    for members in groups.values():
        if len(members) > 1:
            for i, stem in zip(
                members, _disambiguate([scans[i] for i in members], [bases[i] for i in members]), strict=True
            ):
                stems[i] = stem
    seen: dict[str, int] = {}
    for i, stem in enumerate(stems):
        j = seen.setdefault(stem.lower(), i)
        if j != i:
            raise InputError(
                f"{scans[j].display} and {scans[i].display} would both be written as {stem}_cmb.*; "
                "rename or remove one of them"
            )
    return [replace(s, stem=stem) for s, stem in zip(scans, stems, strict=True)]


def _disambiguate(group: list[ScanInput], bases: list[str]) -> list[str]:
    parents = [list(_as_given(s.path).parent.parts) for s in group]
    depth = max(len(p) for p in parents)
    for k in range(1, depth + 1):
        tails = [tuple(p[-k:]) for p in parents]
        if len({tuple(x.lower() for x in t) for t in tails}) == len(tails):
            varying = [c for c in range(k) if len({t[c].lower() for t in tails if len(t) > c}) > 1]
            return ["_".join([*(t[c] for c in varying), b]) for t, b in zip(tails, bases, strict=True)]
    names = ", ".join(s.display for s in group[:-1]) + f" and {group[-1].display}"
    # sub-01/T2S and SUB-01/T2S, scan and Scan: distinct on Linux, one file on macOS and Windows (and on a share).
    told = [str(_as_given(s.path).parent / b) for s, b in zip(group, bases, strict=True)]
    case = " (names that differ only in case are one name on macOS and Windows)" if len(set(told)) == len(told) else ""
    raise InputError(f"{names} would all be written as {bases[0]}_cmb.*{case}; rename or remove all but one of them")


def _as_given(path: Path) -> Path:
    """``path`` made absolute without following links (``study/sub-01 -> /raw/4711`` stays ``study/sub-01``): names
    come from the layout the user gave, as in a study whose subject folders are links into a raw store."""
    return Path(os.path.normpath(path.absolute()))
