"""The shipped model finds microbleeds across the definition: an 8 mm and a 2.5 mm one in one brain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from planted_microbleeds import brain_with_microbleeds

from plkd.inference.predictor import Predictor
from plkd.volumes import Volume

SHIPPED_BUNDLE = Path(__file__).resolve().parents[1] / "PLKDTraining" / "plkd" / "bundled" / "cmb-t2s"


@pytest.fixture(scope="module")
def brain() -> tuple[Volume, Volume, dict[str, np.ndarray]]:
    """A synthetic brain without microbleeds (mimics kept), cropped around its centre, with two painted."""
    return brain_with_microbleeds(2024, {"8 mm": 8.0, "2.5 mm": 2.5})


# The 2.5 mm one was missed until candidates at the end of the image stopped filling the screening cap
# (this crop has brain up to its borders, where the FCN's zero padding fires).
@pytest.mark.parametrize("size", ["8 mm", "2.5 mm"])
def test_shipped_model_finds_a_large_and_a_small_microbleed(brain, size):
    image, mask, planted = brain
    result = Predictor(SHIPPED_BUNDLE, device="cpu").predict(image, mask)
    kept = [c for c in result.candidates if c["kept"]]
    dist = [np.linalg.norm(np.asarray(c["center_ras"]) - planted[size]) for c in kept]
    assert dist and min(dist) <= 3.0, (size, kept)
    assert len(kept) <= 4  # the two microbleeds and at most two false alarms in this crop
