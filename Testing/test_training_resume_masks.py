"""A run continued with another brain mask or a re-drawn label outline is refused, as one with other images is:
the stages already trained normalised their intensities over the old brain and learnt the old outlines."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from training_toydata import TINY_TRAIN, started_run, train_stage

TINY = TINY_TRAIN
_train = train_stage


@pytest.fixture()
def started(tmp_path: Path) -> tuple[Path, Path]:
    return started_run(tmp_path)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("plkd: error:"), err
    return err[0]


def test_a_brain_mask_changed_on_resume_is_refused(started, capsys) -> None:
    data, run = started
    path = data / "sub-0002" / "sub-0002_space-T2S_desc-brain_mask.nii.gz"
    img = nib.load(path)
    mask = np.asarray(img.dataobj).copy()
    mask[: mask.shape[0] // 2] = 0  # the researcher re-ran skull stripping: half the brain is gone
    nib.save(nib.Nifti1Image(mask, img.affine), str(path))
    before = (run / "run.json").read_text(encoding="utf-8")
    assert _train("teacher", data, run) == 2
    line = _one_error_line(capsys)
    assert "other brain masks (1, e.g. sub-0002" in line and "screening started" in line
    assert not (run / "teacher").exists() and (run / "run.json").read_text(encoding="utf-8") == before


def test_a_brain_mask_removed_on_resume_is_refused(started, capsys) -> None:
    data, run = started
    (data / "sub-0001" / "sub-0001_space-T2S_desc-brain_mask.nii.gz").unlink()
    assert _train("teacher", data, run) == 2
    assert "other brain masks (1, e.g. sub-0001" in _one_error_line(capsys)


def test_a_label_outline_redrawn_on_resume_is_refused(started, capsys) -> None:
    # The same microbleeds (same centres, so data_sha256 is as it was) drawn one voxel larger on every side.
    data, run = started
    path = data / "sub-0003" / "sub-0003_space-T2S_CMB.nii.gz"
    img = nib.load(path)
    label = np.asarray(img.dataobj)
    grown = np.zeros_like(label)
    for axis in range(3):
        for step in (-1, 1):
            grown |= np.roll(label, step, axis=axis)
    nib.save(nib.Nifti1Image(grown | label, img.affine), str(path))
    assert _train("teacher", data, run) == 2
    line = _one_error_line(capsys)
    assert "other label maps (1, e.g. sub-0003" in line


def test_the_same_masks_resume(started) -> None:
    data, run = started
    assert _train("teacher", data, run) == 0
