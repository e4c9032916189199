"""Shared pytest fixtures: small, fast, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    # Tiny test tensors gain nothing from threads; on 2-core CI machines threads only add contention.
    torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator: every test is reproducible."""
    return np.random.default_rng(1234)
