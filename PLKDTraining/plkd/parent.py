"""Stop when the process that started ``plkd`` is gone: the Slicer module's engine must not outlive Slicer.

The module starts ``plkd predict`` in a process group of its own (so that Cancel can stop its whole tree,
``PythonSlicer`` being a launcher). Nothing then stops the engine when Slicer itself is killed (SIGKILL, a
crash, the out-of-memory killer): the launcher between them reads the engine's output and outlives Slicer, so
the engine went on using the CPU or GPU for minutes and wrote its outputs into a work folder nobody would read.
The module therefore puts its own process id into the engine's environment (:data:`ENV_VAR`);
:func:`watch_parent_from_env`, started by :func:`plkd.cli.exit_code_of` (every ``plkd`` command), checks every
:data:`INTERVAL_S` seconds whether that process still lives. Once it is gone it interrupts the main thread as
Ctrl-C would (SIGINT to that thread), so the run unwinds: outputs are written under temporary names and renamed
(:mod:`plkd.atomic`), and an interrupted ``plkd predict`` removes the files of the scan it was writing, so no
partial output is left. A main thread stuck in one native call for :data:`GRACE_S` more seconds is ended at
once (``os._exit``); its temporaries are then removed by the next run that writes there
(:func:`plkd.atomic.remove_stale_temporaries`).

The parent's process id alone could be reused by another process after its death: on Linux its start time is
remembered too, and a zombie (killed, not yet reaped) counts as gone.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

#: Environment variable holding the process id of the process whose end must stop this run.
ENV_VAR = "PLKD_PARENT_PID"
#: Seconds between two checks of the parent.
INTERVAL_S = 0.5
#: Seconds the main thread is given to unwind once the parent is gone, before the process ends at once.
GRACE_S = 30.0
#: Exit code of a run stopped because its parent was gone (128 + SIGHUP, as a terminal's hang-up).
EXIT_CODE = 129

#: Set once the watched parent was found gone (read by :func:`plkd.cli.exit_code_of`).
parent_gone = threading.Event()


def _linux_start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks) and None when unreadable or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (command name) ": state is fields[0]
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else ""


def _windows_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    synchronize, query_limited = 0x00100000, 0x1000
    handle = kernel32.OpenProcess(synchronize | query_limited, False, pid)
    if not handle:
        return False
    try:
        return kernel32.WaitForSingleObject(handle, 0) == 0x102  # WAIT_TIMEOUT: still running
    finally:
        kernel32.CloseHandle(handle)


def process_alive(pid: int, start_time: str | None = None) -> bool:
    """True while process ``pid`` runs (a zombie is not running); with ``start_time`` (Linux, from
    :func:`_linux_start_time`) only when it is still the same process."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_alive(pid)  # os.kill(pid, 0) would terminate it on Windows
    if Path("/proc/self/stat").is_file():
        now = _linux_start_time(pid)
        return now is not None and (start_time is None or now == start_time)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch_parent(pid: int, *, interval: float = INTERVAL_S, grace: float = GRACE_S) -> threading.Thread:
    """Interrupt the main thread (``KeyboardInterrupt``) once process ``pid`` is gone; end the process after
    ``grace`` more seconds if it is still running then. Returns the (daemon) watching thread."""
    start = _linux_start_time(pid) if Path("/proc/self/stat").is_file() else None
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None) and (
        threading.current_thread() is threading.main_thread()
    ):
        # A SIGINT that Python does not handle (a background start may ignore it) would not unwind the run.
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch() -> None:
        event = threading.Event()
        while process_alive(pid, start):
            event.wait(interval)
        parent_gone.set()
        log.warning("the process that started plkd (pid %d) is gone; stopping", pid)
        if hasattr(signal, "pthread_kill") and callable(signal.getsignal(signal.SIGINT)):
            # A real SIGINT to the main thread also ends a sleep or a blocking read there (interrupt_main does not).
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        else:
            _thread.interrupt_main()
        event.wait(grace)
        os._exit(EXIT_CODE)  # the main thread did not unwind: a native call that does not return

    thread = threading.Thread(target=watch, name="plkd-parent-watch", daemon=True)
    thread.start()
    return thread


def watch_parent_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """Start :func:`watch_parent` for the process id in :data:`ENV_VAR`, if set; returns that id (or None).

    A value that is not a process id is ignored with a warning; a parent already gone stops the run at once."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
    if not value:
        return None
    try:
        pid = int(value)
    except ValueError:
        log.warning("%s=%r is not a process id; not watched", ENV_VAR, value)
        return None
    watch_parent(pid)
    return pid
