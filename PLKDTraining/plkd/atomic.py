"""Atomic file writing: write to a temporary name in the same folder, then rename.

A crash, a kill or a full disk never leaves a half-written output under its final name. The
temporary name says who wrote it (``.NAME.<host>-<pid>-<token>.partial<suffix>``), so the next
write of the same output removes temporaries that a killed process left behind (its process is
gone, or the file is older than :data:`STALE_AGE_S`), and nothing else.

:func:`check_output_location` checks, before any work, that an output file or folder can be
written, and says in one line what is wrong when it cannot.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from plkd.errors import OutputError

#: A temporary older than this (seconds) is stale whoever wrote it (a write takes seconds).
STALE_AGE_S = 24 * 3600
#: Identifies this machine in temporary names (a hash of its host name).
HOST_TAG = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _suffix(final: Path) -> str:
    return ".partial" + "".join(final.suffixes[-2:])


def _temporary_name(final: Path) -> str:
    return f".{final.name}.{HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}{_suffix(final)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else (or cannot tell): not stale
    return True


def remove_stale_temporaries(
    final: str | os.PathLike[str], *, now: float | None = None, folders: bool = False
) -> list[Path]:
    """Remove the temporaries of ``final`` left by killed writers; returns what was removed.

    Only files (``folders``: folders, see :func:`temporary_folder`) named as this module names
    them for this very output are considered, and only when their writer was a process of this
    host that no longer runs, or when they are older than :data:`STALE_AGE_S` (a writer on
    another host sharing the folder).
    """
    final = Path(final)
    suffix = ".partial" if folders else _suffix(final)
    pattern = re.compile(
        re.escape(f".{final.name}.") + r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}" + re.escape(suffix)
    )
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        siblings = list(final.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        m = pattern.fullmatch(p.name)
        kind_ok = p.is_dir() if folders else p.is_file()
        if m is None or p.is_symlink() or not kind_ok:
            continue
        with contextlib.suppress(OSError):
            age = now - p.stat().st_mtime
            dead = m["host"] == HOST_TAG and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))
            if dead or age > STALE_AGE_S:
                if folders:
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
    return removed


def temporary_folder(final: str | os.PathLike[str]) -> Path:
    """A new empty folder beside ``final`` to assemble it in (then renamed); stale ones are removed first.

    Named ``.NAME.<host>-<pid>-<token>.partial``; the caller renames or removes it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final, folders=True)
    tmp = final.parent / f".{final.name}.{HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}.partial"
    tmp.mkdir()
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary name keeps the full suffix (``.nii.gz``) so writers that choose a format by
    extension behave as for the final name. On any exception the temporary file is removed;
    temporaries of the same output left by killed processes are removed first.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    # Files get the usual permissions (0666 minus umask), created exclusively (never reused).
    tmp = final.parent / _temporary_name(final)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS and not exc.filename:
            # A failed write() names no file: the one-line message names the output.
            raise OSError(exc.errno, exc.strerror, str(final)) from None
        raise


#: ``errno`` values of a full disk or an exhausted quota: :func:`plkd.cli.exit_code_of` says them in one line.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
#: Below this many free bytes a failed write is taken for a full disk (torch does not say why it failed).
_NEARLY_FULL_BYTES = 64 << 20


def torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """:func:`torch.save` of ``obj`` to ``path``, a failed write raised as :class:`OSError` (``ENOSPC`` when the disk
    has less than 64 MiB left): torch raises a ``RuntimeError`` ("PytorchStreamWriter failed writing file data/0: file
    write failed") for a full disk, which ended training or ``plkd export`` with a traceback."""
    import torch

    try:
        torch.save(obj, path)
    except OSError as exc:
        if exc.filename:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except RuntimeError as exc:
        if "write" not in str(exc).lower():
            raise
        try:
            full = shutil.disk_usage(Path(path).parent).free < _NEARLY_FULL_BYTES
        except OSError:
            full = False
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(code, f"{os.strerror(code)} ({str(exc).splitlines()[0]})", str(path)) from None


def disk_full_message(exc: OSError) -> str | None:
    """The one line for a write that failed because the disk (or quota) is full; None for other errors."""
    if exc.errno not in DISK_FULL_ERRNOS:
        return None
    where = f" writing {_final_name(Path(exc.filename))}" if exc.filename else ""
    return (
        f"no space left on the disk{where} ({os.strerror(exc.errno)}): nothing was written under its final name; "
        "free some space and run the command again (a training run resumes from its last checkpoint)"
    )


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}-\d+-[0-9a-f]{8}\.partial(\..*)?$")


def _final_name(path: Path) -> Path:
    """The output a temporary of this module stands for (``.x.nii.gz.<host>-<pid>-<token>.partial.nii.gz`` →
    ``x.nii.gz``), also for a file inside a temporary folder; ``path`` itself for other names."""
    parts = [m["name"] if (m := _TEMPORARY.match(part)) else part for part in path.parts]
    return Path(*parts) if parts else path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically; NaN becomes ``null`` so every reader can parse it."""
    write_text_atomic(path, json.dumps(_nan_to_none(obj), indent=2, allow_nan=False) + "\n")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:  # NaN
        return None
    if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:  # numpy scalar
        return _nan_to_none(obj.item())
    return obj


# ------------------------------------------------------------------------------ output checks


def check_output_location(
    path: str | os.PathLike[str] | None, *, kind: Literal["file", "folder"] = "file", what: str = "output"
) -> None:
    """Refuse, before any work, an output location that cannot be written.

    ``kind="file"``: ``path`` must not be a folder and its folder must be (or be creatable as) a
    writable folder. ``kind="folder"``: ``path`` must be a writable folder or creatable as one.
    Nothing is created. ``what`` names the option in the message (``"--json"``, ``"--out"``).
    Raises :class:`~plkd.errors.OutputError` naming what is wrong in one line; ``None`` is ignored.
    """
    if path is None:
        return
    p = Path(path)
    if kind == "file":
        if str(path).endswith(("/", os.sep)) or p.is_dir():
            raise OutputError(f"{what} {p} is a folder; give a file name")
        if p.exists() and not os.access(p, os.W_OK):
            raise OutputError(f"{what} {p} exists and is read-only")
        folder = p.parent
    else:
        if p.exists() and not p.is_dir():
            raise OutputError(f"{what} {p} is a file, not a folder")
        folder = p
    _check_folder(folder, p, what)


def _check_folder(folder: Path, target: Path, what: str) -> None:
    """The nearest existing folder of ``folder`` must be a writable folder (the rest is created)."""
    probe = Path(os.path.abspath(folder))
    while not probe.exists() and not probe.is_symlink():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.is_symlink() and not probe.exists():
        raise OutputError(f"{what} {target}: {probe} is a broken symbolic link")
    if not probe.is_dir():
        raise OutputError(f"{what} {target}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {target}: folder {probe} is read-only")
