"""The state machine that drives Apply <-> Cancel and the progress bar of one inference run.

Idle -> Starting -> Running -> Importing -> Done, with Cancelling and Failed on the way; Done, Failed and
Idle may start a new run. Installing (pip at work) is busy too: on Slicer 5.10 pip runs while Slicer keeps
processing clicks, and a second Apply or Reinstall must not start a nested installation or a run.
Refused transitions raise, so a double click or a late callback cannot put the widget into an impossible state
(e.g. importing results of a run the user cancelled).
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class RunState(enum.Enum):
    """States of one run."""

    IDLE = "Idle"
    STARTING = "Starting"
    RUNNING = "Running"
    IMPORTING = "Importing"
    CANCELLING = "Cancelling"
    FAILED = "Failed"
    DONE = "Done"
    INSTALLING = "Installing"


ALLOWED_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.IDLE: frozenset({RunState.STARTING, RunState.INSTALLING}),
    RunState.STARTING: frozenset({RunState.RUNNING, RunState.CANCELLING, RunState.FAILED}),
    RunState.RUNNING: frozenset({RunState.IMPORTING, RunState.CANCELLING, RunState.FAILED}),
    RunState.IMPORTING: frozenset({RunState.DONE, RunState.FAILED}),
    RunState.CANCELLING: frozenset({RunState.IDLE, RunState.FAILED}),
    RunState.FAILED: frozenset({RunState.IDLE, RunState.STARTING, RunState.INSTALLING}),
    RunState.DONE: frozenset({RunState.IDLE, RunState.STARTING, RunState.INSTALLING}),
    RunState.INSTALLING: frozenset({RunState.IDLE, RunState.FAILED}),
}

#: States in which a run is in progress: the Apply button shows "Cancel".
BUSY_STATES = frozenset(
    {RunState.STARTING, RunState.RUNNING, RunState.IMPORTING, RunState.CANCELLING, RunState.INSTALLING}
)


class TransitionError(RuntimeError):
    """A transition that the state machine does not allow."""


class RunStateMachine:
    """Current state plus listeners called as ``listener(old, new)`` after each transition."""

    def __init__(self) -> None:
        self.state = RunState.IDLE
        self._listeners: list[Callable[[RunState, RunState], None]] = []

    @property
    def busy(self) -> bool:
        """True while a run is in progress."""
        return self.state in BUSY_STATES

    def canTransition(self, new: RunState) -> bool:
        """Whether ``new`` may follow the current state."""
        return new in ALLOWED_TRANSITIONS[self.state]

    def transition(self, new: RunState) -> None:
        """Move to ``new`` or raise :class:`TransitionError`."""
        if not self.canTransition(new):
            raise TransitionError(f"cannot go from {self.state.value} to {new.value}")
        old, self.state = self.state, new
        for listener in list(self._listeners):
            listener(old, new)

    def addListener(self, listener: Callable[[RunState, RunState], None]) -> None:
        """Call ``listener(old, new)`` after every transition."""
        self._listeners.append(listener)
