"""FROC analysis: sensitivity against false positives per subject over the candidate threshold.

Each subject contributes *detections*: a centre (mm) and the probability at which it appears.
At a threshold ``t`` the detections with probability ``>= t`` are matched to the reference
centres by **the VALDO rule** (:func:`plkd.metrics.valdo.valdo_match`: nearest reference
within 5 mm, the nearest prediction of each reference is the TP, the others FP) — the same
rule as the pooled table of ``plkd evaluate``. Sensitivity is the fraction of references
detected and FP/subject the false positives over all subjects. Under this rule, lowering the
threshold never lowers either, so the points form a monotone staircase.

:func:`froc_subject` builds the detections from a prediction so that the curve passes
exactly through the pooled operating point: at or above the threshold ``plkd predict``
applied, a detection is a connected component of the predicted label map (centre of mass,
the probability of the candidate whose label it carries); below it, each candidate rejected
only for its probability is added at its outline's centre (``center_ras_if_kept``; ``center_ras``, the
candidate's position, in older files), unless ``plkd predict`` says it would not be a
microbleed of its own at a threshold lowered to its probability (``if_threshold_lowered``: a duplicate of a
stronger candidate, whose outline it overlaps or touches, as in the label map, or one without any voxel above
the voxel threshold, which no probability threshold keeps). The curve sweeps every distinct
probability, so it spans the candidates' whole range. Every reference counts as one
microbleed (rater-agreement weights are not used here).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plkd.errors import InputError
from plkd.figures import pyplot, save_figure
from plkd.metrics.components import CONNECTIVITY, binarise_prediction, binarise_reference, find_components
from plkd.metrics.valdo import MAX_DISTANCE_MM, valdo_match

#: FP-per-subject operating points reported in the JSON.
REPORT_FP = (1.0, 2.0, 4.0)
#: Rejection reasons of ``plkd predict`` that a lower threshold would undo (older files have none).
THRESHOLD_REASONS = (None, "", "below threshold")


@dataclass
class FrocSubject:
    """One subject's detections and references.

    ``candidate_centres`` ``(n, 3)`` and ``reference_centres`` ``(m, 3)`` are in mm in one frame
    (VALDO mm: voxel indices times zooms, or RAS); ``probabilities`` ``(n,)`` say from which
    threshold down each detection is present (``inf``: always).
    """

    candidate_centres: np.ndarray
    probabilities: np.ndarray
    reference_centres: np.ndarray
    #: Detections below the applied threshold taken without knowing whether ``plkd predict`` would keep them (not
    #: merged as duplicates, not without an outline) or where their outlines lie (a candidates JSON without
    #: ``if_threshold_lowered``, from before session 16).
    unmerged: int = 0


@dataclass
class FrocCurve:
    """A FROC curve: one point per distinct threshold, in decreasing threshold order.

    ``sensitivity[i]`` and ``fp_per_subject[i]`` are obtained by keeping the detections with
    probability ``>= thresholds[i]``. The first point has an infinite threshold (only the
    always-present detections). ``operating_point`` (optional) is the pooled result at the
    thresholds ``plkd predict`` applied: ``{"sensitivity", "fp_per_subject", "thresholds"}``.
    """

    thresholds: np.ndarray
    sensitivity: np.ndarray
    fp_per_subject: np.ndarray
    n_subjects: int
    n_references: int
    subjects: list[str] = field(default_factory=list)
    operating_point: dict[str, Any] | None = None
    max_distance_mm: float = MAX_DISTANCE_MM

    def sensitivity_at(self, fp_per_subject: float) -> float:
        """Best sensitivity reached with at most ``fp_per_subject`` false positives per subject."""
        ok = self.fp_per_subject <= fp_per_subject + 1e-12
        return float(np.max(self.sensitivity[ok])) if np.any(ok) else float("nan")

    def to_dict(self) -> dict:
        """JSON-ready form (``from_dict`` reads it back)."""
        finite = self.thresholds[np.isfinite(self.thresholds)]
        return {
            "n_subjects": self.n_subjects,
            "n_references": self.n_references,
            "subjects": list(self.subjects),
            "max_distance_mm": self.max_distance_mm,  # the distance matched with (--max-distance), not the default
            "matching": "VALDO rule at every threshold (as the pooled table); duplicates merged as plkd predict does",
            "probability_range": [float(finite.min()), float(finite.max())] if finite.size else None,
            "sensitivity_at_fp": {f"{fp:g}": self.sensitivity_at(fp) for fp in REPORT_FP},
            "operating_point": self.operating_point,
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
            operating_point=data.get("operating_point"),
            max_distance_mm=float(data.get("max_distance_mm", MAX_DISTANCE_MM)),
        )


def froc_curve(
    subjects: Mapping[str, FrocSubject],
    max_distance_mm: float = MAX_DISTANCE_MM,
    operating_point: dict[str, Any] | None = None,
) -> FrocCurve:
    """The FROC curve over all subjects: the VALDO rule at every distinct detection probability."""
    if not subjects:
        raise InputError("no subjects with candidates to build a FROC curve from")
    subs = []
    for sub in subjects.values():
        centres = np.asarray(sub.candidate_centres, dtype=np.float64).reshape(-1, 3)
        probs = np.asarray(sub.probabilities, dtype=np.float64).reshape(-1)
        refs = np.asarray(sub.reference_centres, dtype=np.float64).reshape(-1, 3)
        if len(centres) != len(probs):
            raise InputError(f"FROC: {len(centres)} detection centres but {len(probs)} probabilities")
        subs.append((centres, probs, refs))
    n_refs = sum(len(r) for _, _, r in subs)
    all_p = np.concatenate([p for _, p, _ in subs]) if subs else np.zeros(0)
    finite = np.unique(all_p[np.isfinite(all_p)])[::-1]
    thresholds = np.r_[np.inf, finite]
    detected = np.zeros(len(thresholds))
    fp = np.zeros(len(thresholds))
    for centres, probs, refs in subs:
        # Match once per distinct probability of this subject, then spread over the global thresholds.
        own = np.r_[np.inf, np.unique(probs[np.isfinite(probs)])[::-1]]
        own_detected, own_fp = np.zeros(len(own)), np.zeros(len(own))
        for i, t in enumerate(own):
            m = valdo_match(centres[probs >= t], refs, max_distance_mm)
            own_detected[i], own_fp[i] = m.detected.sum(), m.is_fp.sum()
        # For a global threshold t, the subject's selection is that of its lowest own threshold >= t.
        idx = np.searchsorted(-own, -thresholds, side="right") - 1
        detected += own_detected[idx]
        fp += own_fp[idx]
    n_sub = len(subs)
    return FrocCurve(
        thresholds=thresholds,
        sensitivity=detected / n_refs if n_refs else np.full(len(thresholds), np.nan),
        fp_per_subject=fp / n_sub,
        n_subjects=n_sub,
        n_references=n_refs,
        subjects=sorted(subjects),
        operating_point=operating_point,
        max_distance_mm=float(max_distance_mm),
    )


def froc_subject(
    pred_labels: np.ndarray,
    reference: np.ndarray,
    zooms: Sequence[float] | np.ndarray,
    affine: np.ndarray,
    candidates: Sequence[Mapping[str, Any]],
    *,
    threshold: float = 0.5,
    connectivity: int = CONNECTIVITY,
    applied: float | None = None,
) -> tuple[FrocSubject, int]:
    """Detections of one subject for :func:`froc_curve`, consistent with the pooled table.

    ``pred_labels`` is the predicted label map (``plkd predict``'s instance labels) and
    ``reference`` the reference map, both on the reference grid whose voxel-to-RAS ``affine``
    and voxel size ``zooms`` (mm, the affine's column norms) are given; ``candidates`` the records
    of the candidates JSON (none for a subject scored as an empty prediction). Centres are in
    VALDO mm (voxel indices times zooms). A component gets the probability of the candidate
    whose ``label`` it carries (or, in a binary mask, where every microbleed holds 1, of the
    kept candidate whose centre lies in it); a component no candidate explains is always
    present (probability ``inf``). ``applied``, the segmentation threshold ``plkd predict`` applied
    (the JSON's ``thresholds.segmentation``), keeps the written probabilities, rounded to 4
    decimals, on their side of it: a candidate rejected at 0.49996 is written 0.5 and would
    otherwise join the curve's point at 0.5, which then missed the pooled operating point.
    Returns the subject and the number of such components.
    """
    zooms = np.asarray(zooms, dtype=np.float64)[:3]
    pred_labels = np.asarray(pred_labels)
    comps = find_components(binarise_prediction(pred_labels, threshold), connectivity)
    refs = find_components(binarise_reference(reference), connectivity)
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))

    def to_vox(ras: Sequence[float]) -> np.ndarray:
        return inv[:3, :3] @ np.asarray(ras, dtype=np.float64) + inv[:3, 3]

    by_label = {int(c["label"]): float(c["probability"]) for c in candidates if int(c.get("label") or 0) > 0}
    comp_prob = np.full(comps.n, -np.inf)
    if comps.n:
        values = np.rint(pred_labels).astype(np.int64)
        fg = comps.labels > 0
        # Values name candidates only in an instance map: a binary mask holds 1 in every microbleed, which gave
        # each the probability of candidate 1 (all appeared at its threshold); there the centres decide.
        if len(by_label) <= 1 or int(values[fg].max()) > 1:
            for comp, value in set(zip(comps.labels[fg].tolist(), values[fg].tolist(), strict=True)):
                if value in by_label:
                    comp_prob[comp - 1] = max(comp_prob[comp - 1], by_label[value])
        for c in candidates:  # label values that do not name candidates (binary masks): centres decide
            v = np.rint(to_vox(c["center_ras"])).astype(int)
            if c.get("kept") and np.all((v >= 0) & (v < comps.labels.shape)):
                comp = int(comps.labels[tuple(v)])
                if comp and not np.isfinite(comp_prob[comp - 1]):
                    comp_prob[comp - 1] = float(c["probability"])
    unexplained = int(np.sum(~np.isfinite(comp_prob)))
    comp_prob[~np.isfinite(comp_prob)] = np.inf
    rejected = [
        c
        for c in candidates
        if int(c.get("label") or 0) == 0 and c.get("reason") in THRESHOLD_REASONS and c.get("merged_into") is None
    ]
    # Only those plkd predict would keep as microbleeds of their own at a threshold lowered to them: a duplicate of a
    # stronger candidate is the same microbleed seen twice, as in the label map of the operating point.
    points = [c for c in rejected if c.get("if_threshold_lowered", "kept") == "kept"]
    unmerged = sum(1 for c in rejected if "if_threshold_lowered" not in c)
    # At its outline's centre, as a kept microbleed's component (older JSONs: the candidate's position).
    point_mm = np.array([to_vox(c.get("center_ras_if_kept", c["center_ras"])) * zooms for c in points]).reshape(-1, 3)
    point_p = np.array([float(c["probability"]) for c in points], dtype=np.float64)
    if applied is not None:
        explained = np.isfinite(comp_prob)
        comp_prob[explained] = np.maximum(comp_prob[explained], applied)  # kept: at or above it
        point_p = np.minimum(point_p, np.nextafter(applied, -np.inf))  # rejected for it: below it
    subject = FrocSubject(
        candidate_centres=np.vstack([comps.centres_mm(zooms), point_mm]),
        probabilities=np.r_[comp_prob, point_p],
        reference_centres=refs.centres_mm(zooms),
        unmerged=unmerged,
    )
    return subject, unexplained


def load_candidates(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(centres (n, 3) RAS mm, probabilities (n,))`` from a ``plkd predict`` candidates JSON."""
    records = load_candidate_records(path)["candidates"]
    centres = np.array([c["center_ras"] for c in records], dtype=np.float64).reshape(-1, 3)
    probs = np.array([c["probability"] for c in records], dtype=np.float64).reshape(-1)
    return centres, probs


def load_candidate_records(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The whole candidates JSON, with every candidate's centre and probability checked.

    Raises :class:`~plkd.errors.InputError` for an unreadable file, a missing field or a
    non-finite value. ``label`` defaults to 0 and ``kept`` to ``label > 0`` when absent.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        records = data["candidates"]
        for c in records:
            centre = [float(v) for v in c["center_ras"]]
            prob = float(c["probability"])
            if len(centre) != 3 or not all(math.isfinite(v) for v in [*centre, prob]):
                raise ValueError(f"candidate {c.get('id')} has a non-finite or malformed centre/probability")
            c.setdefault("label", 0)
            c.setdefault("kept", int(c["label"] or 0) > 0)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read candidates from {p}: {exc.__class__.__name__}: {exc}") from None
    return data


def plot_froc(curves: Mapping[str, FrocCurve], path: str | os.PathLike[str], title: str = "FROC") -> Path:
    """Draw FROC curves (FP per subject against sensitivity) and save a PNG atomically.

    Every point is drawn as a marker on a staircase (the best sensitivity at that many FP), so
    a curve of two points is still readable; the x axis is linear up to 1 FP per subject and
    logarithmic beyond. A curve's operating point (the thresholds actually applied, the pooled
    table's TPR and FP/subject) is marked with a star and labelled; with one curve, the
    threshold of each point is written beside it when there are few.
    """
    if not curves:
        raise InputError("no FROC curve to plot")
    fig, ax = pyplot().subplots(figsize=(6.4, 4.8), dpi=120)
    try:
        x_max = 1.0
        for label, curve in curves.items():
            fp, sens = curve.fp_per_subject, curve.sensitivity
            x_max = max(x_max, float(np.nanmax(fp)) if fp.size else 0.0)
            op = curve.operating_point
            has_op = bool(op) and _finite(op.get("sensitivity")) and _finite(op.get("fp_per_subject"))
            op_text = (
                f"star: {_describe_thresholds(op.get('thresholds'))}, TPR {100 * op['sensitivity']:.1f} %, "
                f"{op['fp_per_subject']:.2f} FP/subject"
                if has_op
                else ""
            )
            name = f"{label} ({curve.n_subjects} subjects, {curve.n_references} microbleeds)"
            if has_op and len(curves) > 1:
                name += f"; {op_text}"  # in the legend: several labels beside the stars would collide
            (line,) = ax.plot(fp, sens, drawstyle="steps-post", marker="o", ms=4, label=name)
            if len(curves) == 1 and len(fp) <= 15:
                for t, x, y in zip(curve.thresholds[1:], fp[1:], sens[1:], strict=True):
                    ax.annotate(
                        f"{t:.2f}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7, color="0.3"
                    )
            if has_op:
                ax.plot(
                    [op["fp_per_subject"]], [op["sensitivity"]], marker="*", ms=15, color=line.get_color(), mec="black"
                )
                if len(curves) == 1:
                    ax.annotate(
                        op_text.replace("star: ", "applied: ").replace(", TPR", "\nTPR"),
                        (op["fp_per_subject"], op["sensitivity"]),
                        textcoords="offset points",
                        xytext=(10, 8),
                        fontsize=7,
                        color=line.get_color(),
                    )
        ax.set_xscale("symlog", linthresh=1.0, linscale=1.0)
        right = x_max * 1.15 + 0.05
        ax.set_xlim(-0.04 * min(right, 2.0), right)  # a margin, so points at 0 FP are not cut in half
        ticks = [t for t in (0, 0.25, 0.5, 0.75, 1, 2, 4, 8, 16, 32, 64, 128) if t <= right]
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("false positives per subject (linear to 1, log beyond)")
        ax.set_ylabel("sensitivity (fraction of microbleeds found)")
        ax.set_title(f"{title}\nVALDO matching at every candidate probability; star = thresholds applied", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        # Below the axes: inside, several curves would hide the very steps they describe.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, fontsize="small")
    except BaseException:
        pyplot().close(fig)
        raise
    return save_figure(fig, path, bbox_inches="tight")


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def _describe_thresholds(thresholds: Any) -> str:
    """``p >= 0.62`` for one applied segmentation threshold, ``p >= 0.55-0.70`` for several."""
    values = sorted({float(v) for v in (thresholds or [])})
    if not values:
        return "thresholds of the prediction"
    if len(values) == 1:
        return f"p >= {values[0]:.3g}"
    return f"p >= {values[0]:.3g}-{values[-1]:.3g} (per subject)"
