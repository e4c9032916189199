"""Training and `plkd tune` read a label map by the rule `plkd evaluate` applies to a reference (soft labels)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from training_toydata import write_toy_dataset

from plkd.cli import main
from plkd.data.datasets import find_subjects, load_subject

BUNDLE = Path(__file__).resolve().parent / "data" / "tiny-bundle"


def _scale_label(data: Path, sid: str, factor: float) -> None:
    """Store ``sid``'s label as floats times ``factor`` (0.999: a float label's rounding; 0.7: a soft label)."""
    path = data / sid / f"{sid}_space-T2S_CMB.nii.gz"
    img = nib.load(path)
    scaled = np.asarray(img.dataobj, dtype=np.float32) * np.float32(factor)
    nib.save(nib.Nifti1Image(scaled, img.affine), path)


def test_a_float_label_with_rounding_is_read_as_its_label_values(tmp_path: Path) -> None:
    data = write_toy_dataset(tmp_path / "d", n_subjects=2, seed=3)
    _scale_label(data, "sub-0002", 0.999)
    subject = next(s for s in find_subjects(data) if s.id == "sub-0002")
    _, label, _ = load_subject(subject)
    assert label is not None and np.count_nonzero(label.data) > 0


@pytest.mark.parametrize("command", ["train", "tune"])
def test_a_soft_label_is_refused_in_one_line_naming_its_subject(tmp_path: Path, capsys, command: str) -> None:
    # Training read every voxel >= 0.25 of a soft or interpolated label as microbleed without a word, while plkd
    # evaluate refused the same file as no label map.
    data = write_toy_dataset(tmp_path / "d", n_subjects=2, seed=3)
    _scale_label(data, "sub-0002", 0.7)
    out = tmp_path / "out"
    if command == "train":
        args = ["train", "teacher", "--data", str(data), "--out", str(out), "--config", "tiny", "--progress", "none"]
    else:
        args = ["tune", str(data), "--model", str(BUNDLE), "--out", str(out), "--progress", "none"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("plkd: error: label of sub-0002 (")
    assert "holds values between the label values 0, 0.5 and whole numbers (e.g. 0.7)" in err[-1]
    assert not out.exists()  # no partial output: not even a run folder with its config.yaml
