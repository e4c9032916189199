"""A multi-echo GRE stored one file per echo (BIDS ``echo-N``) in a folder given to ``plkd predict``: each echo
was analysed as a scan of its own, one result per echo, without a word. Built from the tiny case and bundle."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plkd.cli import main

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"
CASE = ROOT / "Testing" / "data" / "tiny-case" / "tiny_T2S.nii.gz"


def test_echoes_stored_one_per_file_are_said_to_be_analysed_one_by_one(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    image = nib.load(str(CASE))
    data = np.asarray(image.dataobj, dtype=np.float32)
    anat = tmp_path / "bids" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    for n, te in ((1, 5.0), (2, 15.0), (3, 25.0)):
        nib.save(
            nib.Nifti1Image(data * np.exp(-te / 40.0), image.affine),
            str(anat / f"sub-01_echo-{n}_part-mag_MEGRE.nii.gz"),
        )
    nib.save(nib.Nifti1Image(data, image.affine), str(anat / "sub-01_T2starw.nii.gz"))
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "bids"), "-o", str(out), "--model", str(BUNDLE), "--device", "cpu"]
    assert main([*args, "--progress", "none"]) == 0
    assert "4 done" in capsys.readouterr().err
    for n in (1, 2, 3):
        doc = json.loads((out / f"sub-01_echo-{n}_part-mag_MEGRE_cmb.json").read_text())
        says = f"sub-01_echo-{n}_part-mag_MEGRE.nii.gz is echo {n} of a multi-echo GRE stored one echo per file"
        assert any(w.startswith(says) and "(echoes 1, 2, 3 in this run)" in w for w in doc["warnings"])
        assert any(note.startswith(says) for note in doc["notes"])
    assert not any("echo" in w for w in json.loads((out / "sub-01_T2starw_cmb.json").read_text())["warnings"])
    # One echo given alone is one scan: nothing to say.
    one = ["predict", str(anat / "sub-01_echo-3_part-mag_MEGRE.nii.gz"), "-o", str(tmp_path / "one"), *args[4:]]
    assert main([*one, "--progress", "none"]) == 0
    alone = json.loads((tmp_path / "one" / "sub-01_echo-3_part-mag_MEGRE_cmb.json").read_text())
    assert not any("multi-echo" in w for w in alone["warnings"])
