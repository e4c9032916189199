"""Parse the JSON-lines progress that ``plkd predict --progress jsonl`` writes on stdout.

Each line is one object, e.g. ``{"stage": "screen", "done": 1, "total": 3}`` or
``{"stage": "segment", "message": "wrote file"}``. A library may still print something else on stdout, and
a pipe may deliver half a line: such input is never an error, it is simply not progress.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report of the engine."""

    stage: str
    done: int | None = None
    total: int | None = None
    message: str | None = None

    @property
    def fraction(self) -> float | None:
        """Completed fraction of the stage in [0, 1], or None when the event carries no counts."""
        if self.done is None or not self.total:
            return None
        return min(max(self.done / self.total, 0.0), 1.0)


def parseProgressLine(line: str) -> ProgressEvent | None:
    """Return the event of one stdout line, or None when the line is not a progress object."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("stage"), str | type(None)):
        return None
    done, total, message = obj.get("done"), obj.get("total"), obj.get("message")
    if done is None and total is None and message is None:
        return None
    if not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in (done, total)):
        return None
    return ProgressEvent(
        stage=obj.get("stage") or "",
        done=done,
        total=total,
        message=message if isinstance(message, str) else None,
    )


class LineSplitter:
    """Reassemble lines from chunks of a pipe: a partial line waits for the rest of it."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, chunk: str) -> list[str]:
        """Add ``chunk`` and return the lines it completed (without line endings)."""
        self._pending += chunk.replace("\r\n", "\n")
        *lines, self._pending = self._pending.split("\n")
        return lines

    def flush(self) -> list[str]:
        """Return what is left when the stream ends (a last line without newline)."""
        rest, self._pending = self._pending, ""
        return [rest] if rest.strip() else []


def errorMessageFromStderr(stderr: str) -> str | None:
    """The ``plkd: error: ...`` line the engine prints for a user mistake, without its prefix, if any."""
    for line in reversed(stderr.splitlines()):
        if line.startswith("plkd: error:"):
            return line[len("plkd: error:") :].strip()
    return None
