"""A label drawn on another voxel size over its image's field of view (a 0.5 mm label of a 1 mm scan) is brought
onto the image's grid keeping every microbleed, with a warning line and a note, by one function for training,
plkd tune and plkd cv (plkd.label_grid through plkd.data.datasets.load_subject); plkd evaluate, which scores on the
reference's grid, counts the same microbleeds. A label of the same voxel size placed elsewhere, or over another
field of view, is still refused in one line."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from plkd.data.datasets import find_subjects, load_subject
from plkd.errors import InputError
from plkd.metrics import evaluate_paths
from plkd.metrics.components import label_components
from plkd.metrics.detection import evaluate_subject
from plkd.resample import grid_with_spacing, resample_array

SHAPE = (16, 16, 12)
#: Fine-grid voxels of the eight one-voxel (0.5 mm) microbleeds, well apart; the last one a 0.5 rater agreement.
SPOTS = [(5, 5, 5), (5, 21, 6), (21, 5, 7), (21, 21, 8), (13, 13, 16), (6, 26, 18), (26, 9, 17), (14, 27, 5)]


def _affine() -> np.ndarray:
    a = np.deg2rad(10.0)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    aff[:3, 3] = [-8.0, -9.5, -6.25]
    return aff


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _fine_label() -> tuple[np.ndarray, np.ndarray]:
    fine_affine, fine_shape = grid_with_spacing(_affine(), SHAPE, np.array([0.5, 0.5, 0.5]))
    assert fine_shape == (32, 32, 24)
    label = np.zeros(fine_shape, np.float32)
    for spot in SPOTS:
        label[spot] = 1.0
    label[SPOTS[-1]] = 0.5
    return label, fine_affine


def _data_set(root: Path, label: np.ndarray, label_affine: np.ndarray) -> Path:
    image = np.random.default_rng(3).random(SHAPE).astype(np.float32) * 50 + 100
    _save(root / "s01.nii.gz", image, _affine())
    _save(root / "s01_label.nii.gz", label, label_affine)
    return root


def test_a_half_millimetre_label_is_resampled_keeping_every_microbleed(tmp_path: Path, caplog) -> None:
    label, fine_affine = _fine_label()
    # Nearest neighbour (what a researcher would do by hand, and what nnU-Net users are told to) loses some.
    nearest = resample_array(label, fine_affine, _affine(), SHAPE, order=0)
    assert label_components(nearest > 0)[1] < len(SPOTS)

    (subject,) = find_subjects(_data_set(tmp_path / "data", label, fine_affine))
    with caplog.at_level(logging.WARNING):
        image, lab, _ = load_subject(subject)
        load_subject(subject)  # read again (plkd cv reads a subject in several folds): said once
    assert lab.shape == image.shape and np.allclose(lab.affine, image.affine)
    comps, n = label_components(lab.data > 0)
    assert n == len(SPOTS)
    # Each microbleed where the label put it (within half a 1 mm voxel), with its value (0.5: rater agreement).
    to_vox = np.linalg.inv(image.affine) @ fine_affine
    for spot in SPOTS:
        where = np.rint(to_vox[:3, :3] @ np.asarray(spot, float) + to_vox[:3, 3]).astype(int)
        assert comps[tuple(where)] > 0
    assert sorted(np.unique(lab.data).tolist()) == [0.0, 0.5, 1.0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "label of s01: drawn on 0.5x0.5x0.5 mm voxels" in warnings[0]
    assert "resampled onto the image's 1x1x1 mm grid keeping each of its 8 microbleed(s)" in warnings[0]
    assert lab.notes[-1] == warnings[0]


def test_a_label_stored_lps_is_turned_exactly_with_a_note(tmp_path: Path) -> None:
    label = np.zeros(SHAPE, np.uint8)
    label[2:4, 3:5, 1:3] = 1
    ornt = ornt_transform(axcodes2ornt(nib.aff2axcodes(_affine())), axcodes2ornt(("L", "P", "S")))
    stored, stored_affine = apply_orientation(label, ornt), _affine() @ inv_ornt_aff(ornt, SHAPE)
    (subject,) = find_subjects(_data_set(tmp_path / "data", stored, stored_affine))
    _, lab, _ = load_subject(subject)
    np.testing.assert_array_equal(lab.data, label)
    assert any("turned from LPS" in n for n in lab.notes)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("fine_shifted", "does not lie on the image's grid"),  # 0.5 mm over another field of view
        ("same_size_shifted", "apart: compare their qform/sform"),  # a header disagreement, never resampled
    ],
)
def test_a_label_over_another_field_or_placed_elsewhere_is_refused(tmp_path: Path, change: str, message: str) -> None:
    label, fine_affine = _fine_label()
    if change == "fine_shifted":
        fine_affine[:3, 3] += [3.0, 0.0, 0.0]
        data, affine = label, fine_affine
    else:
        data, affine = np.zeros(SHAPE, np.uint8), _affine()
        data[3, 3, 3] = 1
        affine[:3, 3] += [0.0, 0.4, 0.0]
    (subject,) = find_subjects(_data_set(tmp_path / "data", data, affine))
    with pytest.raises(InputError, match=message) as err:
        load_subject(subject)
    assert "\n" not in str(err.value)


def test_evaluate_finds_the_same_microbleeds_of_a_half_millimetre_reference_as_cv(tmp_path: Path) -> None:
    """plkd evaluate scores on the reference's own grid (it never resamples the truth; the prediction, on the scan's
    grid, is moved onto it), plkd cv and plkd tune on the scan's grid with the label brought there: both count the
    same microbleeds found, missed and false (the voxel Dice is measured on each one's grid)."""
    label, fine_affine = _fine_label()
    (subject,) = find_subjects(_data_set(tmp_path / "data", label, fine_affine))
    image, lab, _ = load_subject(subject)
    pred = np.zeros(SHAPE, np.int16)
    comps, n = label_components(lab.data > 0)
    for i in range(1, n - 1):  # found 6 of the 8 microbleeds, and one false positive far from them
        pred[comps == i] = i
    pred[0, 0, 0] = 99
    _save(tmp_path / "pred" / "s01_cmb.nii.gz", pred, image.affine)
    _save(tmp_path / "truth" / "s01_label.nii.gz", label, fine_affine)
    scored = evaluate_paths(tmp_path / "pred", tmp_path / "truth")["subjects"]["s01"]
    as_cv = evaluate_subject(pred, lab.data, image.spacing)
    assert (scored["TP"], scored["FP"], scored["FN"]) == (as_cv["TP"], as_cv["FP"], as_cv["FN"]) == (6, 1, 2)


def test_training_records_the_resampling_in_run_json_notes(tmp_path: Path) -> None:
    from plkd.training.config import load_config
    from plkd.training.data import load_training_data

    label, fine_affine = _fine_label()
    data = load_training_data(_data_set(tmp_path / "data", label, fine_affine), load_config("tiny"))
    (note,) = [n for n in data.summary()["notes"] if "drawn on 0.5x0.5x0.5 mm voxels" in n]
    assert note.startswith("label of s01:") and "8 microbleed(s)" in note
    assert len(data.train[0].positives) == len(SPOTS)


def test_plkd_lowres_takes_a_half_millimetre_label_by_the_same_rule(tmp_path: Path) -> None:
    from plkd.cli import main

    label, fine_affine = _fine_label()
    root = _data_set(tmp_path / "data", label, fine_affine)
    out, label_out = tmp_path / "o" / "s01.nii.gz", tmp_path / "o" / "s01_label.nii.gz"
    args = ["lowres", str(root / "s01.nii.gz"), "--factor", "2", "--label", str(root / "s01_label.nii.gz")]
    assert main([*args, "--out", str(out), "--label-out", str(label_out), "--progress", "none"]) == 0
    written = nib.load(str(label_out))
    assert written.shape == nib.load(str(out)).shape == SHAPE
    # Refused before (exit 2); its microbleeds now reach lowres's own LR@2 label rule (which may merge or drop
    # the 0.5-agreement one: not this rule's business).
    assert label_components(np.asanyarray(written.dataobj) > 0)[1] >= len(SPOTS) - 1
