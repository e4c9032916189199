"""Training sees the microbleeds where the researcher's label map puts them, whatever the map's form.

Each test writes a small image/label pair (plain folder layout) with nibabel and checks the positive
patch centres and label voxels that :func:`plkd.training.sampling.prepare_subject` makes of it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from plkd.data.datasets import find_subjects
from plkd.inference.preprocess import network_slice_axis
from plkd.training.config import load_config
from plkd.training.data import load_training_data, split_validation
from plkd.training.sampling import prepare_subject
from plkd.tuning import _degrade, is_microbleed, truth_microbleeds
from plkd.volumes import Volume


def _write(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _brain(spacing: tuple[float, float, float], centres_mm: np.ndarray, radius_mm: float, seed: int = 0):
    """A 40 mm noise brain on a grid of ``spacing`` with dark balls at ``centres_mm`` (world = voxel * spacing)."""
    shape = tuple(int(round(40 / s)) for s in spacing)
    grid = np.stack(np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing, strict=True)), indexing="ij"), -1)
    image = (100 + 5 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    for c in centres_mm:
        d = ((grid - c) ** 2).sum(-1)
        ball = d <= radius_mm**2
        ball |= d == d.min()  # at least the voxel nearest the centre
        image[ball] = 30
        label[ball] = 1
    return image, label, np.diag([*spacing, 1.0])


CENTRES = np.array([[12.0, 14.0, 11.0], [21.0, 21.0, 20.0], [27.0, 12.0, 26.0]])


def _prepared(root: Path, image: np.ndarray, label: np.ndarray, affine: np.ndarray):
    _write(root / "case.nii.gz", image, affine)
    _write(root / "case_label.nii.gz", label, affine)
    (subject,) = find_subjects(root)
    return prepare_subject(subject, load_config("tiny", []), 0)


def _world(prepared, voxels: np.ndarray) -> np.ndarray:
    return voxels @ prepared.affine[:3, :3].T + prepared.affine[:3, 3]


def test_a_float_label_with_rounding_noise_keeps_its_microbleeds(tmp_path: Path) -> None:
    image, label, affine = _brain((1.0, 1.0, 1.0), CENTRES, 1.6)
    noisy = label.astype(np.float32) + np.float32(1e-6)  # a float label after a resampling or scaling
    s = _prepared(tmp_path, image, noisy, affine)
    assert len(s.positives) == 3  # was 1: the whole field of view
    assert int(s.label.sum()) == int(label.sum())
    found = _world(s, s.positives)
    assert np.abs(found[:, None, :] - CENTRES[None]).sum(-1).min(axis=1).max() <= 1.5


@pytest.mark.parametrize("spacing", [(0.5, 0.5, 0.5), (0.6, 0.6, 2.0)])
def test_microbleeds_smaller_than_a_model_voxel_survive_the_resampling(tmp_path: Path, spacing) -> None:
    # Eight microbleeds of 1.2 mm, 8 mm apart, off the voxel centres of both grids.
    centres = np.array([[x, y, z] for x in (12.3, 20.3) for y in (12.6, 20.6) for z in (12.2, 28.2)])
    image, label, affine = _brain(spacing, centres, 0.6)
    s = _prepared(tmp_path, image, label, affine)
    assert s.image.shape == (40, 40, 40)
    # One positive per microbleed of the label (nearest-neighbour resampling kept 6 of 8 at 0.5 mm) ...
    assert len(s.positives) == len(centres)
    # ... each on a label voxel of the model grid, within a voxel of where the label puts it.
    assert all(s.label[tuple(p)] for p in s.positives)
    found = _world(s, s.positives)
    assert np.linalg.norm(found[:, None, :] - centres[None], axis=2).min(axis=0).max() <= 1.5


def test_plkd_tune_reads_a_float_label_with_rounding_noise_as_its_microbleeds() -> None:
    """plkd tune's calibration judges each candidate against the validation label's microbleeds: with the
    noise read as > 0 the brain was one microbleed 20 mm wide and every candidate in it a true one."""
    image, label, affine = _brain((1.0, 1.0, 1.0), CENTRES, 1.6)
    refs = truth_microbleeds(Volume(data=label.astype(np.float32) + np.float32(1e-6), affine=affine))
    assert len(refs) == 3
    assert max(radius for _, radius in refs) < 2.5
    false_alarm = np.array([30.0, 30.0, 10.0])  # dark nowhere in the label
    assert not is_microbleed(false_alarm, refs)


def _pairs(root: Path, n: int = 5) -> list[np.ndarray]:
    """``n`` plain-folder cases, each with three microbleeds of its own; returns the labels."""
    labels = []
    rng = np.random.default_rng(4)
    for i in range(n):
        centres = rng.uniform(10, 30, size=(3, 3))
        image, label, affine = _brain((1.0, 1.0, 1.0), centres, 1.6, seed=i)
        _write(root / f"case{i}.nii.gz", image, affine)
        _write(root / f"case{i}_label.nii.gz", label, affine)
        labels.append(label)
    return labels


def test_a_label_of_another_scan_is_said_in_the_log_and_run_json(tmp_path: Path, caplog) -> None:
    labels = _pairs(tmp_path / "data")
    cfg = load_config("tiny", [])
    assert load_training_data(tmp_path / "data", cfg).notes == ()  # every label on its own dark spots
    # The sorting slip: case3's label file is case1's.
    _write(tmp_path / "data" / "case3_label.nii.gz", labels[1], np.eye(4))
    with caplog.at_level(logging.WARNING):
        data = load_training_data(tmp_path / "data", cfg)
    (note,) = data.notes
    assert "case3" in note and "no darker than the brain around them" in note and "case1 " not in note
    assert note in caplog.text
    assert data.summary()["notes"] == [note]  # run.json


def test_labelled_microbleeds_outside_the_brain_mask_are_said(tmp_path: Path) -> None:
    labels = _pairs(tmp_path / "data")
    mask = np.zeros(labels[2].shape, np.uint8)
    mask[4:36, 4:36, 4:36] = 1
    for box in ndimage.find_objects(ndimage.label(labels[2])[0])[:1]:
        mask[box] = 0  # a mask that misses one microbleed
    _write(tmp_path / "data" / "case2_mask.nii.gz", mask, np.eye(4))
    (note,) = load_training_data(tmp_path / "data", load_config("tiny", [])).notes
    assert "case2 (1 of 3)" in note and "outside their brain mask" in note


def test_what_a_run_leaves_out_is_said(tmp_path: Path) -> None:
    labels = _pairs(tmp_path / "data", n=4)
    (tmp_path / "data" / "case2_label.nii.gz").replace(tmp_path / "case2_lesion.nii.gz")  # a label named otherwise
    cfg = load_config("tiny", ["data.val_fraction=0.2", "teacher.val_every=2"])
    notes = load_training_data(tmp_path / "data", cfg).notes
    assert any(n.startswith("1 of 4 subjects have no label and are left out (case2)") for n in notes)
    assert any("no validation subjects: data.val_fraction 0.2 needs at least 5" in n for n in notes)
    # Six labelled subjects now, the one held out for validation without a microbleed: no validation loss.
    for i in (2, 4, 5):
        image, _, affine = _brain((1.0, 1.0, 1.0), CENTRES, 1.6, seed=i)
        _write(tmp_path / "data" / f"case{i}.nii.gz", image, affine)
        _write(tmp_path / "data" / f"case{i}_label.nii.gz", labels[0] * 0, affine)
    ids = [f"case{i}" for i in range(6)]
    seed = next(k for k in range(100) if set(split_validation(ids, 0.2, k)[1]) <= {"case2", "case4", "case5"})
    data = load_training_data(tmp_path / "data", {**cfg, "seed": seed})
    assert data.val and data.val_sampler is None
    assert any("hold no microbleed, so no validation loss is computed" in n for n in data.notes)


def _stored(kind: str, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The RAS arrays stored as LPS (x, y flipped) or sagittally (array axes: A, S, R), with the affine
    that keeps every voxel where it was."""
    n = np.asarray(image.shape) - 1
    if kind == "LPS":
        affine = np.diag([-1.0, -1.0, 1.0, 1.0])
        affine[:2, 3] = n[:2]
        return image[::-1, ::-1].copy(), label[::-1, ::-1].copy(), affine
    affine = np.zeros((4, 4))
    affine[0, 2] = affine[1, 0] = affine[2, 1] = affine[3, 3] = 1.0  # voxel (i, j, k) -> (x=k, y=i, z=j)
    return np.transpose(image, (1, 2, 0)).copy(), np.transpose(label, (1, 2, 0)).copy(), affine


@pytest.mark.parametrize("kind", ["LPS", "sagittal"])
def test_a_subject_stored_otherwise_is_learnt_as_the_predictor_sees_it(tmp_path: Path, kind: str) -> None:
    """The predictor turns every scan to RAS axis order; training kept a sagittal data set as stored, so its
    brains were learnt turned and its students were thinned across X instead of Z."""
    image, label, affine = _brain((1.0, 1.0, 1.0), CENTRES, 1.6)
    ras = _prepared(tmp_path / "ras", image, label, affine)
    other = _prepared(tmp_path / kind, *_stored(kind, image, label))
    assert other.image.shape == ras.image.shape
    np.testing.assert_array_equal(other.label, ras.label)
    np.testing.assert_allclose(other.image, ras.image, atol=1e-5)
    np.testing.assert_allclose(other.affine, ras.affine)
    assert sorted(map(tuple, other.positives)) == sorted(map(tuple, ras.positives))


def test_plkd_tune_thins_a_sagittal_subject_along_the_networks_z() -> None:
    image, label, affine = _brain((1.0, 1.0, 1.0), CENTRES, 1.6)
    sag, _, sag_affine = _stored("sagittal", image, label)
    assert network_slice_axis(affine) == 2 and network_slice_axis(sag_affine) == 1  # stored axis 1 is S
    thick = np.zeros((4, 4))
    thick[0, 1] = thick[1, 2] = 0.5
    thick[2, 0], thick[3, 3] = 3.0, 1.0  # axial 3 mm slices stored along array axis 0
    assert network_slice_axis(thick) == 0
    lr_ras = _degrade(image, "interp", 4, affine)
    lr_sag = _degrade(sag, "interp", 4, sag_affine)
    np.testing.assert_allclose(np.transpose(lr_sag, (2, 0, 1)), lr_ras, atol=1e-4)


def test_plkd_predict_outputs_beside_the_images_are_not_taken_as_labels(tmp_path: Path, caplog) -> None:
    """plkd predict run into the data folder: NAME_cmb.nii.gz (with its JSON) was read as NAME's label, so the
    model's own unreviewed result was trained on as the truth, and the reviewed NAME_cmb-final as an image."""
    image, label, affine = _brain((1.0, 1.0, 1.0), CENTRES, 1.6)
    _write(tmp_path / "sub-01_T2S.nii.gz", image, affine)
    _write(tmp_path / "sub-01_T2S_cmb.nii.gz", label, affine)
    (tmp_path / "sub-01_T2S_cmb.json").write_text('{"candidates": []}', encoding="utf-8")
    _write(tmp_path / "sub-01_T2S_cmb-final.nii.gz", label, affine)
    with caplog.at_level(logging.WARNING):
        (subject,) = find_subjects(tmp_path)
    assert subject.id == "sub-01_T2S" and subject.label is None
    assert "2 plkd or Slicer result(s) left out" in caplog.text
    _write(tmp_path / "sub-01_T2S_label.nii.gz", label, affine)  # the reference, beside the outputs
    (subject,) = find_subjects(tmp_path)
    assert subject.label == tmp_path / "sub-01_T2S_label.nii.gz"
