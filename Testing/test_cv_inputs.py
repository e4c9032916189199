"""What plkd cv scores: each test subject as LR@factor made from a high-resolution subject."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import torch
from training_toydata import write_toy_dataset

from plkd.cli import main
from plkd.data.datasets import find_subjects
from plkd.training import crossval
from plkd.training.config import load_config, set_value
from plkd.training.data import load_training_data
from plkd.training.loop import TrainContext


def test_cv_refuses_thick_slice_subjects_it_would_score_as_lr_made_from_them(tmp_path, capsys):
    # Every subject is a test subject of some fold, scored on LR@factor made from it: 4 mm slices were scored as
    # "LR@2" on 8 mm, in a summary that said LR@2.
    data = write_toy_dataset(tmp_path / "data", n_subjects=4, seed=3)
    path = data / "sub-0004" / "sub-0004_space-T2S_desc-masked_T2S.nii.gz"
    img = nib.load(path)
    thick = np.asarray(img.dataobj)[:, :, ::4]
    nib.save(nib.Nifti1Image(thick, img.affine @ np.diag([1.0, 1.0, 4.0, 1.0])), str(path))
    for name in ("CMB", "desc-brain_mask"):
        other = data / "sub-0004" / f"sub-0004_space-T2S_{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(nib.load(other).dataobj)[:, :, ::4], nib.load(path).affine), str(other))
    out = tmp_path / "cv"
    args = ["cv", "--data", str(data), "--out", str(out), "--config", "tiny", "--folds", "2", "--factor", "2"]
    assert main([*args, "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("plkd: error: 1 of 4 subjects are not high-resolution (sub-0004: ")
    assert "slices 4 times the model grid's" in err[0] and "as LR@2" in err[0]
    assert not (out / "fold-1").exists()


def test_cases_of_one_scan_stay_in_one_fold(tmp_path, monkeypatch, caplog):
    # Two raters' labels of one scan given as two cases (or a scan copied under another name) went to different
    # folds: the scan trained the fold that tested it.
    data = write_toy_dataset(tmp_path / "data", n_subjects=6, seed=5)
    for sid in ("sub-0001", "sub-0004"):
        twin = data / f"{sid}b"
        twin.mkdir()
        for f in (data / sid).iterdir():
            shutil.copy(f, twin / f.name.replace(sid, f"{sid}b"))
    folds = []
    monkeypatch.setattr(crossval, "_run_fold", lambda root, fold, *a: folds.append(fold) or {})
    monkeypatch.setattr(crossval, "_write_summary", lambda *a: {})
    cfg = load_config("tiny", [])
    with caplog.at_level("WARNING"):
        summary = crossval.run_cv(data, tmp_path / "cv", cfg, TrainContext(device=torch.device("cpu")), folds=4)
    assert len(folds) == 4 and sorted(sum((f.test_ids for f in folds), [])) == sorted(s.id for s in find_subjects(data))
    for fold in folds:
        for sid in ("sub-0001", "sub-0004"):
            assert (sid in fold.test_ids) == (f"{sid}b" in fold.test_ids)
            assert not {sid, f"{sid}b"} & set(fold.test_ids) or not {sid, f"{sid}b"} & set(fold.train_ids)
    note = "4 subjects share their image with another (sub-0001 = sub-0001b; sub-0004 = sub-0004b"
    assert note in caplog.text and any(n.startswith(note) for n in summary["notes"])


def test_a_validation_subject_with_a_training_subjects_image_is_trained_on(tmp_path, caplog):
    # plkd train's validation split, like the folds: a case sharing its scan with a training case validated nothing.
    data = write_toy_dataset(tmp_path / "data", n_subjects=5, seed=5)
    cfg = set_value(load_config("tiny", []), "data.val_fraction", "0.4")
    held_out = load_training_data(data, cfg).summary()["val_ids"]
    assert len(held_out) == 2
    trained = next(i for i in (s.id for s in find_subjects(data)) if i not in held_out)
    twin = held_out[0]  # give the first validation subject the image of a training subject
    src = data / trained / f"{trained}_space-T2S_desc-masked_T2S.nii.gz"
    shutil.copy(src, data / twin / f"{twin}_space-T2S_desc-masked_T2S.nii.gz")
    with caplog.at_level("WARNING"):
        summary = load_training_data(data, cfg).summary()
    assert summary["val_ids"] == held_out[1:] and twin in summary["train_ids"]
    note = f"1 validation subject(s) have the image of a training subject ({twin} = {trained}"
    assert note in caplog.text and any(n.startswith(note) for n in summary["notes"])
