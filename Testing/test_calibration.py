"""Calibrated candidate probabilities: Platt fit, expected calibration error, reliability diagram."""

from __future__ import annotations

import numpy as np
import pytest

from plkd.calibration import expected_calibration_error, fit_platt, probability_bins, reliability_diagram
from plkd.models import Calibration, candidate_logit


def test_platt_fit_recovers_the_generating_map():
    # Candidates whose truth is drawn with P(microbleed) = sigmoid(0.4·z - 1.0): the fit finds a, b.
    rng = np.random.default_rng(3)
    z = rng.uniform(-12, 12, 20000)
    y = rng.uniform(size=z.size) < 1.0 / (1.0 + np.exp(-(0.4 * z - 1.0)))
    a, b = fit_platt(z, y)
    assert a == pytest.approx(0.4, abs=0.03) and b == pytest.approx(-1.0, abs=0.1)
    cal = Calibration(a, b)
    after = expected_calibration_error([cal(v) for v in z], y)
    before = expected_calibration_error([Calibration()(v) for v in z], y)
    assert after < 0.02 < before


def test_platt_fit_needs_both_classes():
    assert fit_platt([1.0, 2.0, 3.0], [True, True, True]) == (1.0, 0.0)
    assert fit_platt([float("inf"), -float("inf"), 5.0, -5.0], [True, False, True, False])[0] > 0


def test_platt_fit_never_reverses_the_ranking():
    """Candidates whose logits say the opposite of the truth (a poorly trained segmenter) gave a slope a = -5.7:
    the strongest candidates then got the lowest probabilities and the tuned thresholds kept the weakest."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=200)
    a, b = fit_platt(z, z < -0.5)
    assert a > 0
    probs = [Calibration(a, b)(v) for v in sorted(z)]
    assert probs == sorted(probs)


def test_temperature_scaling_records_are_read():
    """A per-network {"temperature": T} (shared manifest contract) was read as no calibration at all."""
    assert Calibration.from_manifest({"temperature": 2.0}) == Calibration(0.5, 0.0)
    assert Calibration.from_manifest({"method": "platt", "a": 0.2, "b": -1.0}) == Calibration(0.2, -1.0)


def test_expected_calibration_error_on_hand_made_values():
    # Bin 0.9-1.0: mean probability 0.95, half are microbleeds -> |0.5 - 0.95| = 0.45, weight 2/4.
    # Bin 0.1-0.2: mean 0.15, none is -> 0.15, weight 2/4. ECE = 0.5·0.45 + 0.5·0.15 = 0.30.
    assert expected_calibration_error([0.95, 0.95, 0.15, 0.15], [True, False, False, False]) == pytest.approx(0.30)
    assert expected_calibration_error([0.25, 0.75], [False, True], n_bins=2) == pytest.approx(0.25)


def test_ece_bins_at_the_edges_empty_bins_and_certain_probabilities():
    # Edges belong to the upper bin (0.3 -> bin 3), 1.0 to the last, 0.0 to the first; the edges of
    # np.arange(0, 1, 0.1), which the test-set script used, are 0.30000000000000004 etc. (0.3 a bin low).
    assert probability_bins([0.0, 0.1, 0.3, 0.6, 0.7, 0.9999, 1.0]).tolist() == [0, 1, 3, 6, 7, 9, 9]
    # Bins 0 and 9 hold one candidate each, all other bins are empty: ECE = 0.5·|0 - 0| + 0.5·|1 - 1| = 0.
    assert expected_calibration_error([0.0, 1.0], [False, True]) == 0.0
    # Hand count: 0.3 and 0.35 in bin 3 (mean 0.325, one true: |0.5 - 0.325| = 0.175), weight 2/2.
    assert expected_calibration_error([0.3, 0.35], [True, False]) == pytest.approx(0.175)


def test_ece_refuses_values_that_are_not_probabilities():
    # NaN fell in no bin but still counted in the weights: the ECE came out too small, silently.
    for bad in ([0.9, float("nan")], [0.5, 1.2], [-0.1, 0.5]):
        with pytest.raises(ValueError, match="not in"):
            expected_calibration_error(bad, [True, False])
    with pytest.raises(ValueError, match="length"):
        expected_calibration_error([0.5, 0.5], [True])


def test_calibration_is_monotonic_and_never_rounds_a_finite_logit_to_certainty():
    cal = Calibration(a=0.3, b=-0.5)
    values = [cal(z) for z in (-40.0, -2.0, 0.0, 2.0, 40.0)]
    assert values == sorted(values)
    assert cal(10.0) < 1.0 and Calibration()(-800.0) == 0.0
    assert Calibration.from_manifest(None) == Calibration()
    assert Calibration.from_manifest({"method": "platt", "a": 0.5, "b": 1.0}) == Calibration(0.5, 1.0)


def test_candidate_logit_scores_the_candidate_own_region():
    logits = np.full((8, 8, 8), -5.0)
    logits[1, 1, 1] = 9.0  # a neighbour's lesion, outside the region
    logits[4:6, 4:6, 4] = [[3.0, 2.0], [1.0, 0.0]]
    region = np.zeros_like(logits, dtype=bool)
    region[4:6, 4:6, 4] = True
    assert candidate_logit(logits, region) == pytest.approx(1.5)  # mean of the 4 largest: 3, 2, 1, 0
    assert candidate_logit(logits, region, k=2) == pytest.approx(2.5)
    assert candidate_logit(logits, np.zeros_like(region)) == float("-inf")


def test_reliability_diagram_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.uniform(size=300)
    y = rng.uniform(size=300) < p
    out = reliability_diagram({"teacher": (p**2, p, y)}, tmp_path / "rel.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reliability_diagram_bars_count_the_ece_bins(tmp_path, monkeypatch):
    """The bars under the diagram counted candidates in np.histogram's bins, whose edge 0.30000000000000004 put
    p = 0.3 (and 0.6, 0.7) one bin lower than the ECE and the points do."""
    import matplotlib.axes

    heights = []
    real_bar = matplotlib.axes.Axes.bar

    def bar(self, x, height, *args, **kwargs):  # noqa: ANN001, ANN202 - matplotlib's own signature
        heights.append(list(height))
        return real_bar(self, x, height, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", bar)
    p = np.array([0.3] * 4 + [0.7] * 3 + [0.05] * 5)
    y = np.array([True] * 4 + [False] * 3 + [False] * 5)
    reliability_diagram({"teacher": (p, p, y)}, tmp_path / "rel.png")
    expected = np.bincount(probability_bins(p), minlength=10).tolist()
    assert expected[3] == 4 and expected[7] == 3
    assert heights == [expected]
