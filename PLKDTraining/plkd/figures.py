"""Matplotlib helpers shared by every picture plkd draws (previews, curves, FROC, overviews)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from plkd.atomic import atomic_path


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported lazily: it is slow)."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; safe on servers
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], **savefig_kwargs: Any) -> Path:
    """Save ``fig`` as PNG atomically and close it (also when saving fails)."""
    out = Path(path)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", **savefig_kwargs)
    finally:
        pyplot().close(fig)
    return out
