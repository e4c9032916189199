"""Patch sampling and augmentation: shapes, positives on microbleeds, alignment, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from training_toydata import write_toy_dataset

from plkd.data.datasets import find_subjects
from plkd.errors import ConfigError
from plkd.training.augment import AugmentParams, apply_geometric, apply_intensity, draw_params
from plkd.training.config import load_config, set_value
from plkd.training.sampling import (
    PatchSampler,
    _meta_centres,
    _meta_entries,
    extract_patch,
    label_centres,
    prepare_subject,
)


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
    root = write_toy_dataset(tmp_path_factory.mktemp("toy"), n_subjects=2)
    cfg = load_config("tiny")
    subjects = [prepare_subject(s, cfg, 0) for s in find_subjects(root)]
    return PatchSampler(subjects, cfg), cfg


def test_subject_indexing(sampler):
    smp, _ = sampler
    s = smp.subjects[0]
    assert s.positives.shape == (3, 3)
    assert all(s.label[tuple(c)] == 1 for c in s.positives)
    assert len(s.hard_negatives) > 0
    # Hard negatives keep their distance from microbleeds (exclusion_mm = 6).
    d = np.linalg.norm(s.hard_negatives[:, None] - s.positives[None], axis=2)
    assert d.min() >= 6.0
    assert abs(float(s.image[s.mask].mean())) < 0.2  # normalised inside the brain


def test_mimic_share_picks_the_hard_negative_pool(sampler):
    smp, cfg = sampler
    s = smp.subjects[0]
    s_saved = s.mimics
    s.mimics = np.array([[5, 6, 4]], dtype=np.int64)  # one named mimic, far from every microbleed
    try:
        hard_only = set_value(cfg, "sampling.positive_fraction", "0.0")
        hard_only = set_value(hard_only, "sampling.hard_negative_fraction", "1.0")
        rng = np.random.default_rng(3)
        for share, expect_mimic in (("1.0", True), ("0.0", False)):
            pool = PatchSampler([s], set_value(hard_only, "sampling.mimic_share", share))
            centres = [pool.draw_centre(rng)[1] for _ in range(20)]
            hits = [tuple(c) == (5, 6, 4) for c in centres]
            assert all(hits) if expect_mimic else not any(hits)
    finally:
        s.mimics = s_saved


def test_each_kind_of_mimic_is_drawn_equally_often(sampler):
    # 60 vein centres against 2 calcifications: by centre a calcification would be 1 patch in 31.
    smp, cfg = sampler
    s = smp.subjects[0]
    saved = s.mimics, s.mimic_kinds
    veins = np.stack([np.full(60, 4), np.arange(60) % 12 + 2, np.full(60, 4)], axis=1)
    s.mimics = np.concatenate([veins, [[14, 14, 6], [15, 3, 6]]]).astype(np.int64)
    s.mimic_kinds = np.array(["vein"] * 60 + ["calcification"] * 2)
    try:
        hard_only = set_value(cfg, "sampling.positive_fraction", "0.0")
        hard_only = set_value(hard_only, "sampling.hard_negative_fraction", "1.0")
        hard_only = set_value(hard_only, "sampling.mimic_share", "1.0")
        share = {}
        for balance in ("kind", "instance"):
            pool = PatchSampler([s], set_value(hard_only, "sampling.mimic_balance", balance))
            rng = np.random.default_rng(5)
            centres = [tuple(pool.draw_centre(rng)[1]) for _ in range(600)]
            share[balance] = np.mean([c in ((14, 14, 6), (15, 3, 6)) for c in centres])
        assert 0.42 < share["kind"] < 0.58
        assert share["instance"] < 0.08
    finally:
        s.mimics, s.mimic_kinds = saved


def test_mimic_kind_weights_set_each_kinds_chance(sampler):
    smp, cfg = sampler
    s = smp.subjects[0]
    saved = s.mimics, s.mimic_kinds, s.dark_spots
    veins = np.stack([np.full(60, 4), np.arange(60) % 12 + 2, np.full(60, 4)], axis=1)
    calcifications = ((14, 14, 6), (15, 3, 6))
    s.mimics = np.concatenate([veins, calcifications]).astype(np.int64)
    s.mimic_kinds = np.array(["vein"] * 60 + ["calcification"] * 2)
    try:
        base = set_value(cfg, "sampling.positive_fraction", "0.0")
        base = set_value(base, "sampling.hard_negative_fraction", "1.0")
        base = set_value(base, "sampling.mimic_share", "1.0")
        base = set_value(base, "sampling.mimic_balance", "kind")

        def calcification_share(weights: dict[str, str]) -> float:
            c = base
            for kind, w in weights.items():
                c = set_value(c, f"sampling.mimic_kind_weights.{kind}", w)
            rng = np.random.default_rng(7)
            centres = [tuple(PatchSampler([s], c).draw_centre(rng)[1]) for _ in range(800)]
            return float(np.mean([x in calcifications for x in centres]))

        assert 0.68 < calcification_share({"vein": "1", "calcification": "3"}) < 0.82
        assert calcification_share({"calcification": "0"}) == 0.0
        # Every kind of the subject at 0: a hard negative from its dark spots instead.
        s.dark_spots = np.array([[9, 9, 9]], dtype=np.int64)
        rng = np.random.default_rng(8)
        c = set_value(
            set_value(base, "sampling.mimic_kind_weights.vein", "0"), "sampling.mimic_kind_weights.calcification", "0"
        )
        assert {tuple(PatchSampler([s], c).draw_centre(rng)[1]) for _ in range(20)} == {(9, 9, 9)}
    finally:
        s.mimics, s.mimic_kinds, s.dark_spots = saved


def test_prepared_subjects_and_screening_false_positives_carry_their_kind(sampler):
    smp, _ = sampler
    s = smp.subjects[1]
    saved = s.mimics, s.mimic_kinds
    try:
        before = len(s.mimics)
        assert len(s.mimic_kinds) == before
        smp.add_hard_negatives(1, np.array([[1, 1, 1], [2, 14, 1]]))
        added = len(s.mimics) - before
        assert added >= 1 and s.mimic_kinds[before:].tolist() == ["screening"] * added
    finally:
        s.mimics, s.mimic_kinds = saved


def test_every_point_of_a_vein_path_is_a_mimic_centre():
    meta = {"mimics": [{"kind": "vein", "center_ras": [5, 5, 5], "path_ras": [[1, 5, 5], [5, 5, 5], [9, 5, 5]]}]}
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    centres = np.asarray(_meta_centres(meta, "mimics", affine))
    assert centres.tolist() == [[0.5, 2.5, 2.5], [2.5, 2.5, 2.5], [4.5, 2.5, 2.5]]
    meta["mimics"].append({"kind": "calcification", "center_ras": [3, 3, 3]})
    meta["mimics"].append({"center_voxel": [1, 1, 1]})
    assert [k for _, k in _meta_entries(meta, "mimics", affine)] == ["vein"] * 3 + ["calcification", "mimic"]


def test_mimic_share_is_validated():
    with pytest.raises(ConfigError, match="mimic_share"):
        load_config("tiny", ["sampling.mimic_share=1.5"])
    with pytest.raises(ConfigError, match="mimic_balance"):
        load_config("tiny", ["sampling.mimic_balance=size"])
    with pytest.raises(ConfigError, match="mimic_kind_weights"):
        load_config("tiny", ["sampling.mimic_kind_weights.vein=-1"])
    # A kind of the user's own data can be weighted too.
    assert (
        load_config("tiny", ["sampling.mimic_kind_weights.lacune=2"])["sampling"]["mimic_kind_weights"]["lacune"] == 2
    )


def test_segmentation_batch_shapes_and_positives(sampler):
    smp, cfg = sampler
    only_pos = PatchSampler(smp.subjects, set_value(cfg, "sampling.positive_fraction", "1.0"))
    batch = only_pos.segmentation_batch(np.random.default_rng(0), 6, factor=4, lr_modes=("interp", "slab"))
    assert batch["image"].shape == batch["lr"].shape == batch["label"].shape == (6, 1, 16, 16, 8)
    assert batch["image"].dtype == np.float32
    # Positive patches are centred (±1 voxel jitter) on a microbleed: the central voxel is labelled.
    assert all(batch["label"][i, 0, 7:10, 7:10, 3:6].any() for i in range(6))
    assert not np.allclose(batch["image"], batch["lr"])  # the LR version differs


def test_lr_noise_keeps_microbleeds_dark(sampler):
    # Patches are normalised (signed z-scores): LR noise must not take magnitudes, which would
    # turn a dark microbleed bright (the bug that made noisy students predict nothing).
    smp, cfg = sampler
    pos = PatchSampler(smp.subjects, set_value(cfg, "sampling.positive_fraction", "1.0"))
    quiet = pos.segmentation_batch(np.random.default_rng(4), 6, factor=2, lr_noise_std=0.0)
    noisy = pos.segmentation_batch(np.random.default_rng(4), 6, factor=2, lr_noise_std=0.05)
    lesion = quiet["label"] > 0
    assert (noisy["lr"] < 0).mean() > 0.3  # signed data stay signed
    assert noisy["lr"][lesion].mean() < 0 and abs(noisy["lr"][lesion].mean() - quiet["lr"][lesion].mean()) < 0.5


def test_screening_batch_targets(sampler):
    smp, cfg = sampler
    pos = PatchSampler(
        smp.subjects, set_value(set_value(cfg, "sampling.positive_fraction", "1.0"), "augment.noise_p", "0")
    )
    b = pos.screening_batch(np.random.default_rng(1), 8)
    assert b["image"].shape == (8, 1, 12, 12, 8) and b["target"].shape == (8,)
    assert b["target"].min() == 1.0
    neg = PatchSampler(smp.subjects, set_value(cfg, "sampling.positive_fraction", "0.0"))
    assert neg.screening_batch(np.random.default_rng(2), 16)["target"].mean() < 0.5


def test_screening_sees_lowres_patches_when_asked(sampler):
    # One screening network serves every resolution: with screening.lr_share it is shown thick-slab
    # versions of its patches, in which a microbleed is diluted by the slices around it.
    smp, cfg = sampler
    quiet = cfg
    for key, value in {"sampling.positive_fraction": "1.0", "sampling.positive_jitter": "[0, 0, 0]"}.items():
        quiet = set_value(quiet, key, value)
    for key in ("augment.intensity_p", "augment.bias_p", "augment.noise_p"):
        quiet = set_value(quiet, key, "0")
    slab = quiet
    for key, value in {"lr_share": "1.0", "lr_factors": "[8]", "lr_modes": "[slab]", "lr_noise_std": "0"}.items():
        slab = set_value(slab, f"screening.{key}", value)
    hr = PatchSampler(smp.subjects, quiet).screening_batch(np.random.default_rng(3), 6)
    lr = PatchSampler(smp.subjects, slab).screening_batch(np.random.default_rng(3), 6)
    assert lr["image"].shape == hr["image"].shape and lr["target"].min() == 1.0
    # The first patch has the same centre and augmentation in both (the LR draws come after them).
    centre = tuple(np.asarray(hr["image"].shape[2:]) // 2)
    box = tuple(slice(c - 1, c + 2) for c in centre)
    assert hr["image"][0, 0][box].min() < lr["image"][0, 0][box].min() - 0.3
    with pytest.raises(ConfigError, match="lr_share"):
        load_config("tiny", ["screening.lr_share=1.5"])
    with pytest.raises(ConfigError, match="lr_factors"):
        load_config("tiny", ["screening.lr_factors=[3]"])


def test_batches_are_a_pure_function_of_the_generator(sampler):
    smp, _ = sampler
    a = smp.segmentation_batch(np.random.default_rng([0, 1, 5]), 3, factor=2)
    b = smp.segmentation_batch(np.random.default_rng([0, 1, 5]), 3, factor=2)
    c = smp.segmentation_batch(np.random.default_rng([0, 1, 6]), 3, factor=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["image"], c["image"])


def test_extract_patch_pads_at_borders():
    arr = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7) + 1
    p = extract_patch(arr, (0, 0, 0), (4, 4, 4))
    assert p.shape == (4, 4, 4)
    assert np.all(p[:2] == 0) and np.all(p[:, :2] == 0) and np.all(p[:, :, :2] == 0)
    assert p[2, 2, 2] == arr[0, 0, 0]
    assert extract_patch(arr, (50, 50, 50), (3, 3, 3)).sum() == 0


def test_label_centres_of_components():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[1:4, 1:4, 1:4] = 1
    lab[7, 7, 7] = 1
    assert sorted(map(tuple, label_centres(lab))) == [(2, 2, 2), (7, 7, 7)]


def test_augmentation_keeps_image_and_label_aligned():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(8, 8, 6)).astype(np.float32)
    lab = (img < -1).astype(np.uint8)
    cfg = load_config(None)["augment"]
    for i in range(20):
        p = draw_params(np.random.default_rng(i), cfg, img.shape)
        g_img, g_lab = apply_geometric(img, p), apply_geometric(lab, p)
        assert np.array_equal(g_lab, (g_img < -1).astype(np.uint8))
    swap = AugmentParams(flips=(True, False, True), swap_xy=True)
    out = apply_geometric(img, swap)
    assert out[0, 0, 0] == img[-1, 0, -1] and out[2, 1, 0] == img[-2, 2, -1]


def test_no_xy_swap_for_non_square_patches():
    cfg = {**load_config(None)["augment"], "swap_xy_p": 1.0}
    assert not draw_params(np.random.default_rng(0), cfg, (8, 6, 4)).swap_xy
    assert draw_params(np.random.default_rng(0), cfg, (8, 8, 4)).swap_xy


def test_intensity_augmentation_is_identical_for_hr_and_lr():
    cfg = {**load_config(None)["augment"], "noise_p": 1.0, "intensity_p": 1.0, "bias_p": 1.0}
    p = draw_params(np.random.default_rng(4), cfg, (8, 8, 6))
    x = np.random.default_rng(5).normal(size=(8, 8, 6)).astype(np.float32)
    assert np.array_equal(apply_intensity(x, p), apply_intensity(x.copy(), p))
    assert not np.allclose(apply_intensity(x, p), x)
