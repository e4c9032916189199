"""Progress reporting for long work: tqdm bars for people, JSON lines for the Slicer module.

With ``mode="jsonl"`` each update is one JSON object on its own line on stdout, e.g.
``{"stage": "segment", "done": 12, "total": 40}``; everything else (logs, warnings) goes to
stderr so a reader of stdout only ever sees parseable lines.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Literal, TextIO

from tqdm import tqdm

ProgressMode = Literal["tqdm", "jsonl", "none"]


class Progress:
    """Report the progress of named stages.

    >>> p = Progress("none")
    >>> p.start("screen", total=3); p.advance(); p.finish()
    """

    def __init__(self, mode: ProgressMode = "tqdm", stream: TextIO | None = None) -> None:
        if mode not in ("tqdm", "jsonl", "none"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode
        self.stream = stream
        self._bar: tqdm | None = None
        self.stage: str | None = None
        self.done = 0
        self.total = 0
        self._last_emit = 0.0
        #: Fields added to every JSON line, e.g. ``{"scan": 3, "scans": 120}`` during a batch.
        self.context: dict[str, Any] = {}

    def start(self, stage: str, total: int, **extra: Any) -> None:
        """Begin a stage of ``total`` steps (closing the previous one)."""
        self.finish()
        self.stage, self.done, self.total = stage, 0, int(total)
        if self.mode == "tqdm":
            self._bar = tqdm(total=total, desc=stage, file=self.stream or sys.stderr, leave=False, dynamic_ncols=True)
        elif self.mode == "jsonl":
            self._emit(force=True, **extra)

    def advance(self, n: int = 1, **extra: Any) -> None:
        """Mark ``n`` more steps of the current stage as done."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "jsonl":
            self._emit(force=self.done >= self.total, **extra)

    def message(self, text: str, **extra: Any) -> None:
        """A one-off event (e.g. "wrote file"): a JSON line in jsonl mode, a stderr line otherwise."""
        if self.mode == "jsonl":
            self._write({"stage": self.stage, "message": text, **extra})
        elif self.mode == "tqdm":
            tqdm.write(text, file=sys.stderr)

    def finish(self) -> None:
        """Close the current stage."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _emit(self, force: bool = False, **extra: Any) -> None:
        # At most ~10 lines per second: enough for a progress bar, cheap for the reader.
        now = time.monotonic()
        if not force and now - self._last_emit < 0.1:
            return
        self._last_emit = now
        self._write({"stage": self.stage, "done": self.done, "total": self.total, **extra})

    def _write(self, obj: dict[str, Any]) -> None:
        out = self.stream or sys.stdout
        out.write(json.dumps({**obj, **self.context}) + "\n")
        out.flush()
