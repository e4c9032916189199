"""Sub-commands of ``plkd``: each module defines ``register(subparsers)`` and sets ``func``."""
