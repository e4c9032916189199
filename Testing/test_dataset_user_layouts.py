"""Data sets as researchers bring them to ``plkd train``/``cv``/``tune``/``evaluate``: NIfTI pairs, one folder per
subject with the same file names, and the labels such folders hold."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plkd.cli import main
from plkd.data import find_subjects, load_subject
from plkd.errors import InputError
from plkd.metrics import evaluate_paths
from plkd.training.crossval import data_fingerprint, file_contents

SHAPE = (6, 7, 8)


def _volume(value: float = 1.0) -> np.ndarray:
    data = np.zeros(SHAPE, dtype=np.float32)
    data[0, 0, 0] = value
    data[1, 1, 1] = 1.0  # never constant
    return data


def _nii(path: Path, value: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(_volume(value), np.eye(4)), str(path))
    return path


def _pair(path: Path, value: float = 1.0, data: np.ndarray | None = None) -> Path:
    """A NIfTI pair (``x.hdr`` + ``x.img``, as SPM writes) at ``path`` (the ``.hdr``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Pair(_volume(value) if data is None else data, np.eye(4)), str(path))
    return path


# ----------------------------------------------------------------------------------------------
# NIfTI pairs (.hdr + .img), which plkd predict reads


def test_nifti_pairs_are_subjects_images_and_labels_in_every_layout(tmp_path: Path) -> None:
    side = tmp_path / "side"
    _pair(side / "p1.hdr", 3)
    _pair(side / "p1_label.hdr", 5)
    _nii(side / "p2.nii.gz", 4)
    subjects = {s.id: s for s in find_subjects(side)}
    assert sorted(subjects) == ["p1", "p2"]  # p1 was passed over without a word
    image, label, _ = load_subject(subjects["p1"])
    assert (image.data[0, 0, 0], label.data[0, 0, 0]) == (3, 5)  # read by the reader plkd predict uses

    valdo = tmp_path / "valdo"
    _pair(valdo / "sub-1" / "sub-1_space-T2S_desc-masked_T2S.hdr")
    _pair(valdo / "sub-1" / "sub-1_space-T2S_CMB.hdr")
    (s1,) = find_subjects(valdo)
    assert (s1.id, s1.image.name, s1.label.name) == (
        "sub-1",
        "sub-1_space-T2S_desc-masked_T2S.hdr",
        "sub-1_space-T2S_CMB.hdr",
    )

    nnunet = tmp_path / "nnunet"
    _pair(nnunet / "imagesTr" / "case_001_0000.hdr")
    _pair(nnunet / "labelsTr" / "case_001.hdr")
    (c1,) = find_subjects(nnunet)
    assert (c1.id, c1.label.name) == ("case_001", "case_001.hdr")


def test_pair_files_not_read_are_named_and_a_pair_beside_its_conversion_is_one_scan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _nii(tmp_path / "p1.nii.gz")
    _pair(tmp_path / "p1.hdr")  # the same scan converted: one subject, as plkd predict takes it
    nib.save(nib.AnalyzeImage(_volume(), np.eye(4)), str(tmp_path / "old.hdr"))
    _pair(tmp_path / "lost.hdr")
    (tmp_path / "lost.hdr").unlink()  # an .img without its header
    with caplog.at_level(logging.WARNING, logger="plkd"):
        (s,) = find_subjects(tmp_path)
    assert s.image.name == "p1.nii.gz"
    said = caplog.text
    assert "3 NIfTI file(s) not read" in said and "Analyze 7.5" in said and "without its .hdr" in said
    assert "NIfTI pair beside p1.nii.gz" in said


def test_a_pair_digest_covers_its_voxels(tmp_path: Path) -> None:
    """The cv stage cache and resume checks hash a subject's files: a pair's voxels lie in its .img."""
    _pair(tmp_path / "p1.hdr", 1)
    _pair(tmp_path / "p1_label.hdr", 1)
    before = file_contents(find_subjects(tmp_path))
    fingerprint = data_fingerprint(tmp_path, ["p1"])
    _pair(tmp_path / "p1_label.hdr", 2, data=np.pad(_volume(2), ((0, 1), (0, 0), (0, 0))))  # other voxels
    assert file_contents(find_subjects(tmp_path)) != before
    assert data_fingerprint(tmp_path, ["p1"]) != fingerprint


def test_evaluate_reads_a_pair_reference(tmp_path: Path) -> None:
    ref = np.zeros(SHAPE, np.uint8)
    ref[3, 3, 3] = 1
    _pair(tmp_path / "truth" / "sub-01_CMB.hdr", data=ref)
    (tmp_path / "pred").mkdir()
    nib.save(nib.Nifti1Image(ref, np.eye(4)), str(tmp_path / "pred" / "sub-01_cmb.nii.gz"))
    result = evaluate_paths(tmp_path / "pred", tmp_path / "truth")
    assert result["files"]["sub-01"]["reference"].endswith("sub-01_CMB.hdr") and result["pooled"]["TP"] == 1
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "truth" / "sub-01_CMB.img")]) == 0


# ----------------------------------------------------------------------------------------------
# one folder per subject, the same file names in each


def test_same_file_names_in_subject_folders_are_two_subjects_named_with_their_folder(tmp_path: Path) -> None:
    for n, folder in enumerate(("patientA", "patientB"), start=1):
        _nii(tmp_path / folder / "T2S.nii.gz", n)
        _nii(tmp_path / folder / "T2S_label.nii.gz", 10 + n)
    _nii(tmp_path / "patientC" / "scan_T2S.nii.gz", 3)
    subjects = {s.id: s for s in find_subjects(tmp_path)}
    # Refused before as "subject id 'T2S' occurs twice"; a name found once keeps it (runs' ids stay valid).
    assert sorted(subjects) == ["patientA_T2S", "patientB_T2S", "scan_T2S"]
    for n, sid in enumerate(("patientA_T2S", "patientB_T2S"), start=1):
        image, label, _ = load_subject(subjects[sid])
        assert (image.data[0, 0, 0], label.data[0, 0, 0]) == (n, 10 + n)  # each with its own label, never merged


def test_two_files_of_one_subject_id_are_refused_naming_both_and_the_rule(tmp_path: Path) -> None:
    _nii(tmp_path / "p1.nii.gz")
    _nii(tmp_path / "more" / "p1.nii.gz")
    _nii(tmp_path / "more_p1.nii.gz")  # what the folder-named id of more/p1 would be
    with pytest.raises(InputError) as err:
        find_subjects(tmp_path)
    text = str(err.value)
    assert "'more_p1' occurs twice" in text and "more/p1.nii.gz" in text and "more_p1.nii.gz" in text
    assert "with its folder" in text


# ----------------------------------------------------------------------------------------------
# labels named as plkd evaluate reads them


def _label(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros(SHAPE, np.uint8)
    data[3, 3, 3] = 1
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


@pytest.mark.parametrize("suffix", ["_gt", "_truth", "_lesion", "_manual", "_microbleeds", "_GT"])
def test_a_label_named_with_evaluates_words_is_the_label_of_the_image_beside_it(tmp_path: Path, suffix: str) -> None:
    """``p1_gt.nii.gz`` beside ``p1.nii.gz`` was a subject of its own (its label map read as a scan) and p1 was left
    out for having no label; plkd evaluate reads the same file as p1's reference."""
    _nii(tmp_path / "p1.nii.gz")
    _label(tmp_path / f"p1{suffix}.nii.gz")
    _label(tmp_path / "labels_only" / f"q{suffix}.nii.gz")  # no image of its name: an image, as before
    subjects = {s.id: s for s in find_subjects(tmp_path)}
    assert sorted(subjects) == ["p1", f"q{suffix}"]
    assert subjects["p1"].label.name == f"p1{suffix}.nii.gz"

    split = tmp_path / "split"
    _nii(split / "images" / "a.nii.gz")
    _label(split / "labels" / f"a{suffix}.nii.gz")
    (a,) = find_subjects(split)
    assert a.label.name == f"a{suffix}.nii.gz"


def test_a_bids_desc_cmb_mask_is_the_label_not_the_brain_mask(tmp_path: Path) -> None:
    """``derivatives/…/sub-01_desc-cmb_mask`` (a mask of the microbleeds) was taken for sub-01's brain mask: the
    intensities normalised over the microbleeds and negatives drawn from them, and the subject had no label."""
    _nii(tmp_path / "sub-01" / "anat" / "sub-01_T2starw.nii.gz")
    _label(tmp_path / "derivatives" / "manual" / "sub-01" / "anat" / "sub-01_desc-cmb_mask.nii.gz")
    _nii(tmp_path / "sub-02" / "anat" / "sub-02_T2starw.nii.gz")
    _label(tmp_path / "derivatives" / "manual" / "sub-02" / "anat" / "sub-02_desc-lesion_mask.nii.gz")
    _nii(tmp_path / "derivatives" / "bet" / "sub-02" / "anat" / "sub-02_desc-brain_mask.nii.gz")
    s1, s2 = find_subjects(tmp_path)
    assert (s1.label.name, s1.mask) == ("sub-01_desc-cmb_mask.nii.gz", None)
    assert (s2.label.name, s2.mask.name) == ("sub-02_desc-lesion_mask.nii.gz", "sub-02_desc-brain_mask.nii.gz")


# ----------------------------------------------------------------------------------------------
# nnU-Net label classes


def _nnunet(root: Path, labels: dict) -> Path:
    _nii(root / "imagesTr" / "cmb_001_0000.nii.gz")
    data = np.zeros(SHAPE, np.uint8)
    data[1, 1, 1] = 1  # a microbleed
    data[4, 5, 6] = 2  # a lacune
    (root / "labelsTr").mkdir(parents=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(root / "labelsTr" / "cmb_001.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"labels": labels, "file_ending": ".nii.gz"}))
    return root


@pytest.mark.parametrize(
    "labels", [{"background": 0, "CMB": 1, "lacune": 2}, {"0": "background", "1": "microbleeds", "2": "lacune"}]
)
def test_an_nnunet_label_of_several_classes_trains_on_the_microbleed_class_only(
    tmp_path: Path, labels: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """Every non-zero value was a microbleed: the lacunes (class 2) were trained on as microbleeds without a word."""
    root = _nnunet(tmp_path / "ds", labels)
    with caplog.at_level(logging.WARNING, logger="plkd"):
        (s,) = find_subjects(root)
    assert "only" in caplog.text and "lacune" in caplog.text
    _, label, _ = load_subject(s)
    assert label.data[1, 1, 1] == 1 and label.data[4, 5, 6] == 0
    assert load_subject(s, all_classes=True)[1].data[4, 5, 6] == 2  # plkd lowres converts the data set as it is


def test_nnunet_classes_without_a_microbleed_class_are_refused_and_one_class_is_read_as_before(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"dataset.json names 2 label classes \(lesion 1, lacune 2\) and none"):
        find_subjects(_nnunet(tmp_path / "a", {"background": 0, "lesion": 1, "lacune": 2}))
    (s,) = find_subjects(_nnunet(tmp_path / "b", {"background": 0, "lesion": 1}))
    assert load_subject(s)[1].data[4, 5, 6] == 2


def test_plkd_lowres_of_an_nnunet_set_of_several_classes_keeps_them_and_says_which_is_microbleeds(
    tmp_path: Path,
) -> None:
    root = _nnunet(tmp_path / "ds", {"background": 0, "CMB": 1, "lacune": 2})
    out = tmp_path / "ds_lr2"
    assert main(["lowres", "--dataset", str(root), "--factor", "2", "--out", str(out), "--progress", "none"]) == 0
    (s,) = find_subjects(out)
    assert load_subject(s, all_classes=True)[1].data[4, 5, 6] == 2  # converted as it is
    assert load_subject(s)[1].data[4, 5, 6] == 0  # and still read as a lacune, not a microbleed


@pytest.mark.parametrize(("images", "labels"), [("scans", "labels"), ("T2S", "CMB"), ("swi", "GT")])
def test_a_labels_folder_beside_the_scans_folder_pairs_by_name(tmp_path: Path, images: str, labels: str) -> None:
    """``scans/p1`` + ``labels/p1``: with ids that name their folder, the label maps became subjects of their own (read
    as scans) beside unlabelled ones; they are the labels of the scans of their names."""
    for n in (1, 2):
        _nii(tmp_path / images / f"p{n}.nii.gz", n)
        _label(tmp_path / labels / f"p{n}.nii.gz")
    _nii(tmp_path / "CMB_003" / "scan.nii.gz")  # a subject's folder named like a case, not a labels folder
    subjects = {s.id: s for s in find_subjects(tmp_path)}
    assert sorted(subjects) == ["p1", "p2", "scan"]
    assert subjects["p1"].label == tmp_path / labels / "p1.nii.gz" and subjects["p1"].image.parent.name == images
    _label(tmp_path / labels / "p4.nii.gz")
    with pytest.raises(InputError, match=rf"label {labels}/p4.nii.gz \(in a labels folder\) has no image"):
        find_subjects(tmp_path)


@pytest.mark.parametrize(("label", "mask"), [("label", "brainmask"), ("CMB", "mask"), ("seg", "brain_mask")])
def test_a_label_named_only_label_in_a_subjects_folder_is_its_scans_label(
    tmp_path: Path, label: str, mask: str
) -> None:
    """``sub-01/T2S.nii.gz`` + ``sub-01/label.nii.gz``: the labels became subjects of their own (label maps read as
    scans) once ids named their folders; each is the label of the one scan of its folder."""
    for n in (1, 2):
        _nii(tmp_path / f"sub-0{n}" / "T2S.nii.gz", n)
        _label(tmp_path / f"sub-0{n}" / f"{label}.nii.gz")
        _nii(tmp_path / f"sub-0{n}" / f"{mask}.nii.gz")
    s1, s2 = find_subjects(tmp_path)
    assert (s1.id, s2.id) == ("sub-01_T2S", "sub-02_T2S")
    assert (s1.label, s1.mask) == (tmp_path / "sub-01" / f"{label}.nii.gz", tmp_path / "sub-01" / f"{mask}.nii.gz")
    _nii(tmp_path / "sub-01" / "T1.nii.gz")  # two scans: whose label is it?
    with pytest.raises(InputError, match=r"(label|mask) sub-01/\S+ is named for no image and its folder holds 2"):
        find_subjects(tmp_path)


# ----------------------------------------------------------------------------------------------
# label contents


def test_a_brain_mask_given_as_the_label_is_refused_not_trained_as_one_microbleed(tmp_path: Path) -> None:
    """The whole brain was trained as one microbleed without a word: the contrast check finds no brain around it."""
    shape, affine = (20, 20, 20), np.diag([3.0, 3.0, 3.0, 1.0])  # 3 mm voxels of 27 uL
    grid = np.indices(shape).astype(float)
    brain = (((grid - 9.5) / 8.0) ** 2).sum(0) <= 1.0  # 24 mm across: about 58 mL
    image = np.where(brain, 100.0, 0.0).astype(np.float32) + np.random.default_rng(0).random(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "p1.nii.gz"))
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), str(tmp_path / "p1_label.nii.gz"))
    (s,) = find_subjects(tmp_path)
    with pytest.raises(InputError, match=r"p1_label.nii.gz\) holds a labelled region of \d+(\.\d+)? mL.*brain mask"):
        load_subject(s)
    # Many microbleeds, together larger than the limit, are no region of that size.
    many = np.zeros(shape, np.uint8)
    many[::2, ::2, ::2] = 1  # 1000 single voxels, 27 mL together, each its own microbleed
    nib.save(nib.Nifti1Image(many, affine), str(tmp_path / "p1_label.nii.gz"))
    assert load_subject(s)[1] is not None


# ----------------------------------------------------------------------------------------------
# BIDS-like trees and split folders named as side by side


def test_a_bids_like_tree_without_anat_folders_is_read_as_bids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``sub-01/ses-1/sub-01_ses-1_T2starw.nii.gz`` (no ``anat/``) was "no subjects found"; and a subject without
    ``anat/`` in a tree whose others have one was left out of training."""
    for n in (1, 2):
        _nii(tmp_path / "a" / f"sub-0{n}" / "ses-1" / f"sub-0{n}_ses-1_T2starw.nii.gz")
        _label(tmp_path / "a" / f"sub-0{n}" / "ses-1" / f"sub-0{n}_ses-1_CMB.nii.gz")
    s1, s2 = find_subjects(tmp_path / "a")
    assert (s1.id, s1.label.name, s1.meta["layout"]) == ("sub-01_ses-1", "sub-01_ses-1_CMB.nii.gz", "bids")

    _nii(tmp_path / "b" / "sub-01" / "anat" / "sub-01_T2starw.nii.gz")
    _label(tmp_path / "b" / "sub-01" / "anat" / "sub-01_label-CMB_mask.nii.gz")
    _nii(tmp_path / "b" / "sub-02" / "sub-02_T2starw.nii.gz")
    _label(tmp_path / "b" / "sub-02" / "sub-02_label-CMB_mask.nii.gz")
    with caplog.at_level(logging.WARNING, logger="plkd"):
        subjects = find_subjects(tmp_path / "b")
    assert [(s.id, s.label.name) for s in subjects] == [
        ("sub-01", "sub-01_label-CMB_mask.nii.gz"),
        ("sub-02", "sub-02_label-CMB_mask.nii.gz"),
    ]
    assert "not read" not in caplog.text


def test_split_folders_pair_a_label_named_for_the_case_with_its_one_image(tmp_path: Path) -> None:
    """``images/p1_T2S`` + ``labels/p1_CMB`` was refused ("expected images/p1_CMB.nii.gz") though the same two files
    side by side pair."""
    _nii(tmp_path / "images" / "p1_T2S.nii.gz")
    _label(tmp_path / "labels" / "p1_CMB.nii.gz")
    _nii(tmp_path / "images" / "p2_T2S.nii.gz")
    p1, p2 = find_subjects(tmp_path)
    assert (p1.id, p1.label.name, p2.id, p2.label) == ("p1", "p1_CMB.nii.gz", "p2_T2S", None)
    _label(tmp_path / "labels" / "p3_CMB.nii.gz")
    with pytest.raises(InputError, match=r"labels/p3_CMB.nii.gz has no image \(expected images/p3.nii.gz or one "):
        find_subjects(tmp_path)


def test_plkd_lowres_of_a_data_set_of_nifti_pairs_writes_whole_pairs(tmp_path: Path) -> None:
    """The header was renamed into place and its voxels left under the temporary name (``.p1.hdr.….partial.img``):
    every converted pair was a header without its image."""
    image = (100 + np.random.default_rng(0).random((16, 16, 16)) * 5).astype(np.float32)
    label = np.zeros((16, 16, 16), np.uint8)
    label[7:9, 7:9, 7:9] = 1
    image[label > 0] = 30
    _pair(tmp_path / "ds" / "p1.hdr", data=image)
    _pair(tmp_path / "ds" / "p1_label.hdr", data=label)
    out = tmp_path / "out"
    run = ["lowres", "--dataset", str(tmp_path / "ds"), "--thickness-mm", "2", "--out", str(out), "--progress", "none"]
    assert main(run) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        ".plkd-lowres.json",
        "p1.hdr",
        "p1.img",
        "p1_label.hdr",
        "p1_label.img",
    ]
    (s,) = find_subjects(out)
    converted, converted_label, _ = load_subject(s)
    assert converted.shape == (16, 16, 8) and int(converted_label.data.sum()) > 0
    # Another conversion into the same folder is refused as for single files, and --overwrite removes both files.
    other = [*run[:4], "3", *run[5:]]
    assert main(other) == 2
    assert main([*other, "--overwrite"]) == 0
    assert load_subject(find_subjects(out)[0])[0].shape == (16, 16, 5)
    assert not [p for p in out.iterdir() if ".partial" in p.name]


def test_subject_folders_without_anat_or_sessions_keep_their_plain_folder_ids(tmp_path: Path) -> None:
    """Read side by side as before (a run started on them resumes): not turned into BIDS cases of other ids."""
    _nii(tmp_path / "sub-01" / "sub-01_T2S.nii.gz")
    _label(tmp_path / "sub-01" / "sub-01_T2S_label.nii.gz")
    (s,) = find_subjects(tmp_path)
    assert (s.id, s.meta["layout"], s.label.name) == ("sub-01_T2S", "folder", "sub-01_T2S_label.nii.gz")


@pytest.mark.parametrize("name", ["p1-label", "p1.label", "p1-seg", "p1-brainmask"])
def test_a_label_joined_by_a_hyphen_or_dot_is_the_label_of_its_image(tmp_path: Path, name: str) -> None:
    """3D Slicer names a label map of p1 ``p1-label``: it was read as a scan of its own (plkd evaluate read it as a
    label) and p1 was left out for having no label."""
    _nii(tmp_path / "p1.nii.gz")
    (_nii if "mask" in name else _label)(tmp_path / f"{name}.nii.gz")
    (s,) = find_subjects(tmp_path)
    assert s.id == "p1" and (s.mask if "mask" in name else s.label).name == f"{name}.nii.gz"


def test_subjects_in_other_image_formats_are_named_not_left_out_unsaid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A data set converted to NIfTI in part lost its NRRD or MGH subjects without a word (plkd predict names them)."""
    _nii(tmp_path / "p1.nii.gz")
    _label(tmp_path / "p1_label.nii.gz")
    (tmp_path / "p2.nrrd").write_bytes(b"NRRD0004\n")
    (tmp_path / "p2_label.nrrd").write_bytes(b"NRRD0004\n")
    (tmp_path / "sub" / "p3.mgz").parent.mkdir()
    (tmp_path / "sub" / "p3.mgz").write_bytes(b"\0")
    with caplog.at_level(logging.WARNING, logger="plkd"):
        (s,) = find_subjects(tmp_path)
    assert s.id == "p1"
    assert "3 image file(s) not read" in caplog.text and ".nrrd: convert it to NIfTI): 2" in caplog.text
    only = tmp_path / "only"
    only.mkdir()
    (only / "p2.nrrd").write_bytes(b"NRRD0004\n")
    with pytest.raises(InputError, match=r"no subjects found in .*only: 1 image\(s\) in other formats \(nrrd: convert"):
        find_subjects(only)
