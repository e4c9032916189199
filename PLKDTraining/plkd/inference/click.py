"""Segmenting the microbleed a reader clicked (``plkd predict --at-ras``), and matching it with
the candidates of an earlier prediction so that one microbleed is never counted twice.

A reader clicks within a few mm of a microbleed's centre; the microbleed is the darkest spot
there (T2*/SWI hypointensity). :func:`dark_blob` finds that spot on the normalised model grid
and outlines it by intensity: the connected region (the connectivity the metrics use) darker
than half-way between the spot's minimum and the surrounding tissue. The segmenter is run
centred on the spot; its mask is used when it covers the spot and most of its intensity region, the
intensity region otherwise (the reader's click asserts a microbleed even where the network's
probability is low, and a network that outlines a rim beside a large microbleed has not outlined it).

:func:`load_existing` reads an earlier prediction (``NAME_cmb.json`` and/or ``NAME_cmb.nii.gz``,
each found beside the other) and :func:`match_existing` says which of its candidates already
covers the click.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plkd.errors import InputError
from plkd.location.register import Registration
from plkd.metrics.components import label_components
from plkd.naming import output_stem
from plkd.volumes import Volume, load_label, on_grid_of

log = logging.getLogger(__name__)

#: A click lands at most this far (mm) from the centre of the microbleed it means.
SEARCH_RADIUS_MM = 3.0
#: Microbleeds are at most 10 mm across: the intensity region stays within this radius (mm).
MAX_RADIUS_MM = 5.0
#: The surrounding tissue is sampled in this shell (mm) around the spot.
BACKGROUND_SHELL_MM = (5.0, 8.0)
#: A spot counts as dark when this far below the surrounding tissue, in units of the tissue's
#: own spread (robust SD of the shell), and at least this much in brain z-score units. Low on
#: purpose: the reader asserts a microbleed there, bundles with the legacy normalisation clip the
#: darkest 0.5 % (a microbleed in dark deep grey matter is barely darker than it), and a 1 mm microbleed is a
#: single voxel. Brain tissue holds dark spots (veins, sulci) everywhere, so a click anywhere
#: may find one: the click, not this test, says that a microbleed is there.
MIN_CONTRAST_SD = 1.0
MIN_CONTRAST_Z = 0.3
#: Among equally dark voxels the one nearer the click wins (z-score units per mm).
DISTANCE_PENALTY_PER_MM = 0.05
#: A mask "covers" the spot when one of its voxels lies this close (mm) to the spot's minimum ...
COVER_MM = 1.5
#: A voxel of the region darker than the spot's minimum by this share of its contrast belongs to another, darker spot
#: (a larger microbleed beside a small one, whose flank the region ran into).
DEEPER_SHARE = 0.15
#: ... and holds at least this share of the spot's intensity region. Up to 5 mm the shipped network's mask holds
#: all of it (it blooms beyond the half-way level); on a 6 mm ball it held 23 of the region's 100 voxels, a rim
#: 1.8 mm off the centre (Testing/test_click.py).
MIN_REGION_SHARE = 0.5


@dataclass
class DarkBlob:
    """The dark spot at a click on the model grid."""

    seed: np.ndarray  # (3,) int voxel index of the spot's minimum
    voxels: np.ndarray  # (K, 3) int voxel indices of its intensity region
    contrast: float  # surrounding tissue minus the minimum (normalised units)


def _ball_offsets(radius_mm: float, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer offsets within ``radius_mm`` and their distances (mm)."""
    r = np.ceil(radius_mm / spacing).astype(int)
    grid = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in r], indexing="ij"), axis=-1).reshape(-1, 3)
    dist = np.sqrt(((grid * spacing) ** 2).sum(axis=1))
    keep = dist <= radius_mm
    return grid[keep], dist[keep]


def dark_blob(
    data: np.ndarray,
    position: np.ndarray,
    spacing: np.ndarray,
    *,
    search_mm: float = SEARCH_RADIUS_MM,
    max_radius_mm: float = MAX_RADIUS_MM,
) -> DarkBlob | None:
    """The dark spot within ``search_mm`` of ``position`` (voxel indices) and its region, or None.

    ``data`` is the normalised image on a grid of voxel size ``spacing`` (mm). None when nothing
    there is darker than the surrounding tissue by :data:`MIN_CONTRAST_SD` robust SDs.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    shape = np.asarray(data.shape)
    centre = np.round(np.asarray(position, dtype=np.float64)).astype(int)
    offsets, dist = _ball_offsets(search_mm, spacing)
    pts = centre + offsets
    inside = np.all((pts >= 0) & (pts < shape), axis=1)
    if not inside.any():
        return None
    pts, dist = pts[inside], dist[inside]
    # No smoothing: a 1 mm microbleed is one voxel on the model grid and would be blurred away.
    seed = pts[int(np.argmin(data[tuple(pts.T)] + DISTANCE_PENALTY_PER_MM * dist))]
    lo_mm, hi_mm = BACKGROUND_SHELL_MM
    shell, dist = _ball_offsets(hi_mm, spacing)
    shell = seed + shell[dist >= lo_mm]
    shell = shell[np.all((shell >= 0) & (shell < shape), axis=1)]
    if len(shell) < 10:
        return None
    around = data[tuple(shell.T)].astype(np.float64)
    background = float(np.median(around))
    spread = 1.4826 * float(np.median(np.abs(around - background)))  # robust SD of the tissue
    depth = float(data[tuple(seed)])
    contrast = background - depth
    if contrast < max(MIN_CONTRAST_SD * spread, MIN_CONTRAST_Z):
        return None
    # The region: darker than half-way to the tissue, connected to the minimum, within the ball.
    ball, _ = _ball_offsets(max_radius_mm, spacing)
    r = np.abs(ball).max(axis=0)
    lo = np.maximum(seed - r, 0)
    hi = np.minimum(seed + r + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    inside = np.zeros(tuple(int(v) for v in hi - lo), dtype=bool)
    local = seed - lo + ball
    local = local[np.all((local >= 0) & (local < inside.shape), axis=1)]
    inside[tuple(local.T)] = True
    # Half-way to the tissue, and clear of the tissue's own spread (dark grey matter around it).
    level = min(depth + 0.5 * contrast, background - spread)
    dark = (data[box] <= level) & inside
    dark[tuple(seed - lo)] = True
    labels, _ = label_components(dark)
    region = np.argwhere(labels == labels[tuple(seed - lo)]) + lo
    return DarkBlob(
        seed=seed, voxels=own_spot(data, region, seed, spacing, depth - DEEPER_SHARE * contrast), contrast=contrast
    )


def own_spot(data: np.ndarray, region: np.ndarray, seed: np.ndarray, spacing: np.ndarray, deeper: float) -> np.ndarray:
    """The part of ``region`` (K, 3 voxel indices, connected, holding ``seed``) that is the seed's own spot.

    The region is every voxel darker than half-way to the tissue within :data:`MAX_RADIUS_MM`; beside a larger,
    darker microbleed the tails of the two add up, and the region of a small spot ran across the tissue between them
    into the other (a click on a missed 3 mm microbleed 7 mm from a found 8 mm one took 23 of its voxels and was
    answered "already found"; a whole-scan outline held both). Voxels darker than ``deeper`` belong to another spot:
    every voxel nearer (mm) to one of them than to the seed is left out, and the part connected to the seed kept.
    """
    values = data[tuple(region.T)]
    other = region[values < deeper]
    if not len(other):
        return region
    from scipy.spatial import cKDTree

    sp = np.asarray(spacing, dtype=np.float64)
    near_other, _ = cKDTree(other * sp).query(region * sp)
    near_seed = np.sqrt((((region - seed) * sp) ** 2).sum(axis=1))
    kept = region[near_seed < near_other]
    lo = kept.min(axis=0)
    mask = np.zeros(tuple(kept.max(axis=0) - lo + 1), dtype=bool)
    mask[tuple((kept - lo).T)] = True
    labels, _ = label_components(mask)
    return np.argwhere(labels == labels[tuple(seed - lo)]) + lo


def covers(voxels: np.ndarray, point: np.ndarray, spacing: np.ndarray, within_mm: float = COVER_MM) -> bool:
    """True when one of ``voxels`` (K, 3) lies within ``within_mm`` of ``point`` (voxel indices)."""
    if voxels.shape[0] == 0:
        return False
    d2 = (((voxels - np.asarray(point)) * np.asarray(spacing)) ** 2).sum(axis=1)
    return bool(d2.min() <= within_mm**2)


def region_share(voxels: np.ndarray, blob: DarkBlob) -> float:
    """The share of ``blob``'s intensity region (its ``voxels``) that ``voxels`` (K, 3 voxel indices) hold, 0-1."""
    if blob.voxels.shape[0] == 0:
        return 1.0
    mask = {tuple(v) for v in np.asarray(voxels, dtype=int).tolist()}
    return sum(tuple(v) in mask for v in blob.voxels.tolist()) / blob.voxels.shape[0]


def outlines(voxels: np.ndarray, blob: DarkBlob, spacing: np.ndarray) -> bool:
    """Whether a network mask ``voxels`` (K, 3) outlines the clicked dark spot: it covers the spot's minimum
    (:data:`COVER_MM`) and holds :data:`MIN_REGION_SHARE` of its intensity region."""
    return covers(voxels, blob.seed, spacing) and region_share(voxels, blob) >= MIN_REGION_SHARE


# ------------------------------------------------------------------------ earlier predictions


@dataclass
class ExistingPrediction:
    """An earlier prediction of the same image: its label map (input grid) and/or its candidates."""

    labels: np.ndarray | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    #: The contrast of the model that made it (its JSON's ``modality.model_modality``; None when unknown).
    model_modality: str | None = None
    #: Its scan's registration to MNI (the JSON's ``location.scan_to_mni``), when the JSON was made from this very
    #: file (same ``input_sha256``): a click reuses it instead of registering the scan again.
    registration: Registration | None = None


def _pair(path: Path) -> tuple[Path | None, Path | None]:
    """(JSON, label map) of an earlier prediction from either of its two files."""
    name = path.name.lower()
    if name.endswith(".json"):
        label = path.with_name(path.name[: -len(".json")] + ".nii.gz")
        return path, label if label.is_file() else None
    stem = output_stem(path)
    js = path.with_name(stem + ".json")
    return (js if js.is_file() else None), path


def load_existing(path: str | os.PathLike[str], volume: Volume, input_sha256: str | None = None) -> ExistingPrediction:
    """Read an earlier prediction of ``volume`` given as its ``NAME_cmb.json`` or label map.

    The other file of the pair is used when it lies beside the given one. The label map must be
    on the image's grid; without one, the JSON's ``label_shape`` must be the image's shape, and a
    JSON made from a file whose sha256 is not ``input_sha256`` (the image's) is matched with a
    warning. Raises :class:`InputError` naming the problem in one line.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--existing {p}: no such file (give NAME_cmb.json or NAME_cmb.nii.gz of a prediction)")
    js, label_path = _pair(p)
    out = ExistingPrediction(source=str(p))
    if js is not None:
        try:
            doc = json.loads(js.read_text(encoding="utf-8"))
            cands = doc["candidates"]
            if not isinstance(cands, list) or not all(isinstance(c, dict) for c in cands):
                raise TypeError("'candidates' is not a list of objects")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"--existing {js.name} is not a plkd candidates JSON: {exc}") from None
        out.candidates = cands
        decision = doc.get("modality")
        out.model_modality = (decision.get("model_modality") or None) if isinstance(decision, dict) else None
        if label_path is None:
            _check_made_from(doc, js.name, volume, input_sha256)
        out.registration = _registration_of(doc, js.name, input_sha256)
    if label_path is not None:
        lab = load_label(label_path, what="existing label map")
        lab = on_grid_of(volume, lab, what=f"existing label map {label_path.name}")
        out.labels = np.rint(lab.data).astype(np.int32)
    return out


def _registration_of(doc: dict[str, Any], name: str, input_sha256: str | None) -> Registration | None:
    """The scan→MNI registration an earlier prediction of this same file (its ``input_sha256``) recorded, or None."""
    block = doc.get("location")
    if not input_sha256 or doc.get("input_sha256") != input_sha256 or not isinstance(block, dict):
        return None
    try:
        matrix = np.asarray(block.get("scan_to_mni"), dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if block.get("status") != "ok" or matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        return None
    checks = dict(block.get("registration") or {})
    checks["reused_from"] = name
    return Registration("ok", None, matrix, checks)


def _check_made_from(doc: dict[str, Any], name: str, volume: Volume, input_sha256: str | None) -> None:
    """A candidates JSON without its label map: refuse another grid, warn about another file."""
    shape = doc.get("label_shape")
    if isinstance(shape, list) and [int(v) for v in shape] != [int(v) for v in volume.shape]:
        raise InputError(
            f"--existing {name} was made on a {'x'.join(map(str, shape))} grid, not this image's "
            f"{'x'.join(map(str, volume.shape))}: give the prediction of this scan"
        )
    made_from = doc.get("input_sha256")
    if input_sha256 and made_from and made_from != input_sha256:
        log.warning(
            "--existing %s was made from another file than this image (sha256 differs); its microbleeds are "
            "matched to the click by position only",
            name,
        )


def match_existing(
    existing: ExistingPrediction, click_ras: np.ndarray, segment: np.ndarray | None, affine: np.ndarray
) -> tuple[int, dict[str, Any] | None] | None:
    """The earlier microbleed that covers the click: ``(label, candidate record or None)``, or None.

    With a label map: the label under the click, else the label the new ``segment`` (boolean,
    input grid) overlaps most. With candidates only: a kept candidate whose sphere of equal
    volume, grown by :data:`COVER_MM`, holds the click.
    """
    by_label = {int(c.get("label") or 0): c for c in existing.candidates if int(c.get("label") or 0) > 0}
    if existing.labels is not None:
        inv = np.linalg.inv(affine)
        v = np.round(inv[:3, :3] @ np.asarray(click_ras, dtype=np.float64) + inv[:3, 3]).astype(int)
        label = 0
        if np.all(v >= 0) and np.all(v < existing.labels.shape):
            label = int(existing.labels[tuple(v)])
        if label == 0 and segment is not None and segment.any():
            hit = existing.labels[segment]
            hit = hit[hit > 0]
            label = int(np.bincount(hit).argmax()) if hit.size else 0
        return (label, by_label.get(label)) if label > 0 else None
    best: tuple[float, int, dict[str, Any]] | None = None
    for label, cand in by_label.items():
        try:
            centre = np.asarray(cand["center_ras"], dtype=np.float64).reshape(3)
            volume_mm3 = float(cand.get("volume_mm3") or 0.0)
        except (KeyError, TypeError, ValueError):
            continue
        radius = (3.0 * volume_mm3 / (4.0 * math.pi)) ** (1.0 / 3.0) + COVER_MM
        d = float(np.linalg.norm(centre - np.asarray(click_ras, dtype=np.float64)))
        if d <= radius and (best is None or d < best[0]):
            best = (d, label, cand)
    return (best[1], best[2]) if best is not None else None
