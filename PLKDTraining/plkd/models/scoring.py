"""Patch-level microbleed probability from a segmentation network's voxel logits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Number of most-probable voxels averaged into the patch probability. A 2 mm microbleed on the
#: 1 mm model grid covers about 4 voxels, so a real lesion fills the top 4 while one noisy voxel
#: contributes only a quarter.
TOP_K = 4

#: Fraction of the patch (per axis, centred) searched for the lesion. Candidate patches are
#: centred on the screening peak, so a lesion belonging to this candidate lies near the centre;
#: one near the border belongs to a neighbouring candidate.
CENTRAL_FRACTION = 0.5


def patch_probability(logits: torch.Tensor, k: int = TOP_K, central_fraction: float = CENTRAL_FRACTION) -> torch.Tensor:
    """Probability ``(N,)`` that each patch contains a microbleed near its centre.

    Soft top-k: the mean of the ``k`` largest voxel probabilities ``sigmoid(logits)`` inside the
    central ``central_fraction`` of the patch (per axis, at least one voxel). Robust to a single
    noisy voxel, unlike a plain maximum, yet still high for the smallest lesions.
    ``logits`` is ``(N, 1, X, Y, Z)`` or ``(N, X, Y, Z)``.
    """
    if logits.dim() == 5:
        if logits.shape[1] != 1:
            raise ValueError(f"expected one output channel, got {logits.shape[1]}")
        logits = logits[:, 0]
    if logits.dim() != 4:
        raise ValueError(f"expected (N, 1, X, Y, Z) or (N, X, Y, Z) logits, got shape {tuple(logits.shape)}")
    if not 0 < central_fraction <= 1:
        raise ValueError(f"central_fraction must be in (0, 1], not {central_fraction}")
    region = []
    for size in logits.shape[1:]:
        width = max(1, round(size * central_fraction))
        start = (size - width) // 2
        region.append(slice(start, start + width))
    probs = torch.sigmoid(logits[:, region[0], region[1], region[2]]).flatten(1)
    k = max(1, min(int(k), probs.shape[1]))
    return probs.topk(k, dim=1).values.mean(dim=1)


def candidate_logit(voxel_logits: np.ndarray, region: np.ndarray, k: int = TOP_K) -> float:
    """A candidate's score: the mean of the ``k`` largest voxel logits inside ``region``.

    ``voxel_logits`` (X, Y, Z) is the segmenter's output on the candidate's patch and ``region``
    a boolean mask of the same shape: the candidate's own segmented component, or the ball
    around its centre when nothing was segmented. Scoring the candidate's own lesion, rather
    than anything in the middle half of the patch, means a neighbour's lesion cannot make a
    candidate probable, and logits (not probabilities) keep confident scores apart where
    ``sigmoid`` would round them all to 1.0. Returns ``-inf`` for an empty region.
    """
    values = np.asarray(voxel_logits, dtype=np.float64)[np.asarray(region, dtype=bool)]
    if values.size == 0:
        return float("-inf")
    k = max(1, min(int(k), values.size))
    return float(np.mean(np.partition(values, values.size - k)[-k:]))


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of a candidate logit ``z``: ``p = sigmoid(a·z + b)`` (identity: a=1, b=0).

    Fitted on validation candidates by ``plkd tune`` (Platt, "Probabilistic outputs for support
    vector machines", 1999; temperature scaling, Guo et al. ICML 2017, is the case ``b = 0``), so
    that a probability of 0.7 means that about 70 % of such candidates are microbleeds.
    """

    a: float = 1.0
    b: float = 0.0

    def __call__(self, z: float) -> float:
        x = self.a * float(z) + self.b
        if x != x:
            return float("nan")
        if x >= 0:
            return float(1.0 / (1.0 + np.exp(-x)))
        e = float(np.exp(x))
        return e / (1.0 + e)

    @classmethod
    def from_manifest(cls, entry: dict | None) -> Calibration:
        """From a network entry's ``calibration`` record (``{"method": "platt", "a", "b"}``, or temperature
        scaling ``{"temperature": T}``, which is ``a = 1/T, b = 0``); identity if absent. The record is checked
        when the bundle is loaded (:func:`plkd.bundle.validate_calibration`)."""
        if not entry:
            return cls()
        if "a" not in entry and "temperature" in entry:
            return cls(1.0 / float(entry["temperature"]), 0.0)
        return cls(float(entry.get("a", 1.0)), float(entry.get("b", 0.0)))
