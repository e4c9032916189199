"""DICOM folders as clinics export them: several series in one folder, slices stored in either order along
the normal, a series with one slice missing beside a whole one, a series added to a folder after a run.

Series are written in the test with SimpleITK from the tiny case (``test_predict_dicom.write_series``).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_predict_dicom import _case, _oblique_affine, write_series

from plkd.cli import main

pytest.importorskip("SimpleITK")

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"
UID = "1.2.826.0.1.3680043.8.498."


def _predict(*args: str) -> int:
    return main(["predict", *args, "--model", str(BUNDLE), "--device", "cpu", "--progress", "none"])


def _kept_centres(doc: dict) -> np.ndarray:
    return np.asarray(sorted(c["center_ras"] for c in doc["candidates"] if c["kept"]))


def test_series_stored_in_either_slice_order_give_the_same_microbleeds(tmp_path: Path) -> None:
    """The same scan written with its slices ascending and descending along the normal (files numbered
    the other way, a left-handed grid): one result, at the same RAS places."""
    data, _affine, _truth = _case()
    up = _oblique_affine((1.0, 1.0, 1.2))
    down = up.copy()
    down[:3, 2] *= -1  # slice k now runs against the normal ...
    down[:3, 3] = up[:3, :3] @ [0, 0, data.shape[2] - 1] + up[:3, 3]  # ... starting from the last slice
    write_series(tmp_path / "in" / "up", data * 10, up, UID + "601")
    write_series(tmp_path / "in" / "down", data[:, :, ::-1] * 10, down, UID + "602")
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in"), "-o", str(out)) == 0
    docs = {name: json.loads((out / f"{name}_cmb.json").read_text()) for name in ("up", "down")}
    assert len(_kept_centres(docs["up"])) >= 2
    np.testing.assert_allclose(_kept_centres(docs["up"]), _kept_centres(docs["down"]), atol=1e-3)
    # Each label map lies on its own series' grid, and labels sit where the JSON puts them.
    for name in ("up", "down"):
        lab = nib.load(str(out / f"{name}_cmb.nii.gz"))
        arr = np.asarray(lab.dataobj)
        inv = np.linalg.inv(lab.affine)
        for c in (c for c in docs[name]["candidates"] if c["kept"]):
            vox = np.round(inv[:3, :3] @ c["center_ras"] + inv[:3, 3]).astype(int)
            lo = np.maximum(vox - 1, 0)
            assert c["label"] in arr[lo[0] : lo[0] + 3, lo[1] : lo[1] + 3, lo[2] : lo[2] + 3]


def test_several_series_in_one_folder_each_get_their_own_result(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two series in one folder, one with a slice missing in the middle: the whole one is predicted on its
    grid under FOLDER_UIDTAIL, the broken one is refused in one line (exit 2) and leaves no output."""
    data, _affine, _truth = _case()
    folder = tmp_path / "in" / "patient"
    affine = _oblique_affine((1.0, 1.0, 1.0))
    write_series(folder, data * 10, affine, UID + "701")
    gap = tmp_path / "gap"
    write_series(gap, data[..., :12] * 10, np.diag([0.9, 0.9, 2.0, 1.0]), UID + "702")
    (gap / "IM0005.dcm").unlink()  # one slice lost in the middle of the series
    for f in gap.iterdir():
        f.rename(folder / f"B{f.name}")
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in"), "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert "unequal slice gaps" in err and "1 done, 0 skipped, 1 failed of 2" in err
    assert sorted(p.name for p in out.glob("*_cmb.*")) == ["patient_701_cmb.json", "patient_701_cmb.nii.gz"]
    doc = json.loads((out / "patient_701_cmb.json").read_text())
    assert doc["dicom"]["series_instance_uid"] == UID + "701" and doc["dicom"]["files"] == data.shape[2]
    np.testing.assert_allclose(nib.load(str(out / "patient_701_cmb.nii.gz")).affine, affine, atol=1e-4)


def test_a_series_added_to_the_folder_later_keeps_the_first_result_by_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A folder of one series is named after the folder; once a second series joins it, both would be named
    FOLDER_UIDTAIL. The first series keeps the name its outputs have (no second result of it beside them)."""
    data, _affine, _truth = _case()
    folder = tmp_path / "in" / "patient"
    write_series(folder, data * 10, _oblique_affine((1.0, 1.0, 1.0)), UID + "801")
    out = tmp_path / "out"
    assert _predict(str(folder), "-o", str(out)) == 0
    second = tmp_path / "second"
    write_series(second, data * 10, np.diag([1.0, 1.0, 1.5, 1.0]), UID + "802")
    for f in second.iterdir():
        f.rename(folder / f"B{f.name}")
    capsys.readouterr()
    assert _predict(str(folder), "-o", str(out)) == 0
    assert "1 done, 1 skipped" in capsys.readouterr().err
    uids = {p.name: json.loads(p.read_text())["dicom"]["series_instance_uid"] for p in out.glob("*_cmb.json")}
    assert uids == {"patient_cmb.json": UID + "801", "patient_802_cmb.json": UID + "802"}
