"""A nested BIDS tree (sub-XX/ses-YY/anat/ images, derivatives/ labels) is read for training, plkd tune and
plkd cv as plkd predict reads it: the same scans, labels paired by their BIDS entities, and every NIfTI file no
subject reads named in one warning line, in every layout."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plkd.data.datasets import find_subjects
from plkd.data.splits import session_groups
from plkd.errors import InputError
from plkd.inference.inputs import expand_inputs

SHAPE = (10, 10, 8)


def _save(path: Path, label: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros(SHAPE, np.uint8) if label else np.random.default_rng(1).random(SHAPE).astype(np.float32)
    if label:
        data[3, 3, 3] = 1
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def _bids(root: Path) -> Path:
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.8.0"}')
    for sub in ("01", "02"):
        for ses in ("1", "2"):
            anat, name = root / f"sub-{sub}" / f"ses-{ses}" / "anat", f"sub-{sub}_ses-{ses}"
            _save(anat / f"{name}_T2starw.nii.gz")
            _save(anat / f"{name}_T1w.nii.gz")
            derived = root / "derivatives" / "raters" / f"sub-{sub}" / f"ses-{ses}" / "anat"
            _save(derived / f"{name}_desc-cmb_dseg.nii.gz", label=True)
            _save(derived / f"{name}_desc-brain_mask.nii.gz", label=True)
    # A subject without sessions, its label beside the image (BIDS label-X_mask: a label, not a brain mask).
    _save(root / "sub-03" / "anat" / "sub-03_T2starw.nii.gz")
    _save(root / "sub-03" / "anat" / "sub-03_label-CMB_mask.nii.gz", label=True)
    # Another pipeline's outputs in derivatives are no subject's scans.
    _save(root / "derivatives" / "fmriprep" / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.nii.gz")
    return root


def test_nested_bids_reads_the_scans_predict_reads_with_their_labels(tmp_path: Path, caplog) -> None:
    root = _bids(tmp_path / "study")
    with caplog.at_level(logging.WARNING):
        subjects = find_subjects(root)
    ids = [s.id for s in subjects]
    assert ids == ["sub-01_ses-1", "sub-01_ses-2", "sub-02_ses-1", "sub-02_ses-2", "sub-03"]
    for s in subjects[:4]:
        assert s.label.name == f"{s.id}_desc-cmb_dseg.nii.gz" and "derivatives" in s.label.parts
        assert s.mask.name == f"{s.id}_desc-brain_mask.nii.gz"
        assert s.meta["layout"] == "bids" and s.meta["modality"] == "T2S"
    assert subjects[4].label.name == "sub-03_label-CMB_mask.nii.gz" and subjects[4].mask is None
    # plkd predict's walk of the same tree analyses the same scans.
    assert sorted(s.path for s in expand_inputs([root]).scans) == sorted(s.image for s in subjects)
    # Sessions of one subject stay on one side of a split.
    assert session_groups(ids) == {i: i[:6] for i in ids[:4]}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "4 NIfTI file(s) not read" in warnings[0] and "other contrast (T1w): 4" in warnings[0]


def test_bids_labels_that_fit_no_image_or_several_are_refused_in_one_line(tmp_path: Path) -> None:
    root = _bids(tmp_path / "study")
    extra = _save(root / "derivatives" / "raters" / "sub-01" / "anat" / "sub-01_desc-cmb_dseg.nii.gz", label=True)
    with pytest.raises(InputError, match=r"fits 2 images .*give it the entities") as err:
        find_subjects(root)
    assert "\n" not in str(err.value)
    extra.unlink()
    _save(root / "derivatives" / "raters" / "sub-09" / "anat" / "sub-09_desc-cmb_dseg.nii.gz", label=True)
    with pytest.raises(InputError, match=r"label derivatives/raters/sub-09/anat/sub-09_desc-cmb_dseg.nii.gz has no"):
        find_subjects(root)


def test_a_session_deeper_than_a_plain_folder_reads_is_named(tmp_path: Path, caplog) -> None:
    """Plain side-by-side folders are read one sub-folder deep: a subject whose files lie deeper was left out of
    training without a word."""
    root = tmp_path / "data"
    _save(root / "s01" / "s01.nii.gz")
    _save(root / "s01" / "s01_label.nii.gz", label=True)
    _save(root / "s02" / "visit-1" / "s02.nii.gz")
    _save(root / "s02" / "visit-1" / "s02_label.nii.gz", label=True)
    with caplog.at_level(logging.WARNING):
        assert [s.id for s in find_subjects(root)] == ["s01"]
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "2 NIfTI file(s) not read" in line and "deeper than the folder layout reads (1 folder level(s)): 2" in line
    assert "s02/visit-1/s02.nii.gz" in line


def test_a_valdo_subject_of_the_other_modality_is_named(tmp_path: Path, caplog) -> None:
    root = tmp_path / "valdo"
    _save(root / "sub-1" / "sub-1_space-T2S_desc-masked_T2S.nii.gz")
    _save(root / "sub-1" / "sub-1_space-T2S_CMB.nii.gz", label=True)
    _save(root / "sub-2" / "sub-2_space-SWI_desc-masked_SWI.nii.gz")
    with caplog.at_level(logging.WARNING):
        assert [s.id for s in find_subjects(root, modality="T2S")] == ["sub-1"]
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "1 NIfTI file(s) not read" in line and "SWI, not the T2S asked for: 1" in line


def test_two_valdo_brain_masks_for_one_subject_are_refused(tmp_path: Path) -> None:
    # One in sub-1/, one flat beside it: the later replaced the other without a word (two images or labels were
    # already refused).
    root = tmp_path / "valdo"
    _save(root / "sub-1" / "sub-1_space-T2S_desc-masked_T2S.nii.gz")
    _save(root / "sub-1" / "sub-1_space-T2S_desc-brain_mask.nii.gz", label=True)
    _save(root / "sub-1_space-T2S_desc-brain_mask.nii.gz", label=True)
    with pytest.raises(InputError, match=r"two brain masks for subject 'sub-1'"):
        find_subjects(root)


def test_the_left_out_files_are_said_once_however_often_the_set_is_read(tmp_path: Path, caplog) -> None:
    # plkd cv reads its data set once per fold and plkd tune once per segmenter: one caveat, one line.
    root = _bids(tmp_path / "study")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            find_subjects(root)
    assert sum("NIfTI file(s) not read" in r.getMessage() for r in caplog.records) == 1


def test_evaluate_pairs_predictions_of_the_tree_with_the_labels_training_reads(tmp_path: Path) -> None:
    from plkd.metrics import evaluate_paths

    root = _bids(tmp_path / "study")
    subjects = find_subjects(root)
    for scan in expand_inputs([root]).scans:  # named as plkd predict names them
        _save(tmp_path / "pred" / f"{scan.stem}_cmb.nii.gz", label=True)
    files = evaluate_paths(tmp_path / "pred", root)["files"]
    assert sorted(Path(f["reference"]) for f in files.values()) == sorted(s.label for s in subjects)


def test_nnunet_channels_other_than_0000_are_named_as_not_read(tmp_path: Path, caplog) -> None:
    root = tmp_path / "Dataset001_CMB"
    for case in ("CMB_001", "CMB_002"):
        _save(root / "imagesTr" / f"{case}_0000.nii.gz")
        _save(root / "imagesTr" / f"{case}_0001.nii.gz")  # a second contrast the single-channel networks never see
        _save(root / "labelsTr" / f"{case}.nii.gz", label=True)
    with caplog.at_level(logging.WARNING):
        assert [s.id for s in find_subjects(root)] == ["CMB_001", "CMB_002"]
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "2 NIfTI file(s) not read" in line and "nnU-Net channel 0001: the networks read channel 0000" in line


def test_a_label_of_a_multi_echo_gre_stored_one_echo_per_file_says_so(tmp_path: Path) -> None:
    # plkd predict analyses each echo file on its own (with a note); training would take each as a case.
    root = tmp_path / "study"
    for echo in (1, 2, 3):
        _save(root / "sub-01" / "anat" / f"sub-01_echo-{echo}_part-mag_MEGRE.nii.gz")
    _save(root / "derivatives" / "raters" / "sub-01" / "anat" / "sub-01_desc-cmb_dseg.nii.gz", label=True)
    with pytest.raises(InputError, match=r"fits 3 images .*echoes of one multi-echo GRE stored one per file"):
        find_subjects(root)


def test_a_run_index_pairs_whatever_its_leading_zeros(tmp_path: Path) -> None:
    """``run-01`` and ``run-1`` name one run (a BIDS index is a number): the label was refused as having no image."""
    root = tmp_path / "study"
    (root / "dataset_description.json").parent.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.8.0"}')
    image = _save(root / "sub-01" / "anat" / "sub-01_run-01_T2starw.nii.gz")
    label = _save(root / "derivatives" / "raters" / "sub-01" / "anat" / "sub-01_run-1_desc-cmb_dseg.nii.gz", label=True)
    (subject,) = find_subjects(root)
    assert (subject.image, subject.label) == (image, label)
