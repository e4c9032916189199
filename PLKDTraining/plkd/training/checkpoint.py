"""Atomic, ``weights_only``-loadable training checkpoints.

A checkpoint holds everything an uninterrupted run would still have in memory at that step:
model, optimiser, scheduler and AMP-scaler states, the step, torch's RNG states, the best
validation metric and the log rows so far. Only tensors, numbers, strings, lists and dicts are
stored, so :func:`torch.load` with ``weights_only=True`` reads it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from plkd.atomic import atomic_path, torch_save
from plkd.errors import PLKDError

CHECKPOINT_NAME = "checkpoint.pt"
FINAL_NAME = "model.pt"
BEST_NAME = "best.pt"
DONE_NAME = "done.json"


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` with :func:`torch.save` under a temporary name, then rename it."""
    with atomic_path(path) as tmp:
        torch_save(state, tmp)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, on the CPU)."""
    p = Path(path)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PLKDError(f"checkpoint not found: {p}") from None
    except Exception as exc:  # a truncated or foreign file
        raise PLKDError(f"cannot read checkpoint {p}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from None


def rng_state() -> dict[str, Any]:
    """torch's CPU (and CUDA, when present) random generator states."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict saved as ``model.pt`` / ``best.pt`` by a finished stage."""
    p = Path(path)
    if not p.is_file():
        raise PLKDError(f"trained weights not found: {p} (has this stage finished?)")
    return torch.load(p, map_location="cpu", weights_only=True)
