"""Atomic file writing for the module's outputs: temporary name in the same folder, then rename.

The same idea as ``plkd.atomic``, kept here so export works in a Slicer whose Python has no ``plkd`` yet
(e.g. a saved scene reviewed on another computer).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Put into the temporary names after ``.partial-`` (see :func:`temporaryTag`); "" outside a tagged block.
_tag = ""


@contextlib.contextmanager
def temporaryTag(tag: str) -> Iterator[None]:
    """Name the temporaries made in this block ``.NAME.partial-<tag>...``: a batch run tags its own with its host and
    process id, so that a later run can tell the files a killed run left from anyone else's
    (``batchOutputs.removeKilledPartials``)."""
    global _tag
    previous, _tag = _tag, tag
    try:
        yield
    finally:
        _tag = previous


@contextlib.contextmanager
def atomicPath(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` with the same (double) suffix; rename it on success."""
    with atomicPaths([path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomicPaths(paths: list[str | os.PathLike[str]]) -> Iterator[list[Path]]:
    """Yield a temporary path beside each of ``paths``; rename them all when the block succeeds, none otherwise.

    For files that belong together (an export's label map, segmentation and reports): written one by one, a failure
    half way (disk full) left the new label map beside the report of the earlier export of the same result.
    """
    finals = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        temps.extend(_temporaryBeside(final) for final in finals)
        yield temps
        for tmp, final in zip(temps, finals, strict=True):
            os.replace(tmp, final)
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


def _temporaryBeside(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    # Keep ".seg.nrrd" / ".nii.gz": writers choose the format from the extension.
    suffix = "".join(final.suffixes[-2:]) if final.name.count(".") >= 2 else final.suffix
    fd, tmpName = tempfile.mkstemp(prefix=f".{final.name}.partial-{_tag}", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmpName)
    # mkstemp creates 0600 files; outputs get the usual permissions (0666 minus umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def writeTextAtomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomicPath(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
