"""Detect microbleeds in every volume of a folder, without the user interface.

Run with Slicer's Python, e.g.::

    Slicer --no-main-window --python-script batchProcess.py --input-dir IN --output-dir OUT [--model BUNDLE]
        [--device auto|cpu|gpu] [--threshold P] [--modality auto|T2*|SWI] [--mask-suffix _brainmask]

On a Linux server without a display, prefix the command with ``xvfb-run --auto-servernum`` (Slicer needs an X
server even without its main window).

Writes per input ``NAME_cmb-final.nii.gz``, ``NAME_cmb-final.seg.nrrd``, ``NAME_cmb-report.csv`` and
``NAME_cmb-report.json`` into OUT (no review: every candidate the model keeps is reported), replacing those of an
earlier run, and ``cmb-batch-summary.csv`` (one row per input: status and reason, counts, files, model, thresholds;
written atomically at the start, as each input starts, "running", and after it; then a row "left out", with why, per
file of IN that is no input; never replacing one edited since); an input that fails leaves none (its earlier ones are
removed). Files there that no batch run wrote, or changed since (no readable batch report beside them, or not as its
``file_sha256`` says), are never removed: that input fails and the others go on. Exit code 0 when every input succeeded,
1 when any failed (each failure is printed and the next input is processed), 2 for bad arguments (a ``--threshold``
outside [0, 1], a ``--model`` that is no bundle folder or ``.zip`` or whose checksums fail, a ``--device gpu`` without a
usable GPU: refused before any earlier result is removed), missing dependencies, inputs whose outputs would have the
same names (``a.nii`` beside ``a.nii.gz``, ``scan`` beside ``Scan``: one name on macOS and Windows) or an output folder
holding a reader's reviewed export (the module's Export) of an input's name, which is never replaced, or the result of
another scan of an input's name (a run of another folder into the same output folder), 130 when interrupted (Ctrl+C or
SIGTERM: the engine is stopped, the input being processed leaves no files; the hidden temporary files a run killed
outright leaves, tagged with its host and process id, the next run removes and names). Results in the input folder
(``NAME_cmb-final.*``, ``plkd predict``'s ``NAME_cmb.nii.gz``) are not inputs, so OUT may be IN; nor are label maps,
masks, phase images and other contrasts (``plkd predict``'s folder walk rule: ``NAME_CMB``, ``NAME-label.nrrd``,
``_T1w``, a sidecar naming a T1), and volumes in formats it does not read (``.mgz``, ``.nhdr``, ...: named in a
warning). A NIfTI pair (``NAME.hdr`` + ``NAME.img``, or ``.hdr.gz`` + ``.img.gz``, which Slicer's reader loads) is one
input, named by its ``.hdr``; an Analyze 7.5 pair (no NIfTI magic: no left-right in its header) is named in that
warning, as ``plkd predict`` refuses it. Suffixes count in any case (``SCAN.NII.GZ``). A brain mask
``NAME<mask-suffix>`` may be in any of the input formats; an input without one is run with a warning. The dependencies
must have been installed once from the module (first Apply).
"""

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import time
import traceback
import zipfile
from pathlib import Path, PurePosixPath

# The module folder (two levels up) holds CMBSegmentation.py and CMBSegmentationLib.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from CMBSegmentationLib import batchInputs, batchOutputs  # noqa: E402


def refuse(message):
    """Print ``batchProcess: error: message`` on stderr (one line, as plkd's refusals) and give exit status 2."""
    print(f"batchProcess: error: {message}", file=sys.stderr)
    return 2


def parseArguments(argv):
    parser = argparse.ArgumentParser(prog="batchProcess.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-dir", required=True, type=Path, help="folder of input volumes")
    parser.add_argument("--output-dir", required=True, type=Path, help="folder for label maps and reports")
    parser.add_argument("--model", default="", help="model bundle folder or .zip (default: shipped model)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"], help="default: auto")
    parser.add_argument(
        "--threshold",
        type=probability,
        default=None,
        help="minimum candidate probability (default: the threshold tuned for each segmenter in the model bundle)",
    )
    parser.add_argument(
        "--modality",
        default="auto",
        choices=["auto", "T2*", "T2S", "SWI"],
        help="contrast of the inputs; chooses the shipped T2* or SWI model. auto (default): per volume, from its "
        "JSON sidecar (with what a BIDS data set states for it higher up), its header or its name, else T2*",
    )
    parser.add_argument(
        "--mask-suffix", default="", help="brain masks are NAME<suffix>.nii.gz beside the inputs (optional)"
    )
    args = parser.parse_args(argv)
    # Checked before any work: refused for each input in turn, a mistyped --model or --threshold removed every
    # earlier result of the output folder (an input that fails loses its earlier outputs) and reported N failures.
    problem = modelProblem(args.model)
    if problem:
        parser.error(f"--model {args.model}: {problem}")
    return args


def probability(text):
    """A ``--threshold`` value: a number within [0, 1] (0: the model's own thresholds), else an argparse error."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also NaN
        raise argparse.ArgumentTypeError(f"must be a number within [0, 1], got {text!r}")
    return value


def modelProblem(model):
    """Why ``--model`` cannot be a model bundle (missing, neither a folder nor a ``.zip``, no ``manifest.json``), or
    None (also when no model is given: the shipped ones are used)."""
    if not str(model or "").strip():
        return None
    path = Path(model)  # as the engine gets it
    try:
        if not path.exists():
            return "no such file or folder"
        if path.is_dir():
            manifests = [path / "manifest.json", *(p / "manifest.json" for p in path.iterdir() if p.is_dir())]
            return None if any(m.is_file() for m in manifests) else "a folder without a bundle's manifest.json"
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
            found = any(PurePosixPath(n).name == "manifest.json" for n in names)
            return None if found else "a .zip without manifest.json"
    except (OSError, zipfile.BadZipFile) as exc:
        return f"cannot be read ({exc})"
    return "neither a bundle folder nor a bundle .zip"


#: Run by the engine's Python before any work: the device asked for and the model bundle, by the engine's own rules
#: (``plkd.inference.device.resolve_device``, ``plkd.bundle.load_bundle``: manifest schema and every checksum).
PREFLIGHT = """
import sys
from plkd.errors import PLKDError
device, model = sys.argv[1], sys.argv[2]
try:
    if device != "auto":
        from plkd.inference.device import resolve_device
        resolve_device(device)
    if model:
        from plkd.bundle import load_bundle
        load_bundle(model)
except PLKDError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
"""


def enginePreflight(args, run=None):
    """Why the engine would refuse every input of this run (``--device gpu`` without a usable GPU, a ``--model`` whose
    manifest or checksums are wrong), in the engine's own words, or None.

    Refused by the engine for each input in turn, such a run removed every input's earlier results and reported N
    failures. ``run``: ``subprocess.run`` (replaceable in tests).
    """
    import shutil
    import subprocess

    from CMBSegmentationLib import commandBuilder

    device = commandBuilder.engineDevice({"auto": "Auto", "cpu": "CPU", "gpu": "GPU"}[args.device])
    if device in ("auto", "cpu") and not str(args.model or "").strip():
        return None
    python = shutil.which("PythonSlicer") or sys.executable  # as CMBSegmentationLogic.pythonExecutable
    done = (run or subprocess.run)(
        [python, "-c", PREFLIGHT, device, str(args.model or "").strip()], capture_output=True, text=True, check=False
    )
    if done.returncode == 0:
        return None
    lines = [line for line in (done.stderr or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"the engine could not be started (exit status {done.returncode})"


def moduleModality(choice):
    """The module's modality ("Auto", "T2*", "SWI") for a ``--modality`` value."""
    return {"auto": "Auto", "T2S": "T2*"}.get(choice, choice)


def loadInputs(path, maskSuffix, loadVolume):
    """Load the scan ``path`` and its brain mask (``NAME<maskSuffix>``, or None) with ``loadVolume``
    (``slicer.util.loadVolume``); return (volume node, mask node or None).

    Each node is named after its whole file name: Slicer's reader names it up to the first dot
    (``QFileInfo::baseName``), so the reports of "sub-01.ses-1.nii.gz" and "sub-01.ses-2.nii.gz" both said
    ``"input": "sub-01"``.
    """
    frames = batchInputs.niftiFrames(path)
    if frames > 1:
        raise ValueError(
            f"a 4-D image of {frames} volumes (multi-echo GRE, or a time series), which Slicer loads only as a "
            "sequence: give it to plkd predict, which combines the echoes of a multi-echo GRE (--echo rss, last or N), "
            "or save the echo to analyse as a 3-D file"
        )
    volume = loadVolume(str(path), {"name": batchInputs.stripSuffix(path.name)})
    mask = None
    maskPath = batchInputs.findMask(path, maskSuffix)
    if maskPath is not None:
        # As a scalar volume: a probability map reaches the engine with its values (cut at half its maximum
        # there); loaded as a label map it would be passed as everything above 0.
        mask = loadVolume(str(maskPath), {"name": batchInputs.stripSuffix(maskPath.name), "labelmap": False})
    elif maskSuffix:
        print(
            f"{path.name}: warning: no brain mask {batchInputs.stripSuffix(path.name)}{maskSuffix} beside it; "
            "the engine finds the brain itself",
            file=sys.stderr,
        )
    return volume, mask


def processOne(path, args):
    import slicer

    from CMBSegmentation import CMBSegmentationLogic
    from CMBSegmentationLib import reportExport, resultImport

    slicer.mrmlScene.Clear()
    volume, mask = loadInputs(path, args.mask_suffix, slicer.util.loadVolume)
    table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", f"{volume.GetName()} microbleed candidates")
    segmentation = CMBSegmentationLogic().process(
        volume,
        brainMask=mask,
        modality=moduleModality(args.modality),
        modelPath=args.model,
        device={"auto": "Auto", "cpu": "CPU", "gpu": "GPU"}[args.device],
        threshold=args.threshold,
        candidateTable=table,
        waitForCompletion=True,
    )
    files = reportExport.exportReview(
        segmentation,
        table,
        volume,
        args.output_dir,
        batchInputs.outputBaseName(path),
        # The table's threshold: the one the engine applied (--threshold, or each segmenter's own for none or 0);
        # args.threshold put 0 in the report for "the model's", which kept only candidates from 0.1-0.4.
        None,
        overwrite=True,  # a batch run redoes every input: its files replace those of an earlier run
        exportedBy=reportExport.EXPORTED_BY_BATCH,  # no reader's: the next batch run may replace it
    )
    # Which model read this file, and why (each file of a mixed folder gets its own): as in its report.
    modelChoice = resultImport.modelChoiceOf(table)
    choice = resultImport.describeModelChoice(modelChoice)
    print(f"{path.name}: {files.count} microbleed(s) -> {files.reportJson}" + (f"; {choice}" if choice else ""))
    for note in files.notes:  # in the report too; a batch user reads the log (a volume placed other than its file)
        print(f"{path.name}: warning: {note}", file=sys.stderr)
    decision = modelChoice.get("modality") if isinstance(modelChoice.get("modality"), dict) else {}
    engineRun = resultImport.engineRunOf(table)
    thresholds = engineRun.get("thresholds") or {}
    return {
        "n_microbleeds": files.count,
        "n_candidates": engineRun.get("n_candidates"),
        "label_map": files.labelMap.name,
        "segmentation": files.segmentation.name,
        "report_csv": files.reportCsv.name,
        "report_json": files.reportJson.name,
        "model": modelChoice.get("model"),
        "modality": decision.get("modality"),
        "model_modality": decision.get("model_modality") or decision.get("modality"),
        "screening_threshold": thresholds.get("screening"),
        "segmentation_threshold": thresholds.get("segmentation"),
        # What the engine noted of the run (a phase image or a model of the other contrast analysed, the candidate
        # count capped, an unverified bundle) and what the export noted: in the report, but a table over the study
        # showed those results as plain "ok".
        "warnings": " | ".join(" ".join(str(n).split()) for n in [*resultImport.engineNotesOf(table), *files.notes]),
    }


def main(argv):
    try:
        args = parseArguments(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    from CMBSegmentationLib import dependencies

    missing = dependencies.missingPackages()
    if missing:
        return refuse(
            f"{', '.join(missing)} not installed in Slicer's Python; open the CMB Segmentation "
            "module and click Apply once to install them"
        )
    # Its temporary files carry the run's host and process id: those a run killed while writing leaves (kill -9, out
    # of memory) are told from anyone else's by the next run, which removes them (batchOutputs.removeKilledPartials).
    from CMBSegmentationLib import atomicFiles

    with atomicFiles.temporaryTag(batchOutputs.partialTag(os.getpid())):
        return run(args)


def run(args):
    """:func:`main` once the arguments are read and the dependencies are there; its exit code."""
    if not args.input_dir.is_dir():
        return refuse(f"input folder not found: {args.input_dir}")
    skipped, notScans = [], []
    inputs = batchInputs.findInputs(args.input_dir, args.mask_suffix, skipped, notScans, args.output_dir)
    if skipped:
        names = ", ".join(p.name for p in skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        print(
            f"batchProcess: warning: {len(skipped)} result file(s) in the input folder left out: {names}",
            file=sys.stderr,
        )
    if notScans:
        names = ", ".join(f"{p.name} ({why})" for p, why in notScans[:3])
        more = f" and {len(notScans) - 3} more" if len(notScans) > 3 else ""
        print(
            f"batchProcess: warning: {len(notScans)} file(s) in the input folder are not T2*/SWI scans, left out: "
            f"{names}{more}",
            file=sys.stderr,
        )
    if not inputs:
        return refuse(f"no volumes in {args.input_dir}")
    args.same_scans = batchInputs.sameScans(inputs)
    groups = {tuple(sorted([path, *others])) for path, others in args.same_scans.items()}
    if groups:
        names = "; ".join(" = ".join(p.name for p in group) for group in sorted(groups))
        print(
            f"batchProcess: warning: {len(groups)} scan(s) are in the input folder under several names (identical file "
            f"content): {names}; each name is processed, so a total over the summary counts them more than once "
            "(each row's warnings say so)",
            file=sys.stderr,
        )
    collisions = batchInputs.nameCollisions(inputs)
    if collisions:
        names = "; ".join(" and ".join(p.name for p in group) for group in collisions)
        return refuse(f"these inputs would write the same output files: {names}; rename them")
    # A reader's export of the same name (the module's Export into this folder) holds decisions the batch would
    # replace with an unreviewed result, without a word: refused before any work, as colliding names are.
    reviewed = [
        (path, why)
        for path in inputs
        if (why := batchOutputs.readerExport(args.output_dir, batchInputs.outputBaseName(path)))
    ]
    if reviewed:
        names = "; ".join(f"{batchInputs.outputBaseName(p)}_cmb-report.json ({why})" for p, why in reviewed)
        return refuse(
            f"the output folder holds reviewed results a run would replace: {names}; "
            "give another --output-dir (or move them)"
        )
    problem = enginePreflight(args)
    if problem:
        return refuse(f"{problem}; nothing was run")
    others = [(path, other) for path in inputs if (other := batchOutputs.otherScanResult(args.output_dir, path))]
    if others:
        names = "; ".join(
            f"{batchInputs.outputBaseName(p)}_cmb-report.json is of {other}, not of {p}" for p, other in others
        )
        return refuse(
            f"the output folder holds results of other scans of the same names: {names}; "
            "give each input folder its own --output-dir (or rename the scans)"
        )
    problem = batchOutputs.summaryProblem(args.output_dir)
    if problem:
        return refuse(f"{problem}; give another --output-dir (or move it)")
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name (a typo), or below one; no permission: it ended with a traceback
        return refuse(f"cannot make the output folder {args.output_dir} ({exc.strerror or exc}); nothing was run")
    # The summary stands from the start, each input "not run" until it is done: a run killed half way (kill -9, a
    # power cut) leaves one that says which inputs it never reached, never the rows of an earlier run.
    rows = [batchOutputs.summaryRow(path, args) for path in inputs]
    # After the inputs (so that rows[i] stays inputs[i]), each file left out, with why: the warning line names three.
    rows += [batchOutputs.leftOutRow(path, why) for path, why in sorted(notScans, key=lambda item: item[0].name)]
    try:
        batchOutputs.writeSummary(args.output_dir, rows)
    except OSError as exc:
        return refuse(f"cannot write {args.output_dir / batchOutputs.SUMMARY_NAME} ({exc}); nothing was run")
    # Once the folder is known to be writable (the summary is there).
    removed, kept, stuck = batchOutputs.removeKilledPartials(args.output_dir)
    if removed:
        print(
            f"batchProcess: warning: removed {len(removed)} temporary file(s) that a batch run killed while writing "
            f"left in the output folder: {', '.join(removed)}",
            file=sys.stderr,
        )
    if kept:
        print(
            f"batchProcess: warning: {len(kept)} hidden temporary file(s) in the output folder are not provably a "
            f"batch run's, left as they are: {', '.join(kept)} (the module's Export or an older version killed while "
            "writing, or a run still writing into this folder)",
            file=sys.stderr,
        )
    if stuck:
        print(
            f"batchProcess: warning: {len(stuck)} temporary file(s) that a batch run killed while writing left in the "
            f"output folder could not be removed: {', '.join(stuck)}",
            file=sys.stderr,
        )
    failures = 0
    done, cleared, started = 0, False, time.monotonic()
    with terminateAsInterrupt():
        try:
            for done, path in enumerate(inputs):
                started, cleared, removed = time.monotonic(), False, []
                baseName = batchInputs.outputBaseName(path)
                # Files at this input's output names that no batch run wrote (a user's own file of that name, a
                # report cut short or edited since): never removed nor replaced; the input fails, the others go on.
                foreign = batchOutputs.foreignOutputs(args.output_dir, baseName)
                if foreign:
                    failures += 1
                    reason = (
                        f"{foreign}; they are not this run's results and are left as they are, this input was not "
                        "processed: move them or give another --output-dir"
                    )
                    print(f"{path.name}: FAILED: {reason}", file=sys.stderr)
                    rows[done] = batchOutputs.summaryRow(path, args, batchOutputs.STATUS_FAILED, reason)
                    updateSummary(args.output_dir, rows)
                    continue
                # Said before any work on it: a run that dies during this input leaves a summary naming it.
                rows[done] = batchOutputs.summaryRow(path, args, batchOutputs.STATUS_RUNNING, batchOutputs.UNDER_WAY)
                updateSummary(args.output_dir, rows)
                try:
                    # An earlier run's outputs go first: an input that fails now must not leave them to pass for this
                    # run's. Inside the try: one that cannot be removed (read-only, a folder of that name) is this
                    # input's failure; it ended the whole batch (exit 1, no summary, the inputs after it never run).
                    cleared = True
                    removed = batchOutputs.removeOutputs(args.output_dir, baseName)
                    result = processOne(path, args)
                    rows[done] = batchOutputs.summaryRow(
                        path, args, batchOutputs.STATUS_OK, "", result, time.monotonic() - started
                    )
                except Exception as exc:
                    failures += 1
                    # An export that failed half way (disk full) wrote some of the four files: none may stay.
                    stuck = batchOutputs.removeLeftovers(args.output_dir, baseName)
                    earlier = f" (its outputs of an earlier run were removed: {', '.join(removed)})" if removed else ""
                    print(f"{path.name}: FAILED: {exc}{earlier}{stuck}", file=sys.stderr)
                    traceback.print_exc()
                    reason = f"{exc}{earlier}{stuck}"
                    rows[done] = batchOutputs.summaryRow(
                        path, args, batchOutputs.STATUS_FAILED, reason, seconds=time.monotonic() - started
                    )
                cleared = False
                updateSummary(args.output_dir, rows)
        except KeyboardInterrupt:
            # Ctrl+C or SIGTERM (a scheduler's time limit), also between two inputs: the engine is stopped
            # (inferenceJob.runBlocking), and files of the input under way written before the interruption go, so
            # none stands without its report (only once its earlier outputs were cleared: before, they are kept).
            path = inputs[done]
            if cleared:
                batchOutputs.removeLeftovers(args.output_dir, batchInputs.outputBaseName(path))
            if rows[done]["status"] in (batchOutputs.STATUS_NOT_RUN, batchOutputs.STATUS_RUNNING):
                reason = "interrupted (Ctrl+C or SIGTERM) while it was processed; none of its files were kept"
                if not cleared:
                    reason = (
                        "interrupted (Ctrl+C or SIGTERM) before it was processed; "
                        + batchOutputs.NOT_REACHED.split("); ")[1]
                    )
                rows[done] = batchOutputs.summaryRow(
                    path, args, batchOutputs.STATUS_FAILED, reason, seconds=time.monotonic() - started
                )
            finished = sum(row["status"] == batchOutputs.STATUS_OK for row in rows)
            print(
                f"batchProcess: interrupted during {path.name}; {finished} of {len(inputs)} input(s) processed, "
                "those after it were not",
                file=sys.stderr,
            )
            updateSummary(args.output_dir, rows)
            return 130
    strays = batchOutputs.otherResults(args.output_dir, inputs)
    if strays:
        names = ", ".join(p.name for p in strays[:3]) + (f" and {len(strays) - 3} more" if len(strays) > 3 else "")
        print(
            f"batchProcess: warning: the output folder also holds the results of {len(strays)} scan(s) not among this "
            f"run's inputs: {names} (an earlier run's; not in the summary)",
            file=sys.stderr,
        )
    summary = args.output_dir / batchOutputs.SUMMARY_NAME
    print(f"{len(inputs) - failures} of {len(inputs)} input(s) processed; summary: {summary}")
    return 1 if failures else 0


def updateSummary(outputDir, rows):
    """:func:`batchOutputs.writeSummary` during the run: a failure to write it (disk full) is said on stderr, and the
    run goes on (the summary on disk then still shows the inputs not yet done as "not run")."""
    try:
        batchOutputs.writeSummary(outputDir, rows)
    except OSError as exc:
        print(
            f"batchProcess: warning: could not update {Path(outputDir) / batchOutputs.SUMMARY_NAME} ({exc})",
            file=sys.stderr,
        )


@contextlib.contextmanager
def terminateAsInterrupt():
    """Ctrl+C (SIGINT) and SIGTERM (``kill``, a batch scheduler's time limit) raise KeyboardInterrupt in the batch.

    Slicer sets SIGINT to the system default (qSlicerAbstractModuleFactoryManager), so either signal killed Slicer at
    once and the engine, which runs in a process group of its own, went on computing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def exitApplication(exitCode):
    """End Slicer (or a plain Python) with ``exitCode``.

    With ``--no-main-window --python-script`` Slicer keeps running after the script unless told to exit, so this
    must be reached whatever happened before. ``slicer.util.exit`` also stops ``--testing`` from replacing the code.
    """
    try:
        import slicer

        exitSlicer = slicer.util.exit if getattr(slicer, "app", None) is not None else None
    except (ImportError, AttributeError):
        exitSlicer = None
    if exitSlicer is None:
        sys.exit(exitCode)
    exitSlicer(exitCode)


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except BaseException:  # an unforeseen error must still end Slicer, with a failure code
        traceback.print_exc()
        code = 1
    exitApplication(code)
