"""FROC curves from candidate centres and probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from plkd.metrics import FrocCurve, FrocSubject, froc_curve, plot_froc
from plkd.metrics.froc import greedy_candidate_hits

REFS = np.array([[0.0, 0.0, 0.0], [30.0, 0.0, 0.0]])


def one_subject() -> FrocSubject:
    centres = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 50.0], [30.0, 0, 3.0]])
    probs = np.array([0.9, 0.8, 0.7, 0.3])  # TP, duplicate (FP), far (FP), second reference (TP)
    return FrocSubject(centres, probs, REFS)


def test_greedy_matching_by_probability() -> None:
    s = one_subject()
    assert greedy_candidate_hits(s.candidate_centres, s.probabilities, s.reference_centres).tolist() == [
        True,
        False,
        False,
        True,
    ]
    # The duplicate wins when it is more probable; the other becomes the FP.
    hits = greedy_candidate_hits(s.candidate_centres, np.array([0.8, 0.9, 0.7, 0.3]), REFS)
    assert hits.tolist() == [False, True, False, True]


def test_candidate_near_two_references_takes_nearest_unmatched() -> None:
    refs = np.array([[0.0, 0, 0], [4.0, 0, 0]])
    cands = np.array([[3.0, 0, 0], [1.0, 0, 0]])
    hits = greedy_candidate_hits(cands, np.array([0.9, 0.5]), refs)
    assert hits.tolist() == [True, True]  # first takes x=4, second the remaining x=0


def test_curve_points_and_operating_points() -> None:
    curve = froc_curve({"s1": one_subject()})
    assert curve.n_references == 2 and curve.n_subjects == 1
    assert curve.sensitivity.tolist() == [0.0, 0.5, 0.5, 0.5, 1.0]
    assert curve.fp_per_subject.tolist() == [0.0, 0.0, 1.0, 2.0, 2.0]
    assert curve.thresholds[1:].tolist() == [0.9, 0.8, 0.7, 0.3]
    assert curve.sensitivity_at(0.5) == 0.5
    assert curve.sensitivity_at(1) == 0.5
    assert curve.sensitivity_at(2) == 1.0
    d = curve.to_dict()
    assert d["sensitivity_at_fp"] == {"1": 0.5, "2": 1.0, "4": 1.0}
    back = FrocCurve.from_dict(d)
    np.testing.assert_array_equal(back.sensitivity, curve.sensitivity)


def test_fp_per_subject_divides_by_subjects_and_ties_share_a_point() -> None:
    empty = FrocSubject(np.array([[5.0, 5, 5], [9.0, 9, 9]]), np.array([0.6, 0.6]), np.zeros((0, 3)))
    curve = froc_curve({"s1": one_subject(), "s2": empty})
    assert curve.n_subjects == 2 and curve.n_references == 2
    # Thresholds 0.9, 0.8, 0.7, 0.6 (two tied candidates, one point), 0.3.
    assert curve.thresholds[1:].tolist() == [0.9, 0.8, 0.7, 0.6, 0.3]
    assert curve.fp_per_subject.tolist() == [0.0, 0.0, 0.5, 1.0, 2.0, 2.0]
    assert curve.sensitivity.tolist() == [0.0, 0.5, 0.5, 0.5, 0.5, 1.0]
    assert curve.sensitivity_at(1) == 0.5
    assert curve.sensitivity_at(2) == 1.0


def test_plot_froc_writes_png_with_several_curves(tmp_path) -> None:
    a = froc_curve({"s1": one_subject()})
    b = froc_curve({"s1": FrocSubject(np.array([[0.0, 0, 0]]), np.array([0.9]), REFS)})
    out = plot_froc({"x1": a, "x4": b}, tmp_path / "f" / "froc.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_subject_is_an_error() -> None:
    from plkd.errors import InputError

    with pytest.raises(InputError):
        froc_curve({})
