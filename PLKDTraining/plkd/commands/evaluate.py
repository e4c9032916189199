"""``plkd evaluate``: score predicted microbleed label maps against reference labels."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from plkd.atomic import check_output_location, write_json_atomic
from plkd.errors import InputError

EPILOG = """examples:
  plkd evaluate predictions/ data/valdo/ --json results.json
  plkd evaluate predictions/ synth/ --json results.json --froc froc.png
  plkd evaluate sub-001_T2S_cmb.nii.gz sub-001_space-T2S_CMB.nii.gz

Files pair by subject id (the file name up to its first '_', plus a BIDS ses- entity; case names
with a '_' of their own, case_001 or nnU-Net's CMB_001, by case name); folders
are searched recursively. A reference must be named as a label (CMB, label, seg, dseg, truth,
gt, label-X, or a file in labels/ or labelsTr/; a subject's only file when nothing is named so,
unless its name ends as a scan's: _T1w, _T2starw, _T2S, ...)
and hold label values; it is never a prediction of 'plkd predict' (NAME_cmb.nii.gz with its
NAME_cmb.json), a brain mask or an image, so 'plkd evaluate pred/ plkd-demo/' pairs with the
demo's _truth. Every pair is printed and written to the JSON ('pairing'); two candidate files
for one subject are refused. The prediction is resampled onto the reference grid (nearest
neighbour) when the grids differ. Detections are matched by the VALDO rule (centres of
26-connected components closer than 5 mm). "Pooled" figures sum counts over subjects (as the paper
reports); "VALDO" figures are per-subject medians (as the challenge reports). FROC needs the
candidates JSONs written by 'plkd predict' (NAME_cmb.json beside NAME_cmb.nii.gz, or in
--candidates DIR); it uses the same VALDO rule and marks the pooled operating point.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    p = sub.add_parser(
        "evaluate",
        help="score predicted microbleeds against reference labels (paper Table 2, VALDO rule, FROC)",
        description=(
            "Compare predicted microbleed label maps with reference labels: TPR, PPV, FP per subject, F1\n"
            "and voxel Dice pooled over subjects (the paper's Table 2), the VALDO challenge's per-subject\n"
            "F1, count difference and Dice, and optionally a FROC curve from the candidates of 'plkd predict'."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pred_pos", nargs="?", metavar="PRED", help="prediction label map or folder of them")
    p.add_argument("truth_pos", nargs="?", metavar="TRUTH", help="reference label map or folder (searched recursively)")
    p.add_argument("--pred", dest="pred_opt", metavar="PRED", help="same as the positional PRED")
    p.add_argument("--truth", dest="truth_opt", metavar="TRUTH", help="same as the positional TRUTH")
    p.add_argument(
        "--json", type=Path, metavar="FILE", help="write all results (per subject, pooled, VALDO, FROC) here"
    )
    p.add_argument("--froc", type=Path, metavar="PNG", help="draw the FROC curve to this PNG (needs candidates JSONs)")
    p.add_argument(
        "--candidates",
        type=Path,
        metavar="DIR",
        help="folder with the candidates JSONs (default: beside the predictions)",
    )
    p.add_argument(
        "--missing-as-empty",
        action="store_true",
        help="score references without a prediction as empty predictions (default: error)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="probability maps: foreground at >= this value, 0-1 (default 0.5); label maps of plkd predict hold "
        "microbleed numbers, which it does not change (their candidate threshold is plkd predict --threshold)",
    )
    p.add_argument(
        "--max-distance",
        type=float,
        default=5.0,
        metavar="MM",
        help="a prediction matches a reference whose centre is closer than this, in mm (default 5; VALDO's < 5 mm)",
    )
    p.set_defaults(func=run)


def _pick(positional: str | None, option: str | None, name: str) -> str:
    if positional and option and positional != option:
        raise InputError(f"{name} given twice ({positional} and --{name.lower()} {option})")
    value = positional or option
    if not value:
        raise InputError(f"missing {name}: give PRED and TRUTH files or folders")
    return value


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table, write the JSON and the FROC plot if asked."""
    from plkd.metrics import evaluate_paths, format_table, plot_froc
    from plkd.metrics.froc import FrocCurve

    pred = _pick(args.pred_pos, args.pred_opt, "PRED")
    truth = _pick(args.truth_pos, args.truth_opt, "TRUTH")
    if not 0 < args.threshold <= 1:
        # Above 1 it cut the label maps' lowest microbleed numbers away (50, meant as per cent: nothing predicted).
        raise InputError(f"--threshold must be a probability in (0, 1], not {args.threshold}")
    if not (args.max_distance > 0 and math.isfinite(args.max_distance)):
        # NaN passed a `<= 0` test, and no distance is `< nan`: every prediction was scored a false positive.
        raise InputError(f"--max-distance must be a positive number of mm, not {args.max_distance}")
    check_output_location(args.json, what="--json")
    check_output_location(args.froc, what="--froc")
    want_froc = True if (args.froc is not None or args.candidates is not None) else None
    result = evaluate_paths(
        pred,
        truth,
        candidates=args.candidates,
        froc=want_froc,
        missing_as_empty=args.missing_as_empty,
        threshold=args.threshold,
        max_distance_mm=args.max_distance,
    )
    print(format_table(result))
    if args.froc is not None:
        plot_froc({"prediction": FrocCurve.from_dict(result["froc"])}, args.froc)
        print(f"FROC curve written to {args.froc}")
    if args.json is not None:
        write_json_atomic(args.json, result)
        print(f"results written to {args.json}")
    return 0
