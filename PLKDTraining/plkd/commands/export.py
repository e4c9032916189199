"""``plkd export``: package a finished training run as a model bundle."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  plkd export runs/t2s --out models/t2s-synth                 # screening, teacher, students x2, x4, x8 (fine-tuned)
  plkd export runs/t2s --out t2s.zip --students x2,x4,x8 --fp32
  plkd export runs/t2s --out t2s-kd --mode kd
  plkd export runs/students-only --out b --teacher runs/t2s/teacher --screening runs/t2s/screening
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    p = sub.add_parser(
        "export",
        help="package a training run as a model bundle for plkd predict and the Slicer module",
        description=(
            "Write the bundle of a finished run (docs/design.md): the screening FCN, the teacher (LR factor 1) "
            "and the students with the LR factor each was trained for, thresholds, spacing, patch sizes, "
            "normalisation and a training summary. By default every finished student is exported except one "
            "a fine-tuned student replaces (same LR factor)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="training run folder (plkd train --out)")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="bundle folder, or a .zip file")
    p.add_argument("--students", metavar="LIST", help="student stages to include, e.g. x2,x4,finetune")
    p.add_argument("--mode", choices=("plkd", "kd", "none"), default="plkd", help="which students (default: plkd)")
    p.add_argument("--name", help="bundle name (default: the run folder's name)")
    p.add_argument(
        "--teacher",
        metavar="DIR",
        help="finished teacher folder to bundle (default: RUN/teacher, else the one the students were distilled from)",
    )
    p.add_argument(
        "--screening",
        metavar="DIR",
        help="finished screening folder to bundle (default: RUN/screening, else the one the students mined)",
    )
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", dest="half", action="store_const", const=True, help="store weights as float16")
    prec.add_argument("--fp32", dest="half", action="store_const", const=False, help="store weights as float32")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle (never another folder)")
    p.set_defaults(func=run, half=None)


def run(args: argparse.Namespace) -> int:
    """Export the run."""
    from plkd.atomic import check_output_location
    from plkd.training.export import export_run

    is_zip = str(args.out).lower().endswith(".zip")
    check_output_location(args.out, kind="file" if is_zip else "folder", what="--out")
    students = [s.strip() for s in args.students.split(",") if s.strip()] if args.students else None
    out = export_run(
        args.run,
        args.out,
        students=students,
        mode=args.mode,
        name=args.name,
        half=args.half,
        overwrite=args.overwrite,
        teacher=args.teacher,
        screening=args.screening,
    )
    print(f"wrote {out}", file=sys.stderr)
    return 0
