"""Candidate microbleed centres from the screening score map.

A candidate is a local maximum of the score map (3×3×3 neighbourhood) above the screening
threshold and inside the brain; candidates closer than ``min_distance_mm`` to a higher-scoring
one are suppressed (greedy non-maximum suppression) and at most ``max_candidates`` are kept,
highest scores first, so a noisy scan cannot make stage 2 run for ever.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Upper bound on candidates per scan (a scan with hundreds of microbleeds is rare; the cap
#: only limits run time on pathological inputs and is reported in the notes when reached).
MAX_CANDIDATES = 300


@dataclass
class Candidate:
    """One candidate: continuous voxel position on the model grid and its screening score."""

    position: np.ndarray
    score: float
    #: Which source proposed it: ``"screening"`` (the FCN) or ``"blob"`` (:mod:`plkd.inference.blobs`).
    source: str = "screening"


def local_maxima(scores: np.ndarray, threshold: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Indices ``(M, 3)`` of local maxima ≥ ``threshold`` (inside ``mask``), highest first."""
    peak = scores == ndimage.maximum_filter(scores, size=3, mode="constant", cval=-np.inf)
    keep = peak & (scores >= threshold)
    if mask is not None:
        keep &= mask
    idx = np.argwhere(keep)
    order = np.argsort(-scores[tuple(idx.T)], kind="stable")
    return idx[order]


def non_maximum_suppression(points_mm: np.ndarray, radius_mm: float, limit: int) -> list[int]:
    """Greedy suppression over points already sorted by decreasing score; returns kept rows."""
    kept: list[int] = []
    kept_pts = np.zeros((0, 3))
    for i, p in enumerate(points_mm):
        if kept_pts.shape[0] and np.min(np.sum((kept_pts - p) ** 2, axis=1)) < radius_mm**2:
            continue
        kept.append(i)
        kept_pts = np.vstack([kept_pts, p])
        if len(kept) >= limit:
            break
    return kept


#: The screening FCN pads with zeros; where the brain reaches the end of the image (a crop, a
#: partial-coverage or thick-slab scan) its scores within this many mm of the border are largely
#: artefacts of the padding (on a crop of a synthetic brain: 39 % of the outermost score voxels and
#: 7 % of the next ones above 0.5, against 0.02 % inside). Candidates there are ranked after all
#: others, so they can never push a candidate from inside the image out of the candidate cap.
SCREENING_EDGE_MM = 4.0


def edge_room_mm(positions: np.ndarray, shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """mm of image between each voxel position ``(M, 3)`` and the nearest border of a grid of ``shape``.

    Voxel i of n along an axis has ``min(i + 0.5, n - 0.5 - i) * spacing`` mm beyond its centre, as
    :func:`plkd.inference.predictor.fov_edge_veto` measures it.
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = np.asarray(shape, dtype=np.float64)
    room = np.minimum(pos + 0.5, n - 0.5 - pos) * np.asarray(spacing, dtype=np.float64)
    return room.min(axis=1) if len(pos) else np.zeros(0)


def interior_first(
    candidates: list[Candidate], shape: Sequence[int], spacing: Sequence[float], limit: int
) -> tuple[list[Candidate], bool]:
    """``candidates`` (strongest first) with those within :data:`SCREENING_EDGE_MM` of the border moved
    behind all others (each group keeps its order), cut to ``limit``; and whether the cut removed any."""
    room = edge_room_mm(np.array([c.position for c in candidates]), shape, spacing)
    ordered = [c for c, r in zip(candidates, room, strict=True) if r >= SCREENING_EDGE_MM]
    ordered += [c for c, r in zip(candidates, room, strict=True) if r < SCREENING_EDGE_MM]
    return ordered[:limit], len(ordered) > limit


def inside_field_of_view(shape: Sequence[int], spacing: Sequence[float], margin_mm: float) -> np.ndarray:
    """Boolean array of ``shape``: voxels whose centre has at least ``margin_mm`` of image to every border.

    ``spacing`` is the voxel size (mm) per axis; the room of voxel i along an axis of n voxels is
    ``min(i + 0.5, n - 0.5 - i) * spacing`` (as :func:`plkd.inference.predictor.fov_edge_veto` measures it).
    """
    axes = []
    for n, sp in zip(shape, spacing, strict=True):
        i = np.arange(int(n), dtype=np.float64)
        axes.append(np.minimum(i + 0.5, n - 0.5 - i) * float(sp) >= margin_mm)
    return axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :]


def mask_on_score_grid(mask: np.ndarray, stride: np.ndarray) -> np.ndarray:
    """Brain mask on the score grid: a score voxel counts if any input voxel it covers is brain."""
    stride = np.asarray(stride, dtype=int)
    if np.all(stride == 1):
        return mask
    out_shape = tuple(int(v) for v in -(-np.asarray(mask.shape) // stride))
    pad = [(0, o * s - n) for o, s, n in zip(out_shape, stride, mask.shape, strict=True)]
    m = np.pad(mask, pad)
    m = m.reshape(out_shape[0], stride[0], out_shape[1], stride[1], out_shape[2], stride[2])
    return m.any(axis=(1, 3, 5))


def find_candidates(
    scores: np.ndarray,
    to_input: np.ndarray,
    spacing: np.ndarray,
    threshold: float,
    min_distance_mm: float,
    mask: np.ndarray | None = None,
    max_candidates: int = MAX_CANDIDATES,
) -> tuple[list[Candidate], bool]:
    """Candidates on the model grid and whether the cap was reached.

    ``to_input`` maps score-grid indices ``(M, 3)`` to model-grid voxel coordinates;
    ``spacing`` is the model grid's voxel size (mm).
    """
    idx = local_maxima(scores, threshold, mask)
    if idx.shape[0] == 0:
        return [], False
    positions = np.asarray(to_input(idx), dtype=np.float64).reshape(-1, 3)
    kept = non_maximum_suppression(positions * np.asarray(spacing), min_distance_mm, max_candidates)
    capped = len(kept) >= max_candidates and idx.shape[0] > max_candidates
    return [Candidate(position=positions[i], score=float(scores[tuple(idx[i])])) for i in kept], capped


def add_blob_candidates(
    candidates: list[Candidate],
    positions: np.ndarray,
    fcn_scores: np.ndarray,
    spacing: np.ndarray,
    min_distance_mm: float,
) -> int:
    """Merge blob candidates into ``candidates`` (in place); returns how many were new.

    ``positions`` (M, 3) are model-grid voxels, strongest blob first; ``fcn_scores`` (M,) the
    screening score at each (recorded, not thresholded: a blob candidate is proposed by the
    other source). A blob within ``min_distance_mm`` of an FCN candidate takes that candidate
    over: the candidate moves to the blob's centre (for a large microbleed the FCN peak sits
    on its rim) and its source becomes ``"screening+blob"``, which candidate budgets keep.
    """
    sp = np.asarray(spacing, dtype=np.float64)
    added = 0
    for pos, score in zip(np.asarray(positions, dtype=np.float64).reshape(-1, 3), fcn_scores, strict=True):
        taken = np.array([c.position for c in candidates], dtype=np.float64).reshape(-1, 3) * sp
        d2 = np.sum((taken - pos * sp) ** 2, axis=1) if taken.shape[0] else np.zeros(0)
        near = int(np.argmin(d2)) if d2.size else -1
        if near >= 0 and d2[near] < min_distance_mm**2:
            if candidates[near].source == "screening":
                candidates[near] = Candidate(position=pos, score=candidates[near].score, source="screening+blob")
            continue
        candidates.append(Candidate(position=pos, score=float(score), source="blob"))
        added += 1
    return added
