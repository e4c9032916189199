"""Training logs: one CSV and one curve PNG per stage."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from typing import Any

from plkd.atomic import write_text_atomic
from plkd.figures import pyplot, save_figure


def write_log_csv(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> None:
    """Write log rows (``step``, loss parts, ``lr``, ``time_s``, ...) as CSV, atomically."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(path, buf.getvalue())


def plot_curves(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]], title: str) -> None:
    """Loss parts (and validation loss) against step, plus the learning rate, as a PNG."""
    if not rows:
        return
    plt = pyplot()
    steps = [r["step"] for r in rows]
    skip = {"step", "lr", "time_s"}
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    keys = [k for k in rows[-1] if k not in skip]
    for key in dict.fromkeys(k for r in rows for k in r if k not in skip) or keys:
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=key, marker="o" if key.startswith("val") else None, ms=3)
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax_lr.plot(steps, [r.get("lr", 0.0) for r in rows], color="grey")
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("step")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
