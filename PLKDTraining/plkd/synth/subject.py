"""Generate one synthetic subject: image, microbleed label, brain mask and its ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plkd.errors import PLKDError, check_seed
from plkd.metrics.components import label_components
from plkd.modalities import MODALITIES
from plkd.synth.anatomy import Deformation, load_template, warp_template
from plkd.synth.contrast import Contrast, bias_field, rician, tissue_signal
from plkd.synth.domain import get_domain
from plkd.synth.grid import SynthGrid
from plkd.synth.lesions import LABEL_DROP, MODELS, draw_count, microbleed_record, place_microbleeds, render_microbleed
from plkd.synth.mimics import draw_cavernomas, draw_veins, render_mimics, site_mimics
from plkd.synth.phase_mask import PhaseMask
from plkd.volumes import Volume

#: Mimics whose phase does not pass SWI's phase mask: diamagnetic calcifications, and air-tissue
#: dropout (a background-field effect that the phase's high-pass filter removes).
DIAMAGNETIC = ("calcification", "air_tissue_dropout")
#: Voxels of margin kept around the brain when the output is cropped.
CROP_MARGIN = 2


@dataclass
class SynthSubject:
    """A synthetic subject; ``microbleeds`` and ``mimics`` are the manifest records."""

    image: Volume
    label: Volume
    mask: Volume
    microbleeds: list[dict[str, Any]]
    mimics: list[dict[str, Any]]
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    hidden_microbleeds: list[dict[str, Any]] = field(default_factory=list)


#: Every VEIN_PATH_STEP-th point of a vein's 0.4-mm polyline goes to the manifest (about 4 mm apart).
VEIN_PATH_STEP = 10


def parse_spacing(spacing: float | str | Sequence[float]) -> np.ndarray:
    """Voxel size (mm) per axis from ``1.0``, ``"0.8"``, ``"1,1,3"`` or a sequence of 3."""
    try:
        if isinstance(spacing, str):
            parts = [float(p) for p in spacing.replace("x", ",").split(",") if p.strip()]
        elif isinstance(spacing, int | float):
            parts = [float(spacing)]
        else:
            parts = [float(p) for p in spacing]
    except (TypeError, ValueError):
        raise PLKDError(f"spacing must be one number or three comma-separated numbers (mm), not {spacing!r}") from None
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise PLKDError(f"spacing needs 1 or 3 values (mm), got {len(parts)}: {spacing!r}")
    sp = np.array(parts, dtype=np.float64)
    if not np.all(np.isfinite(sp)) or np.any(sp < 0.3) or np.any(sp > 8.0):
        raise PLKDError(f"spacing {tuple(float(s) for s in sp)} mm is outside the supported 0.3-8 mm per axis")
    return sp


def subject_seed(base_seed: int, index: int) -> int:
    """The seed of subject ``index`` (0-based) of a data set made with ``base_seed``."""
    return int(np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def check_seed_and_count(seed: int, n_microbleeds: int | None) -> None:
    """Refuse (:class:`PLKDError`) a seed numpy cannot take (negative) and a microbleed count outside 0-200, as
    :func:`generate_subject` does: callers check before they write anything."""
    check_seed(seed, "seed")
    if n_microbleeds is not None and not 0 <= int(n_microbleeds) <= 200:
        raise PLKDError(f"microbleed count must be between 0 and 200, not {n_microbleeds}")


def generate_subject(
    seed: int,
    *,
    modality: str = "T2S",
    n_microbleeds: int | None = None,
    spacing: float | str | Sequence[float] = 1.0,
    lesion_model: str = "dipole",
    fine_spacing: float = 1.0,
    mimics: bool = True,
    domain: str = "standard",
    phase_mask: bool = False,
) -> SynthSubject:
    """Simulate one subject, deterministically for a given ``seed`` and options.

    ``n_microbleeds`` forces the count (default: heavy-tailed random). The scene is rendered at
    about ``fine_spacing`` mm and averaged onto the output grid of voxel size ``spacing``
    (e.g. ``"1,1,3"`` averages three 1 mm slices into each 3 mm slice). Microbleeds too faint
    to be seen on the output grid are not labelled; they are listed in ``hidden_microbleeds``.
    ``domain`` is ``"standard"`` or ``"wide"`` (:mod:`plkd.synth.domain`: how widely sizes,
    profiles, contrasts and mimics are randomised; ``wide`` is the training recipe).
    ``phase_mask`` (SWI only) applies SWI's phase-mask weighting (:mod:`plkd.synth.phase_mask`),
    drawn from its own random stream: everything else about the subject stays the same.
    """
    check_seed_and_count(seed, n_microbleeds)
    if modality not in MODALITIES:
        raise PLKDError(f"modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
    if lesion_model not in MODELS:
        raise PLKDError(f"microbleed model must be one of {', '.join(MODELS)}, not {lesion_model!r}")
    if phase_mask and modality != "SWI":
        raise PLKDError("phase-mask weighting is part of SWI; use it with modality SWI")
    if not 0.3 <= float(fine_spacing) <= 4.0:
        raise PLKDError(f"fine spacing must be 0.3-4 mm, not {fine_spacing}")
    sp = parse_spacing(spacing)
    try:
        dom = get_domain(domain)
    except ValueError as exc:
        raise PLKDError(str(exc)) from None
    rng = np.random.default_rng(int(seed))
    template = load_template()

    deformation = Deformation.random(rng, template)
    lo, hi = deformation.subject_box(template)
    grid = SynthGrid.covering(lo, hi, sp, fine=float(fine_spacing))
    axes = grid.fine_axes()
    anat = warp_template(template, deformation, axes)
    contrast = Contrast.random(rng, modality, dom)
    signal = tissue_signal(anat, contrast, rng)

    site, iron_depth = site_mimics(rng, deformation, modality, dom) if mimics else ([], 0.0)
    avoid = [(m.centre, m.size * 2.0) for m in site if m.kind == "calcification"]
    avoid += [(m.centre, 1.0) for m in site if m.kind in ("iron", "air_tissue_dropout")]
    count = draw_count(rng) if n_microbleeds is None else int(n_microbleeds)
    bleeds = place_microbleeds(rng, count, anat, grid, avoid, domain=dom)
    centre = deformation.centre + deformation.shift
    veins = draw_veins(rng, anat, grid, modality, bleeds, centre, dom) if mimics else []
    cavernomas = draw_cavernomas(rng, anat, grid, bleeds, dom) if mimics else []
    all_mimics = site + veins + cavernomas

    cmb = np.ones(grid.fine_shape, dtype=np.float32)
    for mb in bleeds:
        box, fac = render_microbleed(mb, grid, lesion_model, rng, contrast.field_t, contrast.te_ms, dom)
        cmb[box] *= fac
    weighting = PhaseMask.random(seed) if phase_mask else None
    if weighting is None:
        other = np.ones(grid.fine_shape, dtype=np.float32)
        render_mimics(other, all_mimics, grid, anat, iron_depth)
        signal *= cmb
        signal *= other
        del other
    else:
        # Paramagnetic sources (microbleeds, veins, iron, cavernomas) set the phase; diamagnetic
        # calcifications and the background field (air-tissue dropout) do not pass the mask.
        other = np.ones(grid.fine_shape, dtype=np.float32)
        render_mimics(other, [m for m in all_mimics if m.kind not in DIAMAGNETIC], grid, anat, iron_depth)
        other *= cmb
        signal *= other
        signal *= weighting.weight(other)
        other.fill(1.0)
        render_mimics(other, [m for m in all_mimics if m.kind in DIAMAGNETIC], grid, anat, 0.0)
        signal *= other
        del other

    image = grid.average(signal) * np.float32(contrast.scale)
    drop = 1.0 - grid.average(cmb)
    mask = grid.average(anat.mask) >= 0.5
    del signal, cmb
    final_axes = [grid.lo[a] + (np.arange(grid.shape[a]) + 0.5) * grid.spacing[a] for a in range(3)]
    image *= bias_field(rng, final_axes, contrast.bias_rms)
    image = rician(image, contrast.scale / contrast.snr, rng)
    image[~mask] = 0.0

    label, kept, hidden = _label_microbleeds(drop, mask, grid, bleeds)
    affine = grid.affine()
    start, stop = _crop_box(mask)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
    affine[:3, 3] += affine[:3, :3] @ start

    def geometry(points: np.ndarray) -> tuple[list[float], list[int]]:
        vox = grid.output_index(points)[0] - start
        return [round(float(v), 2) for v in points], [int(v) for v in vox]

    cmb_records = []
    for i, (mb, n_vox) in enumerate(kept, start=1):
        ras, vox = geometry(mb.centre)
        diameter = (6.0 * n_vox * float(np.prod(grid.spacing)) / np.pi) ** (1.0 / 3.0)
        cmb_records.append(
            {
                "id": i,
                "center_ras": ras,
                "center_voxel": vox,
                "diameter_mm": round(diameter, 2),
                "n_voxels": n_vox,
                **microbleed_record(mb),
            }
        )
    hidden_records = [{"center_ras": geometry(mb.centre)[0], **microbleed_record(mb)} for mb in hidden]
    _add_atlas_truth(cmb_records, [mb for mb, _ in kept], deformation)
    _add_atlas_truth(hidden_records, hidden, deformation)
    mimic_records = []
    for m in all_mimics:
        ras, vox = geometry(m.centre)
        rec: dict[str, Any] = {"kind": m.kind, "center_ras": ras, "center_voxel": vox, "depth": round(m.depth, 3)}
        if m.kind in ("calcification", "air_tissue_dropout"):
            rec["sigma_mm"] = round(m.size, 2)
        if m.kind == "vein" and m.points is not None:
            # A vein: points every ~4 mm, so training sees all of it, not its middle.
            rec["path_ras"] = [geometry(p)[0] for p in m.points[::VEIN_PATH_STEP]]
        elif m.points is not None:  # a cavernoma's lobes: each one a hard negative
            rec["path_ras"] = [geometry(p)[0] for p in m.points]
        mimic_records.append({**rec, **m.info})

    params = {
        "contrast": contrast.as_dict(),
        "lesion_model": lesion_model,
        "domain": dom.name,
        "iron_depth": round(iron_depth, 3),
        "label_drop": LABEL_DROP,
        "fine_spacing_mm": [round(float(v), 4) for v in grid.fine_spacing],
    }
    if weighting is not None:
        params["phase_mask"] = weighting.as_dict()
    return SynthSubject(
        image=Volume(data=np.ascontiguousarray(image[sl]), affine=affine),
        label=Volume(data=np.ascontiguousarray(label[sl]), affine=affine.copy()),
        mask=Volume(data=np.ascontiguousarray(mask[sl].astype(np.uint8)), affine=affine.copy()),
        microbleeds=cmb_records,
        mimics=mimic_records,
        seed=int(seed),
        params=params,
        hidden_microbleeds=hidden_records,
    )


def _add_atlas_truth(records: list[dict[str, Any]], bleeds, deformation: Deformation) -> None:
    """Add each microbleed's true MNI position and its region in the shipped MARS atlas (in place).

    ``center_mni`` is the template point the microbleed was placed at (through the subject's
    known deformation), so ``mars_region``/``mars_location`` are the truth that ``plkd predict``'s
    registration + atlas lookup is scored against (``scripts/evaluate_location.py``).
    """
    if not records:
        return
    from plkd.location.atlas import load_atlas, location_of

    mni = deformation.to_template(np.array([mb.centre for mb in bleeds], dtype=np.float64))
    for rec, point, region in zip(records, mni, load_atlas().lookup(mni), strict=True):
        rec["center_mni"] = [round(float(v), 2) for v in point]
        rec["mars_region"] = region or "unknown"
        rec["mars_location"] = location_of(region)


def _label_microbleeds(drop: np.ndarray, mask: np.ndarray, grid: SynthGrid, bleeds):
    """Binary label of the visible blobs; one connected component (as the metrics count) per visible microbleed."""
    label = np.zeros(grid.shape, dtype=np.uint8)
    kept, hidden = [], []
    visible = (drop >= LABEL_DROP) & mask
    for mb in bleeds:
        c = grid.output_index(mb.centre)[0]
        half = np.ceil((mb.diameter + 2.0) / grid.spacing).astype(int) + 1
        lo = np.maximum(c - half, 0)
        hi = np.minimum(c + half + 1, np.array(grid.shape))
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        comps, n = label_components(visible[box])
        local = tuple(c - lo)
        if n == 0 or comps[local] == 0:
            # Thick slices average a small or off-centre microbleed below the threshold.
            hidden.append(mb)
            continue
        blob = comps == comps[local]
        label[box][blob] = 1
        kept.append((mb, int(blob.sum())))
    return label, kept, hidden


def _crop_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.nonzero(mask)
    if idx[0].size == 0:
        return np.zeros(3, dtype=int), np.array(mask.shape)
    start = np.maximum(np.array([i.min() for i in idx]) - CROP_MARGIN, 0)
    stop = np.minimum(np.array([i.max() for i in idx]) + CROP_MARGIN + 1, np.array(mask.shape))
    return start, stop
