"""``plkd tune``: calibrate each segmenter's probabilities and choose its thresholds on validation subjects."""

from __future__ import annotations

import argparse
import sys

from plkd.devices import DEVICE_CHOICES

EPILOG = """\
examples:
  plkd tune val20/ --out cmb-t2s-tuned                       # the installed model of val20's contrast
  plkd tune val20/ --model run/bundle --out run/bundle-tuned --max-fp 0.5
  plkd tune val20/ --out tuned --students student_x4,student_x8 --plot reliability.png

The teacher is tuned on the HR images, a xk student on their LR@k (cubic) and k-mm thick-slab
versions. Use subjects that neither training nor your test set contains.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``tune`` sub-command."""
    p = sub.add_parser(
        "tune",
        help="choose the screening and segmentation thresholds of each segmenter on validation subjects",
        description=(
            "Predict labelled validation subjects with each segmenter of a bundle, calibrate its candidate "
            "probabilities on them (Platt scaling: a probability of 0.7 then means about 70 % of such candidates "
            "are microbleeds), search the screening and segmentation thresholds for the best pooled F1 "
            "(optionally with at most --max-fp false positives per subject), and write a copy of the bundle in "
            "which every segmenter carries its own calibration and thresholds."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", metavar="DATA", help="labelled validation data set (synth, VALDO or folder layout)")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="folder for the tuned bundle")
    p.add_argument(
        "--model",
        metavar="BUNDLE",
        help="bundle to tune (default: the installed one of the subjects' contrast, T2* or SWI)",
    )
    p.add_argument(
        "--max-fp",
        type=float,
        metavar="N",
        help="best F1 among thresholds with at most N false positives per subject (default: best F1, no limit)",
    )
    p.add_argument("--students", metavar="LIST", help="comma-separated segmenters to tune (default: all)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    p.add_argument("--progress", default="tqdm", choices=("tqdm", "jsonl", "none"), help="progress display")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out bundle (never another folder)")
    p.add_argument(
        "--plot", metavar="PNG", help="write the reliability diagram of each segmenter (before/after calibration)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Tune, write the bundle and print the table of thresholds and validation metrics."""
    import logging

    from plkd.atomic import check_output_location
    from plkd.data.datasets import find_subjects
    from plkd.inference.model_choice import model_for_subjects
    from plkd.tuning import format_report, tune_thresholds

    check_output_location(args.out, kind="folder", what="--out")
    # The installed model of the subjects' contrast (T2* or SWI), not always the T2* one.
    bundle, warning = model_for_subjects(args.model, find_subjects(args.data))
    if warning:
        logging.getLogger("plkd.tune").warning(warning)
    report = tune_thresholds(
        bundle,
        args.data,
        args.out,
        max_fp=args.max_fp,
        segmenters=[s.strip() for s in args.students.split(",")] if args.students else None,
        device=args.device,
        progress=args.progress,
        overwrite=args.overwrite,
        plot=args.plot,
    )
    print(format_report(report))
    print(f"tuned bundle: {args.out}", file=sys.stderr)
    return 0
