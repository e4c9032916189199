"""``plkd cv``: subject-level k-fold cross-validation of the whole pipeline at a chosen LR factor."""

from __future__ import annotations

import argparse
import sys

from plkd.commands.train import add_config_arguments, config_from_args, require_data_and_out

EPILOG = """\
examples:
  plkd cv --data synth30 --out cv/t2s --folds 5 --factor 4             # PLKD students, LR@4
  plkd cv --data synth30 --out cv/kd --mode kd --set students.stage_steps=1000
  plkd cv --data synth30 --out cv/ablation --variants all              # paper Table 4 on the same folds
  plkd cv --data synth30 --out cv/abl-x8 --factor 8 --variants all --stage-cache cv/stages
  plkd cv --data synth30 --out cv/ablation --variants all --tune-data val10   # thresholds chosen on val10
Each fold is resumable; a finished fold (fold-K/result.json) is skipped. Adding --tune-data to a
finished run tunes and re-scores its folds from their stored bundles without training again.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``cv`` sub-command."""
    p = sub.add_parser(
        "cv",
        help="k-fold cross-validation: train per fold, predict held-out subjects at LR@k, report metrics",
        description=(
            "Split the labelled subjects into k folds; for each fold train screening, teacher and students, "
            "export a bundle, predict the held-out subjects converted to LR@factor (plkd.lowres) and score them "
            "(TPR, PPV, FPavg, F1, Dice). Writes OUT/summary.md, OUT/summary.json and OUT/froc.png (one curve "
            "per fold). --variants runs the ablation variants of the configuration's cv.variants on the same folds."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", metavar="DIR", help="labelled data set folder")
    p.add_argument("--out", metavar="CVDIR", help="output folder (reused to resume)")
    p.add_argument("--folds", type=int, help="number of folds (default: cv.folds = 5)")
    p.add_argument("--factor", type=int, help="LR factor of the test images and the target student (default 4)")
    p.add_argument("--mode", choices=("plkd", "kd", "none"), help="student training (default: plkd)")
    p.add_argument("--variants", metavar="LIST", help="comma-separated cv.variants names, or 'all'")
    p.add_argument(
        "--stage-cache",
        metavar="DIR",
        help="where folds share identical screening/teacher stages (default CVDIR/shared-stages); "
        "give runs at several LR factors the same folder",
    )
    p.add_argument(
        "--tune-data",
        metavar="DIR",
        help="labelled validation set (no subject in common with --data) on which each fold's screening and "
        "segmentation thresholds are chosen (plkd tune, cubic LR@factor); default: the bundle's 0.5 / 0.5",
    )
    add_config_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the cross-validation."""
    from plkd.atomic import check_output_location
    from plkd.training.crossval import run_cv
    from plkd.training.distributed import shutdown
    from plkd.training.pipeline import make_context

    cfg = config_from_args(args, [f"students.mode={args.mode}"] if args.mode else [])
    if args.print_config:
        print(yaml_text(cfg), end="")
        return 0
    require_data_and_out(args)
    check_output_location(args.out, kind="folder", what="--out")
    variants = None
    if args.variants:
        variants = (
            list(cfg["cv"]["variants"]) if args.variants == "all" else [v.strip() for v in args.variants.split(",")]
        )
    ctx = make_context(cfg, progress=args.progress)
    try:
        run_cv(
            args.data,
            args.out,
            cfg,
            ctx,
            folds=args.folds,
            factor=args.factor,
            variants=variants,
            stage_cache=args.stage_cache,
            tune_data=args.tune_data,
        )
    finally:
        shutdown(ctx.dist)
    if ctx.dist.is_main:
        print(f"cross-validation summary: {args.out}/summary.md", file=sys.stderr)
    return 0


def yaml_text(cfg: dict) -> str:
    """The resolved configuration as YAML."""
    from plkd.training.config import dump_config

    return dump_config(cfg)
