"""``plkd train``: train the screening FCN, the HR teacher and the LR students (PLKD, KD or none)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from plkd.atomic import check_output_location
from plkd.devices import DEVICE_CHOICES
from plkd.errors import PLKDError
from plkd.training.config import Config, dump_config, load_config, packaged_configs

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  plkd train all --data synth30 --out runs/t2s                      # screening, teacher, PLKD students
  plkd train teacher --data synth30 --out runs/t2s --set teacher.steps=2000
  plkd train students --data synth30 --out runs/t2s --teacher runs/t2s/teacher --mode kd
  plkd train all --data my_swi --out runs/swi --init-from cmb-t2s.zip --set teacher.steps=500   # fine-tune
  torchrun --nproc_per_node 2 -m plkd train all --data synth30 --out runs/ddp   # data parallel
Running the same command again resumes an interrupted run exactly and skips finished stages
(--data may be left out then: the run records where its data is).
Ctrl-C saves a checkpoint first (exit code 130).
"""


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--set``, ``--seed``, ``--device``, ``--amp``, ``--compile`` (shared with ``plkd cv``)."""
    p.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML file overriding plkd/configs/default.yaml (or a shipped preset: {', '.join(packaged_configs())})",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set teacher.steps=500 (repeatable; typed like the default)",
    )
    p.add_argument("--seed", type=int, help="random seed (default: the configuration's)")
    p.add_argument("--device", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks on CUDA")
    p.add_argument("--progress", choices=("tqdm", "jsonl", "none"), default="tqdm", help="progress display")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")


def require_data_and_out(args: argparse.Namespace) -> None:
    """``--data`` and ``--out`` are needed for everything but ``--print-config`` (which only shows settings)."""
    missing = [f"--{name}" for name in ("data", "out") if getattr(args, name) is None]
    if missing:
        raise PLKDError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required (except with --print-config)"
        )


def config_from_args(args: argparse.Namespace, extra: list[str] | None = None) -> Config:
    """The configuration: defaults, ``--config``, then ``--set`` and the dedicated options."""
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.device:
        overrides.append(f"device={args.device}")
    if args.amp:
        overrides.append("amp=true")
    if args.compile:
        overrides.append("compile=true")
    return load_config(args.config, overrides + list(extra or []))


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = sub.add_parser(
        "train",
        help="train the screening FCN, the HR teacher and the LR students (PLKD)",
        description=(
            "Train the two-stage detector on a data set (plkd synth, VALDO or a plain folder). STAGE is "
            "'screening' (the stage-1 FCN), 'teacher' (E2U-Net on HR patches), 'students' (LR students "
            "distilled from the teacher: PLKD x2 -> x4 -> ... -> target, then a fine-tune; or one-step KD; "
            "or no distillation) or 'all' (the three in order). Every hyper-parameter is in "
            "plkd/configs/default.yaml; the resolved configuration is saved as RUN/config.yaml."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("stage", choices=("screening", "teacher", "students", "all"), help="what to train")
    p.add_argument("--data", metavar="DIR", help="training data set folder (a resume: default the run's)")
    p.add_argument("--out", metavar="RUN", help="run folder (created; reused to resume)")
    p.add_argument("--teacher", metavar="DIR", help="finished teacher folder for 'students' (default: RUN/teacher)")
    p.add_argument(
        "--screening", metavar="DIR", help="finished screening folder for hard negatives (default: RUN/screening)"
    )
    p.add_argument(
        "--mode", choices=("plkd", "kd", "none"), help="student training: progressive, one-step or no distillation"
    )
    p.add_argument(
        "--target-factor", type=int, metavar="F", help="LR factor of the final student (power of two, default 8)"
    )
    p.add_argument("--alpha", type=float, help="soft-Dice weight of the student loss (default by modality)")
    p.add_argument("--beta", type=float, help="distillation weight of the student loss (default by modality)")
    p.add_argument(
        "--init-from",
        metavar="BUNDLE",
        help="fine-tune: every stage starts from this bundle's network of the same role and LR factor "
        "(and the run uses the bundle's architectures)",
    )
    add_config_arguments(p)
    p.set_defaults(func=run)


def student_overrides(args: argparse.Namespace) -> list[str]:
    """``--mode``, ``--target-factor``, ``--alpha``, ``--beta`` as configuration overrides."""
    out = []
    if getattr(args, "mode", None):
        out.append(f"students.mode={args.mode}")
    if getattr(args, "target_factor", None):
        out.append(f"students.target_factor={args.target_factor}")
    if getattr(args, "alpha", None) is not None:
        out.append(f"students.alpha={args.alpha}")
    if getattr(args, "beta", None) is not None:
        out.append(f"students.beta={args.beta}")
    if getattr(args, "init_from", None):
        # Absolute, so that the run resumes from any working directory.
        out.append(f"init_from={Path(args.init_from).expanduser().resolve()}")
    return out


def run(args: argparse.Namespace) -> int:
    """Train the requested stage(s)."""
    from plkd.training.distributed import shutdown
    from plkd.training.pipeline import make_context, train

    cfg = config_from_args(args, student_overrides(args))
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    if args.data is None and args.out is not None and Path(args.out, "run.json").is_file():
        from plkd.training.pipeline import recorded_data

        args.data = recorded_data(Path(args.out))  # a resume: the data the run records, from any working directory
    require_data_and_out(args)
    check_output_location(args.out, kind="folder", what="--out")
    ctx = make_context(cfg, progress=args.progress)
    try:
        result = train(
            args.stage, args.data, args.out, cfg, ctx, teacher_dir=args.teacher, screening_dir=args.screening
        )
    finally:
        shutdown(ctx.dist)
    if ctx.dist.is_main:
        for name, summary in _flatten(result):
            print(
                f"{name}: {summary.get('steps')} steps, final loss {_fmt(summary.get('final_loss'))}", file=sys.stderr
            )
        print(f"training finished: {args.out}", file=sys.stderr)
    return 0


def _flatten(result: dict) -> list[tuple[str, dict]]:
    out = []
    for key, value in result.items():
        if isinstance(value, dict) and "stage" in value:
            out.append((key, value))
        elif isinstance(value, dict):
            out += [(f"{key}/{k}", v) for k, v in value.items() if isinstance(v, dict)]
    return out


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
