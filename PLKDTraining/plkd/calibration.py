"""Calibrated candidate probabilities: Platt scaling, expected calibration error, reliability diagram.

A segmenter trained with a Dice loss gives voxel scores that say little about how often a
candidate is a microbleed: scores pile up at 0 and 1, a threshold on them barely moves the
result, and "p = 0.97" is not 97 %. ``plkd tune`` therefore fits, per segmenter, a map
``p = sigmoid(a·z + b)`` from the candidate logit ``z`` (:func:`plkd.models.candidate_logit`) to
the observed frequency of true microbleeds among validation candidates (Platt, "Probabilistic
outputs for support vector machines", 1999; Guo et al., "On calibration of modern neural
networks", ICML 2017, for temperature scaling, the case ``b = 0``). The fit is monotonic, so it
changes no ranking; it makes thresholds and the probabilities in the JSON mean what they say.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import optimize

#: Logits are clipped to this range before fitting: a network's ±60 says "certain", and the
#: fit must not let a few such values decide the slope.
LOGIT_CLIP = 30.0
#: Smallest slope ``a`` of a fit: positive, so that the map is increasing and no ranking changes.
MIN_SLOPE = 1e-3
#: Bins of the expected calibration error and the reliability diagram.
N_BINS = 10


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def fit_platt(logits: Sequence[float], positive: Sequence[bool], l2: float = 1e-3) -> tuple[float, float]:
    """``(a, b)`` minimising the log loss of ``sigmoid(a·z + b)`` against ``positive`` (0/1).

    A small L2 penalty towards the identity (a=1, b=0) keeps the fit finite when the classes are
    perfectly separated; ``a`` is kept at least :data:`MIN_SLOPE`, so the map never reverses the
    ranking. Non-finite logits are clipped to ±:data:`LOGIT_CLIP`. With fewer than
    two candidates of either class there is nothing to fit and the identity is returned.
    """
    z = np.clip(np.nan_to_num(np.asarray(logits, dtype=np.float64), nan=-LOGIT_CLIP), -LOGIT_CLIP, LOGIT_CLIP)
    y = np.asarray(positive, dtype=np.float64)
    if z.size != y.size:
        raise ValueError("logits and labels differ in length")
    if y.sum() < 2 or (1 - y).sum() < 2:
        return 1.0, 0.0

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = params
        x = a * z + b
        # log(1 + exp(x)) - y·x, computed stably
        nll = np.logaddexp(0.0, x) - y * x
        p = _sigmoid(x)
        g = p - y
        reg = l2 * ((a - 1.0) ** 2 + b**2)
        grad = np.array([np.mean(g * z) + 2 * l2 * (a - 1.0), np.mean(g) + 2 * l2 * b])
        return float(np.mean(nll) + reg), grad

    # The slope stays positive: a higher logit must never mean a lower probability. Unbounded, candidates whose
    # logits say little (or the opposite) gave a < 0, which turned the ranking over: the thresholds then kept the
    # weakest candidates and rejected the strongest, and the JSON's probabilities said the reverse of the network.
    bounds = [(MIN_SLOPE, None), (None, None)]
    res = optimize.minimize(loss, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=bounds)
    a, b = (float(v) for v in res.x)
    return a, b


def probability_bins(prob: Sequence[float], n_bins: int = N_BINS) -> np.ndarray:
    """The equal-width bin (0 … ``n_bins`` − 1) of each probability: bin k holds [k/n, (k+1)/n), the last
    bin also 1.0. Raises ``ValueError`` for a value that is not a probability (NaN, below 0, above 1):
    such a value fell in no bin and was silently left out of the ECE while still counting in its weights."""
    p = np.asarray(prob, dtype=np.float64)
    bad = ~np.isfinite(p) | (p < 0.0) | (p > 1.0)
    if np.any(bad):
        raise ValueError(f"{int(bad.sum())} probabilities are not in [0, 1] (e.g. {p[bad][0]!r})")
    return np.minimum((p * n_bins).astype(int), n_bins - 1)


def expected_calibration_error(prob: Sequence[float], positive: Sequence[bool], n_bins: int = N_BINS) -> float:
    """ECE: the candidate-weighted mean |observed frequency − mean probability| over the equal-width bins
    of :func:`probability_bins` (empty bins contribute nothing); NaN without any candidate (Guo et al. 2017)."""
    p = np.asarray(prob, dtype=np.float64)
    y = np.asarray(positive, dtype=np.float64)
    if p.size != y.size:
        raise ValueError("probabilities and labels differ in length")
    if p.size == 0:
        return float("nan")
    bins = probability_bins(p, n_bins)
    ece = 0.0
    for k in range(n_bins):
        sel = bins == k
        if sel.any():
            ece += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(ece)


def reliability_diagram(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str | Path, n_bins: int = N_BINS
) -> Path:
    """One panel per segmenter: observed frequency against mean probability, before and after.

    ``curves`` maps a segmenter name to ``(raw probabilities, calibrated probabilities, positive)``.
    Bars below show how many candidates fall in each bin. Writes a PNG and returns its path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(curves)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.9), squeeze=False)
    edges = np.linspace(0, 1, n_bins + 1)
    for ax, name in zip(axes[0], names, strict=True):
        raw, cal, y = (np.asarray(v, dtype=np.float64) for v in curves[name])
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        for probs, colour, label in ((raw, "tab:red", "before"), (cal, "tab:blue", "after")):
            idx = probability_bins(probs, n_bins)
            xs, ys = [], []
            for k in range(n_bins):
                sel = idx == k
                if sel.sum() >= 3:
                    xs.append(probs[sel].mean())
                    ys.append(y[sel].mean())
            ece = expected_calibration_error(probs, y, n_bins)
            ax.plot(xs, ys, "o-", color=colour, ms=4, label=f"{label} (ECE {ece:.3f})")
        # The ECE's bins: np.histogram's float edges (0.30000000000000004) counted p = 0.3, 0.6, 0.7 a bin low.
        counts = np.bincount(probability_bins(cal, n_bins), minlength=n_bins)
        ax2 = ax.twinx()
        ax2.bar(edges[:-1] + 0.05, counts, width=0.09, color="tab:blue", alpha=0.15)
        ax2.set_yticks([])
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{name} ({len(y)} candidates, {int(y.sum())} true)", fontsize=9)
        ax.set_xlabel("candidate probability")
        ax.set_ylabel("share that are microbleeds")
        ax.legend(fontsize=7, loc="upper left")
    # Two lines: one panel (a single segmenter tuned) is narrower than the title on one line.
    fig.suptitle("Calibration on validation subjects\n(bars: candidates per bin, after)", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
