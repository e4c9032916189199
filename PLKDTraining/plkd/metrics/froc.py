"""FROC analysis: sensitivity against false positives per subject over the candidate threshold.

Inputs are the candidates of ``plkd predict`` (``NAME_cmb.json``: ``center_ras`` and
``probability`` of every candidate, kept or rejected) and the reference components' centres
of mass in world (RAS) mm. For each subject the candidates are taken in decreasing
probability; a candidate is a TP if its centre lies within 5 mm of a reference not yet
matched (the nearest such one), otherwise a FP. Because this greedy matching processes
candidates in the same order at every threshold, the matching at threshold t is a prefix of
the full one, so one pass per subject gives the whole curve. Every reference counts as one
microbleed (rater-agreement weights are not used here).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plkd.errors import InputError
from plkd.figures import pyplot, save_figure
from plkd.metrics.valdo import MAX_DISTANCE_MM

#: FP-per-subject operating points reported in the JSON and marked on the plot.
REPORT_FP = (1.0, 2.0, 4.0)
MARK_FP = (0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class FrocSubject:
    """One subject's candidates (``(n, 3)`` RAS mm, probabilities ``(n,)``) and reference centres ``(m, 3)``."""

    candidate_centres: np.ndarray
    probabilities: np.ndarray
    reference_centres: np.ndarray


@dataclass
class FrocCurve:
    """A FROC curve: one point per distinct threshold, in decreasing threshold order.

    ``sensitivity[i]`` and ``fp_per_subject[i]`` are obtained by keeping the candidates with
    probability ``>= thresholds[i]``. The curve starts at (0 FP, 0 sensitivity) with an
    infinite threshold.
    """

    thresholds: np.ndarray
    sensitivity: np.ndarray
    fp_per_subject: np.ndarray
    n_subjects: int
    n_references: int
    subjects: list[str] = field(default_factory=list)

    def sensitivity_at(self, fp_per_subject: float) -> float:
        """Best sensitivity reached with at most ``fp_per_subject`` false positives per subject."""
        ok = self.fp_per_subject <= fp_per_subject + 1e-12
        return float(np.max(self.sensitivity[ok])) if np.any(ok) else float("nan")

    def to_dict(self) -> dict:
        """JSON-ready form (``from_dict`` reads it back)."""
        return {
            "n_subjects": self.n_subjects,
            "n_references": self.n_references,
            "subjects": list(self.subjects),
            "max_distance_mm": MAX_DISTANCE_MM,
            "sensitivity_at_fp": {f"{fp:g}": self.sensitivity_at(fp) for fp in REPORT_FP},
            "points": [
                {
                    "threshold": None if not np.isfinite(t) else float(t),
                    "sensitivity": float(s),
                    "fp_per_subject": float(f),
                }
                for t, s, f in zip(self.thresholds, self.sensitivity, self.fp_per_subject, strict=True)
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> FrocCurve:
        """Rebuild a curve from :meth:`to_dict` output (e.g. read from an evaluation JSON)."""
        pts = data["points"]
        return cls(
            thresholds=np.array([np.inf if p["threshold"] is None else p["threshold"] for p in pts], dtype=np.float64),
            sensitivity=np.array([p["sensitivity"] for p in pts], dtype=np.float64),
            fp_per_subject=np.array([p["fp_per_subject"] for p in pts], dtype=np.float64),
            n_subjects=int(data["n_subjects"]),
            n_references=int(data["n_references"]),
            subjects=list(data.get("subjects", [])),
        )


def greedy_candidate_hits(
    centres: np.ndarray, probabilities: np.ndarray, references: np.ndarray, max_distance_mm: float = MAX_DISTANCE_MM
) -> np.ndarray:
    """For candidates sorted by decreasing probability, whether each one is a TP (see module doc).

    Returns a boolean array aligned with the *input* order of the candidates.
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    probs = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    refs = np.asarray(references, dtype=np.float64).reshape(-1, 3)
    hit = np.zeros(len(centres), dtype=bool)
    if len(centres) == 0 or len(refs) == 0:
        return hit
    dist = np.sqrt(((centres[:, None, :] - refs[None, :, :]) ** 2).sum(axis=-1))
    free = np.ones(len(refs), dtype=bool)
    # Stable sort: equal probabilities keep the file order, so results are reproducible.
    for i in np.argsort(-probs, kind="stable"):
        d = np.where(free, dist[i], np.inf)
        j = int(np.argmin(d))
        if d[j] <= max_distance_mm:
            hit[i] = True
            free[j] = False
    return hit


def froc_curve(subjects: Mapping[str, FrocSubject], max_distance_mm: float = MAX_DISTANCE_MM) -> FrocCurve:
    """The FROC curve over all subjects, sweeping the threshold over every candidate probability."""
    if not subjects:
        raise InputError("no subjects with candidates to build a FROC curve from")
    probs, hits = [], []
    n_refs = 0
    for sub in subjects.values():
        p = np.asarray(sub.probabilities, dtype=np.float64).reshape(-1)
        probs.append(p)
        hits.append(greedy_candidate_hits(sub.candidate_centres, p, sub.reference_centres, max_distance_mm))
        n_refs += len(np.asarray(sub.reference_centres).reshape(-1, 3))
    p_all = np.concatenate(probs) if probs else np.zeros(0)
    h_all = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    order = np.argsort(-p_all, kind="stable")
    p_sorted, h_sorted = p_all[order], h_all[order]
    tp = np.cumsum(h_sorted)
    fp = np.cumsum(~h_sorted)
    # One point per distinct threshold: the last candidate of each run of equal probabilities.
    last = np.flatnonzero(np.r_[p_sorted[1:] != p_sorted[:-1], True]) if p_sorted.size else np.zeros(0, dtype=int)
    n_sub = len(subjects)
    sens = tp[last] / n_refs if n_refs else np.full(len(last), np.nan)
    return FrocCurve(
        thresholds=np.r_[np.inf, p_sorted[last]],
        sensitivity=np.r_[0.0 if n_refs else np.nan, sens],
        fp_per_subject=np.r_[0.0, fp[last] / n_sub],
        n_subjects=n_sub,
        n_references=n_refs,
        subjects=sorted(subjects),
    )


def load_candidates(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(centres (n, 3) RAS mm, probabilities (n,))`` from a ``plkd predict`` candidates JSON."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        cands = data["candidates"]
        centres = np.array([c["center_ras"] for c in cands], dtype=np.float64).reshape(-1, 3)
        probs = np.array([c["probability"] for c in cands], dtype=np.float64).reshape(-1)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read candidates from {p}: {exc.__class__.__name__}: {exc}") from None
    if not np.all(np.isfinite(centres)) or not np.all(np.isfinite(probs)):
        raise InputError(f"candidates file {p} has non-finite centres or probabilities")
    return centres, probs


def plot_froc(curves: Mapping[str, FrocCurve], path: str | os.PathLike[str], title: str = "FROC") -> Path:
    """Draw one or more FROC curves on a log-x axis (FP per subject) and save a PNG atomically.

    Each curve is drawn as a step line, with markers at 0.5, 1, 2, 4 and 8 FP per subject
    (the sensitivity reached with at most that many false positives).
    """
    if not curves:
        raise InputError("no FROC curve to plot")
    fig, ax = pyplot().subplots(figsize=(6, 4.5), dpi=120)
    try:
        x_min = min(MARK_FP) / 2
        for label, curve in curves.items():
            # A log axis cannot show 0 FP: the first point is drawn at the left edge.
            x = np.maximum(curve.fp_per_subject, x_min)
            (line,) = ax.step(x, curve.sensitivity, where="post", label=f"{label} ({curve.n_subjects} subjects)")
            # Markers only where the curve reaches that many FPs: beyond its end they would mislead.
            marks = [fp for fp in MARK_FP if fp <= curve.fp_per_subject.max() + 1e-12]
            ax.plot(marks, [curve.sensitivity_at(fp) for fp in marks], "o", color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlim(x_min, max(MARK_FP) * 1.5)
        ax.set_xticks(list(MARK_FP))
        ax.set_xticklabels([f"{fp:g}" for fp in MARK_FP])
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("false positives per subject")
        ax.set_ylabel("sensitivity")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        # Below the axes: inside, several curves would hide the very steps they describe.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2 if len(curves) > 2 else 1, fontsize="small")
    except BaseException:
        pyplot().close(fig)
        raise
    return save_figure(fig, path, bbox_inches="tight")
