"""Pictures for people: an overview of slices with coloured contours and a candidate gallery.

Colours in the overview: green = a true microbleed that was found, red = one that was missed,
yellow = a detection with no true microbleed nearby (false alarm). Without a reference, every
detection is drawn in green.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plkd.figures import pyplot, save_figure

FOUND, MISSED, FALSE_ALARM = "#2ecc40", "#ff4136", "#ffdc00"


def _display_range(image: np.ndarray) -> tuple[float, float]:
    vals = image[image != 0] if np.any(image != 0) else image.ravel()
    lo, hi = np.percentile(vals, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def choose_slices(maps: Sequence[np.ndarray], axis: int, limit: int = 12) -> list[int]:
    """Slice indices along ``axis`` that show the most marked voxels (up to ``limit``), sorted."""
    counts = np.zeros(maps[0].shape[axis], dtype=np.int64)
    for m in maps:
        counts += np.count_nonzero(m, axis=tuple(a for a in range(3) if a != axis))
    marked = np.nonzero(counts)[0]
    if marked.size == 0:
        n = maps[0].shape[axis]
        return sorted({int(round(v)) for v in np.linspace(0.2 * n, 0.8 * n, min(limit, 6))})
    if marked.size > limit:
        marked = marked[np.argsort(-counts[marked], kind="stable")[:limit]]
    return sorted(int(v) for v in marked)


def write_overview(
    path: str | Path,
    image: np.ndarray,
    layers: dict[str, np.ndarray],
    spacing: Sequence[float],
    axis: int = 2,
    title: str = "",
) -> Path:
    """Slices of ``image`` along ``axis`` with contours of each layer (``found``/``missed``/``false_alarm``)."""
    plt = pyplot()
    colours = {"found": FOUND, "missed": MISSED, "false_alarm": FALSE_ALARM}
    slices = choose_slices(list(layers.values()) or [np.zeros_like(image)], axis)
    cols = min(4, len(slices))
    rows = int(np.ceil(len(slices) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows + 0.6), squeeze=False)
    lo, hi = _display_range(image)
    sp = [s for a, s in enumerate(spacing) if a != axis]
    for ax in axes.ravel():
        ax.axis("off")
    for ax, k in zip(axes.ravel(), slices, strict=False):
        sl = np.take(image, k, axis=axis).T
        ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=sp[1] / sp[0], interpolation="nearest")
        for name, m in layers.items():
            part = np.take(m, k, axis=axis).T > 0
            if part.any():
                ax.contour(part.astype(float), levels=[0.5], colors=colours.get(name, FOUND), linewidths=1.2)
        ax.set_title(f"slice {k}", fontsize=8)
    legend = "green: found   red: missed   yellow: false alarm" if "missed" in layers else "green: detected"
    fig.suptitle(f"{title}\n{legend}" if title else legend, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def write_gallery(
    path: str | Path,
    image: np.ndarray,
    affine: np.ndarray,
    candidates: Sequence[dict[str, Any]],
    axis: int = 2,
    half_width_mm: float = 12.0,
    limit: int = 48,
) -> Path:
    """One tile per candidate: an in-plane crop at its centre, its probability and kept/rejected."""
    plt = pyplot()
    shown = list(candidates)[:limit]
    cols = max(1, min(8, len(shown)))
    rows = max(1, int(np.ceil(len(shown) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    lo, hi = _display_range(image)
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    inv = np.linalg.inv(affine)
    in_plane = [a for a in range(3) if a != axis]
    for ax, cand in zip(axes.ravel(), shown, strict=False):
        vox = np.round(inv[:3, :3] @ np.asarray(cand["center_ras"]) + inv[:3, 3]).astype(int)
        vox = np.clip(vox, 0, np.asarray(image.shape) - 1)
        sl = np.take(image, vox[axis], axis=axis)
        c = [vox[a] for a in in_plane]
        r = [max(1, int(half_width_mm / spacing[a])) for a in in_plane]
        crop = sl[max(c[0] - r[0], 0) : c[0] + r[0] + 1, max(c[1] - r[1], 0) : c[1] + r[1] + 1]
        aspect = spacing[in_plane[1]] / spacing[in_plane[0]]
        ax.imshow(crop.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect, interpolation="nearest")
        colour = FOUND if cand.get("kept") else "#aaaaaa"
        verdict = "kept" if cand.get("kept") else "rejected"
        ax.set_title(f"#{cand['id']} p={cand['probability']:.2f}\n{verdict}", fontsize=7, color="black")
        for side in ax.spines.values():
            side.set_edgecolor(colour)
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no candidates", ha="center", va="center")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
