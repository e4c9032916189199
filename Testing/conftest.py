"""Shared pytest fixtures: small, fast, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    # CI machines have 2 cores; more threads only add contention for tiny tensors.
    torch.set_num_threads(2)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator: every test is reproducible."""
    return np.random.default_rng(1234)
