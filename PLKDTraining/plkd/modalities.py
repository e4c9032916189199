"""The MRI contrasts plkd simulates, trains on and ships models for.

``T2S`` is T2*-weighted gradient echo (GRE) and ``SWI`` susceptibility-weighted imaging
(magnitude), the two arms of the paper's evaluation (VALDO SABRE/ALFA and AIBL). Kept in a module
of its own, free of heavy imports, so that the simulator, the data sets and inference share it.
"""

from __future__ import annotations

#: Every contrast a bundle's manifest, a data set or ``--modality`` may name.
MODALITIES = ("T2S", "SWI")
