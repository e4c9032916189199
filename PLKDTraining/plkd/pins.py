"""Pinned digests of the bundles shipped with plkd: a shipped bundle cannot be altered unnoticed.

A bundle's checksums only catch accidents: whoever edits a weight file can update its sha256 in
``manifest.json`` too. ``bundled/pins.json`` records the sha256 of each shipped bundle's
``manifest.json`` (which holds every weight file's sha256), so a bundle is *verified* when its
manifest is byte-for-byte a pinned one. Any other bundle (one you trained, or an altered
shipped one) still loads, with an "unverified bundle" warning and a note in the outputs.

After re-shipping a bundle, update its pin (and commit ``plkd/bundled/pins.json``)::

    python -m plkd.pins PLKDTraining/plkd/bundled/cmb-t2s
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from plkd.atomic import write_json_atomic

PINS_FILE = Path(__file__).resolve().parent / "bundled" / "pins.json"


def manifest_digest(manifest_bytes: bytes) -> str:
    """sha256 (hex) of a bundle's ``manifest.json`` bytes."""
    return hashlib.sha256(manifest_bytes).hexdigest()


def read_pins(path: str | os.PathLike[str] = PINS_FILE) -> dict[str, str]:
    """``{bundle name: manifest sha256}`` of the shipped bundles (empty when the file is absent)."""
    try:
        pins = json.loads(Path(path).read_text(encoding="utf-8")).get("bundles", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in pins.items()} if isinstance(pins, dict) else {}


def verification_note(name: str, digest: str, pins: dict[str, str] | None = None) -> str | None:
    """None for a pinned (shipped, unaltered) bundle, else the one-line "unverified bundle" note."""
    pins = read_pins() if pins is None else pins
    if digest in pins.values():
        return None
    if name in pins:
        return (
            f"unverified bundle: {name!r} differs from the bundle shipped under that name "
            "(its manifest or weights were altered); results are not those of the shipped model"
        )
    return f"unverified bundle: {name!r} is not a bundle shipped with plkd (manifest sha256 {digest[:12]}…)"


def pin_bundle(bundle: str | os.PathLike[str], path: str | os.PathLike[str] = PINS_FILE) -> tuple[str, str]:
    """Load ``bundle`` (schema and checksums verified), record its manifest digest; returns (name, digest)."""
    from plkd.bundle import MANIFEST, load_bundle

    loaded = load_bundle(bundle)
    digest = manifest_digest((loaded.root / MANIFEST).read_bytes())
    pins = read_pins(path)
    pins[loaded.name] = digest
    write_json_atomic(
        path,
        {
            "about": "sha256 of each shipped bundle's manifest.json; update: python -m plkd.pins BUNDLE",
            "bundles": dict(sorted(pins.items())),
        },
    )
    return loaded.name, digest


def main(argv: list[str] | None = None) -> int:
    """``python -m plkd.pins BUNDLE...``: pin these bundles in ``plkd/bundled/pins.json``."""
    parser = argparse.ArgumentParser(prog="python -m plkd.pins", description=main.__doc__)
    parser.add_argument("bundles", nargs="+", metavar="BUNDLE", help="bundle folder or .zip to pin")
    parser.add_argument("--pins", default=str(PINS_FILE), help=f"pin file (default {PINS_FILE})")
    args = parser.parse_args(argv)
    for bundle in args.bundles:
        name, digest = pin_bundle(bundle, args.pins)
        print(f"pinned {name}: {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
