"""``plkd synth``: write a synthetic T2*/SWI-like data set with microbleeds and their mimics."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

_EPILOG = """examples:
  plkd synth synth_data --n-subjects 20 --seed 1
  plkd synth synth_swi --modality SWI --n-subjects 5 --count 2-10 --preview
  plkd synth synth_3mm --n-subjects 10 --spacing 1,1,3 --model gaussian --jobs 2
  plkd synth train_wide --n-subjects 200 --domain wide --jobs 8   # training data over the whole definition
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``synth`` sub-command."""
    p = sub.add_parser(
        "synth",
        help="generate synthetic T2*/SWI subjects with labelled microbleeds and unlabelled mimics",
        description=(
            "Generate synthetic subjects on randomly deformed MNI ICBM152 anatomy (needs nilearn: "
            "pip install plkd[synth]): T2*-GRE or SWI-like contrast, bias field and Rician noise, skull-masked; "
            "microbleeds with realistic counts, sizes and locations (labelled), and veins, basal-ganglia iron, "
            "calcifications and air-tissue dropout (not labelled). Writes OUT/sub-XXXX/ images, labels and brain "
            "masks in the VALDO naming and OUT/manifest.json with every microbleed and mimic. The same seed gives "
            "the same data."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "out",
        type=Path,
        metavar="OUT",
        help="output folder (created); it holds one data set: an earlier one made there with other "
        "settings or more subjects is refused (--overwrite removes it)",
    )
    p.add_argument("--n-subjects", type=int, default=10, metavar="N", help="number of subjects (default 10)")
    p.add_argument("--seed", type=int, default=0, help="base seed; subject i uses a seed derived from it (default 0)")
    p.add_argument(
        "--modality",
        type=_contrast,
        default="T2S",
        metavar="{T2S,SWI}",
        help="contrast and file naming (default T2S; any case, T2* too, as plkd predict takes them)",
    )
    p.add_argument(
        "--count", default=None, metavar="N|MIN-MAX", help="microbleeds per subject (default: heavy-tailed random)"
    )
    p.add_argument(
        "--spacing",
        default="1.0",
        metavar="MM",
        help="output voxel size: one value or three (e.g. 0.8 or 1,1,3); coarser grids average finer slices",
    )
    p.add_argument(
        "--model",
        choices=("dipole", "gaussian"),
        default="dipole",
        help="microbleed signal model: magnetic dipole dephasing or Gaussian drop (default dipole)",
    )
    p.add_argument(
        "--fine-spacing",
        type=float,
        default=1.0,
        metavar="MM",
        help="rendering grid before averaging to --spacing (default 1.0; smaller is slower)",
    )
    p.add_argument(
        "--domain",
        choices=("standard", "wide"),
        default="standard",
        help="standard: sizes and contrasts of real cohorts; wide: domain randomisation for training "
        "(half the microbleeds 1.5-10 mm log-uniform, random profiles, wider contrast/noise/bias, "
        "mimics of every size incl. cavernoma-like lesions); ranges in docs/design.md",
    )
    p.add_argument(
        "--phase-mask",
        nargs="?",
        const=1.0,
        default=0.0,
        type=float,
        metavar="SHARE",
        help="SWI only: apply SWI's phase-mask weighting (power 2-5, drawn per subject): paramagnetic "
        "microbleeds, veins and iron darker and wider, calcifications unchanged; to every subject, "
        "or to a SHARE (0-1) of them, drawn per subject",
    )
    p.add_argument("--preview", action="store_true", help="also write sub-XXXX/sub-XXXX_preview.png")
    p.add_argument("--jobs", type=int, default=1, help="subjects generated in parallel (default 1)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="remove an earlier data set in OUT made with other settings or more subjects first",
    )
    p.add_argument("--progress", choices=("tqdm", "jsonl", "none"), default="tqdm", help="progress display")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the data set and print where the manifest is."""
    from plkd.atomic import check_output_location
    from plkd.synth import write_dataset

    check_output_location(args.out, kind="folder", what="OUT")
    t0 = time.perf_counter()
    manifest = write_dataset(
        args.out,
        args.n_subjects,
        seed=args.seed,
        modality=args.modality,
        count=args.count,
        spacing=args.spacing,
        lesion_model=args.model,
        fine_spacing=args.fine_spacing,
        domain=args.domain,
        phase_mask=args.phase_mask,
        preview=args.preview,
        jobs=args.jobs,
        progress=args.progress,
        overwrite=args.overwrite,
    )
    log.info("wrote %d subject(s) in %.1f s", args.n_subjects, time.perf_counter() - t0)
    if args.progress != "jsonl":
        print(manifest)
    return 0


def _contrast(text: str) -> str:
    """``--modality`` as ``T2S`` or ``SWI``, spelt as ``plkd predict`` takes it (``swi``, ``T2*``); not ``auto``."""
    from plkd.inference.modality import normalise_modality

    try:
        value = normalise_modality(text)
    except ValueError:
        value = "auto"
    if value == "auto":
        raise argparse.ArgumentTypeError(f"must be T2S (T2*) or SWI, not {text!r}")
    return value
