"""An enhanced multi-frame DICOM (one file, every slice a frame, each frame's position in its functional groups), as
``plkd predict`` reads it: on the grid its frames give (as GDCM, and with it 3D Slicer, places it), or refused in one
line when its frames are no regular grid in the order stored.

The file is written in the test with SimpleITK (GDCM writes a 3-D MR image as Enhanced MR Image Storage with a Plane
Position per frame); the irregular one is that file with one frame's position edited in its bytes.
"""

from __future__ import annotations

import json
import locale
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_predict_dicom import BUNDLE, LPS, _case, _oblique_affine

from plkd.cli import main

sitk = pytest.importorskip("SimpleITK")

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def _write_multiframe(path: Path, data: np.ndarray, affine_ras: np.ndarray) -> None:
    spacing = np.sqrt((affine_ras[:3, :3] ** 2).sum(axis=0))
    image = sitk.GetImageFromArray(np.round(data.transpose(2, 1, 0)).astype(np.int16))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (LPS @ affine_ras[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(v) for v in LPS @ affine_ras[:3, 3]])
    for tag, value in {"0008|0016": ENHANCED_MR, "0008|0060": "MR", "0008|103e": "T2star GRE enhanced"}.items():
        image.SetMetaData(tag, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    saved = locale.setlocale(locale.LC_ALL)
    try:
        writer.SetFileName(str(path))
        writer.Execute(image)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _predict(scan: Path, out: Path) -> int:
    return main(["predict", str(scan), "-o", str(out), "--model", str(BUNDLE), "--device", "cpu", "--progress", "none"])


def test_an_enhanced_multiframe_file_is_read_on_the_grid_of_its_frames(tmp_path: Path) -> None:
    """It was refused as "4-D; a 3-D series is required" (the series reader stacks a 3-D file into a 4-D image)."""
    data, _affine, truth_vox = _case()
    affine = _oblique_affine((0.9, 0.9, 1.5))
    scan = tmp_path / "patient" / "enhanced.dcm"
    _write_multiframe(scan, data * 10, affine)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(scan))
    reader.ReadImageInformation()
    assert reader.GetMetaData("0008|0016") == ENHANCED_MR and int(reader.GetMetaData("0028|0008")) == data.shape[2]
    out = tmp_path / "out"
    assert _predict(scan, out) == 0
    (label_path,) = out.glob("*_cmb.nii.gz")
    label = nib.load(str(label_path))
    np.testing.assert_allclose(label.affine, affine, atol=1e-4)
    assert label.shape == data.shape
    doc = json.loads(label_path.with_name(label_path.name.replace(".nii.gz", ".json")).read_text())
    assert any("multi-frame" in n and "frames" in n for n in doc["notes"]), doc["notes"]
    truth_ras = truth_vox @ affine[:3, :3].T + affine[:3, 3]
    kept = [np.asarray(c["center_ras"]) for c in doc["candidates"] if c["kept"]]
    assert sum(any(np.linalg.norm(k - t) < 2.0 for k in kept) for t in truth_ras) >= 2


def test_frames_that_are_no_regular_grid_are_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """GDCM gives frames at unequal gaps a slice spacing of 1 mm (here 2 mm slices, one frame moved by 1 mm), and 3D
    Slicer shows them so: read so, every microbleed's centre lay at half its height. Now each frame's own position is
    checked against the grid GDCM gives."""
    data, _affine, _truth = _case()
    affine = _oblique_affine((1.0, 1.0, 2.0))
    scan = tmp_path / "enhanced.dcm"
    _write_multiframe(scan, data[..., :6] * 10, affine)
    raw = scan.read_bytes()
    assert raw[128:132] == b"DICM" and b"1.2.840.10008.1.2\x00" in raw[:1024]  # implicit VR little endian
    # The fifth frame's Image Position (Patient) (0020,0032): tag, 4-byte length, value; moved by half a gap.
    at = raw.index(b"\x00\x52\x30\x92")  # Per-frame Functional Groups Sequence
    for _ in range(5):
        at = raw.index(b"\x20\x00\x32\x00", at + 1)
    length = int.from_bytes(raw[at + 4 : at + 8], "little")
    fifth = np.array([float(v) for v in raw[at + 8 : at + 8 + length].decode().split("\\")])
    np.testing.assert_allclose(fifth, LPS @ (affine[:3, 3] + 4 * affine[:3, 2]), atol=1e-4)
    moved = "\\".join(f"{v:.6f}" for v in fifth + LPS @ affine[:3, 2] * 0.5).encode()
    assert len(moved) <= length
    scan.write_bytes(raw[: at + 8] + moved.ljust(length) + raw[at + 8 + length :])
    assert _predict(scan, tmp_path / "out") != 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("plkd: error:")]
    assert len(lines) == 1 and "frames are not one regular grid" in lines[0] and "dcm2niix" in lines[0], err
    assert not list((tmp_path / "out").glob("*_cmb*"))
