"""Folders a run's own records point to (its data, another run's teacher), and how bundles name them.

A run's record (``run.json``) must let ``plkd train`` and ``plkd export`` find those folders again from any working
directory, also after the run and its neighbours moved together (another disk, another machine): each is recorded
absolute (``path``) and relative to the run folder (``relative``), and looked up in that order: ``relative`` first,
so a moved project uses its own copies. A bundle is shared: it names folders (``data``, ``a/teacher``), never
where they lay on the machine that trained it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def recorded_place(folder: str | os.PathLike[str], run: str | os.PathLike[str]) -> dict[str, str]:
    """``{"path": absolute, "relative": relative to run}`` of ``folder`` (as typed, from the current directory)."""
    absolute = os.path.abspath(folder)
    return {"path": absolute, "relative": Path(os.path.relpath(absolute, os.path.abspath(run))).as_posix()}


def candidates(record: Any, run: str | os.PathLike[str]) -> list[Path]:
    """Where a :func:`recorded_place` record may be now: relative to the run first, then the absolute path."""
    if not isinstance(record, dict):
        return []
    found = []
    if isinstance(record.get("relative"), str):
        found.append(Path(os.path.normpath(Path(os.path.abspath(run)) / record["relative"])))
    if isinstance(record.get("path"), str) and Path(record["path"]) not in found:
        found.append(Path(record["path"]))
    return found


def find_recorded(record: Any, run: str | os.PathLike[str]) -> Path | None:
    """The first existing folder of :func:`candidates`, else None."""
    return next((p for p in candidates(record, run) if p.is_dir()), None)


def portable_name(value: str | None, run: str | os.PathLike[str] | None = None) -> str | None:
    """How a bundle names a folder a run recorded: relative to the run when inside it (``students/x2``), else its
    last two parts (``a/teacher``, ``data``). ``random`` and ``BUNDLE:network`` sources stay as they are."""
    if not value or value == "random":
        return value
    path = Path(value)
    if not path.is_absolute() and ":" in value and "/" not in value:
        return value  # a bundle's network: "cmb-t2s-synthetic-wide:teacher"
    if path.is_absolute() and run is not None:
        try:
            return path.relative_to(os.path.abspath(run)).as_posix()
        except ValueError:
            pass
    parts = [p for p in path.parts if p not in (path.anchor, ".", "..")]
    return "/".join(parts[-2:]) if parts else None
