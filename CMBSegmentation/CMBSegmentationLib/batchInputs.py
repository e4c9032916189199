"""Which files of a batch run's input folder are scans, their brain masks, and the names of their outputs.

Used by ``Resources/Scripts/batchProcess.py``: an input folder's volumes are sorted as ``plkd predict``'s folder walk
sorts them (results, label maps, masks, phase images, other contrasts and formats the batch does not read are left
out, each with its reason), a scan's brain mask is ``NAME<mask-suffix>`` beside it in any volume format, its outputs
are named after its file name (``NAME_cmb-final.nii.gz``, ...; a NIfTI pair ``NAME.hdr`` + ``NAME.img`` is one input,
named by its ``.hdr``), and a 4-D NIfTI file is told from a scan. Qt-free and
Slicer-free: only the standard library is imported when the module loads, the rest (``plkd``, nibabel, the module's
other helpers) inside the functions that need them, so that the batch script can still refuse in one line when the
dependencies are not installed yet.
"""

from __future__ import annotations

from pathlib import Path

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".hdr", ".img", ".hdr.gz", ".img.gz")
#: The two files of a NIfTI pair (as SPM writes it): header and voxels. Slicer's volume reader (ITK's NIfTI reader,
#: ``vtkMRMLVolumeArchetypeStorageNode`` passes the archetype alone for ``.hdr``/``.img``) loads the pair by either
#: file; the batch takes it once, by its ``.hdr``, as ``plkd predict`` does. An Analyze 7.5 image (the same two files,
#: without NIfTI's magic) is refused as plkd refuses it: its header does not say where left and right are. A pair
#: written compressed (``NAME.hdr.gz`` + ``NAME.img.gz``) is read by both as well (ITK's NIfTI reader gunzips it) and
#: taken the same way; it was left out without a word.
PAIR_SUFFIXES = (".hdr", ".img", ".hdr.gz", ".img.gz")


#: Archives a study or series often comes in (named in the warning line of files left out, not opened).
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".7z", ".rar")


def findInputs(inputDir, maskSuffix="", skipped=None, notScans=None, outputDir=None):
    """Input volumes of ``inputDir`` (brain masks and results excluded, see :func:`isResultFile`, and files that are
    not T2*/SWI scans, see :func:`notAScan`), sorted by name.

    The results found are appended to the list ``skipped``, the other files left out to ``notScans`` as
    ``(path, reason)``, when those lists are given; ``outputDir``, when it lies in ``inputDir``, is not named there.
    """
    files, dicomFiles, masks = [], [], []
    for path in sorted(inputDir.iterdir()):
        name = path.name
        if name.startswith("."):
            continue  # hidden: a temporary file of a write that a crash left (".NAME.partial-...nii.gz")
        if path.is_dir():
            # An archive's series folders (DICOM, one folder per scan) were left out without a word.
            if notScans is not None and not (outputDir is not None and path.resolve() == Path(outputDir).resolve()):
                notScans.append((path, "a folder: the batch reads the volumes directly in the input folder"))
            continue
        if not path.is_file():
            if path.is_symlink() and notScans is not None:
                # A link whose scan moved or was deleted (an archive of links into a PACS export) was left out
                # without a word.
                try:
                    target = path.readlink()
                except OSError:
                    target = "?"
                notScans.append((path, f"a link to {target}, which is not there (moved or deleted?)"))
            continue
        if volumeSuffix(name) is None:
            # A volume in another format was left out without a word ("N of N processed"), as was "SCAN.NII.GZ".
            other = unreadFormat(name)
            if other and notScans is not None:
                notScans.append((path, f"{other}: a format the batch does not read; convert it to NIfTI or NRRD"))
            elif name.lower().endswith(ARCHIVE_SUFFIXES):
                # A zipped series or study was left out without a word.
                if notScans is not None:
                    notScans.append((path, "an archive: unpack it, the batch reads the volumes in the input folder"))
            elif isDicomFile(path):
                dicomFiles.append(path)
            continue
        if volumeSuffix(name) in PAIR_SUFFIXES:
            why = pairProblem(path)
            if why is not None:
                if why and notScans is not None:
                    notScans.append((path, why))
                continue
        stem = stripSuffix(name)
        if maskSuffix and stem.endswith(maskSuffix):
            masks.append(path)
            continue
        if isResultFile(path):
            if skipped is not None:
                skipped.append(path)
            continue
        reason = notAScan(path)
        if reason:
            if notScans is not None:
                notScans.append((path, reason))
            continue
        files.append(path)
    # A volume named as the mask of no scan here (a scan "sub-02_bet" with --mask-suffix _bet) was left out without
    # a word: said, as the other files left out are.
    stems = {stripSuffix(p.name) for p in inputDir.iterdir() if volumeSuffix(p.name)}
    for mask in masks:
        scan = stripSuffix(mask.name)[: -len(maskSuffix)]
        if scan not in stems and notScans is not None:
            notScans.append(
                (mask, f"named as the brain mask of a scan {scan} (--mask-suffix {maskSuffix}), but there is none")
            )
    if dicomFiles and notScans is not None:
        notScans.append(
            (
                dicomFiles[0],
                f"DICOM, {len(dicomFiles)} file(s) here: load the series with Slicer's DICOM module, or give the "
                "folder to plkd predict, which reads DICOM series",
            )
        )
    return files


def pairProblem(path):
    """For a ``.hdr`` or ``.img`` file: None when ``path`` is the header of a NIfTI pair to take (its ``.img`` beside
    it), ``""`` when it is the ``.img`` of such a pair (taken by its header, not named), else why the batch leaves it
    out (an Analyze 7.5 image, a half pair, a pair beside the same scan converted to one file)."""
    from plkd.naming import pair_files
    from plkd.volumes import is_nifti_pair_header

    header, voxels = pair_files(path)
    if path.name != header.name:
        if header.is_file() or _otherCompression(header).is_file():
            return ""  # named once, by its header, which says what is wrong with the pair
        return f"an {volumeSuffix(path.name)} without its header {header.name} (a NIfTI pair is read by its .hdr)"
    if not is_nifti_pair_header(path):
        return (
            "an Analyze 7.5 image (no NIfTI magic in its .hdr): its header does not say where left and right are, so "
            "plkd predict refuses it too (Slicer would load it with a guessed orientation); convert it to NIfTI with "
            "its orientation checked"
        )
    if not voxels.is_file():
        other = _otherCompression(voxels)
        if other.is_file():
            # Said "q.img is missing" beside q.img.gz.
            return (
                f"a NIfTI pair of which one file is gzipped and the other not ({path.name} + {other.name}): plkd "
                "predict reads a pair whose two files are both gzipped or neither; gzip or gunzip one of them"
            )
        return f"a NIfTI header without its voxels ({voxels.name} is missing)"
    stem = stripSuffix(path.name)
    single = sorted(
        p.name
        for p in path.parent.iterdir()
        if volumeSuffix(p.name) not in (None, *PAIR_SUFFIXES) and stripSuffix(p.name) == stem
    )
    if single:
        # The pair converted beside it, as the batch used to advise: one scan, not a run refused for two inputs of
        # one output name.
        return f"a NIfTI pair beside {single[0]} (the same scan converted?), which is taken"
    return None


def _otherCompression(path):
    """``path`` gzipped (``x.img`` -> ``x.img.gz``) or, when it is, not (``x.img.gz`` -> ``x.img``)."""
    if path.name.lower().endswith(".gz"):
        return path.with_name(path.name[:-3])
    return path.with_name(path.name + (".GZ" if path.name.isupper() else ".gz"))


def isDicomFile(path):
    """Whether ``path`` is a DICOM file: named ``.dcm``/``.ima`` or with the DICOM Part 10 preamble."""
    from plkd.dicom import is_dicom_file

    return path.suffix.lower() in (".dcm", ".ima") or is_dicom_file(path)


def volumeSuffix(name):
    """The suffix of ``VOLUME_SUFFIXES`` ``name`` ends with, in any case ("SCAN.NII.GZ": Slicer reads it), or None."""
    lower = name.lower()
    return next((suffix for suffix in VOLUME_SUFFIXES if lower.endswith(suffix)), None)


def stripSuffix(name):
    """``name`` without its suffix of ``VOLUME_SUFFIXES`` (in any case), or ``name`` when it has none."""
    suffix = volumeSuffix(name)
    return name[: -len(suffix)] if suffix else name


def unreadFormat(name):
    """The suffix of an image format ``plkd predict``'s folder walk names but the batch does not read (``.mgz``,
    ``.nhdr``, ``.img``, ``.nii.bz2``, ...), or None."""
    from plkd.inference.input_kinds import OTHER_FORMATS

    lower = name.lower()
    return next((suffix for suffix in OTHER_FORMATS if lower.endswith(suffix)), None)


def notAScan(path):
    """Why ``path`` is not a T2*/SWI scan to analyse (a label map, mask, phase image, other contrast, ...), or None.

    The rule of ``plkd predict``'s folder walk (``plkd.inference.input_kinds.classify``: the name, then a JSON
    sidecar), applied to every volume format: a label map beside the scans (``NAME_CMB.nii.gz``, Slicer's
    ``NAME-label.nrrd``) was run as a scan and failed, and a T1 or phase image gave "microbleeds".
    """
    from plkd.inference.input_kinds import classify
    from plkd.sidecars import as_nifti_name

    # An NRRD or MetaImage file read as a NIfTI file of its name, as the engine's --metadata-from reads it when the
    # module analyses the volume (its sidecar NAME.json, what a BIDS data set states for it, its name's words).
    return classify(as_nifti_name(path))


def isResultFile(path):
    """Whether ``path`` is a result of the batch, of the module's Export or of ``plkd predict`` rather than a scan.

    With ``--output-dir`` the input folder, a rerun took the last run's ``NAME_cmb-final.nii.gz`` (a label map) and
    ``NAME_cmb-final.seg.nrrd`` as scans and reported "microbleeds" found in them. The rule for NIfTI names is
    plkd's own (``plkd.naming.is_plkd_prediction``), which its folder walk and training data reader share.
    """
    from plkd.naming import is_plkd_prediction

    return path.name.lower().endswith(".seg.nrrd") or is_plkd_prediction(path)


def findMask(path, maskSuffix):
    """The brain mask ``NAME<maskSuffix>`` beside ``path``, in any of the volume formats, or None."""
    if not maskSuffix:
        return None
    stem = stripSuffix(path.name) + maskSuffix
    masks = [
        p
        for p in path.parent.iterdir()
        if volumeSuffix(p.name)
        and stripSuffix(p.name) == stem
        and p.is_file()
        and (volumeSuffix(p.name) not in PAIR_SUFFIXES or pairProblem(p) is None)
    ]
    return min(masks, key=lambda p: VOLUME_SUFFIXES.index(volumeSuffix(p.name)), default=None)


def outputBaseName(path):
    """The name the outputs of ``path`` start with (``NAME_cmb-final.nii.gz``, ...)."""
    from CMBSegmentationLib import inferenceJob

    return inferenceJob.safeFileName(stripSuffix(path.name))


def nameCollisions(inputs):
    """Groups of inputs whose outputs would have the same names (``a.nii`` and ``a.nii.gz``, ``a b`` and ``a-b``,
    and ``scan`` and ``Scan``, one name on the case-insensitive file systems of macOS and Windows): processed in
    turn, the last would overwrite the reports of the others."""
    groups = {}
    for path in inputs:
        groups.setdefault(outputBaseName(path).lower(), []).append(path)
    return [group for group in groups.values() if len(group) > 1]


def sameScans(inputs):
    """``{input: [the other inputs with the same file content]}`` for the inputs that are one scan under several names
    (a copy ``a_copy.nii.gz``, a link, a NIfTI pair copied under another name: both its files compared), in input
    order; the others are not keys.

    Each was processed as a scan of its own and nothing said so: a total over the summary counted its microbleeds
    twice. Files are told apart by their sizes, then the SHA-256 of their first MiB, then of all their bytes: only
    files still alike are read further (a folder of uncompressed scans of one protocol has many of one size).
    """
    import hashlib

    from plkd.naming import pair_files

    def digest(path, limit):
        sha, left = hashlib.sha256(), limit
        with open(path, "rb") as handle:
            while left is None or left > 0:
                block = handle.read(1 << 20 if left is None else min(1 << 20, left))
                if not block:
                    break
                sha.update(block)
                left = None if left is None else left - len(block)
        return sha.hexdigest()

    def key(path, stage):
        try:
            if stage == 0:
                return tuple(p.stat().st_size for p in pair_files(path))
            return tuple(digest(p, 1 << 20 if stage == 1 else None) for p in pair_files(path))
        except OSError:
            return None  # gone or unreadable: loading it says so

    groups = [list(inputs)]
    for stage in range(3):
        split = []
        for group in groups:
            byKey = {}
            for path in group:
                byKey.setdefault(key(path, stage), []).append(path)
            split += [paths for found, paths in byKey.items() if found is not None and len(paths) > 1]
        groups = split
    same = {path: [p for p in group if p != path] for group in groups for path in group}
    return {path: same[path] for path in inputs if path in same}


def niftiFrames(path):
    """The number of volumes of a NIfTI file holding several along its 4th and higher dimensions (Slicer's volume
    reader refuses such a file, saying only "Failed to load node"), else 1 (also for other formats, or a file nibabel
    cannot read: loading it says what is wrong)."""
    if not str(path.name).lower().endswith((".nii", ".nii.gz", *PAIR_SUFFIXES)):
        return 1
    try:
        import nibabel

        shape = nibabel.load(str(path)).shape
    except Exception:
        return 1
    frames = 1
    for size in shape[3:]:
        frames *= int(size)
    return frames
