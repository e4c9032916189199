"""The ``plkd`` command line: one sub-command per module in :mod:`plkd.commands`.

Errors caused by the user (:class:`plkd.errors.PLKDError`) are printed as a single line
``plkd: error: ...`` on stderr with exit code 2; Ctrl-C exits with 130 and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
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


#: Options whose value is a point ``X,Y,Z`` that may start with a minus sign (``--at-ras -20,10,5``).
_POINT_OPTIONS = ("--at-ras",)
_POINT = re.compile(r"-[0-9.][0-9.eE+-]*(,[-+]?[0-9.][0-9.eE+-]*){2}")


def _join_negative_points(argv: list[str]) -> list[str]:
    """``--at-ras -20,10,5`` → ``--at-ras=-20,10,5``: argparse would take the value for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _POINT_OPTIONS and i + 1 < len(argv) and _POINT.fullmatch(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``plkd`` console script."""
    parser = build_parser()
    args = parser.parse_args(_join_negative_points(sys.argv[1:] if argv is None else list(argv)))
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
