"""How widely the simulator randomises: the ``standard`` domain and the ``wide`` one for training.

``standard`` draws what real cohorts look like (microbleed sizes with the published median of
2.7 mm, the contrasts of typical 1.5/3 T T2*-GRE and SWI protocols). A detector trained on it
sees few microbleeds over 5 mm and one appearance per size, and misses the large ones.

``wide`` follows SynthSeg's domain randomisation (Billot et al., Medical Image Analysis 2023):
every parameter a scanner or a patient varies is drawn from a range wider than the real one, so
that real scans fall inside what training saw. It over-samples large microbleeds (half of them
log-uniform over the whole 1.5-10 mm definition), varies their radial profile (dipole blooming
or a generalised-Gaussian drop with random edge sharpness and peak drop), widens contrast, noise
and bias, and adds mimics of every size, cavernoma-like lesions over 10 mm among them. Every
range is listed in docs/design.md ("Simulator domains").
"""

from __future__ import annotations

from dataclasses import dataclass

DOMAINS = ("standard", "wide")


@dataclass(frozen=True)
class Domain:
    """Ranges (low, high) the simulator draws from; see the module docstring."""

    name: str
    #: Share of microbleeds whose diameter is log-uniform over ``large_range_mm`` (rest: published).
    large_share: float
    large_range_mm: tuple[float, float]
    #: Per microbleed: probability of the dipole model (else a generalised-Gaussian drop),
    #: ``None`` to use the data set's one model for every microbleed.
    dipole_share: float | None
    #: Generalised-Gaussian edge exponent (2 = Gaussian; larger = sharper edge) and peak drop.
    edge_exponent: tuple[float, float]
    peak_drop: tuple[float, float]
    #: Dipole susceptibility difference (ppm, log-uniform).
    chi_ppm: tuple[float, float]
    #: Tissue contrasts relative to white matter, per modality: grey, CSF.
    grey_t2s: tuple[float, float]
    csf_t2s: tuple[float, float]
    grey_swi: tuple[float, float]
    csf_swi: tuple[float, float]
    te_t2s_ms: tuple[float, float]
    te_swi_ms: tuple[float, float]
    snr: tuple[float, float]
    bias_rms: tuple[float, float]
    texture: tuple[float, float]
    #: Veins: count multiplier and radius range (mm) per modality.
    vein_count_scale: float
    vein_radius_t2s: tuple[float, float]
    vein_radius_swi: tuple[float, float]
    #: Calcification radius (mm) and probability of cavernoma-like lesions (> 10 mm, unlabelled).
    calcification_radius: tuple[float, float]
    cavernoma_p: float
    cavernoma_diameter_mm: tuple[float, float]


STANDARD = Domain(
    name="standard",
    large_share=0.0,
    large_range_mm=(4.8, 10.0),
    dipole_share=None,
    edge_exponent=(2.0, 2.0),
    peak_drop=(0.6, 0.95),
    chi_ppm=(0.3, 2.0),
    grey_t2s=(1.12, 1.45),
    csf_t2s=(1.4, 2.3),
    grey_swi=(0.92, 1.25),
    csf_swi=(1.05, 1.9),
    te_t2s_ms=(15.0, 30.0),
    te_swi_ms=(18.0, 40.0),
    snr=(10.0, 40.0),
    bias_rms=(0.03, 0.2),
    texture=(0.02, 0.06),
    vein_count_scale=1.0,
    vein_radius_t2s=(0.3, 0.7),
    vein_radius_swi=(0.35, 0.9),
    calcification_radius=(0.8, 2.0),
    cavernoma_p=0.0,
    cavernoma_diameter_mm=(11.0, 20.0),
)

WIDE = Domain(
    name="wide",
    large_share=0.5,
    large_range_mm=(1.5, 10.0),
    dipole_share=0.6,
    edge_exponent=(1.3, 4.0),
    peak_drop=(0.4, 0.97),
    chi_ppm=(0.2, 3.0),
    grey_t2s=(1.0, 1.6),
    csf_t2s=(1.2, 2.6),
    grey_swi=(0.85, 1.3),
    csf_swi=(0.95, 2.1),
    te_t2s_ms=(10.0, 40.0),
    te_swi_ms=(12.0, 45.0),
    snr=(6.0, 60.0),
    bias_rms=(0.02, 0.35),
    texture=(0.01, 0.09),
    vein_count_scale=1.5,
    vein_radius_t2s=(0.25, 1.3),
    vein_radius_swi=(0.3, 1.5),
    calcification_radius=(0.6, 4.0),
    cavernoma_p=0.25,
    cavernoma_diameter_mm=(11.0, 20.0),
)


def get_domain(name: str) -> Domain:
    """The domain called ``name`` (``standard`` or ``wide``); raises ``ValueError`` otherwise."""
    for d in (STANDARD, WIDE):
        if d.name == name:
            return d
    raise ValueError(f"unknown simulator domain {name!r}; choose one of {', '.join(DOMAINS)}")
