"""NIfTI headers that try to break ``plkd predict``: qform/sform codes, scaling, 4-D files, units, NaN, files whose
name lies about their compression. The label map and the probability map must carry the input's header geometry
exactly (qform, sform and their codes), and candidate centres must lie where the winning transform puts them."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tiny_case import BUNDLE, TRUTH, case_arrays

from plkd.cli import main
from plkd.errors import InputError
from plkd.volumes import load_volume


def _predict(scan: Path, out: Path) -> int:
    args = ["predict", str(scan), "-o", str(out), "--model", str(BUNDLE), "--device", "cpu", "--progress", "none"]
    return main([*args, "--save-probability"])


def _save(path: Path, data: np.ndarray, header: nib.Nifti1Header) -> Path:
    """Write ``data`` with ``header`` exactly as set (no affine given, so nibabel does not rewrite qform/sform)."""
    nib.save(nib.Nifti1Image(data, None, header), str(path))
    return path


def _geometry(header: nib.Nifti1Header) -> tuple:
    return (
        int(header["qform_code"]),
        int(header["sform_code"]),
        np.round(header.get_qform(), 4).tolist(),
        np.round(header.get_sform(), 4).tolist(),
        np.round(header["pixdim"][:4], 5).tolist(),
    )


def _centres(out: Path, stem: str) -> np.ndarray:
    doc = json.loads((out / f"{stem}_cmb.json").read_text())
    return _sorted(np.array([c["center_ras"] for c in doc["candidates"] if c["kept"]]))


def _sorted(points: np.ndarray) -> np.ndarray:
    return np.array(sorted(map(tuple, np.round(points, 6))))


SHIFT_MM = np.array([7.0, -5.0, 3.0])


@pytest.mark.parametrize(
    ("qcode", "scode", "shifted", "winner"),
    [
        (1, 0, "sform", "qform"),  # sform unset: the qform places the image (an ITK/SimpleITK writer)
        (0, 2, "qform", "sform"),  # qform unset (some registration tools)
        (1, 1, "qform", "sform"),  # both set, different: the sform wins, as nibabel reads it (and warned)
        (2, 4, "sform", "sform"),  # both set, the sform of code 4 (MNI) still wins: its code is not ranked
        (1, 1, None, "sform"),  # both set, the same (dcm2niix)
    ],
)
def test_qform_and_sform_codes_choose_the_placement_and_the_outputs_keep_both(
    tmp_path: Path, qcode: int, scode: int, shifted: str | None, winner: str
) -> None:
    data, affine = case_arrays()
    other = affine.copy()
    other[:3, 3] += SHIFT_MM
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(data.shape)
    header.set_qform(other if shifted == "qform" else affine, code=qcode)
    header.set_sform(other if shifted == "sform" else affine, code=scode)
    scan = _save(tmp_path / "scan_T2S.nii.gz", data, header)
    assert _predict(scan, tmp_path / "out") == 0
    expected = _geometry(nib.load(str(scan)).header)
    for name in ("scan_T2S_cmb.nii.gz", "scan_T2S_cmb_prob.nii.gz"):
        assert _geometry(nib.load(str(tmp_path / "out" / name)).header) == expected, name
    # The microbleeds lie where the winning transform puts them (the case's own affine, or the shifted one).
    offset = SHIFT_MM if shifted == winner else np.zeros(3)
    np.testing.assert_allclose(_centres(tmp_path / "out", "scan_T2S"), _sorted(TRUTH + offset), atol=1.5)
    doc = json.loads((tmp_path / "out" / "scan_T2S_cmb.json").read_text())
    differ = [n for n in doc["notes"] if "qform and sform differ" in n]
    assert len(differ) == (1 if qcode and scode and shifted else 0), doc["notes"]
    if differ:  # which form 3D Slicer takes (ITK: the sform only with code 1), as SimpleITK reads the file
        sitk = pytest.importorskip("SimpleITK")
        itk_x = -sitk.ReadImage(str(scan)).GetOrigin()[0]
        itk_form = "sform" if abs(itk_x - nib.load(str(scan)).header.get_sform()[0, 3]) < 1e-3 else "qform"
        assert f"3D Slicer and ITK-SNAP use the {itk_form}" in differ[0], differ[0]


def test_scaling_four_d_and_no_orientation_keep_the_input_header(tmp_path: Path) -> None:
    data, affine = case_arrays()
    # Scaled integers (scl_slope 2, scl_inter 10), stored 4-D with one volume, without any orientation (codes 0).
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((*data.shape, 1))
    header.set_zooms((1.0, 1.0, 1.0, 2.5))
    header.set_xyzt_units("mm", "sec")
    header.set_qform(affine, code=0)
    header.set_sform(affine, code=0)
    raw = bytearray(nib.Nifti1Image(np.round((data[..., None] - 10) / 2).astype(np.int16), None, header).to_bytes())
    raw[112:120] = np.array([2.0, 10.0], "<f4").tobytes()  # scl_slope, scl_inter (nibabel rewrites them on save)
    scan = tmp_path / "scaled_T2S.nii.gz"
    scan.write_bytes(gzip.compress(bytes(raw)))
    assert (nib.load(str(scan)).dataobj.slope, nib.load(str(scan)).dataobj.inter) == (2.0, 10.0)
    np.testing.assert_allclose(load_volume(scan).data, data, atol=1.01)  # the slope applied
    assert _predict(scan, tmp_path / "out") == 0
    label = nib.load(str(tmp_path / "out" / "scaled_T2S_cmb.nii.gz"))
    assert label.shape == data.shape and (int(label.header["qform_code"]), int(label.header["sform_code"])) == (0, 0)
    assert _geometry(label.header)[2:4] == _geometry(nib.load(str(scan)).header)[2:4]
    # The repetition time (pixdim[4]) and its unit stay: nibabel reset pixdim[4] to 1 for the 3-D output.
    for name in ("scaled_T2S_cmb.nii.gz", "scaled_T2S_cmb_prob.nii.gz"):
        out_header = nib.load(str(tmp_path / "out" / name)).header
        assert float(out_header["pixdim"][4]) == 2.5 and out_header.get_xyzt_units() == header.get_xyzt_units(), name
    # Labels are integers 1..N, never scaled by the input's slope.
    assert sorted(np.unique(np.asarray(label.dataobj)).tolist()) == [0, 1, 2, 3]
    # A 4-D multi-echo file: the outputs are 3-D on the same grid.
    echoes = nib.Nifti1Image(np.stack([data, 0.7 * data, 0.5 * data], axis=3), affine)
    nib.save(echoes, str(tmp_path / "me_T2S.nii.gz"))
    assert _predict(tmp_path / "me_T2S.nii.gz", tmp_path / "out") == 0
    for name in ("me_T2S_cmb.nii.gz", "me_T2S_cmb_prob.nii.gz"):
        out = nib.load(str(tmp_path / "out" / name))
        assert out.shape == data.shape and _geometry(out.header)[:4] == _geometry(echoes.header)[:4]


@pytest.mark.parametrize(("name", "compress"), [("plain_T2S.nii.gz", False), ("packed_T2S.nii", True)])
def test_a_name_that_lies_about_compression_is_read_by_the_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, compress: bool
) -> None:
    # nibabel trusts the name: "not a gzip file" / "cannot work out file type", while ITK-based tools open both.
    data, affine = case_arrays()
    raw = nib.Nifti1Image(data, affine).to_bytes()
    (tmp_path / name).write_bytes(gzip.compress(raw) if compress else raw)
    assert _predict(tmp_path / name, tmp_path / "out") == 0
    stem = name.split(".")[0]
    said = [
        r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "unlike what its name" in r.getMessage()
    ]
    assert len(said) == 1, said
    doc = json.loads((tmp_path / "out" / f"{stem}_cmb.json").read_text())
    assert sum("unlike what its name says" in n for n in doc["notes"]) == 1
    np.testing.assert_allclose(_centres(tmp_path / "out", stem), _sorted(TRUTH), atol=1.5)
    # Truncated all the same: refused in one line, as before.
    (tmp_path / "cut_T2S.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated"):
        load_volume(tmp_path / "cut_T2S.nii.gz")


def test_lengths_not_in_millimetres_are_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # xyzt_units "micron" on a 1 mm grid: nibabel reads mm, Slicer scales to 0.001 mm; nothing was said.
    data, affine = case_arrays()
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("micron")
    nib.save(img, str(tmp_path / "um_T2S.nii.gz"))
    assert _predict(tmp_path / "um_T2S.nii.gz", tmp_path / "out") == 0
    doc = json.loads((tmp_path / "out" / "um_T2S_cmb.json").read_text())
    assert sum("gives lengths in micron" in n for n in doc["notes"]) == 1, doc["notes"]
    # Voxel sizes of 0.001 in metres: refused as absurd, and the error names the units.
    metres = nib.Nifti1Image(data, np.diag([0.001, 0.001, 0.001, 1.0]))
    metres.header.set_xyzt_units("meter")
    nib.save(metres, str(tmp_path / "m_T2S.nii.gz"))
    with pytest.raises(InputError, match=r"absurd voxel spacing .*lengths in meter"):
        load_volume(tmp_path / "m_T2S.nii.gz")


def test_nan_voxels_are_refused_in_one_line_without_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, affine = case_arrays()
    data[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "nan_T2S.nii.gz"))
    assert _predict(tmp_path / "nan_T2S.nii.gz", tmp_path / "out") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("plkd: error:")]
    assert errors == ["plkd: error: nan_T2S.nii.gz: image nan_T2S.nii.gz contains 1 NaN/Inf voxel(s)"]
    assert not list((tmp_path / "out").glob("*_cmb*"))


def test_wide_integer_types_are_read_as_their_values(tmp_path: Path) -> None:
    data, affine = case_arrays()
    for dtype in (np.int64, np.uint64, np.uint32):
        path = tmp_path / f"{np.dtype(dtype).name}_T2S.nii.gz"
        nib.save(nib.Nifti1Image(np.round(data).astype(dtype), affine, dtype=dtype), str(path))
        np.testing.assert_array_equal(load_volume(path).data, np.round(data))
    shutil.rmtree(tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("empty_T2S.nii.gz", b"", "the file is empty"),  # was "WrapStructError: Binary block is wrong size"
        ("text_T2S.nii.gz", b"not an image\n", "only 13 bytes, fewer than a NIfTI header's 348"),
        (
            "cut_T2S.nii.gz",
            gzip.compress(np.random.default_rng(0).bytes(4000))[:30],
            "its gzip stream is corrupt or cut short",
        ),
        ("other_T2S.nii", b"\0" * 600, "no NIfTI header (its magic is missing)"),
    ],
)
def test_a_file_without_a_nifti_header_says_why_in_one_line(
    tmp_path: Path, name: str, content: bytes, said: str
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=re.escape(f"cannot read image {name} as NIfTI: {said}")):
        load_volume(tmp_path / name)


def test_an_analyze_image_named_on_the_command_line_is_refused_saying_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # An Analyze 7.5 .hdr/.img pair does not say where left and right are: refused, naming what it is.
    data, affine = case_arrays()
    nib.save(nib.AnalyzeImage(data, affine), str(tmp_path / "old_T2S.hdr"))
    assert _predict(tmp_path / "old_T2S.hdr", tmp_path / "out") == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("plkd: error:")]
    assert len(err) == 1 and "is an Analyze 7.5 image (.hdr + .img), whose header does not say" in err[0], err
    assert not list((tmp_path / "out").glob("*_cmb*"))
    # A NIfTI pair whose .img is missing: one line naming it.
    nib.save(nib.Nifti1Pair(data, affine), str(tmp_path / "lone_T2S.hdr"))
    (tmp_path / "lone_T2S.img").unlink()
    assert _predict(tmp_path / "lone_T2S.hdr", tmp_path / "out") == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("plkd: error:")]
    assert len(err) == 1 and "lone_T2S.img is missing" in err[0], err
    assert not list((tmp_path / "out").glob("*_cmb*"))


@pytest.mark.parametrize(("klass", "named"), [(nib.Nifti1Pair, "pair_T2S.hdr"), (nib.Nifti2Pair, "pair_T2S.img")])
def test_a_nifti_pair_is_read_and_its_outputs_keep_its_header(
    tmp_path: Path, klass: type, named: str, capsys: pytest.CaptureFixture
) -> None:
    """A NIfTI pair (.hdr + .img, as SPM writes) was refused ("convert it to .nii.gz") while nibabel, 3D Slicer and
    ITK-SNAP read it. It is read like a .nii; the outputs are NAME_cmb.nii.gz with the pair's header geometry, and a
    folder walk takes the pair once (it was skipped as an image of another format)."""
    data, affine = case_arrays()
    other = affine.copy()
    other[:3, 3] += SHIFT_MM  # a qform that differs from the sform: both kept, the sform places the image
    img = klass(np.round(data).astype(np.int16), None)
    img.header.set_qform(other, code=1)
    img.header.set_sform(affine, code=2)
    img.header["descrip"] = b"spm pair"
    nib.save(img, str(tmp_path / "pair_T2S.hdr"))
    assert _predict(tmp_path / named, tmp_path / "out") == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("pair_T2S_cmb*")) == [
        "pair_T2S_cmb.json",
        "pair_T2S_cmb.nii.gz",
        "pair_T2S_cmb_prob.nii.gz",
    ]
    pair = nib.load(str(tmp_path / "pair_T2S.hdr"))
    for name in ("pair_T2S_cmb.nii.gz", "pair_T2S_cmb_prob.nii.gz"):
        written = nib.load(str(out / name))
        assert isinstance(written, nib.Nifti2Image if klass is nib.Nifti2Pair else nib.Nifti1Image), name
        assert written.header["magic"] in (b"n+1", b"n+2") and written.shape == data.shape, name
        assert _geometry(written.header) == _geometry(pair.header), name
    np.testing.assert_allclose(_centres(out, "pair_T2S"), _sorted(TRUTH), atol=1.5)
    # The voxels are the .img's: a changed .img is recomputed, not taken for the earlier result.
    capsys.readouterr()
    assert _predict(tmp_path / "pair_T2S.hdr", out) == 0
    assert "skipped pair_T2S" in capsys.readouterr().err
    raw = bytearray((tmp_path / "pair_T2S.img").read_bytes())
    raw[:2] = b"\x01\x00"
    (tmp_path / "pair_T2S.img").write_bytes(bytes(raw))
    assert _predict(tmp_path / "pair_T2S.hdr", out) == 0
    assert "recomputing pair_T2S" in capsys.readouterr().err
    # A folder walk takes the pair once, under its name.
    walked = tmp_path / "walked"
    assert _predict(tmp_path, walked) == 0
    assert [p.name for p in walked.glob("*_cmb.json")] == ["pair_T2S_cmb.json"]
    # The pair converted beside it (as plkd advised): the walk takes the .nii.gz alone, it was refused for two
    # inputs of one output name.
    nib.save(nib.load(str(tmp_path / "pair_T2S.hdr")), str(tmp_path / "pair_T2S.nii.gz"))
    capsys.readouterr()
    assert _predict(tmp_path, tmp_path / "walked-again") == 0, capsys.readouterr().err
    (doc,) = [json.loads(p.read_text()) for p in (tmp_path / "walked-again").glob("*_cmb.json")]
    assert Path(doc["input"]).name == "pair_T2S.nii.gz"


def test_a_negative_slope_or_a_voxel_size_that_is_no_number_is_named(tmp_path: Path) -> None:
    # scl_slope -1 made a magnitude image negative and was refused as "a phase image" without naming the slope; a NaN
    # voxel size in a header without orientation was read as 1 mm without a word.
    data, affine = case_arrays()
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape(data.shape)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    raw = bytearray(nib.Nifti1Image(np.round(data).astype(np.int16), None, header).to_bytes())
    raw[112:120] = np.array([-1.0, 0.0], "<f4").tobytes()  # scl_slope, scl_inter
    (tmp_path / "neg_T2S.nii").write_bytes(bytes(raw))
    with pytest.raises(InputError, match=re.escape("(its header's scl_slope is -1: a wrong scaling?)")):
        load_volume(tmp_path / "neg_T2S.nii")
    header.set_data_dtype(np.float32)
    header.set_qform(None, code=0)
    header.set_sform(None, code=0)
    header["pixdim"][1] = np.nan
    _save(tmp_path / "nanpix_T2S.nii", data, header)
    with pytest.raises(InputError, match="non-finite affine"):
        load_volume(tmp_path / "nanpix_T2S.nii")


def test_echoes_stored_along_the_fifth_dimension_are_read_as_a_four_d_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """NIfTI keeps dimension 4 for time and stores several values per voxel along dimension 5, so a tool may write
    the echoes of a multi-echo GRE as (X, Y, Z, 1, N). That was refused as 5-D; it is read as the 4-D (X, Y, Z, N)
    file, with the same result, and the outputs keep its header."""
    data, affine = case_arrays()
    echoes = np.stack([data, 0.7 * data, 0.5 * data], axis=3)
    four = nib.Nifti1Image(echoes, affine)
    four.header.set_xyzt_units("mm", "sec")
    four.header["pixdim"][4] = 0.04
    nib.save(four, str(tmp_path / "four_T2S.nii.gz"))
    five = nib.Nifti1Image(echoes[:, :, :, None, :], affine)
    five.header.set_xyzt_units("mm", "sec")
    five.header["pixdim"][4:6] = [0.04, 1.0]
    five.header.set_intent("vector")  # what dimension 5 holds, as such files say
    nib.save(five, str(tmp_path / "five_T2S.nii.gz"))
    out = tmp_path / "out"
    for stem in ("four_T2S", "five_T2S"):
        assert _predict(tmp_path / f"{stem}.nii.gz", out) == 0, capsys.readouterr().err
    np.testing.assert_allclose(_centres(out, "five_T2S"), _centres(out, "four_T2S"), atol=1e-6)
    np.testing.assert_array_equal(
        np.asarray(nib.load(str(out / "five_T2S_cmb.nii.gz")).dataobj),
        np.asarray(nib.load(str(out / "four_T2S_cmb.nii.gz")).dataobj),
    )
    for name in ("five_T2S_cmb.nii.gz", "five_T2S_cmb_prob.nii.gz"):
        written = nib.load(str(out / name)).header
        assert written.get_data_shape() == data.shape and _geometry(written) == _geometry(five.header), name
        assert np.allclose(written["pixdim"][4:6], [0.04, 1.0]) and written.get_xyzt_units() == ("mm", "sec"), name
        # One value per voxel: the input's "vector" intent made ITK (3D Slicer) read the label map as a vector image;
        # a displacement or matrix intent made it refuse the file.
        assert int(written["intent_code"]) == 0, name
    doc = json.loads((out / "five_T2S_cmb.json").read_text())
    assert any("combined 3 echoes by root-sum-of-squares" in n for n in doc["notes"]), doc["notes"]
    assert load_volume(tmp_path / "five_T2S.nii.gz", echo=2).data == pytest.approx(0.7 * data, rel=1e-5)
    # Several time points of several values per voxel: still refused as 5-D.
    nib.save(nib.Nifti1Image(np.stack([echoes, echoes], axis=3), affine), str(tmp_path / "many_T2S.nii.gz"))
    with pytest.raises(InputError, match=r"is 5-D with shape \(.*, 2, 3\)"):
        load_volume(tmp_path / "many_T2S.nii.gz")


def _itk_affine(path: Path) -> np.ndarray:
    """Where ITK (3D Slicer, ITK-SNAP) places the file's voxels: its voxel → RAS affine."""
    sitk = pytest.importorskip("SimpleITK")
    itk = sitk.ReadImage(str(path))
    placed = np.eye(4)
    placed[:3, :3] = np.reshape(itk.GetDirection(), (3, 3)) @ np.diag(itk.GetSpacing())
    placed[:3, 3] = itk.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ placed


@pytest.mark.parametrize("kind", ["pixdim-differs", "sheared"])
def test_a_sform_that_itk_does_not_take_is_said_with_where_slicer_shows_the_scan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """ITK (3D Slicer, ITK-SNAP) takes from a sform of code 1 only a rotation with pixdim's voxel sizes: a sform whose
    voxel sizes are not pixdim's (pixdim left behind by a tool that rewrote the sform), or a sheared one, is passed
    over for the qform. plkd places the scan by the sform, as nibabel does, and said nothing (or, with both forms
    set, that Slicer uses the sform too): the JSON's centres lay millimetres from where Slicer shows the scan."""
    data, affine = case_arrays()
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(data.shape)
    sform = affine.copy()
    if kind == "sheared":
        sform[0, 1] += 0.15
        header.set_qform(affine, code=1)
    else:
        header.set_qform(None, code=0)
    header.set_sform(sform, code=1)
    if kind == "pixdim-differs":
        header["pixdim"][1:4] = [1.1, 1.1, 1.1]
    scan = _save(tmp_path / "odd_T2S.nii.gz", data, header)
    itk = _itk_affine(scan)
    shape = data.shape
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in shape], indexing="ij")).reshape(3, -1).T
    apart = np.sqrt((((corners @ (itk - sform)[:3, :3].T) + (itk - sform)[:3, 3]) ** 2).sum(axis=1)).max()
    assert apart > 2.0  # the case: Slicer shows the scan elsewhere
    assert _predict(scan, tmp_path / "out") == 0
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "3D Slicer" in r.getMessage()]
    assert len(said) == 1, said
    assert "use the sform too" not in said[0], said[0]
    far = re.search(r"centres lie up to ([0-9.]+) mm", said[0])
    assert far is not None and float(far[1]) == pytest.approx(apart, abs=0.02), said[0]
    assert ("sheared" if kind == "sheared" else "are not pixdim's (1.1x1.1x1.1 mm)") in said[0], said[0]
    doc = json.loads((tmp_path / "out" / "odd_T2S_cmb.json").read_text())
    assert sum(said[0] in n for n in doc["notes"]) == 1, doc["notes"]
    # The outputs keep the header as it is (Slicer places them as it places the scan).
    assert _geometry(nib.load(str(tmp_path / "out" / "odd_T2S_cmb.nii.gz")).header) == _geometry(header)


def test_a_header_itk_refuses_is_said(tmp_path: Path) -> None:
    # A sheared sform without a qform: ITK (3D Slicer) refuses the file, and the outputs, which keep the header.
    from plkd.inference.inputs import orientation_warnings

    data, affine = case_arrays()
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(data.shape)
    sheared = affine.copy()
    sheared[0, 1] += 0.3
    header.set_qform(None, code=0)
    header.set_sform(sheared, code=1)
    scan = _save(tmp_path / "shear_T2S.nii", data, header)
    (said,) = orientation_warnings(load_volume(scan), scan.name)
    assert (
        said.startswith("shear_T2S.nii: 3D Slicer and ITK-SNAP cannot open this header (ITK: ")
        and "orthonormal" in said
    )
    # An ordinary header gets no word.
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "plain_T2S.nii"))
    assert orientation_warnings(load_volume(tmp_path / "plain_T2S.nii"), "plain_T2S.nii") == []


def test_a_sform_of_zeros_beside_a_good_qform_places_the_scan_by_the_qform(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sform code set over a matrix of zeros (a tool that set the code and nothing else) was taken as the placement
    and the scan refused for "absurd voxel spacing (0.0, 0.0, 0.0)", while 3D Slicer and ITK-SNAP place it by its
    qform. plkd now does so too, says it in one warning line and a JSON note, and the outputs keep the header."""
    data, affine = case_arrays()
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(data.shape)
    header.set_qform(affine, code=1)
    header.set_sform(np.zeros((4, 4)), code=1)
    scan = _save(tmp_path / "zeros_T2S.nii.gz", data, header)
    np.testing.assert_allclose(_itk_affine(scan), affine, atol=1e-4)  # where Slicer shows it
    assert _predict(scan, tmp_path / "out") == 0
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "sform" in r.getMessage()]
    assert len(said) == 1 and "placed by its qform" in said[0], said
    doc = json.loads((tmp_path / "out" / "zeros_T2S_cmb.json").read_text())
    assert sum("placed by its qform" in n for n in doc["notes"]) == 1, doc["notes"]
    np.testing.assert_allclose(_centres(tmp_path / "out", "zeros_T2S"), _sorted(TRUTH), atol=1.5)
    assert _geometry(nib.load(str(tmp_path / "out" / "zeros_T2S_cmb.nii.gz")).header) == _geometry(header)
    # Without a qform there is nothing else to place it by: refused, as before.
    header.set_qform(None, code=0)
    _save(tmp_path / "lost_T2S.nii.gz", data, header)
    with pytest.raises(InputError, match="absurd voxel spacing"):
        load_volume(tmp_path / "lost_T2S.nii.gz")
