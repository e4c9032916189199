"""Two sessions of one patient in a plain or nnU-Net folder (``sub-01_ses-1``, ``sub-01_ses-2``) are cases
of one subject: the validation split of ``plkd train`` and the folds of ``plkd cv`` keep them together."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from training_toydata import write_toy_dataset

from plkd.cli import main
from plkd.data.datasets import find_subjects
from plkd.data.splits import kfold_split, session_groups
from plkd.errors import PLKDError
from plkd.training import crossval
from plkd.training.config import load_config
from plkd.training.data import split_validation
from plkd.training.loop import TrainContext


def _patient(case: str) -> str:
    return case.split("_", 1)[0]


def _write_sessions(root: Path, layout: str) -> list[str]:
    affine = np.eye(4)
    label = np.zeros((8, 8, 8), np.uint8)
    label[4, 4, 4] = 1
    for sub in range(1, 7):
        for ses in (1, 2):
            case = f"sub-{sub:02d}_ses-{ses}"
            # A scan of its own per session (cases of one scan are kept together as well: plkd.data.scans).
            image = np.random.default_rng(10 * sub + ses).normal(100, 5, (8, 8, 8)).astype(np.float32)
            if layout == "nnunet":
                paths = (root / "imagesTr" / f"{case}_0000.nii.gz", root / "labelsTr" / f"{case}.nii.gz")
            else:
                paths = (root / f"{case}_T2S.nii.gz", root / f"{case}_CMB.nii.gz")
            for path, data in zip(paths, (image, label), strict=True):
                path.parent.mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(data, affine), str(path))
    return [s.id for s in find_subjects(root)]


@pytest.mark.parametrize("layout", ["side-by-side", "nnunet"])
def test_validation_split_keeps_a_patients_sessions_together(tmp_path: Path, layout: str) -> None:
    ids = _write_sessions(tmp_path, layout)
    assert len(ids) == 12 and ids[0] == "sub-01_ses-1"
    for seed in range(8):
        train, val = split_validation(ids, 0.2, seed)
        assert val and sorted(train + val) == ids
        assert not {_patient(c) for c in train} & {_patient(c) for c in val}, (seed, val)


def test_cv_folds_keep_a_patients_sessions_together(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    ids = _write_sessions(data, "side-by-side")
    folds = []
    monkeypatch.setattr(crossval, "_run_fold", lambda root, fold, *a: folds.append(fold) or {})
    monkeypatch.setattr(crossval, "_write_summary", lambda *a: {})
    crossval.run_cv(data, tmp_path / "cv", load_config("tiny", []), TrainContext(device=torch.device("cpu")), folds=3)
    assert len(folds) == 3
    assert sorted(c for f in folds for c in f.test_ids) == ids
    for fold in folds:
        assert not {_patient(c) for c in fold.train_ids} & {_patient(c) for c in fold.test_ids}


def test_data_sets_without_sessions_have_no_groups() -> None:
    assert session_groups(["sub-0001", "sub-0002", "case_001", "case_002"]) == {}
    assert session_groups(["sub-01_ses-1", "sub-01_ses-2", "sub-02_ses-1"]) == {
        "sub-01_ses-1": "sub-01",
        "sub-01_ses-2": "sub-01",
    }


def test_cv_refuses_finished_folds_of_another_split(tmp_path: Path, monkeypatch) -> None:
    """A CV folder rerun with another seed (or data, or --folds) held folds of other test subjects: they were
    taken as finished and summarised, so some subjects were scored twice and others never."""
    data = tmp_path / "data"
    ids = _write_sessions(data, "side-by-side")
    cfg = load_config("tiny", [])
    earlier = kfold_split(ids, k=3, seed=1, groups=session_groups(ids))
    for i, (train, test) in enumerate(earlier):
        (tmp_path / "cv" / f"fold-{i + 1}").mkdir(parents=True)
        record = {"train_ids": train, "test_ids": test, "pooled": {}}
        (tmp_path / "cv" / f"fold-{i + 1}" / "result.json").write_text(json.dumps(record), encoding="utf-8")
    monkeypatch.setattr(crossval, "_write_summary", lambda *a: {})
    with pytest.raises(PLKDError, match="made on other folds"):
        crossval.run_cv(data, tmp_path / "cv", cfg, TrainContext(device=torch.device("cpu")), folds=3)
    # The same split (seed 1) is the finished cross-validation, read back without training.
    cfg = {**cfg, "seed": 1}
    crossval.run_cv(data, tmp_path / "cv", cfg, TrainContext(device=torch.device("cpu")), folds=3)


def test_a_shared_stage_cache_tells_data_sets_with_the_same_ids_apart(tmp_path: Path) -> None:
    """Two data sets both named sub-0001 … sub-0004, cross-validated with one --stage-cache: the second
    copied the first one's screening and teacher networks as its own."""
    cache = tmp_path / "cache"
    reused = {}
    for name, seed in (("a", 3), ("b", 11)):
        data = write_toy_dataset(tmp_path / name, n_subjects=4, seed=seed)
        args = ["cv", "--data", str(data), "--out", str(tmp_path / f"cv-{name}"), "--config", "tiny"]
        args += ["--folds", "2", "--factor", "2", "--stage-cache", str(cache), "--progress", "none"]
        assert main(args) == 0
        reused[name] = json.loads((tmp_path / f"cv-{name}" / "fold-1" / "result.json").read_text())["reused_stages"]
    assert reused == {"a": [], "b": []}
