"""Errors a user can cause and fix: the command line prints them as one line, no traceback."""

from __future__ import annotations


def one_line(text: object) -> str:
    """``text`` on a single line: its non-blank lines joined by ``"; "``, whitespace runs collapsed.

    Library messages (nibabel, torch, yaml) often continue over several lines; a user error must
    stay the one ``plkd: error: …`` line that scripts and the Slicer module parse.
    """
    lines = [" ".join(line.split()) for line in str(text).splitlines()]
    return "; ".join(line for line in lines if line)


class PLKDError(Exception):
    """Base class of every error caused by input, options or files, not by a bug.

    Its message is always one line (see :func:`one_line`), whatever text it was built from.
    """

    def __str__(self) -> str:
        return one_line(super().__str__())


class InputError(PLKDError):
    """An input volume, mask or label map is missing, unreadable or unusable."""


class OutputError(PLKDError):
    """An output location cannot be written (a file where a folder is needed, read-only, ...)."""


class BundleError(PLKDError):
    """A model bundle is missing, malformed, tampered with or incompatible."""


class ConfigError(PLKDError):
    """A configuration file or ``--set`` override is invalid."""


class TrainingError(PLKDError):
    """Training cannot go on (e.g. the loss became NaN): a data or settings problem, not a bug."""


def check_seed(seed: int, what: str = "--seed") -> int:
    """``seed`` as an int, or :class:`PLKDError` when numpy cannot seed with it (a negative number: numpy's
    ``SeedSequence`` raised a ``ValueError`` traceback)."""
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise PLKDError(f"{what} must be a whole number ≥ 0 (a random seed), not {seed}")
    return int(seed)
