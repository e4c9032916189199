"""Patch augmentation: the paper's flips, in-plane swaps and noise, plus intensity changes.

Parameters are drawn once per patch (:func:`draw_params`) and then applied with pure functions,
so the HR patch, its LR version and the label of one training pair see exactly the same
transform. Geometric transforms act on ``(..., X, Y, Z)`` arrays; intensity transforms only on
images. Inputs are z-scored (``plkd.normalise``), which sets the scale of every default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Intensity window (z-scores) in which the gamma-like contrast change is defined; fixed, so the
#: transform is the same function for an HR patch and its LR version.
GAMMA_WINDOW = (-5.0, 5.0)


@dataclass
class AugmentParams:
    """One patch's augmentation; ``None`` means "not applied"."""

    flips: tuple[bool, bool, bool] = (False, False, False)
    swap_xy: bool = False
    scale: float | None = None
    shift: float | None = None
    gamma: float | None = None
    bias: np.ndarray | None = None  # (10,) coefficients of a quadratic log-gain field
    noise_std: float | None = None
    noise_seed: int | None = None


def draw_params(rng: np.random.Generator, cfg: dict[str, Any], patch_shape: tuple[int, int, int]) -> AugmentParams:
    """Draw one patch's augmentation from the ``augment`` section of the configuration.

    The X↔Y swap is only drawn for patches that are square in-plane (it would change the shape
    otherwise). Every draw happens whatever the outcome, so the random stream (and therefore
    every later patch of the batch) does not depend on which augmentations fired.
    """
    u = rng.random(8)
    flips = tuple(bool(v < cfg["flip_p"]) for v in u[:3])
    swap = bool(u[3] < cfg["swap_xy_p"]) and patch_shape[0] == patch_shape[1]
    scale = float(rng.uniform(*cfg["scale_range"]))
    shift = float(rng.uniform(*cfg["shift_range"]))
    gamma = float(np.exp(rng.uniform(np.log(cfg["gamma_range"][0]), np.log(cfg["gamma_range"][1]))))
    bias = rng.normal(0.0, cfg["bias_strength"], size=10)
    noise_std = float(rng.uniform(*cfg["noise_std"]))
    noise_seed = int(rng.integers(0, 2**31 - 1))
    on_intensity = u[4] < cfg["intensity_p"]
    return AugmentParams(
        flips=flips,  # type: ignore[arg-type]
        swap_xy=swap,
        scale=scale if on_intensity else None,
        shift=shift if on_intensity else None,
        gamma=gamma if on_intensity else None,
        bias=bias if u[5] < cfg["bias_p"] else None,
        noise_std=noise_std if u[6] < cfg["noise_p"] else None,
        noise_seed=noise_seed,
    )


def apply_geometric(arr: np.ndarray, p: AugmentParams) -> np.ndarray:
    """Flip and swap the last three axes (X, Y, Z) of ``arr``; use for images and labels alike."""
    out = arr
    for axis, flip in enumerate(p.flips):
        if flip:
            out = np.flip(out, axis=out.ndim - 3 + axis)
    if p.swap_xy:
        out = np.swapaxes(out, -3, -2)
    return np.ascontiguousarray(out)


def bias_field(shape: tuple[int, int, int], coeffs: np.ndarray) -> np.ndarray:
    """Smooth multiplicative gain ``exp(quadratic polynomial)`` over ``[-1, 1]^3`` (an MRI bias field)."""
    x, y, z = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape)
    gx, gy, gz = np.meshgrid(x, y, z, indexing="ij")
    terms = [np.ones_like(gx), gx, gy, gz, gx * gx, gy * gy, gz * gz, gx * gy, gx * gz, gy * gz]
    log_gain = sum(float(c) * t for c, t in zip(coeffs, terms, strict=True))
    log_gain = log_gain - float(coeffs[0])  # no global gain: scale does that
    return np.exp(log_gain).astype(np.float32)


def apply_intensity(img: np.ndarray, p: AugmentParams) -> np.ndarray:
    """Scale/shift, gamma-like contrast, bias gain and Gaussian noise on an image patch ``(..., X, Y, Z)``.

    The noise field is generated from ``p.noise_seed``, so an HR patch and its LR version get the
    same noise (and the same everything else).
    """
    out = np.asarray(img, dtype=np.float32)
    if p.gamma is not None:
        lo, hi = GAMMA_WINDOW
        t = np.clip((out - lo) / (hi - lo), 0.0, 1.0)
        out = (t**p.gamma) * (hi - lo) + lo
    if p.scale is not None:
        out = out * p.scale + (p.shift or 0.0)
    if p.bias is not None:
        out = out * bias_field(tuple(out.shape[-3:]), p.bias)
    if p.noise_std is not None:
        noise = np.random.default_rng(p.noise_seed).normal(0.0, p.noise_std, size=out.shape[-3:])
        out = out + noise.astype(np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)
