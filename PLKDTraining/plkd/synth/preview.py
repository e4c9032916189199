"""A PNG of a few axial slices of a synthetic subject, with label contours and mimic markers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from plkd.figures import pyplot, save_figure
from plkd.synth.subject import SynthSubject

_MARKERS = {"vein": ("c", "+"), "calcification": ("y", "x"), "iron": ("orange", "1"), "air_tissue_dropout": ("m", "v")}


def pick_slices(subject: SynthSubject, n: int = 6) -> list[int]:
    """Axial slices through as many microbleeds as possible, topped up with evenly spaced slices."""
    depth = subject.image.shape[2]
    chosen: list[int] = []
    for mb in sorted(subject.microbleeds, key=lambda m: -m["diameter_mm"]):
        k = int(mb["center_voxel"][2])
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


def _zoom_targets(subject: SynthSubject) -> list[tuple[str, list[int]]]:
    """Up to two microbleeds and one through-plane vein for unannotated close-ups."""
    out = [(f"microbleed {m['diameter_mm']:.1f} mm", m["center_voxel"]) for m in subject.microbleeds[:2]]
    shape = np.array(subject.image.shape)
    for m in subject.mimics:
        v = np.array(m["center_voxel"])
        if m["kind"] == "vein" and m.get("orientation") == "through-plane" and np.all((v >= 0) & (v < shape)):
            out.append(("vein (not labelled)", m["center_voxel"]))
            break
    return out


def write_preview(
    subject: SynthSubject, path: str | os.PathLike[str], slices: list[int] | None = None, title: str = ""
) -> Path:
    """Write a PNG of axial slices (radiological view: patient right on the left of each panel)."""
    plt = pyplot()

    img, lab, mask = subject.image.data, subject.label.data, subject.mask.data > 0
    sp = subject.image.spacing
    ks = slices if slices is not None else pick_slices(subject)
    vals = img[mask]
    vmin, vmax = np.percentile(vals, [0.5, 99.5]) if vals.size else (0.0, 1.0)
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
    extent = (0.0, img.shape[0] * sp[0], 0.0, img.shape[1] * sp[1])
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, vox) in zip(axes[rows:].ravel(), zooms, strict=False):
        # Unannotated close-ups, so the dots themselves can be judged.
        half = np.maximum(np.round(15.0 / sp).astype(int), 1)
        lo = np.maximum(np.array(vox) - half, 0)
        hi = np.minimum(np.array(vox) + half + 1, np.array(img.shape))
        crop = img[lo[0] : hi[0], lo[1] : hi[1], vox[2]]
        ext = (lo[0] * sp[0], hi[0] * sp[0], lo[1] * sp[1], hi[1] * sp[1])
        ax.imshow(crop.T, cmap="gray", origin="lower", vmin=vmin, vmax=vmax, extent=ext, interpolation="nearest")
        ax.set_title(f"close-up: {name} (centre, slice {vox[2]})", color="white", fontsize=8)
    for ax, k in zip(axes[:rows].ravel(), ks, strict=False):
        ax.imshow(
            img[:, :, k].T, cmap="gray", origin="lower", vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest"
        )
        if lab[:, :, k].any():
            # Outline a ring around the label so the dark dot itself stays visible.
            ring = ndimage.binary_dilation(lab[:, :, k] > 0, iterations=2)
            ax.contour(
                (np.arange(img.shape[0]) + 0.5) * sp[0],
                (np.arange(img.shape[1]) + 0.5) * sp[1],
                ring.T,
                levels=[0.5],
                colors="red",
                linewidths=0.8,
            )
        for m in subject.mimics:
            v = m["center_voxel"]
            if abs(v[2] - k) <= max(1, int(round(2.0 / sp[2]))) and m["kind"] in _MARKERS:
                colour, marker = _MARKERS[m["kind"]]
                ax.plot((v[0] + 0.5) * sp[0], (v[1] + 0.5) * sp[1] + 4.0, marker=marker, color=colour, ms=5, mew=0.8)
        n_cmb = sum(1 for mb in subject.microbleeds if mb["center_voxel"][2] == k)
        ax.set_title(f"slice {k}" + (f"  ({n_cmb} CMB)" if n_cmb else ""), color="white", fontsize=9)
    fig.suptitle(
        title
        or f"synthetic subject, seed {subject.seed}: red = microbleed label; markers above mimics "
        "(cyan + vein, yellow x calcification, orange iron, magenta dropout)",
        color="white",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, path, dpi=110, facecolor="black")
