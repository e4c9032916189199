"""What plkd cv scores: each test subject as LR@factor made from a high-resolution subject."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from training_toydata import write_toy_dataset

from plkd.cli import main


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
