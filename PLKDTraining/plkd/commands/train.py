"""``plkd train`` (placeholder: being implemented)."""

from __future__ import annotations

import argparse

from plkd.errors import PLKDError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = sub.add_parser("train", help="(not implemented yet)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise PLKDError("'plkd train' is not implemented yet")
