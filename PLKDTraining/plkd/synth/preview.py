"""A PNG of a few axial slices of a synthetic subject (radiological view), microbleeds ringed, mimics marked."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from plkd.display import Ring, draw_slice, to_ras
from plkd.figures import pyplot, save_figure
from plkd.synth.subject import SynthSubject

_MARKERS = {"vein": ("c", "+"), "calcification": ("y", "x"), "iron": ("orange", "1"), "air_tissue_dropout": ("m", "v")}


def pick_slices(subject: SynthSubject, n: int = 6) -> list[int]:
    """Axial slices (of the RAS-reoriented volume) through as many microbleeds as possible, topped up evenly."""
    vol = to_ras(subject.image.data, subject.image.affine)
    depth = vol.data.shape[2]
    chosen: list[int] = []
    for mb in sorted(subject.microbleeds, key=lambda m: -m["diameter_mm"]):
        k = vol.slice_index("axial", mb["center_ras"])
        if all(abs(k - c) > 2 for c in chosen):
            chosen.append(k)
        if len(chosen) >= n:
            break
    for k in np.linspace(0.3 * depth, 0.75 * depth, n).astype(int):
        if len(chosen) >= n:
            break
        if all(abs(int(k) - c) > 4 for c in chosen):
            chosen.append(int(k))
    return sorted(chosen)


def _zoom_targets(subject: SynthSubject) -> list[tuple[str, list[float]]]:
    """Up to two microbleeds and one through-plane vein (RAS centres) for unannotated close-ups."""
    out = [(f"microbleed {m['diameter_mm']:.1f} mm", m["center_ras"]) for m in subject.microbleeds[:2]]
    shape = np.array(subject.image.shape)
    for m in subject.mimics:
        v = np.array(m["center_voxel"])
        if m["kind"] == "vein" and m.get("orientation") == "through-plane" and np.all((v >= 0) & (v < shape)):
            out.append(("vein (not labelled)", m["center_ras"]))
            break
    return out


def write_preview(
    subject: SynthSubject, path: str | os.PathLike[str], slices: list[int] | None = None, title: str = ""
) -> Path:
    """Write a PNG of axial slices in the radiological convention (patient's right on the left, letters).

    Microbleeds are ringed (red), mimics marked just above their centre, and up to three
    close-ups are left unannotated so the dots themselves can be judged. ``slices`` index the
    axial slices of the volume reoriented to RAS.
    """
    plt = pyplot()
    vol = to_ras(subject.image.data, subject.image.affine)
    mask = to_ras(subject.mask.data, subject.mask.affine).data > 0
    vals = vol.data[mask]
    window = tuple(np.percentile(vals, [0.5, 99.5])) if vals.size else (0.0, 1.0)
    ks = slices if slices is not None else pick_slices(subject)
    zooms = _zoom_targets(subject)
    cols = max(min(3, len(ks)), len(zooms), 1)
    rows = int(np.ceil(len(ks) / cols))
    zoom_rows = 1 if zooms else 0
    fig, axes = plt.subplots(
        rows + zoom_rows,
        cols,
        figsize=(4.2 * cols, 4.6 * rows + 3.4 * zoom_rows),
        squeeze=False,
        facecolor="black",
        gridspec_kw={"height_ratios": [4.6] * rows + [3.4] * zoom_rows},
    )
    for ax in axes.ravel():
        ax.axis("off")
    rings = [Ring(m["center_ras"], 0.5 * m["diameter_mm"] + 2.0, "red") for m in subject.microbleeds]
    sp = vol.spacing
    for ax, (name, ras) in zip(axes[rows:].ravel(), zooms, strict=False):
        ax.axis("on")
        k = vol.slice_index("axial", ras)
        draw_slice(ax, vol, "axial", k, window=window, centre_ras=ras, half_width_mm=15.0)
        ax.set_title(f"close-up: {name} (centre; {vol.slice_label('axial', k)})", color="white", fontsize=8)
    for ax, k in zip(axes[:rows].ravel(), ks, strict=False):
        ax.axis("on")
        draw_slice(ax, vol, "axial", k, window=window, rings=rings, linewidth=0.9)
        for m in subject.mimics:
            depth = abs(vol.to_voxel(m["center_ras"])[2] - k) * sp[2]
            if depth <= max(sp[2], 2.0) and m["kind"] in _MARKERS:
                colour, marker = _MARKERS[m["kind"]]
                u, v = vol.display_point("axial", m["center_ras"])
                ax.plot(u, v + 4.0, marker=marker, color=colour, ms=5, mew=0.8)
        n_cmb = sum(1 for mb in subject.microbleeds if vol.slice_index("axial", mb["center_ras"]) == k)
        ax.set_title(
            f"axial {vol.slice_label('axial', k)}" + (f"  ({n_cmb} CMB)" if n_cmb else ""), color="white", fontsize=9
        )
    fig.suptitle(
        (title or f"synthetic subject, seed {subject.seed}: red rings = microbleed labels; markers above mimics "
         "(cyan + vein, yellow x calcification, orange iron, magenta dropout)")
        + "\nradiological view: patient's right on the image's left",
        color="white",
        fontsize=9,
    )  # fmt: skip
    fig.tight_layout()
    return save_figure(fig, path, dpi=110, facecolor="black")
