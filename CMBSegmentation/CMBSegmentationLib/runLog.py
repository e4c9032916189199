"""What the user sees of a run: one progress bar over all stages, the elapsed time, and a log of every line.

Qt-free: the widget shows :class:`RunLog` lines in its log panel and :class:`OverallProgress` in its progress bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from CMBSegmentationLib.progressParsing import ProgressEvent

#: Share of the whole run of each stage of ``plkd predict``, in the order the engine runs them (measured on the
#: shipped model: screening and segmentation take most of the time). A stage not listed keeps the bar where it is.
STAGE_WEIGHTS: dict[str, float] = {"load": 0.05, "preprocess": 0.15, "screen": 0.35, "segment": 0.40, "write": 0.05}

#: Prefixes of the lines that are warnings: Python's logging as the engine configures it, and warnings.warn.
WARNING_PREFIXES = ("WARNING:", "plkd: warning:")


class OverallProgress:
    """Map the engine's per-stage progress onto one fraction of the whole run, which never goes back."""

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        self.weights = dict(STAGE_WEIGHTS if weights is None else weights)
        total = sum(self.weights.values())
        self._start: dict[str, float] = {}
        offset = 0.0
        for stage, weight in self.weights.items():
            self._start[stage] = offset / total
            offset += weight
        self._total = total
        self.fraction = 0.0

    def update(self, event: ProgressEvent) -> float:
        """Account for ``event``; return the fraction of the whole run done (0..1)."""
        stage = event.stage
        if stage in self._start:
            within = event.fraction if event.fraction is not None else 0.0
            value = self._start[stage] + within * self.weights[stage] / self._total
            self.fraction = max(self.fraction, min(value, 1.0))
        return self.fraction


def formatElapsed(seconds: float) -> str:
    """``75.4`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``."""
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def isWarning(line: str) -> bool:
    """Whether an output line of the engine is a warning the user should see."""
    text = line.strip()
    return text.startswith(WARNING_PREFIXES) or ("Warning:" in text and not text.startswith("{"))


class RunLog:
    """Lines of one run, each stamped with the time since the start, and the warnings among them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, maxLines: int = 5000) -> None:
        self._clock = clock
        self.started = clock()
        self.lines: list[str] = []
        self.warnings: list[str] = []
        self.maxLines = maxLines

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return self._clock() - self.started

    def add(self, line: str, warning: bool | None = None) -> str:
        """Record ``line``; return it as shown in the log (``[m:ss] line``). ``warning`` None: decided by the text."""
        line = line.rstrip()
        shown = f"[{formatElapsed(self.elapsed)}] {line}"
        if warning is None:
            warning = isWarning(line)
        if warning:
            self.warnings.append(line)
        self.lines.append(shown)
        if len(self.lines) > self.maxLines:  # a runaway library must not fill the memory
            del self.lines[: len(self.lines) - self.maxLines]
        return shown

    def addNotes(self, notes: list[str]) -> list[str]:
        """Record the engine's JSON notes as warnings (skipping those already seen as lines); return the shown ones."""
        shown = []
        for note in notes:
            if any(note in w for w in self.warnings):
                continue
            shown.append(self.add(f"note: {note}", warning=True))
        return shown
