"""Slices for people to read: any input reoriented to RAS, drawn in the radiological convention.

Every picture of a scan that ``plkd`` draws goes through here, so orientation is decided once:

- the volume is reoriented to the closest RAS+ voxel order (:func:`nibabel.orientations`;
  LPS, permuted or oblique inputs alike, without resampling), so array axis 0 runs towards the
  patient's Right, axis 1 Anterior, axis 2 Superior;
- slices are drawn in millimetres (``extent`` from the voxel size, equal aspect), so thick
  slices look thick, and in the **radiological convention**: the patient's right on the
  image's left (axial and coronal), anterior on the left (sagittal), head up (coronal,
  sagittal), with the orientation letters written on every panel;
- a finding is marked by a ring centred on its RAS position — never a filled dot — so the
  lesion itself stays visible.

Display coordinates ``(u, v)`` of a panel are in mm along the canonical array axes
(voxel index times voxel size); :meth:`RasVolume.display_point` maps RAS mm to them exactly
(through the inverse affine), which is what keeps rings on their lesions for oblique inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from nibabel import orientations

#: For each view: the normal axis, the horizontal and vertical display axes (canonical RAS
#: array axes), whether the horizontal axis is flipped (larger coordinate on the left), and the
#: letters at the left, right, top and bottom edges.
VIEWS: dict[str, tuple[int, int, int, bool, tuple[str, str, str, str]]] = {
    "axial": (2, 0, 1, True, ("R", "L", "A", "P")),
    "coronal": (1, 0, 2, True, ("R", "L", "S", "I")),
    "sagittal": (0, 1, 2, True, ("A", "P", "S", "I")),
}
_NORMAL_VIEW = {2: "axial", 1: "coronal", 0: "sagittal"}
_AXIS_WORD = {2: "S", 1: "A", 0: "R"}


@dataclass
class RasVolume:
    """A volume in (closest) RAS+ voxel order: ``data`` ``(X, Y, Z)``, voxel-to-RAS ``affine`` (4×4, mm)."""

    data: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along the three array axes in mm."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def to_voxel(self, ras: Sequence[float]) -> np.ndarray:
        """Continuous voxel coordinates ``(3,)`` of a RAS point in mm."""
        inv = np.linalg.inv(self.affine)
        return inv[:3, :3] @ np.asarray(ras, dtype=np.float64) + inv[:3, 3]

    def slice_view(self) -> str:
        """The acquisition plane: the view normal to the thickest voxel axis (axial when isotropic)."""
        sp = self.spacing
        return _NORMAL_VIEW[int(np.argmax(sp))] if np.ptp(sp) > 1e-3 else "axial"

    def slice_index(self, view: str, ras: Sequence[float]) -> int:
        """The slice of ``view`` holding a RAS point (clipped to the volume)."""
        normal = VIEWS[view][0]
        k = int(np.round(self.to_voxel(ras)[normal]))
        return int(np.clip(k, 0, self.data.shape[normal] - 1))

    def display_point(self, view: str, ras: Sequence[float]) -> tuple[float, float]:
        """Panel coordinates ``(u, v)`` in mm of a RAS point."""
        _, h, v, _, _ = VIEWS[view]
        vox = self.to_voxel(ras)
        sp = self.spacing
        return float(vox[h] * sp[h]), float(vox[v] * sp[v])

    def slice_position_mm(self, view: str, index: int) -> float:
        """World coordinate (R, A or S, mm) of slice ``index`` of ``view`` at the volume's centre."""
        normal = VIEWS[view][0]
        centre = (np.asarray(self.data.shape, dtype=np.float64) - 1) / 2
        centre[normal] = index
        return float((self.affine[:3, :3] @ centre + self.affine[:3, 3])[normal])

    def slice_label(self, view: str, index: int) -> str:
        """``"S +12.0 mm"``-style position of a slice (with its thickness when the voxels are anisotropic)."""
        normal = VIEWS[view][0]
        pos = self.slice_position_mm(view, index)
        word = {"S": ("S", "I"), "A": ("A", "P"), "R": ("R", "L")}[_AXIS_WORD[normal]]
        text = f"{word[0] if pos >= 0 else word[1]} {abs(pos):.1f} mm"
        if np.ptp(self.spacing) > 1e-3:
            text += f" ({self.spacing[normal]:.1f} mm slice)"
        return text


def to_ras(data: np.ndarray, affine: np.ndarray) -> RasVolume:
    """Reorient ``data`` (3-D, any voxel order) to the closest RAS+ order without resampling."""
    affine = np.asarray(affine, dtype=np.float64)
    ornt = orientations.io_orientation(affine)
    change = orientations.ornt_transform(ornt, orientations.axcodes2ornt("RAS"))
    out = orientations.apply_orientation(np.asarray(data), change)
    new_affine = affine @ orientations.inv_ornt_aff(change, np.asarray(data).shape)
    return RasVolume(data=np.ascontiguousarray(out), affine=new_affine)


def display_range(image: np.ndarray) -> tuple[float, float]:
    """Grey-level window: 1st to 99.5th percentile of the non-zero (brain) voxels."""
    vals = image[image != 0] if np.any(image != 0) else image.ravel()
    lo, hi = np.percentile(vals, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def ras_text(ras: Sequence[float]) -> str:
    """``"R 23 A 10 S 5"``: a RAS position in mm with the side named by its letter."""
    pairs = (("R", "L"), ("A", "P"), ("S", "I"))
    return " ".join(f"{p if v >= 0 else n} {abs(v):.0f}" for (p, n), v in zip(pairs, ras, strict=True))


@dataclass
class Ring:
    """A ring to draw: RAS centre (mm), radius (mm), colour and a short label (may be empty)."""

    ras: Sequence[float]
    radius_mm: float
    colour: str
    label: str = ""


def draw_slice(
    ax: Any,
    vol: RasVolume,
    view: str,
    index: int,
    *,
    window: tuple[float, float],
    rings: Sequence[Ring] = (),
    centre_ras: Sequence[float] | None = None,
    half_width_mm: float | None = None,
    letter_size: float = 8,
    linewidth: float = 1.3,
) -> None:
    """Draw slice ``index`` of ``view`` on ``ax`` (radiological convention, mm axes, letters).

    ``centre_ras`` + ``half_width_mm`` zoom onto a square around a point; otherwise the panel
    is cropped to the non-zero part of the slice. ``rings`` are drawn on every slice within
    half a voxel plus their radius of their centre.
    """
    normal, h, v, flip, letters = VIEWS[view]
    sp = vol.spacing
    sl = np.take(vol.data, index, axis=normal)
    # np.take keeps the other two axes in order; transpose so rows run along the vertical axis.
    img = sl.T if h < v else sl
    n_h, n_v = vol.data.shape[h], vol.data.shape[v]
    extent = (-0.5 * sp[h], (n_h - 0.5) * sp[h], -0.5 * sp[v], (n_v - 0.5) * sp[v])
    ax.imshow(
        img,
        cmap="gray",
        vmin=window[0],
        vmax=window[1],
        origin="lower",
        extent=extent,
        aspect="equal",
        interpolation="nearest",
    )
    if centre_ras is not None and half_width_mm is not None:
        cu, cv = vol.display_point(view, centre_ras)
        xlim, ylim = (cu - half_width_mm, cu + half_width_mm), (cv - half_width_mm, cv + half_width_mm)
    else:
        nz = np.argwhere(img != 0)
        if nz.size:
            (r0, c0), (r1, c1) = nz.min(axis=0), nz.max(axis=0)
            pad = 4.0
            xlim = (c0 * sp[h] - pad, c1 * sp[h] + pad)
            ylim = (r0 * sp[v] - pad, r1 * sp[v] + pad)
        else:
            xlim, ylim = extent[:2], extent[2:]
    ax.set_xlim(*(xlim[::-1] if flip else xlim))  # flipped: larger R (or A) on the left
    ax.set_ylim(*ylim)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("black")
    from matplotlib.patches import Circle

    for ring in rings:
        depth = abs(vol.to_voxel(ring.ras)[normal] - index) * sp[normal]
        if depth > ring.radius_mm + 0.5 * sp[normal]:
            continue
        u, w = vol.display_point(view, ring.ras)
        ax.add_patch(Circle((u, w), ring.radius_mm, fill=False, edgecolor=ring.colour, linewidth=linewidth))
        if ring.label:  # above the ring, clear of the lesion
            ax.text(u, w + 1.15 * ring.radius_mm, ring.label, color=ring.colour, fontsize=letter_size,
                    fontweight="bold", ha="center", va="bottom")  # fmt: skip
    kw = {"color": "#ffd24d", "fontsize": letter_size, "fontweight": "bold", "transform": ax.transAxes}
    ax.text(0.02, 0.5, letters[0], ha="left", va="center", **kw)
    ax.text(0.98, 0.5, letters[1], ha="right", va="center", **kw)
    ax.text(0.5, 0.98, letters[2], ha="center", va="top", **kw)
    ax.text(0.5, 0.02, letters[3], ha="center", va="bottom", **kw)


def ring_radius_mm(volume_mm3: float | None, minimum: float = 3.0, gap: float = 2.0) -> float:
    """A ring's radius: the lesion's sphere-equivalent radius plus a gap, at least ``minimum`` mm."""
    r = (3.0 * float(volume_mm3) / (4.0 * np.pi)) ** (1.0 / 3.0) if volume_mm3 else 0.0
    return max(minimum, r + gap)
