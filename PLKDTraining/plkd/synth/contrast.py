"""T2*-weighted GRE and SWI-like magnitude contrast, bias field and Rician noise.

On a T2*-weighted gradient echo CSF is bright (long T2*), grey matter brighter than white
matter; on SWI magnitude the grey/white contrast is weaker (either way round) and venous blood
and iron are darker. Every parameter is drawn per subject from generous ranges so a model
trained on these subjects meets many contrasts, noise levels and bias fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from plkd.modalities import MODALITIES
from plkd.synth.anatomy import WarpedAnatomy
from plkd.synth.domain import STANDARD, Domain
from plkd.synth.fields import SmoothField


@dataclass(frozen=True)
class Contrast:
    """Per-subject acquisition and contrast parameters (intensities relative to white matter = 1)."""

    modality: str
    grey: float
    csf: float
    scale: float  # arbitrary scanner units of white matter
    snr: float  # white-matter signal / noise standard deviation
    bias_rms: float  # rms of the log bias field
    texture: float  # rms of fine anatomical texture
    field_t: float  # B0 (T)
    te_ms: float  # echo time

    @classmethod
    def random(cls, rng: np.random.Generator, modality: str, domain: Domain = STANDARD) -> Contrast:
        """Draw a contrast for ``modality`` (``"T2S"`` or ``"SWI"``) from the ``domain``'s ranges."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}")
        d = domain
        if modality == "T2S":
            grey, csf, te = rng.uniform(*d.grey_t2s), rng.uniform(*d.csf_t2s), rng.uniform(*d.te_t2s_ms)
        else:
            grey, csf, te = rng.uniform(*d.grey_swi), rng.uniform(*d.csf_swi), rng.uniform(*d.te_swi_ms)
        return cls(
            modality=modality,
            grey=float(grey),
            csf=float(csf),
            scale=float(np.exp(rng.uniform(np.log(80.0), np.log(2000.0)))),
            snr=float(rng.uniform(*d.snr)),
            bias_rms=float(rng.uniform(*d.bias_rms)),
            texture=float(rng.uniform(*d.texture)),
            field_t=float(rng.choice([1.5, 3.0], p=[0.35, 0.65])),
            te_ms=float(te),
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain values for the manifest."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def tissue_signal(anat: WarpedAnatomy, contrast: Contrast, rng: np.random.Generator) -> np.ndarray:
    """Noise-free magnitude from tissue fractions (partial-volume mix) with a fine texture."""
    csf = np.clip(anat.mask - anat.gm - anat.wm, 0.0, 1.0)
    signal = anat.wm + np.float32(contrast.grey) * anat.gm + np.float32(contrast.csf) * csf
    # The template is an average of many brains and looks too smooth; a faint 1-2 mm texture
    # stands in for the tissue heterogeneity of a single scan.
    tex = ndimage.gaussian_filter(rng.standard_normal(signal.shape, dtype=np.float32), 1.0)
    tex *= np.float32(contrast.texture / max(float(tex.std()), 1e-6))
    signal *= 1.0 + tex
    return signal.astype(np.float32)


def bias_field(rng: np.random.Generator, axes: list[np.ndarray], rms: float) -> np.ndarray:
    """A smooth multiplicative receive-coil bias ``exp(f)`` with ``f`` of the given rms."""
    lo = np.array([a[0] for a in axes])
    hi = np.array([a[-1] for a in axes]) + 1e-3
    field = SmoothField.random(rng, lo, hi, order=2, rms=rms, decay=1.0)
    return np.exp(field.on_grid(*axes)).astype(np.float32)


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma`` per channel."""
    re = signal + rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    im = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(re * re + im * im).astype(np.float32)
