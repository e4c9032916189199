"""``plkd export`` (placeholder: being implemented)."""

from __future__ import annotations

import argparse

from plkd.errors import PLKDError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    p = sub.add_parser("export", help="(not implemented yet)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise PLKDError("'plkd export' is not implemented yet")
