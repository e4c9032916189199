"""Which files in a batch run's output folder it may replace, and the summary of the run it writes there.

Used by ``Resources/Scripts/batchProcess.py``. A rerun removes an input's earlier outputs only when it can prove a
batch run wrote them (a readable batch report beside them, every file as its ``file_sha256`` says); a reader's
export (the module's Export), a user's own file of that name, or the result of another scan of the same name is
never replaced. The summary ``cmb-batch-summary.csv`` holds one row per input (status and reason, counts, files,
model, thresholds) and is written atomically; one of that name that no batch run wrote is never replaced either.
Qt-free and Slicer-free: only the standard library is imported when the module loads, the module's other helpers
inside the functions that need them.
"""

from __future__ import annotations

import csv
import filecmp
import io
import json
import re
from pathlib import Path

from CMBSegmentationLib import batchInputs


def removeOutputs(outputDir, baseName):
    """Remove the files an export of ``baseName`` writes in ``outputDir``; return the names of those that existed."""
    from CMBSegmentationLib import reportExport

    removed = []
    for output in reportExport.outputPaths(Path(outputDir), baseName):
        if output.exists():
            output.unlink()
            removed.append(output.name)
    return removed


def removeLeftovers(outputDir, baseName):
    """Remove the files of ``baseName`` after its input failed; "" when none is left, else a clause naming why (the
    files that stay are not this run's, and the failure line must say so)."""
    try:
        removeOutputs(outputDir, baseName)
    except OSError as exc:
        return f"; files of {baseName} could not be removed ({exc}): they are not this run's results"
    return ""


def readerExport(outputDir, baseName):
    """What makes the report ``baseName_cmb-report.json`` in ``outputDir`` a reader's export (the module's Export),
    which a batch run must never replace: ``"a reader's review"``, or for a report of an older version (without
    ``exported_by``) its review decisions (``"3 decision(s)"``: accepted, rejected, added by reader), for which the
    whole run is refused; None for a batch run's report, one of an older version without decisions (not provably a
    batch run's either: :func:`foreignOutputs` keeps it, and that input fails), or none that can be read.

    Told apart by decisions alone, a review whose reader erased a false positive with the Segment Editor, painted a
    microbleed's outline or raised the review threshold, but changed no status, was replaced without a word.
    """
    from CMBSegmentationLib import candidateTable, reportExport

    report = reportExport.outputPaths(Path(outputDir), baseName)[3]
    try:
        content = json.loads(report.read_text(encoding="utf-8"))
        if "exported_by" in content:
            return None if content["exported_by"] == reportExport.EXPORTED_BY_BATCH else "a reader's review"
        decided = (candidateTable.STATUS_ACCEPTED, candidateTable.STATUS_ADDED)
        kept = sum(m.get("status") in decided for m in content.get("microbleeds") or [])
        count = kept + int(content.get("n_rejected") or 0)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return f"{count} decision(s)" if count else None


def foreignOutputs(outputDir, baseName):
    """Why the files at the output names of ``baseName`` in ``outputDir`` are not provably an earlier batch run's
    (which a rerun may remove), or None (none there, or the four as a batch run's export wrote them).

    Only files beside a readable report of a batch run (``"exported_by": "batch"``; a report of an older version,
    without it, may be a reader's Export, which wrote the same report then) and unchanged since (its ``file_sha256``)
    are the batch's. A
    rerun removed whatever lay there: a user's own file of that name without a report, a report cut short (a copy that
    stopped), a report saved from a spreadsheet with a reader's notes, a label map corrected in another program.
    """
    from CMBSegmentationLib import reportExport

    paths = reportExport.outputPaths(Path(outputDir), baseName)
    present = [p for p in paths if p.exists() or p.is_symlink()]
    if not present:
        return None
    names = ", ".join(p.name for p in present)
    report = paths[3]
    if report not in present:
        return f"the output folder holds {names} without a batch report {report.name} beside them"
    try:
        content = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{report.name} in the output folder cannot be read as a report ({exc.__class__.__name__}: {exc})"
    if not isinstance(content, dict) or not isinstance(content.get("microbleeds"), list):
        return f"{report.name} in the output folder is no report of this module (no 'microbleeds' list)"
    why = readerExport(outputDir, baseName)
    if why:
        return f"{report.name} in the output folder is a reader's export ({why})"
    if "exported_by" not in content:
        # Before exported_by the module's Export wrote the same report as the batch: one without status decisions was
        # taken for the batch's, also a reader's whose reader erased, painted or raised the review threshold.
        return (
            f"{report.name} in the output folder is a report of an older version (no 'exported_by'): whether a batch "
            "run or a reader's Export wrote it cannot be told"
        )
    changed = reportExport.changedSinceExport(content, paths[:3])
    if changed:
        names = ", ".join(p.name for p in changed)
        return f"{names} in the output folder changed since the batch run of {report.name} wrote them"
    return None


def otherScanResult(outputDir, path):
    """The scan file whose batch result lies in ``outputDir`` under the name of ``path``'s outputs, when it is another
    scan still on disk (not ``path``, nor a copy of it), else None.

    Batch runs of several folders into one output folder (``p1/swi.nii.gz``, then ``p2/swi.nii.gz``) gave their scans
    the same output names: each run replaced the results of the one before without a word. A report without
    ``input_file`` (older versions), or whose scan is gone (moved, renamed), is replaced as before.
    """
    from CMBSegmentationLib import reportExport

    report = reportExport.outputPaths(Path(outputDir), batchInputs.outputBaseName(path))[3]
    try:
        recorded = json.loads(report.read_text(encoding="utf-8")).get("input_file")
        other = Path(recorded) if recorded else None
        if other is None or not other.is_file() or other.resolve() == path.resolve():
            return None
        if _sameFiles(other, path):
            return None  # the same scan, copied elsewhere
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return other


def _sameFiles(one, other):
    """Whether the scan files ``one`` and ``other`` hold the same bytes: for a NIfTI pair, both its files (the headers
    of two patients' scans of one protocol may be byte for byte the same)."""
    from plkd.naming import pair_files

    ones, others = pair_files(one), pair_files(other)
    return len(ones) == len(others) and all(
        a.stat().st_size == b.stat().st_size and filecmp.cmp(a, b, shallow=False)
        for a, b in zip(ones, others, strict=True)
    )


def partialTag(pid):
    """What a batch run (process ``pid`` on this host) puts into its temporary names (``atomicFiles.temporaryTag``):
    ``batch-<host>-<pid>-``, the host as ``plkd.atomic`` names it (a hash of its name)."""
    from plkd.atomic import HOST_TAG

    return f"batch-{HOST_TAG}-{pid}-"


_KILLED_PARTIAL = re.compile(r"\.partial-batch-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-")


def removeKilledPartials(outputDir):
    """Remove the hidden temporary files (``.NAME.partial-...``) in ``outputDir`` that a batch run killed while writing
    left (kill -9, the system out of memory, a power cut; Ctrl+C and SIGTERM remove their own); return ``(removed,
    kept, stuck)``: the names of those removed, of those that stay as not provably a killed batch run's, and of a killed
    run's that could not be removed, each with why.

    A file is provably one when its name carries a batch run's tag (:func:`partialTag`) and that run no longer writes:
    its process is gone on this host, or the file is older than ``plkd.atomic.STALE_AGE_S`` (a run on another host
    sharing the folder), the rule of ``plkd.atomic``'s own temporaries. The module's Export and older versions write
    untagged ones (a reader's export killed between two renames may hold the only copy of a review), and a run still
    writing (two runs into one folder) tagged ones of a live process: those are kept and named. Every later run left
    them all in the folder without a word.
    """
    import time

    from plkd.atomic import HOST_TAG, STALE_AGE_S
    from plkd.parent import process_alive

    removed, kept, stuck = [], [], []
    for path in sorted(Path(outputDir).iterdir()):
        if not path.name.startswith(".") or ".partial-" not in path.name or path.is_symlink() or not path.is_file():
            continue
        found = _KILLED_PARTIAL.search(path.name)
        try:
            stale = time.time() - path.stat().st_mtime > STALE_AGE_S
        except OSError:
            continue  # gone meanwhile
        if found is None or not (stale or (found["host"] == HOST_TAG and not process_alive(int(found["pid"])))):
            kept.append(path.name)
            continue
        try:
            path.unlink()
        except OSError as exc:  # a killed run's, but it cannot be removed (no permission): said as such
            stuck.append(f"{path.name} ({exc.strerror or exc})")
            continue
        removed.append(path.name)
    return removed, kept, stuck


def otherResults(outputDir, inputs):
    """The batch reports in ``outputDir`` of scans that are not among ``inputs`` (a scan taken out of the input folder
    since an earlier run), sorted: a count over the folder's reports holds them, the summary does not."""
    from CMBSegmentationLib import reportExport

    ours = {batchInputs.outputBaseName(p).lower() for p in inputs}
    suffix = "_cmb-report.json"
    found = []
    for report in sorted(Path(outputDir).glob(f"*{suffix}")):
        if report.name[: -len(suffix)].lower() in ours:
            continue
        try:
            content = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(content, dict) and content.get("exported_by") == reportExport.EXPORTED_BY_BATCH:
            found.append(report)
    return found


#: One row per input over the whole run, in the output folder (see :func:`writeSummary`).
SUMMARY_NAME = "cmb-batch-summary.csv"
SUMMARY_COLUMNS = (
    "input",
    "input_file",
    "status",
    "reason",
    "n_microbleeds",
    "n_candidates",
    "label_map",
    "segmentation",
    "report_csv",
    "report_json",
    "model",
    "bundle",
    "modality",
    "model_modality",
    "screening_threshold",
    "segmentation_threshold",
    "threshold_option",
    "brain_mask",
    "seconds",
    "warnings",
)
#: ``status`` of an input the run did not reach (stopped before it), and why.
STATUS_OK, STATUS_FAILED, STATUS_NOT_RUN = "ok", "failed", "not run"
#: ``status`` of the input under way: the row a run killed or crashed during an input (out of memory, a reader's
#: segfault on a damaged file) leaves; it said "not reached", as for the inputs after it.
STATUS_RUNNING = "running"
#: ``status`` of a file of the input folder that is no input (see :func:`leftOutRow`); after the inputs' rows.
STATUS_LEFT_OUT = "left out"
UNDER_WAY = (
    "being processed when the summary was last written: if no batch run is running any more, the run stopped (killed, "
    "crashed or out of memory) during this input; files of it in the output folder, if any, are not this run's results"
)
NOT_REACHED = (
    "not processed: the run has not reached it (still running, or stopped before it); any files of it in the output "
    "folder are an earlier run's"
)


def summaryRow(path, args, status=STATUS_NOT_RUN, reason=NOT_REACHED, result=None, seconds=None):
    """The summary's row of the input ``path``: ``result`` is what ``batchProcess.processOne`` returned for it (None:
    failed or not run, so no files nor counts)."""
    row = dict.fromkeys(SUMMARY_COLUMNS, "")
    row.update(
        input=path.name,
        input_file=str(path.resolve()),
        status=status,
        reason=" ".join(str(reason or "").split()),  # one line
        bundle=str(args.model or "").strip() or "installed",
        threshold_option="" if args.threshold is None else f"{args.threshold:g}",
        seconds="" if seconds is None else f"{seconds:.1f}",
    )
    mask = batchInputs.findMask(path, args.mask_suffix)
    row["brain_mask"] = mask.name if mask is not None else ""
    row.update({k: "" if v is None else v for k, v in (result or {}).items() if k in SUMMARY_COLUMNS})
    # One scan under several names (batchInputs.sameScans, set by the batch as args.same_scans): each row says so, a
    # total over the summary counted it twice.
    others = (getattr(args, "same_scans", None) or {}).get(path)
    if others:
        same = f"{SAME_SCAN}{', '.join(p.name for p in others)}"
        row["warnings"] = " | ".join(w for w in (row["warnings"], same) if w)
    return row


#: The start of the summary's warning on an input whose file content another input has too.
SAME_SCAN = "the same scan as another input (identical file content): "


def leftOutRow(path, reason):
    """The summary's row of a file of the input folder the batch leaves out (``batchInputs.findInputs``' ``notScans``:
    a format it does not read, an Analyze pair, a label map, DICOM files, a folder): status ``left out`` and why.

    Named in one warning line alone, the first three only, a scan the batch never analysed did not show in the table
    over the study."""
    row = dict.fromkeys(SUMMARY_COLUMNS, "")
    row.update(
        input=path.name, input_file=str(path.resolve()), status=STATUS_LEFT_OUT, reason=" ".join(str(reason).split())
    )
    return row


def summaryProblem(outputDir):
    """Why ``outputDir``'s :data:`SUMMARY_NAME` is not a batch run's summary that a run may replace (a researcher's
    own table of that name), or None (none there, or one with the summary's columns)."""
    path = Path(outputDir) / SUMMARY_NAME
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            header = handle.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        return f"{SUMMARY_NAME} in the output folder cannot be read ({exc})"
    if not header.startswith(",".join(SUMMARY_COLUMNS[:4])):
        return f"{SUMMARY_NAME} in the output folder is no batch summary (its columns: {header[:60]!r})"
    # Its columns alone took a summary a researcher had annotated in a spreadsheet for the batch's own.
    recorded = _recordedSummaryHashes(outputDir)
    try:
        current = _sha256(path)
    except OSError as exc:
        return f"{SUMMARY_NAME} in the output folder cannot be read ({exc})"
    if recorded is not None and current not in recorded:
        return f"{SUMMARY_NAME} in the output folder changed since the batch run wrote it (edited in a spreadsheet?)"
    return None


#: Hidden beside the summary: the SHA-256 of the summary as the batch wrote it, and of the one before (written first,
#: so that a run killed between the two writes leaves a summary it names). An older version's summary has none: taken
#: by its columns, as before.
SUMMARY_HASHES = f".{SUMMARY_NAME}.sha256"


def _recordedSummaryHashes(outputDir):
    """The hashes :data:`SUMMARY_HASHES` records, or None when there is no such file (an older version's summary)."""
    try:
        return set((Path(outputDir) / SUMMARY_HASHES).read_text(encoding="ascii").split())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return set()  # unreadable: nothing proves the summary the batch's


def _sha256(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def writeSummary(outputDir, rows):
    """Write :data:`SUMMARY_NAME` (one row per input, in input order) under a temporary name, then rename it: a run
    stopped while writing leaves the summary before, never a half table. Its hash goes into :data:`SUMMARY_HASHES`
    first (see :func:`summaryProblem`)."""
    import hashlib

    from CMBSegmentationLib.atomicFiles import atomicPath, writeTextAtomic

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")  # bytes: what is hashed is what lands on disk, also on Windows
    path = Path(outputDir) / SUMMARY_NAME
    try:
        before = [_sha256(path)] if path.is_file() else []
    except OSError:
        before = []
    writeTextAtomic(Path(outputDir) / SUMMARY_HASHES, "\n".join([*before, hashlib.sha256(data).hexdigest()]) + "\n")
    with atomicPath(path) as temporary:
        temporary.write_bytes(data)
