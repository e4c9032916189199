"""Run the engine as a child process: stream every output line, collect stderr, kill its whole tree.

Qt-free on purpose: ``processRunner`` only polls this object from a Qt timer, and CI tests it with real
child processes. The child gets its own process group (POSIX) so that Cancel also stops the grandchildren
- ``PythonSlicer`` is a launcher that starts the real Python as a child, and torch may start workers.
Every line of stdout and stderr reaches ``onLog`` in the order it was read (the engine's warnings, e.g. a CPU
fallback after running out of GPU memory, are stderr lines); progress objects of stdout also reach ``onProgress``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

from CMBSegmentationLib.progressParsing import ProgressEvent, parseProgressLine

#: Names of the two output streams given to ``onLog``.
STDOUT, STDERR = "stdout", "stderr"


class BackgroundProcess:
    """One running command. Call :meth:`poll` often (e.g. from a timer) to receive its progress."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        kwargs: dict = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # new process group: killpg reaches every descendant
        self.argv = list(argv)
        self._process = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self._stderr: list[str] = []
        self.cancelled = False
        self._killer: threading.Thread | None = None
        self._readers = [
            threading.Thread(target=self._pump, args=(self._process.stdout, STDOUT, self._lines.put), daemon=True),
            threading.Thread(target=self._pump, args=(self._process.stderr, STDERR, self._fromStderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        """Process id of the direct child."""
        return self._process.pid

    def poll(
        self,
        onProgress: Callable[[ProgressEvent], None] | None = None,
        onLog: Callable[[str, str], None] | None = None,
    ) -> int | None:
        """Deliver the lines read so far; return the exit code once the process and its output ended.

        ``onLog(stream, line)`` gets every line (``stream`` is :data:`STDOUT` or :data:`STDERR`, the line without
        its end), ``onProgress(event)`` the progress objects among the stdout lines.
        """
        while True:
            try:
                stream, line = self._lines.get_nowait()
            except queue.Empty:
                break
            if onLog is not None:
                onLog(stream, line.rstrip("\r\n"))
            event = parseProgressLine(line) if stream == STDOUT else None
            if event is not None and onProgress is not None:
                onProgress(event)
        code = self._process.poll()
        if code is None or any(reader.is_alive() for reader in self._readers):
            return None
        if not self._lines.empty():  # lines that arrived between the loop and the end
            return self.poll(onProgress, onLog)
        return code

    def wait(
        self,
        onProgress: Callable[[ProgressEvent], None] | None = None,
        interval: float = 0.1,
        onLog: Callable[[str, str], None] | None = None,
        idle: Callable[[], None] | None = None,
        shouldCancel: Callable[[], bool] | None = None,
    ) -> int:
        """Block until the process ends, delivering its lines on the way; return its exit code.

        ``idle()`` is called about every ``interval`` s (e.g. to let a GUI process its events); when
        ``shouldCancel()`` returns True the process tree is cancelled (see :meth:`cancel`).

        Whatever ends the wait early (Ctrl+C, SIGTERM turned into KeyboardInterrupt, an exception of a callback)
        stops the process tree before it propagates: the engine runs in a session of its own, which the terminal's
        Ctrl+C never reaches, so it went on computing (and writing into a working folder the caller then removed).
        """
        try:
            while True:
                code = self.poll(onProgress, onLog)
                if code is not None:
                    return code
                if idle is not None:
                    idle()
                if shouldCancel is not None and not self.cancelled and shouldCancel():
                    self.cancel()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=interval)
        except BaseException:
            self.kill()
            raise

    @property
    def stderr(self) -> str:
        """Everything the process wrote on stderr so far."""
        return "".join(self._stderr)

    def cancel(self, timeout: float = 5.0) -> None:
        """Stop the process and all its descendants: politely first, then by force after ``timeout`` s.

        Returns at once: the waiting and the forced kill happen on a background thread, so a GUI calling this
        stays responsive; :meth:`poll` reports the end as usual.
        """
        if self.cancelled:
            return
        self.cancelled = True
        if self._process.poll() is not None and sys.platform == "win32":
            return
        self._killer = threading.Thread(target=killProcessTree, args=(self._process, timeout), daemon=True)
        self._killer.start()

    def kill(self, timeout: float = 2.0) -> None:
        """Stop the process tree now and wait for it (e.g. when Slicer quits: no thread outlives the caller)."""
        self.cancelled = True
        if self._process.poll() is None or sys.platform != "win32":
            killProcessTree(self._process, timeout)

    def _fromStderr(self, item: tuple[str, str]) -> None:
        self._stderr.append(item[1])
        self._lines.put(item)

    @staticmethod
    def _pump(stream, name: str, sink) -> None:
        for line in iter(stream.readline, ""):
            sink((name, line))
        stream.close()


def killProcessTree(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """Terminate ``process`` and every process it started."""
    if sys.platform == "win32":
        # taskkill /T walks the tree of child processes, which Windows does not kill with the parent.
        subprocess.run(
            ["taskkill", "/F", "/T", "/PID", str(process.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
        return
    try:
        group = os.getpgid(process.pid)
    except ProcessLookupError:
        group = process.pid  # the leader exited; its group may still hold children
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if not _groupAlive(group):
            return


def _groupAlive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
