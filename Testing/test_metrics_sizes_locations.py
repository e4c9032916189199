"""Per-size and per-location scoring: bin edges, millimetres on anisotropic grids, counts that add up."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plkd.location.summary import summarise
from plkd.metrics.sizes import SIZE_NAMES, equivalent_diameter_mm, size_bin


def test_size_bins_include_their_lower_edge_and_keep_large_blobs_apart() -> None:
    assert [size_bin(d) for d in (0.0, 2.999, 3.0, 4.999, 5.0, 9.99, 10.0, 25.0)] == [
        "<3 mm", "<3 mm", "3-5 mm", "3-5 mm", "5-10 mm", "5-10 mm", ">10 mm", ">10 mm",
    ]  # fmt: skip
    assert SIZE_NAMES == ("<3 mm", "3-5 mm", "5-10 mm", ">10 mm")
    with pytest.raises(ValueError):
        size_bin(float("nan"))


def test_a_blob_of_exactly_3_mm_is_not_binned_below_its_edge() -> None:
    # One voxel of 4.5·π mm³ is a sphere of exactly 3 mm; (6V/π)^(1/3) computes 2.999999999999999,
    # which the scripts' own bins put in "<3 mm".
    side = (4.5 * math.pi) ** (1.0 / 3.0)
    d = float(equivalent_diameter_mm(1, np.diag([side, side, side, 1.0])))
    assert d == pytest.approx(3.0) and d < 3.0  # the rounding this test is about
    assert size_bin(d) == "3-5 mm"


def test_diameters_are_millimetres_on_anisotropic_and_oblique_grids() -> None:
    # Three 1 x 1 x 3 mm voxels: 9 mm³, d = (54/π)^(1/3) = 2.580 mm (a voxel count alone says 1.79 mm).
    aniso = np.diag([1.0, 1.0, 3.0, 1.0])
    assert float(equivalent_diameter_mm(3, aniso)) == pytest.approx((54.0 / math.pi) ** (1.0 / 3.0))
    c, s = math.cos(0.4), math.sin(0.4)
    oblique = np.eye(4)
    oblique[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.0, 1.0, 3.0])
    assert float(equivalent_diameter_mm(3, oblique)) == pytest.approx(float(equivalent_diameter_mm(3, aniso)))


def test_location_counts_add_up_to_the_kept_candidates() -> None:
    candidates = [
        {"kept": True, "location": "lobar", "region": "frontal"},
        {"kept": True, "location": "Lobar"},  # not a class: unknown, not lost
        {"kept": True},  # no location: unknown
        {"kept": True, "location": "infratentorial", "region": "cerebellum"},
        {"kept": False, "location": "deep", "region": "thalamus"},  # rejected: not counted
    ]
    block = summarise(candidates)
    assert block["counts"] == {"lobar": 1, "deep": 0, "infratentorial": 1, "unknown": 2}
    assert sum(block["counts"].values()) == 4 == sum(block["regions"].values())
    assert "thalamus" not in block["regions"]
