"""Microbleed location: atlas lookup, registration of a moved scan, failure handling, summaries."""

from __future__ import annotations

import numpy as np
import pytest

from plkd.location import (
    CLASSES,
    LABELS,
    MARS_CLASS,
    describe,
    load_atlas,
    locate_candidates,
    pattern_of,
    summarise,
)
from plkd.location.template import load_template
from plkd.resample import resample_array

# MNI points (RAS mm) well inside one region each, and their MARS class.
POINTS = {
    "thalamus": ((-11.0, -18.0, 7.0), "deep"),
    "basal ganglia": ((22.0, 6.0, 0.0), "deep"),
    "cerebellum": ((-28.0, -66.0, -35.0), "infratentorial"),
    "brainstem": ((0.0, -26.0, -30.0), "infratentorial"),
    "frontal": ((-35.0, 40.0, 25.0), "lobar"),
    "occipital": ((20.0, -90.0, 5.0), "lobar"),
}


def test_atlas_labels_have_a_mars_class_and_regions_sit_where_anatomy_puts_them():
    assert set(MARS_CLASS) == set(LABELS.values())
    atlas = load_atlas()
    assert set(np.unique(atlas.labels)) <= {0, *LABELS}
    found = atlas.lookup(np.array([p for p, _ in POINTS.values()]))
    assert found == list(POINTS)
    assert atlas.lookup(np.array([[0.0, 0.0, 140.0], [np.nan, 0.0, 0.0]])) == [None, None]


def _moved_scan(rng: np.random.Generator):
    """The T2*-like template seen through a known rotation/scaling/shift, on an LPS-ordered grid
    with 2 mm pixels and 4 mm slices, with other tissue contrasts and noise. Returns the scan
    and the subject→MNI map."""
    tpl = load_template()
    angles = np.deg2rad([12.0, -7.0, 9.0])
    cx, sx = np.cos(angles[0]), np.sin(angles[0])
    cz, sz = np.cos(angles[2]), np.sin(angles[2])
    cy, sy = np.cos(angles[1]), np.sin(angles[1])
    rot = (
        np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    )
    matrix = rot * 1.06  # subject → MNI: the subject's head is 6 % smaller
    shift = np.array([6.0, -9.0, 12.0])

    def to_mni(p: np.ndarray) -> np.ndarray:
        return np.atleast_2d(p) @ matrix.T + shift

    # Subject grid: LPS-ordered (i → right, j → posterior), 2 × 2 × 4 mm, covering the head.
    shape = (90, 110, 44)
    affine = np.diag([-2.0, -2.0, 4.0, 1.0])
    affine[:3, 3] = [90.0, 110.0, -80.0]
    # Template voxel of each subject voxel: template_vox = inv(tpl.affine) @ [M @ world + t].
    sub_to_mni = np.eye(4)
    sub_to_mni[:3, :3], sub_to_mni[:3, 3] = matrix, shift
    image = resample_array(tpl.image, np.linalg.inv(sub_to_mni) @ tpl.affine, affine, shape, order=1)
    image = np.where(image > 0, image**1.3 + rng.normal(0, 0.04, shape), 0.0).astype(np.float32)
    return image, affine, to_mni, sub_to_mni


@pytest.fixture(scope="module")
def moved():
    return _moved_scan(np.random.default_rng(3))


def test_candidates_in_a_rotated_lps_thick_slice_scan_land_in_their_region(moved):
    image, affine, to_mni, sub_to_mni = moved
    from_mni = np.linalg.inv(sub_to_mni)
    cands = []
    for (point, _cls), kept in zip(POINTS.values(), [True, True, True, False, True, True], strict=True):
        centre = from_mni[:3, :3] @ np.asarray(point) + from_mni[:3, 3]
        cands.append({"center_ras": centre.tolist(), "kept": kept})
    notes: list[str] = []
    block = locate_candidates(image, affine, cands, image > 0, notes=notes)
    assert block["status"] == "ok", block
    assert notes == []
    assert [c["location"] for c in cands] == [cls for _p, cls in POINTS.values()]
    assert [c["region"] for c in cands] == list(POINTS)
    errors = [np.linalg.norm(np.subtract(c["center_mni"], p)) for c, (p, _) in zip(cands, POINTS.values(), strict=True)]
    assert max(errors) < 4.0, errors
    # Counts cover kept candidates only: the brainstem one was rejected.
    assert block["counts"] == {"lobar": 2, "deep": 2, "infratentorial": 1, "unknown": 0}
    assert block["regions"]["thalamus"] == 1 and "brainstem" not in block["regions"]
    assert block["pattern"] == "mixed"


def _crop(image: np.ndarray, affine: np.ndarray, axis: int, lo: float, hi: float):
    """The part of ``image`` between fractions ``lo`` and ``hi`` of the brain's extent along ``axis``."""
    nz = np.flatnonzero(image.any(axis=tuple(a for a in range(3) if a != axis)))
    k0 = max(0, nz[0] + int((nz[-1] - nz[0]) * lo))
    k1 = min(image.shape[axis], nz[0] + int((nz[-1] - nz[0]) * hi) + 1)
    index = [slice(None)] * 3
    index[axis] = slice(k0, k1)
    out = affine.copy()
    out[:3, 3] = affine[:3, 3] + affine[:3, axis] * k0
    return np.ascontiguousarray(image[tuple(index)]), out


@pytest.mark.parametrize(
    ("axis", "lo", "hi"),
    [
        (2, 0.5, 1.01),  # the upper half of the head (a slab stopping in the brain): fitted 10 mm off
        (0, -0.01, 0.5),  # one hemisphere (a crop through the midline): fitted 23 mm off
    ],
)
def test_a_partial_field_of_view_is_located_correctly_or_not_at_all(moved, axis, lo, hi):
    """A cut face leaves the fit free to slide along it while the brain overlap stays plausible;
    such a scan must either be placed within a few mm or say it failed, never report regions
    from a fit that slid."""
    image, affine, to_mni, _ = moved
    img, aff = _crop(image, affine, axis, lo, hi)
    vox = np.argwhere(img > 0)[::401].astype(np.float64)
    ras = vox @ aff[:3, :3].T + aff[:3, 3]
    cands = [{"center_ras": p.tolist(), "kept": True} for p in ras]
    notes: list[str] = []
    block = locate_candidates(img, aff, cands, img > 0, notes=notes)
    if block["status"] == "ok":
        errors = np.linalg.norm(np.array([c["center_mni"] for c in cands]) - to_mni(ras), axis=1)
        assert np.median(errors) < 5.0, (np.median(errors), block["registration"])
    else:
        assert "partial field of view" in block["reason"], block
        assert block["registration"]["coverage"] < 0.9
        assert all(c["location"] == "unknown" and c["center_mni"] is None for c in cands)
        assert block["pattern"] == "unknown" and len(notes) == 1


def test_non_finite_voxels_are_no_brain_and_do_not_hang_the_registration():
    # A head-sized block of NaN: before, ITK's optimiser looped on the NaN metric for minutes.
    image = np.zeros((50, 60, 50), np.float32)
    image[10:40, 10:50, 10:40] = np.nan
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    cands = [{"center_ras": [40.0, 60.0, 50.0], "kept": True}]
    block = locate_candidates(image, affine, cands, np.isnan(image))
    assert block["status"] == "failed" and "too little of a brain" in block["reason"]
    assert cands[0]["location"] == "unknown"


def test_a_scan_that_cannot_be_registered_leaves_locations_unknown_and_says_why():
    rng = np.random.default_rng(0)
    # A 40 mm cube of noise: far too little brain to register.
    image = rng.uniform(1, 2, (40, 40, 40)).astype(np.float32)
    cands = [{"center_ras": [0.0, 0.0, 0.0], "kept": True}, {"center_ras": [5.0, 5.0, 5.0], "kept": False}]
    notes: list[str] = []
    block = locate_candidates(image, np.eye(4), cands, notes=notes)
    assert block["status"] == "failed" and "too little of a brain to register" in block["reason"]
    assert all(c["location"] == "unknown" and c["region"] == "unknown" and c["center_mni"] is None for c in cands)
    assert block["counts"] == {"lobar": 0, "deep": 0, "infratentorial": 0, "unknown": 1}
    assert block["pattern"] == "unknown"
    assert len(notes) == 1 and notes[0].startswith("location unknown: registration to MNI failed")


def test_a_head_sized_volume_of_noise_fails_the_sanity_checks():
    rng = np.random.default_rng(1)
    image = rng.uniform(1, 2, (50, 60, 40)).astype(np.float32)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-75.0, -90.0, -60.0]
    cands = [{"center_ras": [10.0, 0.0, 0.0], "kept": True}]
    block = locate_candidates(image, affine, cands, np.ones(image.shape, bool))
    assert block["status"] == "failed", block
    assert cands[0]["location"] == "unknown"


def test_no_candidates_skips_registration():
    block = locate_candidates(np.zeros((4, 4, 4), np.float32), np.eye(4), [])
    assert block["status"] == "skipped" and block["pattern"] == "none"
    assert block["counts"] == dict.fromkeys(CLASSES, 0)


@pytest.mark.parametrize(
    ("classes", "pattern"),
    [
        ([], "none"),
        (["lobar", "lobar"], "strictly lobar"),
        (["deep"], "deep"),
        (["deep", "infratentorial"], "deep"),
        (["infratentorial", "infratentorial"], "infratentorial only"),
        (["lobar", "deep"], "mixed"),
        (["lobar", "infratentorial", "unknown"], "mixed"),
        # A microbleed of unknown location could be deep: no "strictly lobar" (nor "deep") claimed.
        (["lobar", "unknown"], "unknown"),
        (["deep", "deep", "unknown"], "unknown"),
        (["infratentorial", "unknown"], "unknown"),
        (["unknown"], "unknown"),
    ],
)
def test_pattern_of_hand_made_lists(classes, pattern):
    cands = [{"kept": True, "location": c, "region": "x"} for c in classes]
    cands.append({"kept": False, "location": "deep", "region": "thalamus"})  # rejected: never counted
    summary = summarise(cands)
    assert summary["pattern"] == pattern == pattern_of(summary["counts"])
    assert sum(summary["counts"].values()) == len(classes)


@pytest.mark.parametrize(
    ("regions", "pattern"),
    [
        # Boston criteria: "restricted to lobar ... (cerebellar hemorrhage allowed)".
        (["frontal", "occipital", "cerebellum"], "strictly lobar"),
        # A brainstem microbleed is a deep (hypertensive-type) lesion: lobar + brainstem is mixed.
        (["frontal", "brainstem"], "mixed"),
        (["frontal", "cerebellum", "brainstem"], "mixed"),
        (["thalamus", "cerebellum"], "deep"),
        (["cerebellum", "brainstem"], "infratentorial only"),
        # An unknown one could be deep: still no "strictly lobar".
        (["frontal", "cerebellum", None], "unknown"),
    ],
)
def test_pattern_reads_cerebellar_and_brainstem_microbleeds_as_the_boston_criteria_do(regions, pattern):
    from plkd.location import location_of

    cands = [{"kept": True, "location": location_of(r), "region": r or "unknown"} for r in regions]
    assert summarise(cands)["pattern"] == pattern
    # Class counts alone cannot tell cerebellum from brainstem: never claim strictly lobar then.
    if any(location_of(r) == "infratentorial" for r in regions) and pattern == "strictly lobar":
        assert pattern_of(summarise(cands)["counts"]) == "mixed"


def test_summary_counts_regions_and_describes_them_in_one_line():
    cands = [
        {"kept": True, "location": "lobar", "region": "frontal"},
        {"kept": True, "location": "lobar", "region": "frontal"},
        {"kept": True, "location": "deep", "region": "thalamus"},
        {"kept": True},  # an older record without location fields
        {"kept": False, "location": "lobar", "region": "occipital"},
    ]
    s = summarise(cands)
    assert s["counts"] == {"lobar": 2, "deep": 1, "infratentorial": 0, "unknown": 1}
    assert s["regions"] == {"frontal": 2, "thalamus": 1, "unknown": 1}
    line = describe({"status": "ok", **s})
    assert line == "location: 2 lobar, 1 deep, 0 infratentorial, 1 unknown (pattern: mixed)"
    assert "failed: no brain" in describe({"status": "failed", "reason": "no brain", **s})


def test_plkd_predict_writes_the_location_block_and_prints_counts(tmp_path, capsys):
    import json
    from pathlib import Path

    from plkd.cli import main

    data = Path(__file__).resolve().parent / "data"
    case = data / "tiny-case" / "tiny_T2S.nii.gz"
    args = ["predict", str(case), "-o", str(tmp_path), "--model", str(data / "tiny-bundle"), "--device", "cpu"]
    assert main([*args, "--progress", "tqdm"]) == 0
    doc = json.loads((tmp_path / "tiny_T2S_cmb.json").read_text())
    block = doc["location"]
    assert set(block) >= {"status", "reason", "counts", "regions", "pattern"}
    assert sum(block["counts"].values()) == doc["n_microbleeds"] == sum(block["regions"].values())
    assert all({"location", "region", "center_mni"} <= set(c) for c in doc["candidates"])
    # The tiny case is a 3 cm phantom, not a head: location must say it failed, not guess.
    assert block["status"] == "failed" and block["counts"]["unknown"] == doc["n_microbleeds"]
    assert any(n.startswith("location unknown") for n in doc["notes"])
    err = capsys.readouterr().err
    assert f"tiny_T2S: {doc['n_microbleeds']} microbleed(s); location: 0 lobar, 0 deep" in err
    # The batch summary carries the same counts per scan.
    import csv

    rows = list(csv.DictReader((tmp_path / "plkd_summary.csv").open()))
    assert [(r["lobar"], r["deep"], r["infratentorial"], r["unknown"]) for r in rows] == [
        ("0", "0", "0", str(doc["n_microbleeds"]))
    ]


def test_synth_records_each_microbleeds_true_mni_point_and_atlas_region():
    from plkd.location import location_of
    from plkd.synth.subject import generate_subject

    subj = generate_subject(5, n_microbleeds=4, spacing=2.0, mimics=False)
    assert subj.microbleeds
    atlas = load_atlas()
    for mb in subj.microbleeds:
        assert len(mb["center_mni"]) == 3
        assert mb["mars_region"] == (atlas.lookup(np.array([mb["center_mni"]]))[0] or "unknown")
        assert mb["mars_location"] == location_of(mb["mars_region"])


def test_a_missing_atlas_file_gives_unknown_locations_not_a_crash(moved, monkeypatch, tmp_path):
    import plkd.location.atlas as atlas_mod

    image, affine, _to_mni, _ = moved
    monkeypatch.setattr(atlas_mod, "DATA_DIR", tmp_path)
    atlas_mod.load_atlas.cache_clear()
    try:
        cands = [{"center_ras": [0.0, 0.0, 0.0], "kept": True}]
        block = locate_candidates(image, affine, cands, image > 0)
    finally:
        atlas_mod.load_atlas.cache_clear()
    assert block["status"] == "failed" and "MARS atlas" in block["reason"]
    assert cands[0]["location"] == "unknown" and cands[0]["center_mni"] is None
