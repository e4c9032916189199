"""Acquisition-geometry augmentation: oblique stacks, other pixels and slices, back on the 1-mm grid."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from plkd.errors import ConfigError
from plkd.training.config import load_config, set_value
from plkd.training.geometry_augment import GeometryParams, acquire, draw_geometry, source_shape
from plkd.training.sampling import PatchSampler, SubjectArrays, extract_patch

SHAPE = (64, 64, 64)
CENTRE = np.array([32, 32, 32])
PATCH = (24, 24, 16)
#: The settings this augmentation added: a configuration saved before it lacks them.
NEW_KEYS = (
    "geometry_p",
    "inplane_mm",
    "thickness_mm",
    "slice_profiles",
    "oblique_p",
    "oblique_deg",
    "geometry_noise_std",
)


def _without_new_keys(cfg):
    return {**cfg, "augment": {k: v for k, v in cfg["augment"].items() if k not in NEW_KEYS}}


def _sphere_volume(offset=(0, 0, 0), radius=2.5, seed=0):
    """z-scored-looking tissue (small noise around 0) with one dark ball (-4) and its label."""
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"), axis=-1)
    ball = ((grid - (CENTRE + np.asarray(offset))) ** 2).sum(-1) <= radius**2
    image = (0.1 * np.random.default_rng(seed).standard_normal(SHAPE)).astype(np.float32)
    image[ball] = -4.0
    return image, ball.astype(np.uint8)


def _oblique(deg, axis=(1.0, 0.5, 0.2)):
    axis = np.asarray(axis) / np.linalg.norm(axis)
    return Rotation.from_rotvec(np.radians(deg) * axis).as_matrix()


def _acquire(image, params, shape=PATCH):
    return acquire(extract_patch(image, CENTRE, source_shape(shape, params)), shape, params)


def _sampler_cfg(**augment):
    cfg = load_config("tiny")
    for key, value in {"sampling.positive_fraction": "1.0", "sampling.positive_jitter": "[0, 0, 0]"}.items():
        cfg = set_value(cfg, key, value)
    for key in ("flip_p", "swap_xy_p", "noise_p", "intensity_p", "bias_p"):
        cfg = set_value(cfg, f"augment.{key}", "0")
    for key, value in augment.items():
        cfg = set_value(cfg, f"augment.{key}", value)
    return cfg


def _subject(image, label):
    return SubjectArrays(
        id="ball",
        image=image,
        label=label,
        mask=np.ones(SHAPE, bool),
        affine=np.eye(4),
        positives=CENTRE[None].astype(np.int64),
        brain_voxels=CENTRE[None].astype(np.int64),
    )


@pytest.mark.parametrize("profile", ["box", "gaussian", "thin"])
def test_a_centred_microbleed_stays_dark_and_labelled_on_an_oblique_thick_stack(profile):
    image, label = _sphere_volume()
    params = GeometryParams(1.2, 4.0, profile, _oblique(20), phase=(0.3, 0.7, 0.5), noise_std=0.02, noise_seed=3)
    anatomy, acquired = _acquire(image, params)
    c = tuple(np.asarray(PATCH) // 2)
    assert acquired.shape == anatomy.shape == PATCH and acquired.dtype == np.float32
    assert acquired[c] < -1.5  # still clearly dark
    if profile != "thin":  # a thin slice samples the ball without averaging its surroundings
        assert acquired[c] > anatomy[c] + 0.3  # diluted by the thick slice (partial volume)
    # No artificial zero border: the edges look like the tissue around them, not like padding.
    edges = np.concatenate([acquired[0].ravel(), acquired[-1].ravel(), acquired[:, :, 0].ravel()])
    assert np.abs(edges).max() < 0.5 and np.count_nonzero(edges == 0) == 0
    # Through the sampler, with the label: the centre voxel keeps its label.
    cfg = _sampler_cfg(
        geometry_p="1.0", inplane_mm="[1.2, 1.2]", thickness_mm="[4, 4]", slice_profiles=f"[{profile}]", oblique_p="1"
    )
    batch = PatchSampler([_subject(image, label)], cfg).segmentation_batch(np.random.default_rng(1), 3)
    mid = tuple(np.asarray(batch["image"].shape[2:]) // 2)
    assert all(batch["label"][i, 0][mid] == 1 for i in range(3))
    assert all(batch["image"][i, 0][mid] < -1.0 for i in range(3))


def test_image_and_label_turn_together():
    offset = np.array([6, -3, 4])
    image, label = _sphere_volume(offset=offset)
    rotation = _oblique(25)
    cfg = _sampler_cfg(geometry_p="1.0", inplane_mm="[1.0, 1.0]", thickness_mm="[1, 1]", oblique_deg="25")
    smp = PatchSampler([_subject(image, label)], cfg)
    g = GeometryParams(1.0, 1.0, "box", rotation)
    anatomy, acquired, lab = smp.acquired_patch(smp.subjects[0], CENTRE, (32, 32, 32), g)
    expected = np.array([16, 16, 16]) + rotation.T @ offset  # the ball's centre in the turned patch
    label_centre = np.asarray(ndimage.center_of_mass(lab))
    dark_centre = np.asarray(ndimage.center_of_mass(np.clip(-acquired, 0, None) * (acquired < -2)))
    assert np.linalg.norm(label_centre - expected) < 0.6
    assert np.linalg.norm(dark_centre - expected) < 0.6
    assert abs(int(lab.sum()) - int(label.sum())) <= 0.2 * label.sum()  # nearest neighbour keeps the size


def test_screening_target_follows_the_turned_microbleed(monkeypatch):
    # A microbleed 3 voxels above the patch centre lies outside the central box (Z in 1.5-5.5 of
    # 8); a stack turned by 90 degrees about Y brings it to X = 3 (box 2.5-8.5): a positive.
    offset = np.array([0, 0, 3])
    image, label = _sphere_volume(offset=offset, radius=1.5)
    subject = _subject(image, label)
    subject.positives = (CENTRE + offset)[None]
    cfg = set_value(_sampler_cfg(), "sampling.positive_fraction", "0.0")
    cfg = set_value(cfg, "sampling.hard_negative_fraction", "0.0")  # centre: the one brain voxel
    smp = PatchSampler([subject], set_value(cfg, "screening.lr_share", "0"))
    assert smp.screening_batch(np.random.default_rng(0), 1)["target"][0] == 0.0
    quarter = GeometryParams(1.0, 1.0, "box", Rotation.from_rotvec([0, np.pi / 2, 0]).as_matrix())
    monkeypatch.setattr(smp, "draw_acquisition", lambda *args: quarter)
    batch = smp.screening_batch(np.random.default_rng(0), 1)
    assert batch["target"][0] == 1.0
    assert batch["image"][0, 0, 3, 6, 4] < -2.0 and batch["image"][0, 0, 9, 6, 4] > -0.5  # the ball is there


def test_identity_acquisition_returns_the_patch():
    image, _ = _sphere_volume()
    anatomy, acquired = _acquire(image, GeometryParams(1.0, 1.0, "box"))
    assert np.allclose(acquired, extract_patch(image, CENTRE, PATCH), atol=1e-4)
    assert np.array_equal(anatomy, extract_patch(image, CENTRE, PATCH))
    # Off-grid by half a voxel the 1-mm acquisition blurs a little, no more.
    _, shifted = _acquire(image, GeometryParams(1.0, 1.0, "box", phase=(0.5, 0.5, 0.5)))
    assert shifted[12, 12, 8] < -2.0 and np.abs(shifted - acquired).mean() < 0.15


def test_thick_slices_blur_along_z_only():
    image, _ = _sphere_volume(radius=1.5)
    _, thin = _acquire(image, GeometryParams(1.0, 1.0, "box"))
    _, thick = _acquire(image, GeometryParams(1.0, 5.0, "box", phase=(0.0, 0.0, 0.5)))
    c = (12, 12, 8)
    assert thick[c] > thin[c] + 1.0  # a 3 mm ball loses contrast in a 5 mm slab
    # Darkness spreads along Z (slices) more than along X (pixels).
    z_spread = (thick[12, 12, :] < -0.3).sum()
    x_spread = (thick[:, 12, 8] < -0.3).sum()
    assert z_spread > x_spread + 1


def test_same_generator_same_batch_and_configs_without_the_keys():
    image, label = _sphere_volume()
    cfg = _sampler_cfg(geometry_p="1.0", noise_p="1")
    smp = PatchSampler([_subject(image, label)], cfg)
    for kwargs in ({}, {"factor": 2, "lr_noise_std": 0.02}):
        a = smp.segmentation_batch(np.random.default_rng([0, 3]), 2, **kwargs)
        b = smp.segmentation_batch(np.random.default_rng([0, 3]), 2, **kwargs)
        c = smp.segmentation_batch(np.random.default_rng([0, 4]), 2, **kwargs)
        assert all(np.array_equal(a[k], b[k]) for k in a)
        assert not np.array_equal(a["image"], c["image"])
    s1 = smp.screening_batch(np.random.default_rng(5), 4)
    s2 = smp.screening_batch(np.random.default_rng(5), 4)
    assert np.array_equal(s1["image"], s2["image"]) and s1["target"].min() == 1.0
    # A configuration saved before the option (no geometry keys) samples exactly as geometry_p 0.
    off = _sampler_cfg()
    old = _without_new_keys(off)
    new_batch = PatchSampler([_subject(image, label)], off).segmentation_batch(np.random.default_rng(7), 2, factor=2)
    old_batch = PatchSampler([_subject(image, label)], old).segmentation_batch(np.random.default_rng(7), 2, factor=2)
    assert all(np.array_equal(new_batch[k], old_batch[k]) for k in new_batch)


def test_drawn_acquisitions_stay_in_their_ranges():
    cfg = load_config(None)["augment"]
    rng = np.random.default_rng(0)
    draws = [draw_geometry(rng, cfg) for _ in range(200)]
    assert all(0.4 <= g.inplane_mm <= 1.2 and 1.0 <= g.thickness_mm <= 5.0 for g in draws)
    angles = np.array([np.degrees(Rotation.from_matrix(g.rotation).magnitude()) for g in draws])
    assert angles.max() <= 25.0 + 1e-6 and angles.max() > 20.0
    assert 0.35 < np.mean(angles == 0) < 0.65  # oblique_p 0.5: half the stacks follow the anatomy
    assert {g.profile for g in draws} == {"box", "gaussian", "thin"}
    student = draw_geometry(rng, cfg, factor=4)
    assert student.thickness_mm == pytest.approx(4 * max(student.inplane_mm, 1.0))


@pytest.mark.parametrize(
    "override",
    [
        "augment.geometry_p=1.5",
        "augment.geometry_p=-0.1",
        "augment.oblique_deg=60",
        "augment.oblique_p=2",
        "augment.inplane_mm=[0.1, 1.2]",
        "augment.inplane_mm=[1.2, 0.4]",
        "augment.inplane_mm=[0.4]",
        "augment.thickness_mm=[1, 12]",
        "augment.slice_profiles=[box, sinc]",
        "augment.slice_profiles=[]",
        "augment.geometry_noise_std=-0.01",
    ],
)
def test_out_of_range_geometry_settings_are_config_errors(override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config("tiny", [override])


def test_the_gpu_recipe_turns_the_augmentation_on_and_the_default_leaves_it_off():
    assert load_config(None)["augment"]["geometry_p"] == 0.0
    assert load_config("gpu")["augment"]["geometry_p"] > 0


def test_resuming_a_run_saved_before_the_option_warns_of_nothing(tmp_path, caplog):
    from plkd.training.config import dump_config
    from plkd.training.distributed import DistInfo
    from plkd.training.pipeline import _check_config, _saved_config

    cfg = load_config("tiny")
    saved = _without_new_keys(cfg)
    (tmp_path / "config.yaml").write_text(dump_config(saved), encoding="utf-8")
    with caplog.at_level("WARNING"):
        _check_config(tmp_path, cfg, DistInfo(), _saved_config(tmp_path))
    assert "other settings" not in caplog.text
    (tmp_path / "config.yaml").write_text(dump_config(saved), encoding="utf-8")
    with caplog.at_level("WARNING"):
        _check_config(tmp_path, set_value(cfg, "augment.geometry_p", "0.5"), DistInfo(), _saved_config(tmp_path))
    assert "other settings (augment)" in caplog.text


def test_background_workers_and_a_resume_draw_the_same_acquisitions(tmp_path):
    # Every acquisition comes from the step's own random stream: forked batch workers and a resume
    # mid-run give the weights of a serial, uninterrupted run.
    import torch
    from training_toydata import write_toy_dataset

    from plkd.training.checkpoint import load_weights
    from plkd.training.pipeline import make_context, train

    data_root = write_toy_dataset(tmp_path / "toy", n_subjects=2)
    cfg = set_value(set_value(load_config("tiny"), "teacher.steps", "4"), "augment.geometry_p", "1.0")
    with_workers = set_value(cfg, "workers", "2")
    train("teacher", data_root, tmp_path / "serial", cfg, make_context(cfg, progress="none"))
    with pytest.raises(KeyboardInterrupt):
        train("teacher", data_root, tmp_path / "pool", with_workers, make_context(with_workers, "none", stop_after=2))
    train("teacher", data_root, tmp_path / "pool", with_workers, make_context(with_workers, progress="none"))
    a = load_weights(tmp_path / "serial" / "teacher" / "model.pt")
    b = load_weights(tmp_path / "pool" / "teacher" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
