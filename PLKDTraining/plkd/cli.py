"""The ``plkd`` command line: one sub-command per module in :mod:`plkd.commands`.

Errors caused by the user (:class:`plkd.errors.PLKDError`) are printed as a single line
``plkd: error: ...`` on stderr with exit code 2; Ctrl-C exits with 130 and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from plkd import __version__
from plkd.errors import PLKDError

#: Sub-commands in the order ``plkd --help`` lists them; each is the module ``plkd.commands.<name>``.
COMMANDS: list[str] = ["demo", "predict", "evaluate", "synth", "lowres", "train", "cv", "export", "tune", "benchmark"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, each sub-command contributed by its own module."""
    parser = argparse.ArgumentParser(
        prog="plkd",
        description=(
            "Cerebral microbleed detection and segmentation in low-resolution MRI "
            "(two-stage screening + E2U-Net, progressive-learning knowledge distillation)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"plkd {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"plkd.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``plkd`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Our own notes (e.g. "combined 3 echoes") at INFO; other libraries only from -vv on.
    logging.basicConfig(
        level=logging.WARNING if args.verbose < 2 else logging.DEBUG, format="%(levelname)s: %(message)s"
    )
    logging.getLogger("plkd").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except PLKDError as exc:
        print(f"plkd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("plkd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
