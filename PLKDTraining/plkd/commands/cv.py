"""``plkd cv`` (placeholder: being implemented)."""

from __future__ import annotations

import argparse

from plkd.errors import PLKDError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``cv`` sub-command."""
    p = sub.add_parser("cv", help="(not implemented yet)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise PLKDError("'plkd cv' is not implemented yet")
