"""Data set readers (VALDO, plkd synth, plain folders) and subject-level k-fold splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plkd.data import Subject, find_subjects, kfold_split, load_subject, read_splits, write_splits
from plkd.errors import InputError, PLKDError

SHAPE = (6, 7, 8)


def _nii(path: Path, value: float = 1.0, affine: np.ndarray | None = None, shape: tuple[int, ...] = SHAPE) -> Path:
    """A tiny NIfTI whose voxel (0, 0, 0) holds ``value`` so tests can tell files apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros(shape, dtype=np.float32)
    data[0, 0, 0] = value
    data[1, 1, 1] = 1.0  # never constant
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _ids(subjects: list[Subject]) -> list[str]:
    return [s.id for s in subjects]


# ----------------------------------------------------------------------------------------------
# VALDO


def test_valdo_nested(tmp_path: Path) -> None:
    for sid in ("sub-101", "sub-102"):
        _nii(tmp_path / sid / f"{sid}_space-T2S_desc-masked_T2S.nii.gz")
        _nii(tmp_path / sid / f"{sid}_space-T2S_desc-masked_T1.nii.gz")  # another contrast: ignored
    _nii(tmp_path / "sub-101" / "sub-101_space-T2S_CMB.nii.gz")
    subjects = find_subjects(tmp_path)
    assert _ids(subjects) == ["sub-101", "sub-102"]
    s101, s102 = subjects
    assert s101.image.name == "sub-101_space-T2S_desc-masked_T2S.nii.gz"
    assert s101.label == tmp_path / "sub-101" / "sub-101_space-T2S_CMB.nii.gz"
    assert s102.label is None and s101.mask is None
    assert s101.meta["modality"] == "T2S" and s101.meta["layout"] == "valdo"


def test_valdo_flat_swi_and_unmasked_fallback(tmp_path: Path) -> None:
    _nii(tmp_path / "sub-1_space-SWI_desc-masked_SWI.nii.gz", 1)
    _nii(tmp_path / "sub-1_space-SWI_SWI.nii.gz", 2)  # unmasked: the masked one wins
    _nii(tmp_path / "sub-1_space-SWI_CMB.nii.gz")
    _nii(tmp_path / "sub-2_space-SWI_SWI.nii.gz")  # only unmasked: used
    _nii(tmp_path / "sub-2_space-SWI_desc-brain_mask.nii.gz")
    s1, s2 = find_subjects(tmp_path, "valdo")
    assert s1.image.name == "sub-1_space-SWI_desc-masked_SWI.nii.gz" and s1.label is not None
    assert s2.image.name == "sub-2_space-SWI_SWI.nii.gz" and s2.mask is not None
    assert s2.meta["skull_masked"] is False and s1.meta["modality"] == "SWI"


def test_valdo_errors(tmp_path: Path) -> None:
    _nii(tmp_path / "sub-1_space-T2S_desc-masked_T2S.nii.gz")
    _nii(tmp_path / "sub-7_space-T2S_CMB.nii.gz")
    with pytest.raises(InputError, match=r"sub-7_space-T2S_CMB.*no image.*sub-7_space-T2S_desc-masked_T2S"):
        find_subjects(tmp_path)

    dup = tmp_path / "dup"
    _nii(dup / "a" / "sub-1_space-T2S_desc-masked_T2S.nii.gz")
    _nii(dup / "b" / "sub-1_space-T2S_desc-masked_T2S.nii.gz")
    with pytest.raises(InputError, match="sub-1.*twice"):
        find_subjects(dup)

    both = tmp_path / "both"
    _nii(both / "sub-1_space-T2S_desc-masked_T2S.nii.gz")
    _nii(both / "sub-1_space-SWI_desc-masked_SWI.nii.gz")
    with pytest.raises(InputError, match="both T2S and SWI"):
        find_subjects(both)
    assert find_subjects(both, modality="SWI")[0].meta["modality"] == "SWI"


# ----------------------------------------------------------------------------------------------
# plkd synth


def _synth(root: Path, sids: list[str]) -> None:
    subjects = {}
    for i, sid in enumerate(sids):
        _nii(root / sid / f"{sid}_space-T2S_desc-masked_T2S.nii.gz")
        _nii(root / sid / f"{sid}_space-T2S_CMB.nii.gz")
        _nii(root / sid / f"{sid}_space-T2S_desc-brain_mask.nii.gz")
        mbs = [{"id": 1, "center_ras": [1, 2, 3], "center_voxel": [1, 2, 3], "diameter_mm": 4.0}] * i
        subjects[sid] = {"seed": i, "microbleeds": mbs, "mimics": []}
    manifest = {"format": "plkd-synth/1", "modality": "T2S", "spacing_mm": [1, 1, 1], "subjects": subjects}
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_synth_layout_carries_manifest(tmp_path: Path) -> None:
    _synth(tmp_path, ["sub-0001", "sub-0002"])
    s1, s2 = find_subjects(tmp_path)
    assert s1.meta["layout"] == "synth" and s1.meta["spacing_mm"] == [1, 1, 1]
    assert len(s1.meta["microbleeds"]) == 0 and len(s2.meta["microbleeds"]) == 1
    assert s1.mask is not None and s1.label is not None
    image, label, mask = load_subject(s2)
    assert image.shape == label.shape == mask.shape == SHAPE


def test_synth_missing_subject_and_bad_format(tmp_path: Path) -> None:
    _synth(tmp_path, ["sub-0001", "sub-0002"])
    for p in (tmp_path / "sub-0002").iterdir():
        p.unlink()
    with pytest.raises(InputError, match="sub-0002"):
        find_subjects(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "plkd-synth/9", "subjects": {}}))
    with pytest.raises(InputError, match="plkd-synth/9"):
        find_subjects(tmp_path)
    with pytest.raises(InputError, match="not a plkd synth"):
        find_subjects(tmp_path / "sub-0001", layout="synth")


# ----------------------------------------------------------------------------------------------
# plain folders


def test_nnunet_folders(tmp_path: Path) -> None:
    _nii(tmp_path / "imagesTr" / "case_001_0000.nii.gz")
    _nii(tmp_path / "imagesTr" / "case_001_0001.nii.gz")
    _nii(tmp_path / "imagesTr" / "case_002_0000.nii.gz")
    _nii(tmp_path / "labelsTr" / "case_001.nii.gz")
    _nii(tmp_path / "labelsTr" / "case_002.nii.gz")
    subjects = find_subjects(tmp_path)
    assert _ids(subjects) == ["case_001", "case_002"]  # not cut at the first "_"
    assert subjects[0].image.name == "case_001_0000.nii.gz"
    assert subjects[0].label.name == "case_001.nii.gz"
    assert subjects[0].meta["channels"] == {"0001": str(tmp_path / "imagesTr" / "case_001_0001.nii.gz")}
    _nii(tmp_path / "labelsTr" / "case_003.nii.gz")
    with pytest.raises(InputError, match=r"labelsTr/case_003.*imagesTr/case_003_0000"):
        find_subjects(tmp_path)


def test_images_labels_folders(tmp_path: Path) -> None:
    _nii(tmp_path / "images" / "a.nii.gz")
    _nii(tmp_path / "images" / "b.nii")
    _nii(tmp_path / "labels" / "a.nii.gz")
    _nii(tmp_path / "labels" / "b_seg.nii.gz")
    _nii(tmp_path / "masks" / "a_mask.nii.gz")
    a, b = find_subjects(tmp_path, "folder")
    assert (a.id, a.label.name, a.mask.name) == ("a", "a.nii.gz", "a_mask.nii.gz")
    assert (b.id, b.label.name, b.mask) == ("b", "b_seg.nii.gz", None)
    _nii(tmp_path / "labels" / "c.nii.gz")
    with pytest.raises(InputError, match=r"labels/c.nii.gz has no image.*images/c.nii.gz"):
        find_subjects(tmp_path)


def test_side_by_side(tmp_path: Path) -> None:
    _nii(tmp_path / "p1.nii.gz", 1)
    _nii(tmp_path / "p1_label.nii.gz", 2)
    _nii(tmp_path / "p1_brainmask.nii.gz", 3)
    _nii(tmp_path / "p2.nii.gz", 4)
    _nii(tmp_path / "p2_CMB.nii.gz", 5)
    _nii(tmp_path / "p3.nii", 6)
    _nii(tmp_path / "more" / "p4.nii.gz", 7)
    _nii(tmp_path / "more" / "p4_seg.nii.gz", 8)
    subjects = {s.id: s for s in find_subjects(tmp_path)}
    assert sorted(subjects) == ["p1", "p2", "p3", "p4"]
    assert subjects["p1"].label.name == "p1_label.nii.gz" and subjects["p1"].mask.name == "p1_brainmask.nii.gz"
    assert subjects["p2"].label.name == "p2_CMB.nii.gz"
    assert subjects["p3"].label is None
    assert subjects["p4"].label.name == "p4_seg.nii.gz"
    image, label, mask = load_subject(subjects["p1"])
    assert (image.data[0, 0, 0], label.data[0, 0, 0], mask.data[0, 0, 0]) == (1, 2, 3)
    assert load_subject(subjects["p3"])[1:] == (None, None)

    (tmp_path / "p3.nii").rename(tmp_path / "more" / "p3.nii")  # one name in two folders: two subjects
    _nii(tmp_path / "p3.nii", 6)
    assert [s.id for s in find_subjects(tmp_path)] == ["more_p3", "p1", "p2", "p3", "p4"]
    (tmp_path / "p3.nii").unlink()
    _nii(tmp_path / "more" / "p4.nii", 9)  # p4 again beside itself, as .nii
    with pytest.raises(InputError, match=r"p4\.nii.*are the same case twice"):
        find_subjects(tmp_path)


def test_side_by_side_orphan_label(tmp_path: Path) -> None:
    _nii(tmp_path / "p1.nii.gz")
    _nii(tmp_path / "q_label.nii.gz")
    with pytest.raises(InputError, match=r"q_label.nii.gz has no image \(expected q.nii.gz"):
        find_subjects(tmp_path)


def test_empty_missing_and_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="no subjects found.*VALDO.*imagesTr"):
        find_subjects(tmp_path)
    with pytest.raises(InputError, match="not found"):
        find_subjects(tmp_path / "missing")
    with pytest.raises(InputError, match="layout"):
        find_subjects(tmp_path, layout="nnunet")  # "bids" is a layout now


def test_load_subject_refuses_label_on_another_grid(tmp_path: Path) -> None:
    image = _nii(tmp_path / "x.nii.gz")
    label = _nii(tmp_path / "x_label.nii.gz", shape=(6, 7, 9))
    with pytest.raises(PLKDError, match="label of x"):
        load_subject(Subject(id="x", image=image, label=label))


# ----------------------------------------------------------------------------------------------
# splits


def _check_partition(ids: list[str], folds: list[tuple[list[str], list[str]]]) -> None:
    val_counts = Counter(s for _, val in folds for s in val)
    assert val_counts == Counter(ids)  # every subject validated exactly once
    for train, val in folds:
        assert not set(train) & set(val)
        assert set(train) | set(val) == set(ids)


def test_kfold_partition_balance_and_determinism() -> None:
    ids = [f"sub-{i:03d}" for i in range(23)]
    folds = kfold_split(ids, k=5, seed=3)
    assert len(folds) == 5
    _check_partition(ids, folds)
    sizes = sorted(len(val) for _, val in folds)
    assert sizes == [4, 4, 5, 5, 5]
    assert kfold_split(list(reversed(ids)), k=5, seed=3) == folds  # input order does not matter
    assert kfold_split(ids, k=5, seed=4) != folds


def test_kfold_groups_never_split() -> None:
    ids = [f"s{i}" for i in range(14)]
    groups = {s: f"patient{i // 3}" for i, s in enumerate(ids)}  # groups of 3 (last of 2)
    folds = kfold_split(ids, k=3, seed=0, groups=groups)
    _check_partition(ids, folds)
    for train, val in folds:
        assert not {groups[s] for s in train} & {groups[s] for s in val}
    with pytest.raises(PLKDError, match="5 groups"):
        kfold_split(ids, k=6, groups=groups)


def test_kfold_stratified() -> None:
    ids = [f"s{i:02d}" for i in range(20)]
    has_cmb = {s: int(i < 5) for i, s in enumerate(ids)}  # 5 of 20 with microbleeds
    folds = kfold_split(ids, k=5, seed=1, stratify=has_cmb)
    _check_partition(ids, folds)
    assert [sum(has_cmb[s] for s in val) for _, val in folds] == [1] * 5
    assert [len(val) for _, val in folds] == [4] * 5


def test_kfold_errors() -> None:
    with pytest.raises(PLKDError, match="3 folds from 2 subjects"):
        kfold_split(["a", "b"], k=3)
    with pytest.raises(PLKDError, match="≥ 2"):
        kfold_split(["a", "b"], k=1)
    with pytest.raises(PLKDError, match="unique"):
        kfold_split(["a", "a", "b"], k=2)


def test_splits_round_trip_and_validation(tmp_path: Path) -> None:
    ids = [f"sub-{i}" for i in range(7)]
    folds = kfold_split(ids, k=3)
    path = write_splits(tmp_path / "splits_final.json", folds)
    raw = json.loads(path.read_text())
    assert set(raw[0]) == {"train", "val"}
    assert read_splits(path) == folds
    (tmp_path / "leak.json").write_text(json.dumps([{"train": ["a", "b"], "val": ["b"]}]))
    with pytest.raises(InputError, match="'b' in both"):
        read_splits(tmp_path / "leak.json")
    (tmp_path / "bad.json").write_text(json.dumps({"train": []}))
    with pytest.raises(InputError, match="list"):
        read_splits(tmp_path / "bad.json")
    with pytest.raises(InputError, match="not found"):
        read_splits(tmp_path / "missing.json")
