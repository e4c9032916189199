"""plkd.synth: one synthetic subject (coarse 2 mm grids keep these tests fast)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("nilearn")

from plkd.errors import PLKDError  # noqa: E402
from plkd.synth import generate_subject  # noqa: E402
from plkd.synth.anatomy import MARS_CLASS  # noqa: E402

FAST = {"spacing": 2.0, "fine_spacing": 2.0}
FACE6 = ndimage.generate_binary_structure(3, 1)


@pytest.fixture(scope="module")
def subject():
    return generate_subject(11, n_microbleeds=30, **FAST)


def test_same_seed_same_subject():
    a = generate_subject(5, n_microbleeds=3, **FAST)
    b = generate_subject(5, n_microbleeds=3, **FAST)
    assert np.array_equal(a.image.data, b.image.data)
    assert np.array_equal(a.label.data, b.label.data)
    assert np.array_equal(a.mask.data, b.mask.data)
    assert np.array_equal(a.image.affine, b.image.affine)
    assert a.microbleeds == b.microbleeds and a.mimics == b.mimics


def test_different_seeds_differ():
    a = generate_subject(1, n_microbleeds=3, **FAST)
    b = generate_subject(2, n_microbleeds=3, **FAST)
    assert a.image.shape != b.image.shape or not np.allclose(a.image.data, b.image.data)
    assert [m["center_ras"] for m in a.microbleeds] != [m["center_ras"] for m in b.microbleeds]


def test_grids_agree_and_affine_is_world(subject):
    img, lab, mask = subject.image, subject.label, subject.mask
    assert img.shape == lab.shape == mask.shape
    assert np.array_equal(img.affine, lab.affine) and np.array_equal(img.affine, mask.affine)
    assert np.allclose(img.spacing, 2.0)
    assert img.data.dtype == np.float32 and lab.data.dtype == np.uint8 and mask.data.dtype == np.uint8
    for mb in subject.microbleeds:
        # The recorded voxel holds the recorded world centre (after cropping).
        world_of_voxel = img.affine @ np.array([*mb["center_voxel"], 1.0])
        assert np.all(np.abs(world_of_voxel[:3] - mb["center_ras"]) <= 1.0 + 1e-6)


def test_cropping_keeps_world_coordinates():
    # Same seed, same anatomy; on a thick-slice grid the brain must sit at the same world place.
    thin = generate_subject(3, n_microbleeds=0, **FAST)
    thick = generate_subject(3, n_microbleeds=0, spacing="2,2,4", fine_spacing=2.0)

    def centroid(v):
        idx = np.argwhere(v.data > 0).mean(axis=0)
        return (v.affine @ np.array([*idx, 1.0]))[:3]

    assert thick.mask.shape[2] < thin.mask.shape[2]
    assert np.allclose(centroid(thin.mask), centroid(thick.mask), atol=1.0)
    # And it is an MNI-like brain: centre near the template's, volume of an adult brain.
    assert np.all(np.abs(centroid(thin.mask) - np.array([0.0, -20.0, 10.0])) < 15.0)
    litres = thin.mask.data.sum() * 8.0 / 1e6
    assert 1.0 < litres < 2.0


def test_label_components_match_manifest(subject):
    comps, n = ndimage.label(subject.label.data, structure=FACE6)
    assert n == len(subject.microbleeds) > 20
    hit = [int(comps[tuple(mb["center_voxel"])]) for mb in subject.microbleeds]
    assert 0 not in hit
    assert sorted(hit) == list(range(1, n + 1))  # one centre per component
    for mb, c in zip(subject.microbleeds, hit, strict=True):
        assert mb["n_voxels"] == int((comps == c).sum())
    assert len(subject.microbleeds) + len(subject.hidden_microbleeds) == 30


def test_microbleeds_are_darker_than_surroundings(subject):
    img, lab = subject.image.data, subject.label.data > 0
    comps, _ = ndimage.label(lab, structure=FACE6)
    for mb in subject.microbleeds:
        blob = comps == comps[tuple(mb["center_voxel"])]
        shell = ndimage.binary_dilation(blob, iterations=3) & ~ndimage.binary_dilation(blob) & (subject.mask.data > 0)
        assert img[blob].mean() < 0.8 * np.median(img[shell])


def test_mimics_are_not_labelled(subject):
    kinds = {m["kind"] for m in subject.mimics}
    assert {"vein", "iron"} <= kinds
    shape = np.array(subject.label.shape)
    checked = 0
    for m in subject.mimics:
        v = np.array(m["center_voxel"])
        if m["kind"] in ("vein", "calcification", "iron") and np.all(v >= 0) and np.all(v < shape):
            assert subject.label.data[tuple(v)] == 0, m
            checked += 1
    assert checked >= 5


def test_veins_list_their_whole_path(subject):
    veins = [m for m in subject.mimics if m["kind"] == "vein"]
    assert veins
    for v in veins:
        path = np.asarray(v["path_ras"])
        assert len(path) >= 2  # veins are at least 8 mm long, points every ~4 mm
        assert np.linalg.norm(np.diff(path, axis=0), axis=1).max() <= 4.05  # (RAS rounded to 0.01 mm)
        assert np.linalg.norm(path - np.asarray(v["center_ras"]), axis=1).min() <= 2.0  # the middle is on it


def test_veins_darken_the_image():
    plain = generate_subject(8, n_microbleeds=0, modality="SWI", mimics=False, **FAST)
    veined = generate_subject(8, n_microbleeds=0, modality="SWI", **FAST)
    assert not plain.mimics and veined.mimics
    assert plain.image.shape == veined.image.shape
    assert veined.image.data.sum() < plain.image.data.sum()


def test_mask_and_image_outside_brain(subject):
    img, mask = subject.image.data, subject.mask.data > 0
    assert np.all(img[~mask] == 0)
    assert np.all(img[mask] >= 0) and img[mask].mean() > 0
    # Cropped to the brain with a small margin: the outer faces of the grid are background.
    for axis in range(3):
        assert not mask.take(0, axis=axis).any() and not mask.take(-1, axis=axis).any()
    _, n = ndimage.label(mask)
    assert n <= 3  # one brain (thin bridges may detach a few voxels at 2 mm)


def test_location_classes(subject):
    locations = {mb["location"] for mb in subject.microbleeds}
    assert locations == {"lobar", "deep", "infratentorial"}
    for mb in subject.microbleeds:
        assert mb["location"] == MARS_CLASS[mb["region"]]
        assert 1.0 <= mb["diameter_mm"] <= 14.0
    z = {loc: np.mean([m["center_ras"][2] for m in subject.microbleeds if m["location"] == loc]) for loc in locations}
    assert z["infratentorial"] < z["deep"] and z["infratentorial"] < z["lobar"]


def test_gaussian_model_and_swi():
    s = generate_subject(4, n_microbleeds=4, modality="SWI", lesion_model="gaussian", **FAST)
    assert all(m["model"] == "gaussian" for m in s.microbleeds + s.hidden_microbleeds)
    assert s.params["contrast"]["modality"] == "SWI"
    comps, n = ndimage.label(s.label.data, structure=FACE6)
    assert n == len(s.microbleeds)


def test_swi_phase_mask_darkens_paramagnetic_sources_and_changes_nothing_else():
    plain = generate_subject(8, n_microbleeds=6, modality="SWI", **FAST)
    masked = generate_subject(8, n_microbleeds=6, modality="SWI", phase_mask=True, **FAST)
    # Its own random stream: the same anatomy, microbleeds, mimics and noise draws.
    assert masked.microbleeds == plain.microbleeds and masked.mimics == plain.mimics
    assert np.array_equal(masked.label.data, plain.label.data)
    weighting = masked.params["phase_mask"]
    assert weighting["power"] in (2, 3, 4, 5) and 0.6 <= weighting["phase_rad"] <= 2.4
    assert "phase_mask" not in plain.params
    # Every labelled microbleed is darker at its centre; most of the brain is untouched.
    for mb in masked.microbleeds:
        v = tuple(mb["center_voxel"])
        assert masked.image.data[v] < plain.image.data[v], mb
    brain = plain.mask.data > 0
    assert np.mean(masked.image.data[brain] == plain.image.data[brain]) > 0.5
    # Calcifications away from the iron of the basal ganglia keep their magnitude contrast.
    calc = [m for m in masked.mimics if m["kind"] == "calcification"]
    away = [tuple(m["center_voxel"]) for m in calc if m.get("site") != "globus_pallidus"]
    assert away
    assert all(masked.image.data[v] == plain.image.data[v] for v in away)
    with pytest.raises(PLKDError, match="modality SWI"):
        generate_subject(8, modality="T2S", phase_mask=True, **FAST)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"modality": "T1"},
        {"lesion_model": "blob"},
        {"spacing": "1,2"},
        {"spacing": 0.0},
        {"spacing": "a,b,c"},
        {"n_microbleeds": -1},
        {"fine_spacing": 0.0},
    ],
)
def test_bad_options_raise_plkd_error(kwargs):
    with pytest.raises(PLKDError) as err:
        generate_subject(0, **kwargs)
    assert "\n" not in str(err.value)
