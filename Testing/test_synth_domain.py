"""The simulator's domains: ``standard`` reproduces earlier data sets, ``wide`` covers the definition."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from plkd.errors import PLKDError
from plkd.synth import generate_subject
from plkd.synth.domain import STANDARD, WIDE, get_domain
from plkd.synth.lesions import draw_diameter


def test_standard_domain_regenerates_earlier_data_sets_bit_for_bit():
    # Computed with plkd before domains existed (commit f576121): a seed still gives the same subject.
    s = generate_subject(11, n_microbleeds=3, spacing=2.0)
    digest = hashlib.sha256(np.ascontiguousarray(s.image.data).tobytes()).hexdigest()[:16]
    assert digest == "c7e35f3574a992d4" and s.params["domain"] == "standard"


def test_wide_domain_oversamples_large_microbleeds_over_the_whole_definition():
    rng = np.random.default_rng(0)
    wide = np.array([draw_diameter(rng, WIDE) for _ in range(4000)])
    standard = np.array([draw_diameter(rng, STANDARD) for _ in range(4000)])
    assert wide.min() >= 1.0 and wide.max() <= 10.0
    # Published sizes: about 2 % above 5 mm. Wide: half log-uniform over 1.5-10 mm, so about
    # 0.5·ln(2)/ln(6.7) + 1 % ≈ 19 %, ten times as many, and every 1-mm bin of 5-10 mm is used.
    assert np.mean(standard > 5.0) < 0.05
    assert 0.15 < np.mean(wide > 5.0) < 0.25
    assert all(np.any((wide >= lo) & (wide < lo + 1)) for lo in range(5, 10))


def test_wide_subject_mixes_profiles_and_records_its_domain():
    s = generate_subject(5, n_microbleeds=12, spacing=2.0, domain="wide")
    assert s.params["domain"] == "wide"
    models = {m["model"] for m in s.microbleeds + s.hidden_microbleeds}
    assert models <= {"dipole", "generalised_gaussian"} and len(models) == 2
    assert max(m["target_diameter_mm"] for m in s.microbleeds) > 5.0
    again = generate_subject(5, n_microbleeds=12, spacing=2.0, domain="wide")
    np.testing.assert_array_equal(s.image.data, again.image.data)  # deterministic per seed


def test_unknown_domain_is_refused():
    with pytest.raises(PLKDError, match="domain"):
        generate_subject(1, domain="huge")
    with pytest.raises(ValueError):
        get_domain("huge")
