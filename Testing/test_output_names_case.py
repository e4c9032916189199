"""Output names that differ only in case (sub-01 vs SUB-01, scan vs Scan) are one file on macOS and Windows (and
on shares from them): plkd predict and the Slicer batch script treat them as the same name, as they treat
a.nii beside a.nii.gz (one line naming the inputs, non-zero exit, nothing written)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from plkd.errors import InputError
from plkd.inference.inputs import expand_inputs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "CMBSegmentation"))

from CMBSegmentationLib import batchInputs  # noqa: E402


def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_predict_refuses_inputs_whose_names_differ_only_in_case(tmp_path: Path) -> None:
    _touch(tmp_path / "flat" / "scan.nii.gz", tmp_path / "flat" / "Scan.nii.gz")
    with pytest.raises(InputError, match=r"would all be written as .can_cmb\.\* \(names that differ only in case") as e:
        expand_inputs([tmp_path / "flat"])
    assert "Scan.nii.gz" in str(e.value) and "scan.nii.gz" in str(e.value) and "\n" not in str(e.value)
    _touch(tmp_path / "study" / "sub-01" / "T2S.nii.gz", tmp_path / "study" / "SUB-01" / "T2S.nii.gz")
    with pytest.raises(InputError, match=r"only in case"):
        expand_inputs([tmp_path / "study"])


def test_predict_names_folders_that_differ_beyond_case(tmp_path: Path) -> None:
    # sub-01 and sub-02 both holding T2S: told apart by their folders, whatever the case of the file names.
    _touch(tmp_path / "study" / "sub-01" / "T2S.nii.gz", tmp_path / "study" / "sub-02" / "t2s.nii.gz")
    stems = sorted(s.stem for s in expand_inputs([tmp_path / "study"]).scans)
    assert stems == ["sub-01_T2S", "sub-02_t2s"]


def test_the_batch_script_refuses_inputs_whose_names_differ_only_in_case(tmp_path: Path, capsys) -> None:
    _touch(tmp_path / "scan.nii.gz", tmp_path / "Scan.nrrd", tmp_path / "other.nii.gz")
    inputs = batchInputs.findInputs(tmp_path)
    groups = [sorted(p.name for p in g) for g in batchInputs.nameCollisions(inputs)]
    assert groups == [["Scan.nrrd", "scan.nii.gz"]]
