"""Working folders of engine runs: the patient image is copied there as NIfTI, so none may outlive its run.

Each folder records the id of the Slicer process that made it. A run's own code removes its folder; a folder
whose process no longer exists (Slicer was quit or crashed during a run) is removed at the next start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

PREFIX = "CMBSegmentation-"
OWNER_FILE = "owner.pid"
#: A folder without an owner file (made by an older version) counts as stale after this many seconds.
ORPHAN_AGE_S = 24 * 3600


def createWorkFolder(root: str | Path | None = None) -> Path:
    """A new private folder under ``root`` (the system's temporary folder when None) owned by this process."""
    folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))
    (folder / OWNER_FILE).write_text(str(os.getpid()), encoding="ascii")
    return folder


def removeStaleWorkFolders(root: str | Path | None = None, now: float | None = None) -> list[Path]:
    """Remove the run folders under ``root`` whose owner process has ended; return what was removed."""
    root = Path(root if root is not None else tempfile.gettempdir())
    now = time.time() if now is None else now
    removed = []
    if not root.is_dir():
        return removed
    for folder in root.glob(f"{PREFIX}*"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        if _isStale(folder, now):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _isStale(folder: Path, now: float) -> bool:
    try:
        pid = int((folder / OWNER_FILE).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        try:
            return now - folder.stat().st_mtime > ORPHAN_AGE_S
        except OSError:
            return False
    return pid != os.getpid() and not processExists(pid)


def processExists(pid: int) -> bool:
    """Whether a process with id ``pid`` is running (a zombie counts as ended)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # /proc/PID/stat is "PID (COMMAND) STATE ..."; the command may contain spaces.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
