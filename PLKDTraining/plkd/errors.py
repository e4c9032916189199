"""Errors a user can cause and fix: the command line prints them as one line, no traceback."""


class PLKDError(Exception):
    """Base class of every error caused by input, options or files, not by a bug."""


class InputError(PLKDError):
    """An input volume, mask or label map is missing, unreadable or unusable."""


class BundleError(PLKDError):
    """A model bundle is missing, malformed, tampered with or incompatible."""


class ConfigError(PLKDError):
    """A configuration file or ``--set`` override is invalid."""
