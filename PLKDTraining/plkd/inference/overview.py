"""Pictures for people: an overview of a scan's findings and a gallery of its candidates.

Both are drawn in the radiological convention with orientation letters and mm geometry
(:mod:`plkd.display`), whatever the input's voxel order. Findings are ringed, never covered:

- overview: the acquisition-plane slices through the findings (position in mm), each finding
  numbered on its ring, then a zoomed inset per finding; ring colours: green = a true
  microbleed found, red = one missed, yellow = a detection with no microbleed within 5 mm
  (false alarm); without a reference, every detection is drawn in cyan;
- gallery: one tile per candidate with its id, RAS position, probability, kept/rejected, its
  region when the prediction carries one and, when the truth is known (``plkd demo``), whether
  a true microbleed lies within 5 mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plkd.display import Ring, display_range, draw_slice, ras_text, ring_radius_mm, to_ras
from plkd.figures import pyplot, save_figure

FOUND, MISSED, FALSE_ALARM, DETECTED, REJECTED = "#2ecc40", "#ff4136", "#ffdc00", "#39cccc", "#aaaaaa"
KIND_COLOUR = {"found": FOUND, "missed": MISSED, "false_alarm": FALSE_ALARM, "detected": DETECTED}
KIND_WORD = {"found": "found", "missed": "MISSED", "false_alarm": "false alarm", "detected": "detected"}


@dataclass
class Finding:
    """One thing to show: RAS centre (mm), volume (mm³), kind (a key of :data:`KIND_COLOUR`) and details."""

    ras: Sequence[float]
    volume_mm3: float
    kind: str
    details: str = ""


def _grid(plt: Any, n: int, cols: int, size: float) -> tuple[Any, Any]:
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.9), squeeze=False, facecolor="black")
    for ax in axes.ravel():
        ax.axis("off")
    return fig, axes


def choose_slices(vol: Any, view: str, findings: Sequence[Finding], limit: int = 8) -> list[int]:
    """Slices holding the finding centres (most findings first, up to ``limit``), in order."""
    if not findings:
        n = vol.data.shape[{"axial": 2, "coronal": 1, "sagittal": 0}[view]]
        return sorted({int(round(v)) for v in np.linspace(0.3 * n, 0.7 * n, 4)})
    counts: dict[int, int] = {}
    for f in findings:
        k = vol.slice_index(view, f.ras)
        counts[k] = counts.get(k, 0) + 1
    best = sorted(counts, key=lambda k: (-counts[k], k))[:limit]
    return sorted(best)


def write_overview(
    path: str | Path, image: np.ndarray, affine: np.ndarray, findings: Sequence[Finding], **kw: Any
) -> Path:
    """Write :func:`overview_figure` as a PNG (atomically); returns the path."""
    return save_figure(overview_figure(image, affine, findings, **kw), path, dpi=100, facecolor="black")


def overview_figure(
    image: np.ndarray,
    affine: np.ndarray,
    findings: Sequence[Finding],
    *,
    title: str = "",
    inset_half_width_mm: float = 15.0,
    max_insets: int = 16,
) -> Any:
    """Slices through the findings with numbered rings, then one zoomed inset per finding.

    ``image`` is the scan as stored (any voxel order) with its voxel-to-RAS ``affine``;
    ``findings`` give RAS centres in mm. Returns the matplotlib figure.
    """
    plt = pyplot()
    vol = to_ras(image, affine)
    view = vol.slice_view()
    window = display_range(vol.data)
    rings = [
        Ring(f.ras, ring_radius_mm(f.volume_mm3, minimum=4.0), KIND_COLOUR.get(f.kind, DETECTED), str(i + 1))
        for i, f in enumerate(findings)
    ]
    slices = choose_slices(vol, view, findings)
    insets = list(enumerate(findings))[:max_insets]
    cols = 4
    n_rows_slices = int(np.ceil(len(slices) / cols))
    n_rows_insets = int(np.ceil(len(insets) / cols)) if insets else 0
    fig, axes = _grid(plt, cols * (n_rows_slices + n_rows_insets), cols, 3.2)
    flat = axes.ravel()
    for ax, k in zip(flat[: len(slices)], slices, strict=False):
        ax.axis("on")
        draw_slice(ax, vol, view, k, window=window, rings=rings, linewidth=1.1)
        ax.set_title(f"{view} {vol.slice_label(view, k)}", color="white", fontsize=8)
    start = cols * n_rows_slices
    for ax, (i, f) in zip(flat[start:], insets, strict=False):
        ax.axis("on")
        k = vol.slice_index(view, f.ras)
        draw_slice(ax, vol, view, k, window=window, rings=[rings[i]], centre_ras=f.ras,
                   half_width_mm=inset_half_width_mm, linewidth=1.6)  # fmt: skip
        text = f"{i + 1}: {KIND_WORD.get(f.kind, f.kind)}  {ras_text(f.ras)}"
        ax.set_title(text + (f"\n{f.details}" if f.details else ""), color=rings[i].colour, fontsize=7)
    kinds = {f.kind for f in findings}
    if kinds & {"found", "missed", "false_alarm"}:
        legend = "rings: green = found, red = missed, yellow = false alarm"
    else:
        legend = "rings: cyan = detected microbleed"
    legend += f"   |   radiological {view} view: patient's right on the image's left"
    legend += f"; insets {2 * inset_half_width_mm:.0f} mm wide"
    if len(findings) > len(insets):
        legend += f" (the first {len(insets)} of {len(findings)} findings)"
    fig.suptitle(f"{title}\n{legend}" if title else legend, color="white", fontsize=9)
    fig.tight_layout()
    return fig


def place(cand: dict[str, Any]) -> str:
    """``"thalamus (deep)"``-style text from the optional ``region``/``location`` fields ("" when absent)."""
    region, location = cand.get("region"), cand.get("location")
    location = location if location and location != "unknown" else None
    if region and location:
        return f"{region} ({location})"
    return str(region or location or "")


def candidate_finding(cand: dict[str, Any], truth_ras: np.ndarray | None, max_distance_mm: float = 5.0) -> Finding:
    """A gallery tile's content: kind from kept/rejected and, with truth, whether it is true."""
    ras = cand["center_ras"]
    true = None
    if truth_ras is not None:
        d = np.linalg.norm(np.asarray(truth_ras, dtype=np.float64).reshape(-1, 3) - np.asarray(ras), axis=1)
        true = bool(d.size and d.min() <= max_distance_mm)
    kept = bool(cand.get("kept"))
    if true is None:
        kind = "detected" if kept else "rejected"
    else:
        kind = {(True, True): "found", (True, False): "false_alarm", (False, True): "missed"}.get(
            (kept, true), "rejected"
        )
    return Finding(ras, float(cand.get("volume_mm3") or 0.0), kind)


def write_gallery(
    path: str | Path, image: np.ndarray, affine: np.ndarray, candidates: Sequence[dict[str, Any]], **kw: Any
) -> Path:
    """Write :func:`gallery_figure` as a PNG (atomically); returns the path."""
    return save_figure(gallery_figure(image, affine, candidates, **kw), path, dpi=110, facecolor="black")


def gallery_figure(
    image: np.ndarray,
    affine: np.ndarray,
    candidates: Sequence[dict[str, Any]],
    *,
    truth_ras: np.ndarray | None = None,
    half_width_mm: float = 12.0,
    limit: int = 48,
) -> Any:
    """One tile per candidate (most probable first): zoom on its acquisition-plane slice, ring, facts.

    Each tile's title gives ``#id``, probability, kept/rejected, the RAS position (mm), the
    region (when the candidate has one) and, with ``truth_ras`` (``(n, 3)`` RAS mm of the true
    microbleeds), whether a true microbleed lies within 5 mm ("true"/"false").
    """
    plt = pyplot()
    vol = to_ras(image, affine)
    view = vol.slice_view()
    window = display_range(vol.data)
    shown = sorted(candidates, key=lambda c: -float(c.get("probability", 0.0)))[:limit]
    cols = max(1, min(6, len(shown)))
    fig, axes = _grid(plt, max(1, len(shown)), cols, 2.0)
    for ax, cand in zip(axes.ravel(), shown, strict=False):
        f = candidate_finding(cand, truth_ras)
        colour = KIND_COLOUR.get(f.kind, REJECTED)
        ax.axis("on")
        k = vol.slice_index(view, f.ras)
        draw_slice(ax, vol, view, k, window=window, rings=[Ring(f.ras, ring_radius_mm(f.volume_mm3), colour)],
                   centre_ras=f.ras, half_width_mm=half_width_mm, letter_size=6, linewidth=1.2)  # fmt: skip
        verdict = "kept" if cand.get("kept") else "rejected"
        lines = [f"#{cand['id']} p={float(cand['probability']):.2f} {verdict}", ras_text(f.ras)]
        extra = [where] if (where := place(cand)) else []
        if truth_ras is not None:
            extra.append("true" if f.kind in ("found", "missed") else "false")
        if extra:
            lines.append(", ".join(extra))
        ax.set_title("\n".join(lines), color=colour, fontsize=6.5)
        for side in ax.spines.values():
            side.set_edgecolor(colour)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no candidates", color="white", ha="center", va="center")
    note = "radiological view: patient's right on the left; ring colour: green kept+true, yellow kept+false, "
    note += "red rejected+true, grey rejected" if truth_ras is not None else "cyan kept, grey rejected"
    fig.suptitle(
        f"candidates, most probable first ({len(shown)} of {len(candidates)})\n{note}", color="white", fontsize=8
    )
    fig.tight_layout()
    return fig
