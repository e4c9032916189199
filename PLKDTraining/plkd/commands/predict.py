"""``plkd predict``: detect and segment microbleeds in one or many volumes."""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import threading
from collections.abc import Iterator

from plkd.devices import DEVICE_CHOICES
from plkd.errors import PLKDError

EPILOG = """\
examples:
  plkd predict sub-01_T2S.nii.gz --output-dir out/
  plkd predict clinic/ -o out/ --modality SWI                        # the SWI model for every scan
  plkd predict bids/ --output-dir out/ --shard 0/4 --progress jsonl
  plkd predict 'study/ses-*/T2S.nii.gz' dicom/series-7/ -o out/ --threads 4
  plkd predict scan.nii.gz --output-dir click/ --at-ras=-12.5,-30,8 --existing out/scan_cmb.json
  plkd predict copy.nii.gz -o out/ --metadata-from bids/sub-01/anat/sub-01_swi.nii.gz  # read as that file

INPUT: a NIfTI file (.nii, .nii.gz; 3-D, or 4-D multi-echo), a DICOM series folder, a folder
(walked to any depth, linked folders too: images and T2*/SWI DICOM series are taken; label maps,
masks, predictions, phase images, localizers, other contrasts such as T1w/FLAIR and other file
formats are skipped and counted), or a glob pattern. A folder or pattern giving no scan is a failed
input (exit status 2).
For each scan writes OUT/NAME_cmb.nii.gz (one integer label per microbleed, on the input's grid
with its header geometry: qform, sform, codes and pixdim unchanged) and OUT/NAME_cmb.json (every
candidate, the settings used, the input's sha256), then OUT/plkd_summary.csv (one row per scan).
NAME is the file name (the folder name for DICOM); scans sharing a name get the parent folders
that tell them apart in front (sub-01/anat/T2S.nii -> sub-01_T2S); a scan keeps the name its outputs
already have in DIR (they are renamed when the run puts parent folders in front of it), and a name held
there by another scan's result is not taken over.
A scan whose outputs were made from the same input with the same settings is skipped (said on
stderr); a changed input, other settings or an unreadable output is recomputed; --overwrite
recomputes all. A scan that cannot be used is reported in one line and the others continue; the
exit status is then 2 (1 for an internal error).
"""


def _echo(text: str) -> str | int:
    return int(text) if text.lstrip("-").isdigit() else text


def _check_options(args: argparse.Namespace) -> None:
    """Refuse impossible option values before any work (one ``plkd: error:`` line)."""
    if args.batch_size < 1:
        raise PLKDError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise PLKDError(f"--threads must be at least 1, not {args.threads}")
    if isinstance(args.echo, int) and args.echo < 1:
        raise PLKDError(f"--echo {args.echo}: echoes are numbered from 1, as scanners and BIDS (echo-1) count them")
    if args.lr_factor is not None and not (args.lr_factor >= 1 and math.isfinite(args.lr_factor)):
        raise PLKDError(
            f"--lr-factor counts how many model-grid slices one input slice spans (1 = HR data), so it is at "
            f"least 1, not {args.lr_factor}"
        )
    if isinstance(args.echo, str) and args.echo not in ("rss", "last"):
        raise PLKDError(f"--echo must be rss, last or an echo number counted from 1, not {args.echo!r}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` sub-command."""
    p = sub.add_parser(
        "predict",
        help="detect and segment microbleeds in T2*/SWI volumes",
        description=(
            "Two-stage microbleed detection: a screening network proposes candidates over the whole "
            "brain, the segmenter (the student matched to the input's slice thickness) confirms and "
            "outlines each one. Thick-slice inputs are brought to the model grid by cubic interpolation."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="NIfTI files, DICOM series folders, folders (walked) or glob patterns",
    )
    p.add_argument("--output-dir", "-o", required=True, metavar="DIR", help="where the outputs are written")
    p.add_argument(
        "--model",
        metavar="BUNDLE",
        help="model bundle folder or .zip (default: the installed one for each scan's --modality)",
    )
    p.add_argument(
        "--modality",
        default="auto",
        type=_modality,
        metavar="{auto,T2S,SWI}",
        help="contrast of the scans: T2S (T2*-GRE), SWI, or auto (default): from the DICOM tags, the JSON "
        "sidecar, the NIfTI header or the file name's BIDS suffix, else T2S (with --model: its contrast). Chooses "
        "the installed model; evidence against the choice, and a model of the other contrast, are warnings",
    )
    p.add_argument(
        "--metadata-from",
        metavar="FILE",
        help="read the metadata of the image FILE as the input's (one NIfTI input, a copy of FILE, such as the one "
        "the Slicer module writes): its JSON sidecar with what a BIDS data set states for it higher up, its NIfTI "
        "header text and its file name decide --modality auto and the phase, projection and sequence checks, as "
        "for 'plkd predict FILE' (FILE in another format, NRRD, MGH...: its sidecar NAME.json, its name as "
        "NAME.nii.gz; a DICOM file or series folder: the series' tags)",
    )
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    p.add_argument("--mask", metavar="MASK", help="brain mask on the input's grid (single input only)")
    p.add_argument("--progress", default="tqdm", choices=("tqdm", "jsonl", "none"), help="progress display")
    p.add_argument("--threshold", type=float, metavar="P", help="candidate probability threshold (default: bundle's)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--student", metavar="NAME", help="use this segmenter of the bundle (e.g. teacher, student_x4)")
    who.add_argument(
        "--lr-factor",
        type=float,
        metavar="K",
        help="choose the student trained for this LR factor (default: slice thickness in model-grid voxels)",
    )
    p.add_argument(
        "--echo",
        default="rss",
        type=_echo,
        help="4-D multi-echo input: rss (root-sum-of-squares, default), last, or echo N counted from 1",
    )
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for the networks (default: torch's)")
    p.add_argument(
        "--shard",
        metavar="i/n",
        help="process only the scans of shard i of n: sha256 of each scan's path within the input given, modulo n "
        "(stable when files arrive between the launches of the shards; give every shard the same inputs)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="recompute every scan, even when its outputs are up to date"
    )
    p.add_argument("--batch-size", type=int, default=16, help="candidate patches per network call (default 16)")
    p.add_argument("--save-probability", action="store_true", help="also write NAME_cmb_prob.nii.gz")
    p.add_argument("--save-model-grid", action="store_true", help="also write the label map on the model grid")
    p.add_argument(
        "--at-ras",
        metavar="X,Y,Z",
        help=(
            "segment only the microbleed at this RAS point (mm), skipping screening; always recomputed "
            "(write --at-ras=X,Y,Z when X is negative)"
        ),
    )
    p.add_argument(
        "--existing",
        metavar="FILE",
        help="with --at-ras: an earlier NAME_cmb.json or NAME_cmb.nii.gz of this input; a click on one of its "
        "microbleeds returns that one (existing_label, existing_id) instead of a new one",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``plkd predict``; 0 when every input succeeded, 2 when some failed (1: internal error)."""
    from plkd.atomic import check_output_location
    from plkd.inference.batch import parse_ras, predict_files
    from plkd.inference.summary import print_summary_table

    _check_options(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    check_output_location(args.output_dir, kind="folder", what="--output-dir")
    if args.existing is not None and args.at_ras is None:
        raise PLKDError("--existing is used with --at-ras (a click on a microbleed found earlier)")
    with _terminate_as_interrupt():
        report = predict_files(
            args.inputs,
            args.output_dir,
            model=args.model,
            device=args.device,
            mask=args.mask,
            progress=args.progress,
            threshold=args.threshold,
            student=args.student,
            lr_factor=args.lr_factor,
            echo=args.echo,
            shard=args.shard,
            overwrite=args.overwrite,
            save_probability=args.save_probability,
            save_model_grid=args.save_model_grid,
            at_ras=parse_ras(args.at_ras),
            existing=args.existing,
            batch_size=args.batch_size,
            modality=args.modality,
            metadata_from=args.metadata_from,
        )
    n = len(report.done) + len(report.skipped) + len(report.failed)
    summary = (
        f"plkd predict: {len(report.done)} done, {len(report.skipped)} skipped, {len(report.failed)} failed of {n}"
    )
    if args.progress == "tqdm" and report.rows:
        print_summary_table(report.rows, sys.stderr)
    print(summary + (f"; summary in {report.summary_csv}" if report.summary_csv else ""), file=sys.stderr)
    if not report.failed:
        return 0
    return 1 if report.internal else 2


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a batch scheduler's time limit) ends the run as Ctrl+C does, so the scan being
    written removes what it wrote instead of leaving a label map without its JSON."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _modality(text: str) -> str:
    from plkd.inference.model_choice import normalise_modality

    try:
        return normalise_modality(text)
    except PLKDError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--modality ")) from None
