"""SWI's phase-mask weighting, simulated from the paramagnetic sources of a subject.

SWI multiplies the magnitude by a mask built from the high-pass filtered phase (Haacke et al.,
"Susceptibility weighted imaging (SWI)", Magn Reson Med 2004;52:612-618): where the phase says
"paramagnetic" the mask is ``(π + φ) / π`` (φ in (-π, 0]), elsewhere 1, and it is applied ``n``
times (n = 4 in the original work). Paramagnetic structures (deoxygenated veins, haemosiderin,
ferritin iron) get darker and their blooming wider; diamagnetic calcifications, whose phase has
the other sign, are left as the magnitude shows them. That asymmetry is what lets a reader of SWI
tell a calcification from a microbleed, and it is what a model trained on plain magnitude never sees.

The phase is not computed from a field map here. Each paramagnetic source's local phase is taken
as proportional to the magnitude darkening it causes, ``φ = -κ · (1 - f_para)`` with ``f_para``
the product of the paramagnetic magnitude factors (microbleeds, veins, iron, cavernoma-like
lesions) and ``κ`` (rad) drawn per subject, so the mask follows each source's shape; the
dipole's positive lobes and the background field (removed by the high-pass filter) are not
modelled. ``κ`` and ``n`` are drawn from their own random stream, so switching the step on
changes nothing else in a subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Mask power n, drawn uniformly from these (Haacke et al. 2004 use 4; vendors use 3-5).
POWERS = (2, 3, 4, 5)
#: Phase (rad) of a source that removes all of the magnitude, drawn uniformly in this range.
PHASE_RAD = (0.6, 2.4)
#: Salt of the phase-mask random stream (mixed with the subject seed).
SALT = 0x5A15


@dataclass(frozen=True)
class PhaseMask:
    """One subject's phase-mask weighting: power ``n`` and phase scale ``kappa`` (rad)."""

    power: int
    kappa: float

    @classmethod
    def random(cls, seed: int) -> PhaseMask:
        """Draw the weighting for the subject of ``seed`` from its own stream."""
        rng = np.random.default_rng([int(seed), SALT])
        return cls(power=int(rng.choice(POWERS)), kappa=float(rng.uniform(*PHASE_RAD)))

    def weight(self, paramagnetic_factor: np.ndarray) -> np.ndarray:
        """The mask to the power n, same shape as ``paramagnetic_factor`` (magnitude factors in [0, 1]).

        1 where nothing paramagnetic darkens the magnitude, smaller where something does.
        """
        phase = -self.kappa * (1.0 - np.clip(paramagnetic_factor, 0.0, 1.0))
        mask = np.clip((np.pi + phase) / np.pi, 0.0, 1.0)
        return (mask**self.power).astype(np.float32)

    def as_dict(self) -> dict[str, float]:
        """``{"power", "phase_rad"}`` for the manifest."""
        return {"power": self.power, "phase_rad": round(self.kappa, 3)}
