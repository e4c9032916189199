"""Stage 2: the segmenter on a fixed-size patch around each candidate, batched, then stitched.

Each candidate gives a voxel mask, the connected component (:data:`plkd.metrics.components.CONNECTIVITY`)
of ``sigmoid ≥ voxel threshold`` that contains the candidate centre, or the nearest one within
``max_offset_mm``, and a score: the mean of the 4 largest voxel logits of that component (of the
ball of ``max_offset_mm`` around the centre when nothing was segmented;
:func:`plkd.models.candidate_logit`), mapped to a probability by the segmenter's calibration.
Kept candidates are stitched highest probability first; a component overlapping or touching an
already placed microbleed is the same microbleed seen twice and is merged into it (duplicate):
``plkd evaluate`` would count the two as one connected component, so the JSON's count of kept
candidates equals the microbleeds of the label map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from plkd.inference.device import DeviceState, autocast
from plkd.metrics.components import label_components, structure

#: The component chosen for a candidate may lie at most this far (mm) from its centre.
MAX_OFFSET_MM = 4.0


@dataclass
class PatchResult:
    """Stage-2 outcome for one candidate position on the model grid."""

    probability: float
    voxels: np.ndarray  # (K, 3) int model-grid indices of its component (K may be 0)
    max_voxel_probability: float
    #: The uncalibrated score (:func:`plkd.models.candidate_logit`); ``probability`` is its calibration.
    logit: float = float("nan")


def patch_origin(position: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Index of the first voxel of the patch centred on ``position`` (centre voxel = size // 2)."""
    return np.round(np.asarray(position, dtype=np.float64)).astype(int) - np.asarray(size, dtype=int) // 2


def extract_patch(data: np.ndarray, origin: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """The ``size`` block of ``data`` starting at ``origin``; outside the volume is 0 (padding)."""
    out = np.zeros(tuple(int(s) for s in size), dtype=np.float32)
    lo = np.maximum(origin, 0)
    hi = np.minimum(origin + np.asarray(size), data.shape)
    if np.any(hi <= lo):
        return out
    src = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    dst = tuple(slice(int(a - o), int(b - o)) for a, b, o in zip(lo, hi, origin, strict=True))
    out[dst] = data[src]
    return out


def select_component(
    prob: np.ndarray, centre: np.ndarray, voxel_threshold: float, spacing: np.ndarray, max_offset_mm: float
) -> np.ndarray:
    """Boolean mask of the component containing (or nearest to) ``centre`` in a patch."""
    fg = prob >= voxel_threshold
    if not fg.any():
        return fg
    labels, n = label_components(fg)
    c = tuple(int(v) for v in np.clip(np.round(centre), 0, np.asarray(prob.shape) - 1))
    label = int(labels[c])
    if label == 0:
        pts = np.argwhere(fg)
        d2 = np.sum(((pts - np.asarray(centre)) * np.asarray(spacing)) ** 2, axis=1)
        best = int(np.argmin(d2))
        if d2[best] > max_offset_mm**2:
            return np.zeros_like(fg)
        label = int(labels[tuple(pts[best])])
    return labels == label


def segment_patches(
    net: torch.nn.Module,
    data: np.ndarray,
    positions: Sequence[np.ndarray],
    patch_size: Sequence[int],
    state: DeviceState,
    *,
    voxel_threshold: float,
    spacing: np.ndarray,
    max_offset_mm: float = MAX_OFFSET_MM,
    probability_map: np.ndarray | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    calibration: Callable[[float], float] | None = None,
) -> list[PatchResult]:
    """Run the segmenter on a patch around every position (batched, with OOM fallback).

    ``calibration`` maps a candidate logit to its probability (default: ``sigmoid``). When
    ``probability_map`` (model grid) is given, voxel probabilities are stitched into it with the
    maximum over overlapping patches.
    """
    from plkd.models.scoring import Calibration, candidate_logit

    calibrate = calibration or Calibration()
    size = np.asarray(patch_size, dtype=int)
    results: list[PatchResult] = []
    shape = np.asarray(data.shape)
    i = 0
    while i < len(positions):
        origins = [patch_origin(p, size) for p in positions[i : i + state.batch_size]]
        batch = np.stack([extract_patch(data, o, size) for o in origins])[:, None]

        def work(device: torch.device, bs: int, batch: np.ndarray = batch) -> np.ndarray:
            # ``bs`` may have shrunk after an out-of-memory error: run this batch in chunks of it.
            net.to(device)
            maps = []
            for k in range(0, batch.shape[0], bs):
                with torch.inference_mode(), autocast(device):
                    logits = net(torch.from_numpy(batch[k : k + bs]).to(device))["logits"].float()
                maps.append(logits[:, 0].cpu().numpy())
            return np.concatenate(maps)

        voxel_logits = state.run(work)
        for origin, vl in zip(origins, voxel_logits, strict=True):
            vp = 1.0 / (1.0 + np.exp(-np.clip(vl, -60.0, 60.0)))
            centre = np.asarray(positions[len(results)]) - origin
            comp = select_component(vp, centre, voxel_threshold, spacing, max_offset_mm)
            region = comp if comp.any() else ball(vl.shape, centre, max_offset_mm, spacing)
            z = candidate_logit(vl, region)
            vox = np.argwhere(comp) + origin
            inside = np.all((vox >= 0) & (vox < shape), axis=1)
            results.append(
                PatchResult(
                    # Rounded here, so the threshold decides on the value the JSON shows.
                    probability=round(calibrate(z), 4),
                    voxels=vox[inside],
                    max_voxel_probability=float(vp.max()),
                    logit=z,
                )
            )
            if probability_map is not None:
                _stitch_max(probability_map, vp.astype(np.float32), origin)
        i += len(origins)
        if on_batch is not None:
            on_batch(i, len(positions))
    return results


def ball(shape: Sequence[int], centre: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Boolean ball of ``radius_mm`` around ``centre`` (voxel coordinates) in an array of ``shape``."""
    grids = np.ogrid[tuple(slice(0, int(n)) for n in shape)]
    d2 = sum(((g - float(c)) * float(h)) ** 2 for g, c, h in zip(grids, centre, spacing, strict=True))
    return d2 <= radius_mm**2


def _stitch_max(target: np.ndarray, patch: np.ndarray, origin: np.ndarray) -> None:
    lo = np.maximum(origin, 0)
    hi = np.minimum(origin + np.asarray(patch.shape), target.shape)
    if np.any(hi <= lo):
        return
    dst = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    src = tuple(slice(int(a - o), int(b - o)) for a, b, o in zip(lo, hi, origin, strict=True))
    target[dst] = np.maximum(target[dst], patch[src])


@dataclass
class StitchedCandidate:
    """How one candidate ended: its label on the model grid (0 = not kept) and why."""

    label: int
    reason: str
    merged_into: int | None = None


def _neighbour_labels(labels: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """The non-zero values of ``labels`` in the neighbourhood (:func:`structure`) of ``voxels`` (K, 3)."""
    offsets = np.argwhere(structure()) - 1
    near = (np.asarray(voxels)[:, None, :] + offsets[None, :, :]).reshape(-1, 3)
    near = near[np.all((near >= 0) & (near < np.asarray(labels.shape)), axis=1)]
    values = labels[tuple(near.T)]
    return values[values > 0]


def stitch(
    results: Sequence[PatchResult],
    shape: tuple[int, ...],
    threshold: float,
    vetoes: Sequence[str | None] | None = None,
) -> tuple[np.ndarray, list[StitchedCandidate]]:
    """Label map on the model grid (1..N) and each candidate's fate, in input order.

    Candidates are placed by decreasing probability; a component that overlaps or touches (by
    :data:`plkd.metrics.components.CONNECTIVITY`) an already placed microbleed is merged into it
    (its voxels added) and reported as a duplicate, so every kept label is one connected component.
    ``vetoes[i]``, when given and not None, rejects candidate ``i`` with that reason.
    """
    labels = np.zeros(shape, dtype=np.int32)
    fate = [StitchedCandidate(0, "") for _ in results]
    owner: dict[int, int] = {}
    for i in sorted(range(len(results)), key=lambda k: -results[k].probability):
        r = results[i]
        if vetoes is not None and vetoes[i]:
            fate[i] = StitchedCandidate(0, str(vetoes[i]))
            continue
        if r.probability < threshold:
            fate[i] = StitchedCandidate(0, "below threshold")
            continue
        if r.voxels.shape[0] == 0:
            fate[i] = StitchedCandidate(0, "no voxel above the voxel threshold near the centre")
            continue
        idx = tuple(r.voxels.T)
        existing = labels[idx]
        hit = existing[existing > 0]
        if not hit.size:
            # Adjacent without overlap: still one component for the metrics (two labels, one microbleed counted).
            hit = _neighbour_labels(labels, r.voxels)
        if hit.size:
            target = int(np.bincount(hit).argmax())
            labels[idx] = np.where(existing == 0, target, existing)
            fate[i] = StitchedCandidate(0, "duplicate", merged_into=owner[target])
            continue
        new = len(owner) + 1
        labels[idx] = new
        owner[new] = i
        fate[i] = StitchedCandidate(new, "kept")
    return labels, fate


def keep_largest_pieces(labels: np.ndarray) -> np.ndarray:
    """``labels`` with each label reduced to its largest piece (:data:`plkd.metrics.components.CONNECTIVITY`-connected;
    ties: the first in array order); the other pieces become background.

    One outline on the 1 mm model grid, brought onto thick input slices by nearest neighbour, samples one model slice
    per slab: joined only through the slices in between, it fell apart, and ``plkd evaluate`` counted each piece as a
    microbleed (a false candidate two false positives) where the JSON lists one. Labels that touch each other are
    left to :func:`merge_touching_labels`.
    """
    out = labels.copy()
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        pieces, n = label_components(labels[box] == k)
        if n < 2:
            continue
        largest = int(np.argmax(np.bincount(pieces.ravel())[1:])) + 1
        view = out[box]
        view[(pieces > 0) & (pieces != largest)] = 0
    return out


def merge_touching_labels(labels: np.ndarray) -> tuple[np.ndarray, dict[int, int], dict[int, int]]:
    """Merge labels that touch (one connected component, :data:`plkd.metrics.components.CONNECTIVITY`).

    Labels kept apart on the model grid can touch once resampled onto a coarser input grid (two
    microbleeds 2 mm apart on 4 mm slices): ``plkd evaluate`` then counts one microbleed where the
    JSON lists two. In each component the lowest label survives (stitching numbers microbleeds by
    decreasing probability, so it is the strongest) and takes the others' voxels. Returns the map
    relabelled 1..M, ``{old label: surviving old label}`` and ``{surviving old label: new label}``.
    """
    comps, n = label_components(labels > 0)
    fg = comps > 0
    survivor: dict[int, int] = {}
    if n:
        lowest = np.full(n + 1, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(lowest, comps[fg], labels[fg].astype(np.int64))
        for old, comp in set(zip(labels[fg].tolist(), comps[fg].tolist(), strict=True)):
            survivor[int(old)] = int(lowest[comp])
    kept = sorted(set(survivor.values()))
    new = {old: i for i, old in enumerate(kept, start=1)}
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=labels.dtype)
    for old, top in survivor.items():
        lut[old] = new[top]
    return lut[labels], survivor, new
