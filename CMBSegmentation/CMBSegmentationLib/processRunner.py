"""Run the engine without blocking Slicer: a Qt timer polls a :class:`BackgroundProcess`.

Callbacks run on Slicer's main thread (the timer's), so they may touch the scene and widgets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import qt

from CMBSegmentationLib.backgroundProcess import BackgroundProcess
from CMBSegmentationLib.inferenceJob import describeFailure, engineEnvironment
from CMBSegmentationLib.progressParsing import ProgressEvent


class ProcessRunner:
    """Start one command; report progress and every line, then ``onFinished(errorMessage or None, cancelled)``."""

    def __init__(
        self,
        argv: Sequence[str],
        onProgress: Callable[[ProgressEvent], None],
        onFinished: Callable[[str | None, bool], None],
        intervalMs: int = 100,
        onLog: Callable[[str, str], None] | None = None,
    ) -> None:
        self.argv = list(argv)
        self._onProgress = onProgress
        self._onFinished = onFinished
        self._onLog = onLog
        self._process: BackgroundProcess | None = None
        self._timer = qt.QTimer()
        self._timer.setInterval(intervalMs)
        self._timer.connect("timeout()", self._poll)

    def start(self) -> None:
        """Start the process (raises OSError when it cannot be started)."""
        logging.info("CMBSegmentation: running %s", " ".join(self.argv))
        self._process = BackgroundProcess(self.argv, env=engineEnvironment())
        self._timer.start()

    @property
    def running(self) -> bool:
        """True until the finished callback was called."""
        return self._timer.isActive()

    def cancel(self) -> None:
        """Kill the whole process tree (returns at once); ``onFinished(None, True)`` follows from the timer."""
        if self._process is not None:
            self._process.cancel()

    def kill(self) -> None:
        """Stop the process tree and wait for it, without calling back (Slicer is quitting)."""
        self._timer.stop()
        if self._process is not None:
            self._process.kill()

    def _poll(self) -> None:
        process = self._process
        if process is None:
            return
        code = process.poll(self._onProgress, self._onLog)
        if code is None:
            return
        self._timer.stop()
        if process.cancelled:
            self._onFinished(None, True)
        elif code != 0:
            self._onFinished(describeFailure(code, process.stderr), False)
        else:
            self._onFinished(None, False)
