"""A DICOM series folder as ``plkd predict`` input: read with SimpleITK, LPS turned into RAS, the
outputs NIfTI on the series' grid beside a JSON naming the series.

The series are written in the test with SimpleITK from the tiny case, on an oblique grid.
"""

from __future__ import annotations

import json
import locale
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plkd.cli import main
from plkd.dicom import find_series, load_dicom_series
from plkd.errors import InputError

sitk = pytest.importorskip("SimpleITK")

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"
CASE = ROOT / "Testing" / "data" / "tiny-case" / "tiny_T2S.nii.gz"
LPS = np.diag([-1.0, -1.0, 1.0])


def _oblique_affine(spacing: tuple[float, float, float]) -> np.ndarray:
    a, b = np.radians(20.0), np.radians(-12.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = [31.5, -102.25, 14.0]
    return affine


def write_series(
    folder: Path,
    data: np.ndarray,
    affine_ras: np.ndarray,
    uid: str,
    positions: list | None = None,
    tags: dict[str, str] | None = None,
    prefix: str = "IM",
) -> None:
    """One DICOM file per slice (array axis 2) holding ``data`` (indexed [i, j, k]) on ``affine_ras``;
    ``tags`` ("gggg|eeee": value) replace or add to the usual ones (an MR T2* series)."""
    assert np.abs(data).max() < 2**15, "int16 pixels"
    folder.mkdir(parents=True, exist_ok=True)
    spacing = np.sqrt((affine_ras[:3, :3] ** 2).sum(axis=0))
    direction = LPS @ affine_ras[:3, :3] / spacing  # columns: the i, j, k axes in LPS
    origin = LPS @ affine_ras[:3, 3]
    volume = sitk.GetImageFromArray(np.round(data.transpose(2, 1, 0)).astype(np.int16))
    volume.SetSpacing([float(s) for s in spacing])
    volume.SetDirection([float(v) for v in direction.ravel()])
    volume.SetOrigin([float(v) for v in origin])
    common = {
        "0008|0060": "MR",
        "0008|0008": "DERIVED\\SECONDARY",
        "0020|000d": "1.2.826.0.1.3680043.8.498.1",
        "0020|000e": uid,
        "0008|103e": "T2star GRE test",
        "0020|0011": "7",
        "0020|0037": "\\".join(f"{v:.10f}" for v in (*direction[:, 0], *direction[:, 1])),
        "0018|0050": f"{spacing[2]:.6f}",
        **(tags or {}),
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    saved = locale.setlocale(locale.LC_ALL)  # GDCM's writer sets the C locale: Python would then read files as ASCII
    try:
        for k in range(data.shape[2]):
            sl = volume[:, :, k]
            for tag, value in common.items():
                sl.SetMetaData(tag, value)
            pos = volume.TransformIndexToPhysicalPoint((0, 0, k)) if positions is None else positions[k]
            sl.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in pos))
            sl.SetMetaData("0020|0013", str(k + 1))
            sl.SetMetaData("0008|0018", f"{uid}.{k + 1}")
            writer.SetFileName(str(folder / f"{prefix}{k:04d}.dcm"))
            writer.Execute(sl)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    img = nib.load(str(CASE))
    truth = np.asarray(json.loads((CASE.parent / "truth.json").read_text())["centres_ras"])
    inv = np.linalg.inv(img.affine)
    truth_vox = truth @ inv[:3, :3].T + inv[:3, 3]
    return np.asarray(img.dataobj, dtype=np.float32), img.affine, truth_vox


def test_series_geometry_becomes_the_ras_affine(tmp_path: Path) -> None:
    data, _affine, _truth = _case()
    affine = _oblique_affine((0.8, 0.9, 2.0))
    write_series(tmp_path / "s", data * 10, affine, "1.2.826.0.1.3680043.8.498.2")
    (series,) = find_series(tmp_path / "s")
    vol, record = load_dicom_series(series)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-4)
    np.testing.assert_allclose(vol.data, np.round(data * 10), atol=0.5)  # [i, j, k] order kept
    assert record["series_instance_uid"] == "1.2.826.0.1.3680043.8.498.2" and record["files"] == data.shape[2]
    assert record["series_description"] == "T2star GRE test"


def test_series_folder_is_predicted_on_its_own_grid(tmp_path: Path) -> None:
    data, _affine, truth_vox = _case()
    affine = _oblique_affine((1.0, 1.0, 1.0))
    folder = tmp_path / "patient" / "series-7"
    write_series(folder, data * 10, affine, "1.2.826.0.1.3680043.8.498.3")
    out = tmp_path / "out"
    args = [str(tmp_path / "patient"), "-o", str(out), "--model", str(BUNDLE), "--device", "cpu", "--progress", "none"]
    assert main(["predict", *args]) == 0
    lab = nib.load(str(out / "series-7_cmb.nii.gz"))
    np.testing.assert_allclose(lab.affine, affine, atol=1e-4)
    assert (int(lab.header["qform_code"]), int(lab.header["sform_code"])) == (1, 1)
    assert lab.shape == data.shape
    doc = json.loads((out / "series-7_cmb.json").read_text())
    assert doc["dicom"]["series_instance_uid"] == "1.2.826.0.1.3680043.8.498.3"
    assert doc["input"] == str(folder)
    # The planted microbleeds are found where the series puts them (RAS), their labels on them.
    truth_ras = truth_vox @ affine[:3, :3].T + affine[:3, 3]
    kept = [c for c in doc["candidates"] if c["kept"]]
    arr = np.asarray(lab.dataobj)
    found = 0
    for centre, vox in zip(truth_ras, truth_vox, strict=True):
        near = [c for c in kept if np.linalg.norm(np.asarray(c["center_ras"]) - centre) < 2.0]
        if near:
            lo = np.maximum(np.round(vox).astype(int) - 1, 0)
            assert near[0]["label"] in arr[lo[0] : lo[0] + 3, lo[1] : lo[1] + 3, lo[2] : lo[2] + 3]
            found += 1
    assert found >= 2


def test_two_images_per_position_are_refused(tmp_path: Path) -> None:
    data, _affine, _truth = _case()
    affine = _oblique_affine((1.0, 1.0, 1.0))
    pos = [list(LPS @ affine[:3, 3] + LPS @ affine[:3, 2] * (k // 2)) for k in range(data.shape[2])]
    write_series(tmp_path / "me", data[..., :8] * 10, affine, "1.2.826.0.1.3680043.8.498.4", positions=pos)
    (series,) = find_series(tmp_path / "me")
    with pytest.raises(InputError, match="8 images at 4 slice positions"):
        load_dicom_series(series)


def test_irregular_slice_stacks_are_refused(tmp_path: Path) -> None:
    data, _affine, _truth = _case()
    affine = _oblique_affine((1.0, 1.0, 1.0))
    origin, normal, row = LPS @ affine[:3, 3], LPS @ affine[:3, 2], LPS @ affine[:3, 0]
    gaps = [list(origin + normal * (k + (k > 3))) for k in range(8)]  # one gap twice as wide
    sheared = [list(origin + normal * k + row * 0.3 * k) for k in range(8)]  # gantry-tilt-like shift
    for name, positions, message in (("gap", gaps, "unequal slice gaps"), ("shear", sheared, "shifted sideways")):
        write_series(tmp_path / name, data[..., :8] * 10, affine, f"1.2.826.0.1.3680043.8.498.{len(name)}9", positions)
        (series,) = find_series(tmp_path / name)
        with pytest.raises(InputError, match=message):
            load_dicom_series(series)


def test_slices_rescaled_differently_keep_their_values(tmp_path: Path) -> None:
    """Each file has its own Rescale Slope/Intercept: the first holds integers (slope 1), the others
    fractions and values beyond int16. Read with the first file's pixel type (int16) they were
    truncated (50.5 -> 50) and wrapped (70000.5 -> 4464)."""
    scaling = [(1.0, 0.0), (0.5, 0.0), (0.25, 0.0), (4.0, 0.5)]  # (slope, intercept) per file
    values = [100.0, 50.5, 20.25, 70000.5]
    folder = tmp_path / "scaled"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    saved = locale.setlocale(locale.LC_ALL)
    try:
        for k, (value, (slope, intercept)) in enumerate(zip(values, scaling, strict=True)):
            arr = np.full((1, 6, 6), value, dtype=np.float32)
            arr[0, 0, 1] = value + 2 * slope
            sl = sitk.GetImageFromArray(arr)[:, :, 0]
            tags = {
                "0008|0060": "MR",
                "0020|000d": "1.2.826.0.1.3680043.8.498.50",
                "0020|000e": "1.2.826.0.1.3680043.8.498.51",
                "0020|0037": "1\\0\\0\\0\\1\\0",
                "0020|0032": f"0\\0\\{2.0 * k}",
                "0020|0013": str(k + 1),
                "0008|0018": f"1.2.826.0.1.3680043.8.498.51.{k + 1}",
                # Stored as 16-bit integers with this file's slope and intercept.
                "0028|0100": "16",
                "0028|0101": "16",
                "0028|0102": "15",
                "0028|0103": "1",
            }
            if k:
                tags.update({"0028|1053": f"{slope:g}", "0028|1052": f"{intercept:g}"})
            for tag, text in tags.items():
                sl.SetMetaData(tag, text)
            writer.SetFileName(str(folder / f"IM{k}.dcm"))
            writer.Execute(sl)
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    (series,) = find_series(folder)
    vol, _record = load_dicom_series(series)
    np.testing.assert_allclose(vol.data[0, 0, :], values, rtol=1e-6)
    second = [v + 2 * s for v, (s, _) in zip(values, scaling, strict=True)]
    np.testing.assert_allclose(vol.data[1, 0, :], second, rtol=1e-6)


def test_a_series_holding_copies_of_its_files_reads_each_image_once(
    tmp_path: Path, capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    # A copy beside its file ("IM0005 (1).dcm") or a series exported twice into one folder was refused as "several
    # echoes or acquisitions in one series", after three lines of ITK's own warning on stderr.
    data, _affine, _truth = _case()
    affine = _oblique_affine((1.0, 1.0, 2.0))
    folder = tmp_path / "series"
    write_series(folder, data[..., :12] * 10, affine, "1.2.826.0.1.3680043.8.498.11")
    (folder / "IM0005 (1).dcm").write_bytes((folder / "IM0005.dcm").read_bytes())
    (series,) = find_series(folder)
    assert len(series.files) == 13
    vol, record = load_dicom_series(series)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-4)
    np.testing.assert_allclose(vol.data, np.round(data[..., :12] * 10), atol=0.5)
    assert record["files"] == 12
    caplog.clear()
    out = tmp_path / "out"
    args = [str(folder), "-o", str(out), "--model", str(BUNDLE), "--device", "cpu", "--progress", "none"]
    assert main(["predict", *args]) == 0
    assert "itk" not in capfd.readouterr().err.lower()
    said = [r.getMessage() for r in caplog.records if "same SOP Instance UID" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0]
    doc = json.loads((out / "series_cmb.json").read_text())
    assert any("same SOP Instance UID" in w for w in doc["warnings"])
    assert nib.load(str(out / "series_cmb.nii.gz")).shape == (*data.shape[:2], 12)


def test_an_irregular_series_is_refused_in_one_line_without_itks_warning(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    data, _affine, _truth = _case()
    affine = _oblique_affine((1.0, 1.0, 1.0))
    origin, normal = LPS @ affine[:3, 3], LPS @ affine[:3, 2]
    gaps = [list(origin + normal * (k + (k > 3))) for k in range(8)]  # a slice missing in the middle
    write_series(tmp_path / "gap", data[..., :8] * 10, affine, "1.2.826.0.1.3680043.8.498.12", gaps)
    out = tmp_path / "out"
    args = [str(tmp_path / "gap"), "-o", str(out), "--model", str(BUNDLE), "--device", "cpu", "--progress", "none"]
    assert main(["predict", *args]) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip() and "unverified bundle" not in line]
    assert len(err) == 2 and err[0].startswith("plkd: error:") and "unequal slice gaps" in err[0], err
    assert err[1].startswith("plkd predict: 0 done") and not list(out.glob("gap_cmb*"))
