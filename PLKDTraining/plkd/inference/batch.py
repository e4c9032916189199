"""Many inputs: finding the scans, sharding, reusing finished work, per-scan errors, the summary.

One scan failing with a user error (unreadable, wrong dimensions, bad mask, ...) is reported in
one line and the others continue; the caller turns the failures into a non-zero exit status.
Which inputs are taken and how outputs are named: :mod:`plkd.inference.inputs`; when earlier
outputs are reused: :func:`plkd.inference.outputs.reuse_problem`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from plkd import __version__
from plkd.dicom import load_dicom_series
from plkd.errors import InputError, OutputError, PLKDError
from plkd.inference.device import usable_device
from plkd.inference.input_kinds import sequence_doubt, sidecar_tags
from plkd.inference.inputs import (
    ScanInput,
    caveat_warning,
    expand_inputs,
    orientation_warnings,
    separate_echo_notes,
    with_metadata_from,
)
from plkd.inference.modality import phase_reason, projection_reason
from plkd.inference.model_choice import DISPLAY, ModelChooser, modality_record, model_line
from plkd.inference.outputs import (
    NO_OUTPUTS,
    OutputPaths,
    files_sha256,
    foreign_file,
    output_paths,
    read_record,
    remove_outputs,
    rename_outputs,
    result_record,
    reuse_problem,
    write_prediction,
)
from plkd.inference.predictor import Predictor
from plkd.inference.stems import folder_names, settle_stems
from plkd.inference.summary import summary_row, withdraw_rows, write_summary_csv
from plkd.location.summary import describe as describe_location
from plkd.naming import pair_files
from plkd.progress import Progress
from plkd.provenance import code_fingerprint
from plkd.volumes import EchoChoice, Volume, load_label, load_volume, refuse_label_map

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What :func:`predict_files` did: written, skipped (reused) and failed scans, the summary."""

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    #: Inputs among ``failed`` that hit an unexpected error (a bug), not a user mistake.
    internal: list[Path] = field(default_factory=list)
    #: Files a folder walk left out, with the reason (labels, masks, predictions, ...).
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    #: One row per scan (:func:`plkd.inference.summary.summary_row`), in processing order.
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: The summary CSV written, if any.
    summary_csv: Path | None = None

    @property
    def ok(self) -> bool:
        """True when no input failed."""
        return not self.failed


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0 ≤ i < n) → ``(i, n)``; which scans shard i processes: :func:`shard_of`."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise PLKDError(f"--shard must look like i/n with 0 <= i < n (e.g. 0/4), not {text!r}")
    return int(m.group(1)), int(m.group(2))


def shard_of(key: str, n: int) -> int:
    """The shard (0 ≤ shard < ``n``) of the scan whose :attr:`~plkd.inference.inputs.ScanInput.key` is ``key``:
    the first 8 bytes of the sha256 of its UTF-8 text, as an unsigned big-endian integer, modulo ``n``.

    A scan's shard depends on its own name alone: the shards of a job array launched while files arrive in (or
    leave) the study each take the same scans of those they share. Numbering the sorted list (the shard of the
    k-th scan was ``k % n``) moved every later scan when one arrived between two launches, so a scan was analysed
    by two shards or by none.
    """
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n


def select_shard(scans: list[ScanInput], shard: tuple[int, int] | None) -> list[ScanInput]:
    """The scans of shard ``i`` of ``n`` (:func:`shard_of` of each scan's key), in the order given."""
    if shard is None:
        return scans
    i, n = shard
    return [scan for scan in scans if shard_of(scan.key or str(scan.path), n) == i]


def parse_ras(text: str | None) -> tuple[float, float, float] | None:
    """``"X,Y,Z"`` (RAS mm) → a float triple."""
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):  # inf ran on, with numpy's warning on stderr
        raise PLKDError(f"--at-ras must be three numbers X,Y,Z in RAS mm, not {text!r}")
    return vals  # type: ignore[return-value]


def summary_name(shard: tuple[int, int] | None) -> str:
    """``plkd_summary.csv``, or ``plkd_summary_shard-I-of-N.csv`` so parallel shards never clash."""
    return "plkd_summary.csv" if shard is None else f"plkd_summary_shard-{shard[0]}-of-{shard[1]}.csv"


def predict_files(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    *,
    model: Any = None,
    device: str = "auto",
    mask: str | Path | None = None,
    progress: str | Progress = "tqdm",
    threshold: float | None = None,
    student: str | None = None,
    lr_factor: float | None = None,
    echo: EchoChoice = "rss",
    shard: str | tuple[int, int] | None = None,
    overwrite: bool = False,
    save_probability: bool = False,
    save_model_grid: bool = False,
    at_ras: tuple[float, float, float] | None = None,
    batch_size: int = 16,
    err: Any = None,
    existing: str | Path | None = None,
    modality: str = "auto",
    metadata_from: str | Path | None = None,
) -> BatchReport:
    """Predict every scan and write ``STEM_cmb.nii.gz`` + ``STEM_cmb.json`` in ``output_dir``,
    then the summary CSV (:func:`summary_name`, not for ``at_ras``).

    ``inputs`` are NIfTI files, DICOM series folders, folders walked for both, or glob patterns
    (:func:`plkd.inference.inputs.expand_inputs`). ``model`` is a bundle path, a loaded bundle or
    ``None`` for the installed one of each scan's ``modality`` (``auto``, ``T2S`` or ``SWI``; see
    :mod:`plkd.inference.model_choice`). A scan whose outputs were made from the same input bytes
    with the same settings is reused unless ``overwrite``; otherwise the reason for recomputing is
    printed. ``at_ras`` segments only the microbleed at that point (always recomputed; ``existing``:
    an earlier prediction of the input, see :func:`plkd.inference.click.load_existing`). ``metadata_from``: an
    image whose metadata are read as those of the one input (:func:`plkd.inference.inputs.with_metadata_from`). Skips,
    recomputations and failures are printed to ``err`` (stderr), one line each, in every
    progress mode. Raises :class:`InputError` when nothing is found or two inputs cannot be given
    distinct output names (before any work).
    """
    err = err or sys.stderr
    prog = progress if isinstance(progress, Progress) else Progress(progress)  # type: ignore[arg-type]
    # A GPU this machine lacks (--device cuda on a laptop): the CPU, said once here and in every scan's notes.
    run_device, device_note = usable_device(device)
    if device_note is not None:
        log.warning(device_note)

    def make_predictor(bundle: Any) -> Predictor:
        predictor = Predictor(bundle, device=run_device, batch_size=batch_size, threshold=threshold, progress=prog)
        if device_note is not None:
            predictor.state.warnings.append(device_note)
        return predictor

    models = ModelChooser(model, modality, make_predictor)
    shard_t = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    found = expand_inputs(inputs, output_dir)
    if not found.scans:
        raise InputError(
            "no input scans found (give NIfTI files, DICOM series folders, folders or glob patterns)"
            + "".join(f"; {item}: {why}" for item, why in found.empty)
            + (f"; {line}" if (line := found.ignored_summary()) and not found.empty else "")
        )
    if metadata_from is not None:
        found.scans = [with_metadata_from(found.scans, metadata_from)]
    _report_ignored(found.ignored_summary(), found.skipped, err)
    # Named with the folder's earlier outputs in view, so a rerun of part of the inputs writes each scan under
    # the name its result already has (not a second result beside it) and never over another scan's result.
    settled = settle_stems(found.scans, output_dir)
    for line in settled.lines:
        print(f"plkd predict: {line}", file=err)
    echo_notes = separate_echo_notes(settled.scans)
    notes = {scan.stem: [echo_notes[scan.path]] for scan in settled.scans if scan.path in echo_notes}
    scans = select_shard(settled.scans, shard_t)
    mine = {id(scan) for scan in scans}
    for scan, old in settled.renames:
        new = output_paths(scan.path, output_dir, scan.stem)
        if id(scan) in mine and foreign_file(new) is None:  # each shard renames its own scans' outputs
            moved = rename_outputs(output_paths(scan.path, output_dir, old), new)
            if moved:
                print(
                    f"plkd predict: renamed {old}_cmb.* to {scan.stem}_cmb.* (the run holds another scan named {old})",
                    file=err,
                )
    if not scans and shard_t is not None:
        # Not an error: a job array sized for more scans than the run now holds. Its summary is still (re)written,
        # empty: left from a run with more scans, it listed scans that other shards now hold, with old results.
        print(f"plkd predict: shard {shard_t[0]}/{shard_t[1]} holds none of the {len(settled.scans)} scans", file=err)
    if mask is not None and len(scans) > 1:
        raise PLKDError("--mask can only be used with a single input")
    if at_ras is not None and len(scans) > 1:
        # A point is a place in one scan's world: in the others it falls wherever, and each would get a "click".
        raise PLKDError(f"--at-ras is a point in one scan; the inputs hold {len(scans)} scans: give one")
    if at_ras is not None and scans:
        _refuse_replacing_a_scan_result(output_paths(scans[0].path, output_dir, scans[0].stem))
    opt = _Options(
        models=models,
        mask=mask,
        echo=echo,
        student=student,
        lr_factor=lr_factor,
        at_ras=at_ras,
        existing=existing,
        save_probability=save_probability,
        save_model_grid=save_model_grid,
        scan_notes=notes,
        settings={
            **models.settings(),
            **_settings(threshold, student, lr_factor, echo, mask),
            # A single-click result is not a whole-scan prediction: a later full run must not reuse it.
            "at_ras": list(at_ras) if at_ras is not None else None,
        },
    )
    report = BatchReport(ignored=list(found.skipped))
    if shard_t is None or shard_t[0] == 0:  # one shard says it, so the shards' summaries hold it once
        for item, why in found.empty:
            # A folder or pattern that gave nothing (a typo, a folder of other formats): a failure, or the run
            # would end "all done" with those scans missing from its results and its summary.
            _failed(report, Path(item), "", why, None, err, prog)
    summary = None if at_ras is not None else Path(output_dir) / summary_name(shard_t)
    if summary is not None and summary.parent.is_dir():
        # "": the rows of inputs that gave no scan, which every run reports anew (a pattern fixed since gives none).
        stems = {scan.stem for scan in scans} | {""}
        for path in withdraw_rows(summary.parent, summary, stems, None if shard_t is None else shard_t[1]):
            _say(prog, err, f"{path.name}: rows of this run's scans removed (an earlier run's, now {summary.name})")
    durations: list[float] = []
    by_bytes: dict[str, ScanInput] = {}  # the first scan of the run with each input sha256
    for index, scan in enumerate(scans, start=1):
        if summary is not None:
            # Rewritten before every scan (the first time: no rows), so a killed run leaves a summary of the
            # scans it finished, never the rows of an earlier run that its own outputs now contradict.
            write_summary_csv(summary, report.rows)
        prog.context = {"scan": index, "scans": len(scans)}
        _announce(prog, index, len(scans), scan, durations)
        out = output_paths(scan.path, output_dir, scan.stem)
        t0 = time.perf_counter()
        try:
            _refuse_foreign(out)
            files = list(scan.series.files) if scan.series else pair_files(scan.path)
            sha = files_sha256(files) if all(f.exists() for f in files) else None  # else refused when it is read
            if sha is not None and (first := by_bytes.setdefault(sha, scan)) is not scan:
                opt.scan_notes.setdefault(scan.stem, []).append(_same_bytes(scan, first))
            if sha is not None and at_ras is None:
                extras = [out.probability] if save_probability else []
                problem = _outputs_problem(scan, out, opt, sha, extras + ([out.model_grid] if save_model_grid else []))
                if problem is None and not overwrite:
                    report.skipped.append(scan.path)
                    report.rows.append(summary_row(scan.stem, str(scan.path), "skipped", read_record(out.json), None))
                    _say(
                        prog,
                        err,
                        f"skipped {scan.stem}: finished earlier with the same input and settings "
                        "(--overwrite recomputes)",
                        input=str(scan.path),
                    )
                    continue
                if problem not in (None, NO_OUTPUTS):
                    # Removed first (with --overwrite too): a run interrupted while recomputing must not leave
                    # the old result of another input or other settings to be read as this run's.
                    removed = remove_outputs(out)
                    gone = f" (removed {', '.join(p.name for p in removed)} first)" if removed else ""
                    _say(prog, err, f"recomputing {scan.stem}: {problem}{gone}", input=str(scan.path))
            record = _predict_one(scan, out, sha, opt, prog)
            report.done.append(scan.path)
            durations.append(time.perf_counter() - t0)
            report.rows.append(summary_row(scan.stem, str(scan.path), "done", record, durations[-1]))
        except PLKDError as exc:
            _failed(report, scan.path, scan.stem, str(exc), time.perf_counter() - t0, err, prog)
            _discard_stale(scan, out, opt, prog, err)
        except Exception as exc:  # a bug or an unforeseen file: report it and go on with the others
            log.debug("unexpected error on %s", scan.path, exc_info=True)
            report.internal.append(scan.path)
            _failed(
                report,
                scan.path,
                scan.stem,
                f"unexpected {type(exc).__name__}: {exc} (run with -vv for details)",
                time.perf_counter() - t0,
                err,
                prog,
            )
            _discard_stale(scan, out, opt, prog, err)
    prog.context = {}
    if summary is not None:
        report.summary_csv = write_summary_csv(summary, report.rows)
        if shard_t is None and (others := len(set(folder_names(output_dir)) - {s.stem for s in settled.scans})):
            # A rerun of a few scans (the failed ones, fixed) writes a summary of those alone: a study's table
            # read from it would lose every other scan whose results lie in the folder.
            _say(
                prog,
                err,
                f"{summary.name} lists the {len(scans)} scan(s) of this run; {output_dir} also holds the results of "
                f"{others} other scan(s) (a run over all the inputs reuses them and lists every scan)",
            )
    return report


def _refuse_replacing_a_scan_result(out: OutputPaths) -> None:
    """Refuse a click (``--at-ras``) whose outputs would replace a whole-scan prediction in the folder.

    A click writes ``NAME_cmb.nii.gz`` + ``.json`` like a whole-scan run: into the folder of that run it replaced
    every microbleed found with the one clicked (often the ``--existing`` file itself), without a word, and the
    folder's summary and ``plkd evaluate`` then disagreed with it. An earlier click's result may be replaced.
    """
    if not out.json.exists() and not out.label.exists():
        return
    settings = (read_record(out.json) or {}).get("settings")
    if isinstance(settings, dict) and settings.get("at_ras") is not None:
        return
    raise OutputError(
        f"{out.label.parent} holds {out.label.name if out.label.exists() else out.json.name}, a prediction of the "
        "whole scan: the one microbleed of --at-ras would replace it; give the click another --output-dir"
    )


def _same_bytes(scan: ScanInput, first: ScanInput) -> str:
    """The warning for a scan whose bytes another input of the run has already (a copy kept in two places, the
    same file under two names): each gets a result, and a study's counts would hold the scan twice."""
    return (
        f"{scan.path.name} holds the same bytes as {first.display} ({first.stem}_cmb.*): the run gives two results "
        "of one scan; give only one of them"
    )


def _refuse_foreign(out: OutputPaths) -> None:
    """Fail the scan (before any work) when a file plkd did not write lies where its outputs go."""
    if (path := foreign_file(out)) is not None:
        why = "not a plkd record" if path == out.json else f"no {out.json.name} beside it"
        raise OutputError(
            f"{path} is not an output of plkd ({why}; a reference label?) and would be replaced by this scan's: "
            "move it or give another --output-dir (if a plkd run was killed while writing it, remove it)"
        )


def _failed(
    report: BatchReport, path: Path, stem: str, message: str, seconds: float | None, err: Any, prog: Progress
) -> None:
    """Record a failed scan (``stem`` ``""``: an input that gave no scan) and say so in one line."""
    prog.finish()  # clear the progress bar first: the error must start its own line
    report.failed.append((path, message))
    report.rows.append(summary_row(stem, str(path), "failed", None, seconds, error=message))
    print(f"plkd: error: {path.name if stem else path}: {message}", file=err)


def _outputs_problem(scan: ScanInput, out: OutputPaths, opt: _Options, sha: str, extras: list[Path]) -> str | None:
    """Why the outputs in the folder are not this scan's result with these settings, or None when they are."""
    return reuse_problem(out, opt.settings, sha, extras) or _contrast_changed(scan, out, opt.models)


def _contrast_changed(scan: ScanInput, out: OutputPaths, models: ModelChooser) -> str | None:
    """Why earlier outputs of a NIfTI scan no longer fit: its contrast is now decided otherwise (a JSON
    sidecar added or edited beside it picks another model, yet leaves the image's bytes unchanged).
    A DICOM series' tags are part of the bytes the input's sha256 covers."""
    if scan.series is not None:
        return None
    old = (read_record(out.json) or {}).get("modality")
    if not isinstance(old, dict):
        return None  # outputs of an older plkd record no decision
    new = models.decide(scan.described_by, scan.metadata_tags).as_dict()
    if all(old.get(k) == v for k, v in new.items()):
        return None
    now = f"{new['modality']} ({new['reason']}" + (f"; {new['conflict']}" if new["conflict"] else "") + ")"
    return f"the contrast is now decided as {now}, not {old.get('modality')}"


def _discard_stale(scan: ScanInput, out: OutputPaths, opt: _Options, prog: Progress, err: Any) -> None:
    """After a failure, remove outputs an earlier run left for this scan unless they were made from
    the same input bytes with the same settings: a folder that still held a result of the old input
    (or of other settings) would pass it off as this run's, e.g. to ``plkd evaluate``. (Outputs found
    stale before the work are removed then; this covers ``--overwrite`` and unreadable inputs.)"""
    if foreign_file(out) is not None:
        return  # not ours to remove (the failure says so)
    try:
        try:
            sha = files_sha256(list(scan.series.files) if scan.series else pair_files(scan.path))
        except OSError:
            sha = None  # the input cannot be read: nothing in the folder can be shown to match it
        # Only the input and the settings decide (a missing optional extra does not make a label map stale).
        problem = "the input cannot be read" if sha is None else _outputs_problem(scan, out, opt, sha, [])
        if problem is None or problem == NO_OUTPUTS:
            return
        removed = remove_outputs(out)
    except Exception:  # cleaning up after a failure must not stop the batch
        log.debug("could not check the earlier outputs of %s", scan.path, exc_info=True)
        return
    if removed:
        names = ", ".join(p.name for p in removed)
        _say(prog, err, f"removed {names} of an earlier run: {problem}", input=str(scan.path))


def _say(prog: Progress, err: Any, text: str, **extra: Any) -> None:
    """A line that must reach the user whatever the progress mode: stderr (+ a JSON line)."""
    if prog.mode == "jsonl":
        prog.message(text, **extra)
    if prog.mode == "tqdm":
        tqdm.write(f"plkd predict: {text}", file=err)
    else:
        print(f"plkd predict: {text}", file=err)


def _report_ignored(line: str | None, skipped: list[tuple[Path, str]], err: Any) -> None:
    if line:
        print(f"plkd predict: {line}", file=err)
    for path, reason in skipped:
        if reason == "phase image":  # the one skip a user may not expect: say which file and why
            log.warning("%s: not analysed: its name marks a phase image; give the magnitude image", path.name)
        else:
            log.debug("not analysed: %s (%s)", path, reason)  # -v shows plkd debug lines


def _announce(prog: Progress, index: int, total: int, scan: ScanInput, durations: list[float]) -> None:
    """ "scan 3 of 120: NAME (about 12 min left)": on stderr with tqdm, a JSON line with jsonl."""
    left = None
    if durations:
        left = sum(durations) / len(durations) * (total - index + 1)
    text = f"scan {index} of {total}: {scan.display}" + (f" (about {_duration(left)} left)" if left else "")
    if prog.mode == "jsonl":
        prog.message(text, stage="scan", input=str(scan.path), eta_s=None if left is None else round(left, 1))
    elif prog.mode == "tqdm" and total > 1:
        tqdm.write(text, file=sys.stderr)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class _Options:
    """Per-input settings shared by every input of a :func:`predict_files` call."""

    models: ModelChooser
    mask: str | Path | None
    echo: EchoChoice
    student: str | None
    lr_factor: float | None
    at_ras: tuple[float, float, float] | None
    existing: str | Path | None
    save_probability: bool
    save_model_grid: bool
    #: Warnings, by output stem, that concern the run's inputs rather than the image (one echo of several files,
    #: a copy of another input).
    scan_notes: dict[str, list[str]]
    #: What changes a result (recorded in each JSON; a rerun with other values recomputes).
    settings: dict[str, Any] = field(default_factory=dict)


def _settings(
    threshold: float | None,
    student: str | None,
    lr_factor: float | None,
    echo: EchoChoice,
    mask: str | Path | None,
) -> dict[str, Any]:
    return {
        "plkd_version": __version__,
        # The version stays the same across changes of the code: its files say which code made a result.
        "plkd_code": code_fingerprint(),
        "threshold": threshold,
        "student": student,
        "lr_factor": lr_factor,
        "echo": echo,
        "mask": str(mask) if mask is not None else None,
        "mask_sha256": files_sha256([Path(mask)]) if mask is not None and Path(mask).is_file() else None,
    }


class _WarningLog(logging.Handler):
    """Collects the warnings plkd logs while one scan is processed (for its JSON and the summary)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _load(scan: ScanInput, echo: EchoChoice) -> tuple[Volume, dict[str, Any] | None]:
    if scan.series is not None:
        volume, dicom = load_dicom_series(scan.series)
    else:
        volume, dicom = load_volume(scan.path, echo=echo, what="image"), None
    refuse_label_map(volume.data, f"image {scan.path.name}")
    return volume, dicom


def _predict_one(scan: ScanInput, out: OutputPaths, sha: str | None, opt: _Options, prog: Progress) -> dict[str, Any]:
    collector = _WarningLog()
    logging.getLogger("plkd").addHandler(collector)
    try:
        t0 = time.perf_counter()
        prog.start("load", 1, input=str(scan.path))
        volume, dicom = _load(scan, opt.echo)
        for warning in orientation_warnings(volume, scan.path.name):
            log.warning(warning)
        for note in opt.scan_notes.get(scan.stem, []):
            log.warning(note)
        if (caveat := caveat_warning(scan)) is not None:
            log.warning(caveat)
        mask_vol = load_label(opt.mask, what="brain mask", allow_empty=False) if opt.mask is not None else None
        where = scan.described_by  # the series' folder, the file, or the original it is a copy of (--metadata-from)
        # The tags of the series loaded, or of the DICOM original of a NIfTI copy (--metadata-from).
        dicom_tags = dicom if dicom is not None else scan.metadata_tags
        choice = opt.models.choose(where, dicom_tags, affine=volume.affine, lr_factor=opt.lr_factor)
        model = choice.model
        for warning in choice.warnings:
            log.warning(warning)
        if (phase := phase_reason(where, dicom_tags)) is not None:
            log.warning(
                "%s looks like a phase image, not a magnitude one (%s): the models read magnitude images, so "
                "what is found on it means nothing; analyse the magnitude (SWI or T2*) image of the series",
                scan.path.name,
                phase,
            )
        tags = dicom_tags if dicom_tags is not None else sidecar_tags(where)
        if scan.caveat is None and (doubt := sequence_doubt(tags)) is not None:
            # Taken for its name (``..._T2starw``, "SWI" in its description) or named explicitly: say the metadata.
            log.warning(
                "%s is %s: microbleeds show on T2*-weighted gradient echoes (T2*-GRE, SWI), so what is found on it "
                "means little; analyse the T2* or SWI series",
                scan.path.name,
                doubt,
            )
        if (projection := projection_reason(where, dicom_tags)) is not None:
            log.warning(
                "%s looks like a projection over several slices (%s): microbleeds and veins of neighbouring "
                "slices overlap in it, so positions, sizes and counts are unreliable; analyse the SWI "
                "magnitude or T2* series itself",
                scan.path.name,
                projection,
            )
        predictor = model.predictor
        prog.advance()
        t_load = time.perf_counter() - t0
        if opt.at_ras is not None:
            from plkd.inference.click import load_existing

            earlier = load_existing(opt.existing, volume, sha) if opt.existing is not None else None
            if earlier is not None and earlier.model_modality and model.modality not in (None, earlier.model_modality):
                # A click joins the result it is made on: segmented by the other contrast's model, its probability and
                # outline would not be those of the microbleeds beside it.
                log.warning(
                    "the click is segmented by the %s model, but --existing %s was made by the %s model; give the "
                    "--modality (or --model) of that result",
                    DISPLAY.get(model.modality, model.modality),
                    Path(opt.existing).name,
                    DISPLAY.get(earlier.model_modality, earlier.model_modality),
                )
            result = predictor.segment_at(
                volume, opt.at_ras, mask=mask_vol, lr_factor=opt.lr_factor, student=opt.student, existing=earlier
            )
        else:
            result = predictor.predict(
                volume,
                mask=mask_vol,
                lr_factor=opt.lr_factor,
                student=opt.student,
                probability=opt.save_probability,
                model_grid=opt.save_model_grid,
            )
    finally:
        logging.getLogger("plkd").removeHandler(collector)
    for w in collector.messages:
        # A warning may already be part of a note (the brain-mask note carries the small-brain warning).
        if not any(w in note for note in result.notes):
            result.notes.append(w)
    result.timings = {"load": round(t_load, 4), **result.timings}
    prog.start("write", 1, input=str(scan.path))
    record = result_record(
        result,
        volume.path,
        model.name,
        settings=opt.settings,
        input_sha256=sha,
        warnings=collector.messages,
        dicom=dicom,
    )
    record["modality"] = modality_record(choice, opt.models.stated)
    if scan.metadata is not None:  # the file a "sidecar ../../swi.json" reason is relative to
        record["modality"]["metadata_from"] = os.path.abspath(scan.metadata)
    write_prediction(
        result,
        volume,
        out,
        model.name,
        save_probability=opt.save_probability,
        save_model_grid=opt.save_model_grid,
        record=record,
    )
    prog.advance()
    prog.finish()
    n = result.n_microbleeds
    text = f"{scan.stem}: {n} microbleed(s)"
    if result.location is not None:  # counts per MARS class (plkd.location)
        text += f"; {describe_location(result.location)}"
    text += f"; {model_line(choice)}"
    prog.message(text, input=str(scan.path), n_microbleeds=n)
    return record
