"""What ``plkd predict`` accepts and how a batch behaves: folder walks, unique output names, header
geometry kept exactly, reruns that notice changes, 1-based echoes, the batch summary, the CLI.

Every input is built in the test from the tiny case (48×48×32 voxels) and run with the tiny bundle.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plkd.cli import main
from plkd.errors import InputError
from plkd.inference.inputs import ScanInput, assign_stems, expand_inputs
from plkd.volumes import header_affine

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"
CASE = ROOT / "Testing" / "data" / "tiny-case" / "tiny_T2S.nii.gz"
TRUTH = json.loads((CASE.parent / "truth.json").read_text())["centres_ras"]


def _predict(*args: str, progress: str = "none") -> int:
    return main(["predict", *args, "--model", str(BUNDLE), "--device", "cpu", "--progress", progress])


def _case_array() -> np.ndarray:
    return np.asarray(nib.load(str(CASE)).dataobj, dtype=np.float32)


def _touch_nifti(path: Path, value: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), value, np.float32), np.eye(4)), str(path))
    return path


# ------------------------------------------------------------------ output names never collide


def test_same_file_name_in_two_folders_gives_two_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for ses in ("ses-1", "ses-2"):
        (tmp_path / "in" / ses).mkdir(parents=True)
        shutil.copy(CASE, tmp_path / "in" / ses / "T2S.nii.gz")
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in" / "ses-*" / "T2S.nii.gz"), "-o", str(out)) == 0
    assert "2 done, 0 skipped" in capsys.readouterr().err
    docs = {p.name: json.loads(p.read_text()) for p in out.glob("*_cmb.json")}
    assert sorted(docs) == ["ses-1_T2S_cmb.json", "ses-2_T2S_cmb.json"]
    assert {Path(d["input"]).parent.name for d in docs.values()} == {"ses-1", "ses-2"}
    # --overwrite recomputes both, and both results survive.
    assert _predict(str(tmp_path / "in"), "-o", str(out), "--overwrite") == 0
    assert "2 done" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*_cmb.nii.gz")) == ["ses-1_T2S_cmb.nii.gz", "ses-2_T2S_cmb.nii.gz"]


def test_output_stems_take_the_parent_folders_that_differ(tmp_path: Path) -> None:
    paths = [
        tmp_path / "bids" / "sub-01" / "anat" / "T2S.nii",
        tmp_path / "bids" / "sub-02" / "anat" / "T2S.nii",
        tmp_path / "bids" / "sub-02" / "anat" / "other.nii.gz",
    ]
    stems = [s.stem for s in assign_stems([ScanInput(p) for p in paths])]
    assert stems == ["sub-01_T2S", "sub-02_T2S", "other"]
    # Names differing only in case would collide on macOS/Windows file systems.
    stems = [s.stem for s in assign_stems([ScanInput(tmp_path / "a" / "X.nii"), ScanInput(tmp_path / "b" / "x.nii")])]
    assert stems == ["a_X", "b_x"]


def test_inputs_nothing_tells_apart_are_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "in").mkdir()
    shutil.copy(CASE, tmp_path / "in" / "scan.nii.gz")
    nib.save(nib.load(str(CASE)), str(tmp_path / "in" / "scan.nii"))
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in"), "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("plkd: error:")] == [
        f"plkd: error: {tmp_path / 'in' / 'scan.nii'} and {tmp_path / 'in' / 'scan.nii.gz'} would all be written "
        "as scan_cmb.*; rename or remove all but one of them"
    ]
    assert not out.exists()


# ------------------------------------------------------------------ folders are walked, images only


def test_folder_walk_takes_images_and_reports_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "data"
    images = [
        _touch_nifti(root / "sub-01" / "anat" / "sub-01_T2starw.nii.gz"),
        _touch_nifti(root / "sub-02" / "anat" / "sub-02_swi.nii.gz"),
        _touch_nifti(root / "sub-03" / "sub-03_space-T2S_desc-masked_T2S.nii.gz"),  # VALDO / plkd synth
        _touch_nifti(root / "crop" / "Mag.nii"),
        _touch_nifti(root / "imagesTs" / "case_001_0000.nii.gz"),  # nnU-Net
    ]
    skipped = {
        _touch_nifti(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz"): "other contrast",
        _touch_nifti(root / "sub-01" / "anat" / "sub-01_desc-brain_mask.nii.gz"): "label map or mask",
        _touch_nifti(root / "sub-03" / "sub-03_space-T2S_CMB.nii.gz"): "label map or mask",
        _touch_nifti(root / "sub-03" / "sub-03_space-T2S_desc-masked_T1.nii.gz"): "other contrast",
        _touch_nifti(root / "crop" / "Phase.nii"): "phase image",
        _touch_nifti(root / "labelsTs" / "case_001.nii.gz"): "label map or mask",
        _touch_nifti(root / "old" / "scan_cmb.nii.gz"): "plkd prediction",
        _touch_nifti(root / "old" / "scan_cmb_prob.nii.gz"): "plkd prediction",
        _touch_nifti(root / "old" / "scan_cmb-final.nii.gz"): "plkd prediction",  # the Slicer module's export
        _touch_nifti(root / "demo" / "demo-s1-4mm_T2S_truth.nii.gz"): "label map or mask",  # plkd demo's layout
        _touch_nifti(root / "demo" / "scan_gt.nii.gz"): "label map or mask",  # a label plkd evaluate reads
    }
    (root / "old" / "scan_cmb.json").write_text("{}")
    _touch_nifti(root / "derivatives" / "x" / "sub-01_T2starw.nii.gz")  # never walked into
    _touch_nifti(root / ".hidden" / "a_T2S.nii.gz")
    _touch_nifti(root / "out" / "sub-09_T2S.nii.gz")  # the output folder itself is not an input
    found = expand_inputs([root], output_dir=root / "out")
    assert sorted(s.path for s in found.scans) == sorted(images)
    reasons = dict(found.skipped)
    assert set(reasons) == set(skipped)
    for path, expected in skipped.items():
        assert expected in reasons[path], (path, reasons[path])
    assert found.ignored_summary() == (
        "not analysed in the folders given: label map or mask: 5, plkd prediction: 3, "
        "other contrast (T1): 1, other contrast (T1w): 1, phase image: 1 (-v lists them)"
    )
    # A file named explicitly is taken whatever its name.
    assert [s.path for s in expand_inputs([root / "crop" / "Phase.nii"]).scans] == [root / "crop" / "Phase.nii"]


def test_walked_folder_skips_earlier_predictions_in_a_rerun(
    tmp_path: Path, capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "in").mkdir()
    shutil.copy(CASE, tmp_path / "in" / "a_T2S.nii.gz")
    shutil.copy(CASE, tmp_path / "in" / "a_phase.nii.gz")  # skipped by its name, and said so by name
    assert _predict(str(tmp_path / "in"), "-o", str(tmp_path / "in")) == 0  # outputs beside the inputs
    capfd.readouterr()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith("a_phase.nii.gz: not analysed") and "phase image" in w for w in warnings), warnings
    capfd.readouterr()
    assert _predict(str(tmp_path / "in"), "-o", str(tmp_path / "in")) == 0
    err = capfd.readouterr().err
    assert "0 done, 1 skipped, 0 failed of 1" in err
    assert "not analysed in the folders given: phase image: 1, plkd prediction: 1" in err


@pytest.mark.parametrize(
    ("name", "sidecar", "said"),
    [
        ("sub-01_R2starmap.nii.gz", None, "quantitative map (R2starmap)"),
        ("sub-01_T2starmap.nii.gz", None, "quantitative map (T2starmap)"),
        ("sub-01_Chimap.nii.gz", None, "quantitative map (Chimap)"),  # BIDS' QSM
        ("x_qsm_20230101_9.nii.gz", {"SeriesDescription": "QSM"}, "quantitative map (sidecar 'qsm')"),
        ("sub-01_T1w.nii.gz", None, "other contrast (T1w)"),
    ],
)
def test_a_map_or_another_contrast_named_explicitly_is_analysed_with_a_warning_and_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, sidecar: dict | None, said: str
) -> None:
    # A walk skips quantitative maps (R2*, T2*, QSM); named on the command line, one was analysed as a T2* magnitude
    # image without a word, and its "microbleeds" passed for a reading of the scan.
    scan = Path(shutil.copy(CASE, tmp_path / name))
    if sidecar is not None:
        (tmp_path / name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    assert expand_inputs([tmp_path]).scans == []  # a walk skips it
    assert _predict(str(scan), "-o", str(tmp_path / "out")) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and said in r.getMessage()]
    assert len(warnings) == 1 and "a folder walk skips such files" in warnings[0], warnings
    doc = json.loads((tmp_path / "out" / name.replace(".nii.gz", "_cmb.json")).read_text())
    assert sum(said in note for note in doc["notes"]) == 1, doc["notes"]


# ------------------------------------------------------------------ header geometry kept exactly


def _oblique(rot_deg: float, zooms: tuple[float, float, float], offset: tuple[float, float, float]) -> np.ndarray:
    t = np.radians(rot_deg)
    rot = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(zooms)
    a[:3, 3] = offset
    return a


def _variant(name: str, data: np.ndarray) -> nib.Nifti1Image:
    a = _oblique(12, (1.0, 1.0, 1.0), (-20.0, 30.0, -10.0))
    b = _oblique(-7, (1.0, 1.0, 1.0), (5.0, -3.0, 2.0))
    lefty = np.diag([1.0, 1.0, -1.0, 1.0]) @ a  # left-handed: qfac (pixdim[0]) = -1
    permuted = np.array([[0.0, 0.0, 1.0, -15.0], [0.0, -1.0, 0.0, 20.0], [1.0, 0.0, 0.0, -12.0], [0, 0, 0, 1]])
    klass = nib.Nifti2Image if name == "nifti-2" else nib.Nifti1Image
    img = klass(data[..., None] if name == "4d-single" else data, None)
    h = img.header
    codes = {
        "codes-0-0": (None, 0, None, 0),
        "qform-only": (a, 1, None, 0),
        "sform-only": (None, 0, a, 4),
        "both-differ": (a, 1, b, 2),
        "left-handed": (lefty, 2, lefty, 3),
        "4d-single": (a, 1, a, 1),
        "axes-permuted": (permuted, 1, permuted, 1),  # array axis 0 runs along S, axis 2 along R
        "nifti-2": (a, 2, a, 2),
    }[name]
    h.set_qform(codes[0], code=codes[1])
    h.set_sform(codes[2], code=codes[3])
    if name == "codes-0-0":
        h.set_zooms((0.9, 1.1, 1.3) if data.ndim == 3 else (0.9, 1.1, 1.3, 1.0))
    h.set_xyzt_units("mm", "sec")
    h["dim_info"] = 57
    return img


GEOMETRY_FIELDS = (
    "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z",
    "srow_x", "srow_y", "srow_z", "xyzt_units", "dim_info",
)  # fmt: skip


@pytest.mark.parametrize(
    "variant",
    ["codes-0-0", "qform-only", "sform-only", "both-differ", "left-handed", "4d-single", "axes-permuted", "nifti-2"],
)
def test_outputs_carry_the_input_header_geometry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, variant: str
) -> None:
    src = tmp_path / f"{variant}.nii.gz"
    nib.save(_variant(variant, _case_array()), str(src))
    out = tmp_path / "out"
    assert _predict(str(src), "-o", str(out), "--save-probability") == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]  # stderr lines in the CLI
    hin = nib.load(str(src)).header
    for suffix in ("_cmb.nii.gz", "_cmb_prob.nii.gz"):
        hout = nib.load(str(out / f"{variant}{suffix}")).header
        assert type(hout) is type(hin)
        for key in GEOMETRY_FIELDS:
            np.testing.assert_array_equal(hout[key], hin[key], err_msg=f"{suffix} {key}")
        np.testing.assert_array_equal(hout["pixdim"][:4], hin["pixdim"][:4], err_msg=f"{suffix} pixdim")
        assert hout.get_data_shape()[:3] == hin.get_data_shape()[:3]
    doc = json.loads((out / f"{variant}_cmb.json").read_text())
    if variant == "codes-0-0":
        # No orientation: one warning line, a note, and RAS centres where ITK (3D Slicer, ITK-SNAP) shows the scan:
        # the identity in ITK's LPS world. plkd placed it at nifti1_io's (i*dx, j*dy, k*dz), x and y mirrored.
        assert sum("no orientation" in w for w in warnings) == 1
        assert any("no orientation" in n for n in doc["notes"]) and doc["warnings"]
        np.testing.assert_allclose(header_affine(hin), np.diag([-0.9, -1.1, 1.3, 1.0]), atol=1e-6)
    if variant not in ("both-differ", "nifti-2"):  # where ITK places the input (it may take the qform; no NIfTI-2)
        sitk = pytest.importorskip("SimpleITK")
        itk = sitk.ReadImage(str(src))
        itk_ras = np.eye(4)
        itk_ras[:3, :3] = np.reshape(itk.GetDirection(), (3, 3)) @ np.diag(itk.GetSpacing())
        itk_ras[:3, 3] = itk.GetOrigin()
        np.testing.assert_allclose(header_affine(hin), np.diag([-1.0, -1.0, 1.0, 1.0]) @ itk_ras, atol=1e-4)
    if variant == "both-differ":
        assert any("qform and sform differ" in w for w in doc["warnings"])
    # Every kept microbleed's centre lies on its own label in the written map, through the header.
    lab = nib.load(str(out / f"{variant}_cmb.nii.gz"))
    inv = np.linalg.inv(header_affine(lab.header))
    arr = np.asarray(lab.dataobj)
    for c in doc["candidates"]:
        if c["kept"]:
            v = np.round(inv[:3, :3] @ np.asarray(c["center_ras"]) + inv[:3, 3]).astype(int)
            assert arr[tuple(v)] == c["label"]
    assert doc["n_microbleeds"] >= 2


# ------------------------------------------------------------------ reruns notice what changed


def test_rerun_recomputes_when_settings_input_or_outputs_change(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = Path(shutil.copy(CASE, tmp_path / "a_T2S.nii.gz"))
    out = tmp_path / "out"
    label, doc_path = out / "a_T2S_cmb.nii.gz", out / "a_T2S_cmb.json"
    assert _predict(str(src), "-o", str(out)) == 0
    capsys.readouterr()

    assert _predict(str(src), "-o", str(out)) == 0  # same settings: skipped, and said so with --progress none
    assert "skipped a_T2S: finished earlier with the same input and settings" in capsys.readouterr().err

    assert _predict(str(src), "-o", str(out), "--threshold", "0.9") == 0
    err = capsys.readouterr().err
    assert "recomputing a_T2S: settings changed: threshold None -> 0.9" in err and "1 done" in err
    assert json.loads(doc_path.read_text())["settings"]["threshold"] == 0.9

    data = _case_array()
    data[0, 0, 0] += 1.0
    nib.save(nib.Nifti1Image(data, nib.load(str(src)).affine), str(src))
    assert _predict(str(src), "-o", str(out), "--threshold", "0.9") == 0
    assert "recomputing a_T2S: the input changed" in capsys.readouterr().err

    label.write_bytes(label.read_bytes()[: label.stat().st_size // 2])  # an interrupted copy
    assert _predict(str(src), "-o", str(out), "--threshold", "0.9") == 0
    assert "recomputing a_T2S: a_T2S_cmb.nii.gz is missing or unreadable" in capsys.readouterr().err
    assert np.asarray(nib.load(str(label)).dataobj).shape == data.shape

    doc = json.loads(doc_path.read_text())
    del doc["settings"]  # outputs of an older plkd
    doc_path.write_text(json.dumps(doc))
    assert _predict(str(src), "-o", str(out), "--threshold", "0.9") == 0
    assert "do not record their settings" in capsys.readouterr().err


def test_rerun_recomputes_when_a_sidecar_changes_the_contrast(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # The image's bytes stay the same, but a dcm2niix sidecar copied in later says SWI: the T2* result
    # (model, or here the recorded decision and its warning) must not be reused as if nothing changed.
    src = Path(shutil.copy(CASE, tmp_path / "scan.nii.gz"))
    out = tmp_path / "out"
    assert _predict(str(src), "-o", str(out)) == 0
    doc_path = out / "scan_cmb.json"
    assert json.loads(doc_path.read_text())["modality"]["source"] == "model"  # the given T2* model's contrast
    capsys.readouterr()
    (tmp_path / "scan.json").write_text(json.dumps({"SequenceName": "*swi3d1r"}))
    assert _predict(str(src), "-o", str(out)) == 0
    err = capsys.readouterr().err
    assert "recomputing scan: the contrast is now decided as SWI (sidecar SequenceName '*swi3d1r'), not T2S" in err
    doc = json.loads(doc_path.read_text())
    assert doc["modality"]["modality"] == "SWI" and any("trained on T2*" in n for n in doc["notes"])
    assert _predict(str(src), "-o", str(out)) == 0  # nothing changed since: reused
    assert "skipped scan: finished earlier" in capsys.readouterr().err


def test_a_failed_rerun_leaves_no_result_of_the_old_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # A scan replaced by a broken file (or run with a mask that is refused) must not keep the result
    # of what was there before: plkd evaluate and readers would take it for this run's result.
    src = Path(shutil.copy(CASE, tmp_path / "a_T2S.nii.gz"))
    out = tmp_path / "out"
    assert _predict(str(src), "-o", str(out), "--save-probability") == 0
    assert sorted(p.name for p in out.glob("a_T2S_cmb*")) == [
        "a_T2S_cmb.json",
        "a_T2S_cmb.nii.gz",
        "a_T2S_cmb_prob.nii.gz",
    ]
    capsys.readouterr()

    # Same input, a mask that is refused: the earlier outputs (other settings) go, with a line saying so.
    empty = tmp_path / "empty_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(_case_array().shape, np.uint8), nib.load(str(src)).affine), str(empty))
    assert _predict(str(src), "-o", str(out), "--mask", str(empty)) == 2
    err = capsys.readouterr().err
    assert "plkd: error: a_T2S.nii.gz:" in err
    assert "(removed a_T2S_cmb.json, a_T2S_cmb.nii.gz, a_T2S_cmb_prob.nii.gz first)" in err
    assert not list(out.glob("a_T2S_cmb*"))
    rows = list(csv.DictReader((out / "plkd_summary.csv").open()))
    assert [r["status"] for r in rows] == ["failed"]

    assert _predict(str(src), "-o", str(out)) == 0
    capsys.readouterr()

    # The input replaced by a truncated copy: its old result goes.
    src.write_bytes(CASE.read_bytes()[:300])
    assert _predict(str(src), "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert "the input changed since its outputs were written" in err
    assert not list(out.glob("a_T2S_cmb*"))

    # --overwrite removes the outputs of another input first too.
    shutil.copy(CASE, src)
    assert _predict(str(src), "-o", str(out)) == 0
    src.write_bytes(CASE.read_bytes()[:300])
    assert _predict(str(src), "-o", str(out), "--overwrite") == 2
    err = capsys.readouterr().err
    assert "the input changed since its outputs were written (removed a_T2S_cmb.json, a_T2S_cmb.nii.gz first)" in err
    assert not list(out.glob("a_T2S_cmb*"))


def test_lr_factor_without_a_student_of_its_own_is_said(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # The tiny bundle has the teacher (factor 1) and student_x4 only: 8 mm slices (or --lr-factor 8) were
    # analysed by the x4 student without a word. A factor below 1 means nothing and is refused.
    out = tmp_path / "out"
    assert _predict(str(CASE), "-o", str(out), "--lr-factor", "0.5") == 2
    assert "plkd: error: --lr-factor counts how many model-grid slices" in capsys.readouterr().err
    assert not out.exists()
    assert _predict(str(CASE), "-o", str(out), "--lr-factor", "8") == 0
    doc = json.loads((out / "tiny_T2S_cmb.json").read_text())
    assert doc["student"] == "student_x4"
    says = "the model has no segmenter for an LR factor of 8 (slices that thick in model-grid voxels); the nearest, "
    assert any(n.startswith(says) for n in doc["notes"]) and any(w.startswith(says) for w in doc["warnings"])
    assert _predict(str(CASE), "-o", str(out), "--lr-factor", "4") == 0  # its own student: nothing to say
    assert not any("no segmenter" in n for n in json.loads((out / "tiny_T2S_cmb.json").read_text())["notes"])


def test_a_student_named_for_other_slices_is_said(tmp_path: Path) -> None:
    """--student teacher on 4 mm slices: the JSON said student 'teacher', lr_factor 4 and nothing else, as if the
    bundle had chosen it; now one warning and a note say the two disagree. Its own student: nothing to say."""
    src = tmp_path / "thick_T2S.nii.gz"
    nib.save(nib.Nifti1Image(_case_array(), np.diag([1.0, 1.0, 4.0, 1.0])), str(src))
    for student, warned in (("teacher", True), ("student_x4", False)):
        out = tmp_path / student
        assert _predict(str(src), "-o", str(out), "--student", student) == 0
        doc = json.loads((out / "thick_T2S_cmb.json").read_text())
        assert (doc["student"], doc["lr_factor"]) == (student, 4.0)
        says = "teacher (trained for an LR factor of 1) was chosen with --student for slices of LR factor 4; the bundle"
        assert any(n.startswith(says) for n in doc["notes"]) is warned
        assert any(w.startswith(says) for w in doc["warnings"]) is warned


def test_lr_images_of_plkd_lowres_get_their_student(tmp_path: Path) -> None:
    """plkd lowres --factor 4 writes LR@4 on the 1 mm grid: the voxels look HR, so plkd predict gave it the HR
    teacher (JSON: teacher, lr_factor 1) without a word. Its header says LR@4 now, and the x4 student is used."""
    lr4 = tmp_path / "tiny_LR4.nii.gz"
    assert main(["lowres", str(CASE), "--factor", "4", "--out", str(lr4), "--progress", "none"]) == 0
    out = tmp_path / "out"
    assert _predict(str(lr4), "-o", str(out)) == 0
    doc = json.loads((out / "tiny_LR4_cmb.json").read_text())
    assert (doc["student"], doc["lr_factor"]) == ("student_x4", 4.0)
    assert any(n.startswith("the header marks the image as LR@4 (plkd lowres") for n in doc["notes"])
    # --lr-factor still decides when given; the HR case itself stays HR.
    assert _predict(str(lr4), "-o", str(tmp_path / "forced"), "--lr-factor", "1") == 0
    assert json.loads((tmp_path / "forced" / "tiny_LR4_cmb.json").read_text())["student"] == "teacher"
    assert _predict(str(CASE), "-o", str(tmp_path / "hr")) == 0
    assert json.loads((tmp_path / "hr" / "tiny_T2S_cmb.json").read_text())["student"] == "teacher"


# ------------------------------------------------------------------ echoes count from 1


def test_echo_numbers_count_from_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _case_array()
    echoes = np.stack([data, data * 0.5 + 1.0, data * 0.25 + 2.0], axis=-1)
    src = tmp_path / "me_T2S.nii.gz"
    nib.save(nib.Nifti1Image(echoes, nib.load(str(CASE)).affine), str(src))
    assert _predict(str(src), "-o", str(tmp_path / "out"), "--echo", "0") == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("plkd: error: --echo 0: echoes are numbered from 1")
    assert not (tmp_path / "out").exists()
    assert _predict(str(src), "-o", str(tmp_path / "out"), "--echo", "3") == 0
    doc = json.loads((tmp_path / "out" / "me_T2S_cmb.json").read_text())
    assert any("used echo 3 of 3" in n for n in doc["notes"])
    assert doc["settings"]["echo"] == 3
    assert _predict(str(src), "-o", str(tmp_path / "out"), "--echo", "4") == 2
    assert "has 3 echoes; echo 4 does not exist (use 1..3)" in capsys.readouterr().err


# ------------------------------------------------------------------ the batch summary and the CLI


def test_batch_summary_has_one_row_per_scan(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "in").mkdir()
    for name in ("s1_T2S", "s2_T2S"):
        shutil.copy(CASE, tmp_path / "in" / f"{name}.nii.gz")
    with gzip.open(tmp_path / "in" / "s3_T2S.nii.gz", "wb") as fh:
        fh.write(b"not a nifti")
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in"), "-o", str(out), progress="tqdm") == 2
    err = capsys.readouterr().err
    assert "scan 2 of 3:" in err and "left)" in err  # overall progress with an estimate
    assert re.search(r"^s3_T2S +failed +.*cannot read", err, re.M)  # the printed table
    rows = list(csv.DictReader((out / "plkd_summary.csv").open()))
    assert [(r["scan"], r["status"]) for r in rows] == [("s1_T2S", "done"), ("s2_T2S", "done"), ("s3_T2S", "failed")]
    doc = json.loads((out / "s1_T2S_cmb.json").read_text())
    vols = sorted((c["volume_mm3"] for c in doc["candidates"] if c["kept"]), reverse=True)
    assert int(rows[0]["n_microbleeds"]) == doc["n_microbleeds"] == len(vols)
    assert float(rows[0]["total_volume_mm3"]) == pytest.approx(sum(vols), abs=0.06)
    assert rows[0]["volumes_mm3"] == ";".join(f"{v:.1f}" for v in vols)
    assert rows[0]["student"] == doc["student"] and float(rows[0]["seconds"]) > 0
    # The tiny phantom is no head: its location block says "failed" and counts every microbleed unknown.
    assert (rows[0]["lobar"], rows[0]["deep"], rows[0]["unknown"]) == ("0", "0", str(doc["n_microbleeds"]))
    assert "cannot read" in rows[2]["error"]
    # A rerun reports the reused scans too, with the location counts once the JSON carries them.
    doc["location"] = {"status": "ok", "reason": None, "counts": {"lobar": 2, "deep": 1, "infratentorial": 0}}
    (out / "s1_T2S_cmb.json").write_text(json.dumps(doc))
    assert _predict(str(tmp_path / "in" / "s1_T2S.nii.gz"), "-o", str(out)) == 0
    (row,) = csv.DictReader((out / "plkd_summary.csv").open())
    assert (row["status"], row["lobar"], row["deep"], row["infratentorial"], row["unknown"]) == (
        "skipped", "2", "1", "0", "0",
    )  # fmt: skip


def test_a_killed_batch_leaves_a_summary_of_what_it_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The summary used to be written only at the end: a rerun killed half-way left the earlier run's rows,
    # which its own new outputs (other threshold, other input) contradicted.
    import plkd.inference.batch as batch

    (tmp_path / "in").mkdir()
    for name in ("s1_T2S", "s2_T2S", "s3_T2S"):
        shutil.copy(CASE, tmp_path / "in" / f"{name}.nii.gz")
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in"), "-o", str(out)) == 0
    calls = []
    real = batch._predict_one

    def killed_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "_predict_one", killed_at_the_second)
    assert _predict(str(tmp_path / "in"), "-o", str(out), "--threshold", "0.9") == 130  # Ctrl+C
    rows = list(csv.DictReader((out / "plkd_summary.csv").open()))
    assert [(r["scan"], r["status"]) for r in rows] == [("s1_T2S", "done")]
    doc = json.loads((out / "s1_T2S_cmb.json").read_text())
    assert doc["settings"]["threshold"] == 0.9 and int(rows[0]["n_microbleeds"]) == doc["n_microbleeds"]


def test_no_summary_of_another_sharding_contradicts_a_rerun(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # A rerun with --shard (other settings) wrote plkd_summary_shard-*.csv and left the earlier plkd_summary.csv,
    # whose counts its new outputs contradicted (and the other way round).
    (tmp_path / "in").mkdir()
    for name in ("s1_T2S", "s2_T2S", "s3_T2S"):
        shutil.copy(CASE, tmp_path / "in" / f"{name}.nii.gz")
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in"), "-o", str(out)) == 0
    assert _predict(str(tmp_path / "in"), "-o", str(out), "--shard", "0/2", "--threshold", "0.9") == 0
    rows = csv.DictReader((out / "plkd_summary.csv").open())  # s2 was shard 0's: its row went
    assert [r["scan"] for r in rows] == ["s1_T2S", "s3_T2S"]
    assert _predict(str(tmp_path / "in"), "-o", str(out), "--shard", "1/2", "--threshold", "0.9") == 0
    assert "plkd_summary.csv: rows of this run's scans removed" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("plkd_summary*")) == [
        "plkd_summary_shard-0-of-2.csv", "plkd_summary_shard-1-of-2.csv",
    ]  # fmt: skip
    rows = [r for p in sorted(out.glob("plkd_summary*")) for r in csv.DictReader(p.open())]
    assert sorted(r["scan"] for r in rows) == ["s1_T2S", "s2_T2S", "s3_T2S"]
    for r in rows:
        assert int(r["n_microbleeds"]) == json.loads((out / f"{r['scan']}_cmb.json").read_text())["n_microbleeds"]
    assert _predict(str(tmp_path / "in" / "s1_T2S.nii.gz"), "-o", str(out), "--threshold", "0.9") == 0
    assert [r["scan"] for r in csv.DictReader((out / "plkd_summary_shard-1-of-2.csv").open())] == ["s3_T2S"]
    assert [r["scan"] for r in csv.DictReader((out / "plkd_summary_shard-0-of-2.csv").open())] == ["s2_T2S"]


def test_an_interrupted_scan_leaves_no_output_of_its_own_or_of_other_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl+C while the outputs were written left the new label map without a JSON (or beside the JSON of
    # the run before); Ctrl+C during an --overwrite run with other settings left the earlier result.
    import plkd.inference.batch as batch
    import plkd.inference.outputs as outputs

    src = Path(shutil.copy(CASE, tmp_path / "a_T2S.nii.gz"))
    out = tmp_path / "out"
    real_json = outputs.write_json_atomic

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "write_json_atomic", interrupted)
    assert _predict(str(src), "-o", str(out), "--save-probability") == 130
    assert not list(out.glob("a_T2S_cmb*")) and not list(out.glob(".a_T2S_cmb*"))

    monkeypatch.setattr(outputs, "write_json_atomic", real_json)
    assert _predict(str(src), "-o", str(out)) == 0
    earlier = json.loads((out / "a_T2S_cmb.json").read_text())
    # The same settings with --overwrite, interrupted while writing: the JSON that was there must not stay
    # beside a label map it did not describe.
    monkeypatch.setattr(outputs, "write_json_atomic", interrupted)
    assert _predict(str(src), "-o", str(out), "--overwrite") == 130
    assert not list(out.glob("a_T2S_cmb*"))

    monkeypatch.setattr(outputs, "write_json_atomic", real_json)
    assert _predict(str(src), "-o", str(out)) == 0
    assert json.loads((out / "a_T2S_cmb.json").read_text())["candidates"] == earlier["candidates"]
    capsys.readouterr()
    # Other settings with --overwrite, interrupted while computing: the earlier result goes first.
    monkeypatch.setattr(batch, "_predict_one", interrupted)
    assert _predict(str(src), "-o", str(out), "--overwrite", "--threshold", "0.9") == 130
    err = capsys.readouterr().err
    assert "recomputing a_T2S: settings changed: threshold None -> 0.9 (removed a_T2S_cmb.json" in err
    assert not list(out.glob("a_T2S_cmb*"))


def test_jsonl_progress_names_the_scan(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "in").mkdir()
    for name in ("a_T2S", "b_T2S"):
        shutil.copy(CASE, tmp_path / "in" / f"{name}.nii.gz")
    assert _predict(str(tmp_path / "in"), "-o", str(tmp_path / "out"), progress="jsonl") == 0
    records = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    stages = [r for r in records if "done" in r]
    assert {"load", "screen", "segment", "write"} <= {r["stage"] for r in stages}
    assert all(r["scans"] == 2 and r["scan"] in (1, 2) for r in stages)
    assert [r["scan"] for r in records if r.get("stage") == "scan"] == [1, 2]


def test_cli_help_version_verbosity_and_threads(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    import torch

    assert main([]) == 0
    assert "usage: plkd" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["-V"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert f"torch {torch.__version__}" in text
    for label, folder in (("T2*", "cmb-t2s"), ("SWI", "cmb-swi")):  # both models --modality auto chooses from
        manifest = ROOT / "PLKDTraining" / "plkd" / "bundled" / folder / "manifest.json"
        shipped = json.loads(manifest.read_text())["name"]
        assert f"model ({label}): {shipped}" in text
    before = torch.get_num_threads()
    try:
        assert _predict(str(CASE), "-o", str(tmp_path), "-v", "--threads", "1") == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert _predict(str(CASE), "-o", str(tmp_path), "--threads", "0") == 2
    assert "plkd: error: --threads must be at least 1" in capsys.readouterr().err


def test_predictor_without_a_bundle_uses_the_installed_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import plkd.bundle
    from plkd.errors import BundleError
    from plkd.inference import Predictor

    installed = plkd.bundle.load_bundle(plkd.bundle.find_default_bundle()).name
    assert Predictor(device="cpu").bundle.name == Predictor(None, device="cpu").bundle.name == installed
    monkeypatch.setattr(plkd.bundle, "find_default_bundle", lambda modality="T2S": None)
    with pytest.raises(BundleError, match="no model bundle found"):
        Predictor()


def test_unknown_input_kinds_fail_cleanly(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="would all be written"):
        expand_inputs([_touch_nifti(tmp_path / "x.nii"), _touch_nifti(tmp_path / "x.nii.gz")])


def test_rerun_with_extras_reuses_them_and_recomputes_when_one_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    extras = ("--save-probability", "--save-model-grid")
    assert _predict(str(CASE), "-o", str(out), *extras) == 0
    capsys.readouterr()
    assert _predict(str(CASE), "-o", str(out), *extras) == 0
    assert "1 skipped" in capsys.readouterr().err
    (out / "tiny_T2S_cmb_modelgrid.nii.gz").unlink()
    assert _predict(str(CASE), "-o", str(out), *extras) == 0
    assert "recomputing tiny_T2S: tiny_T2S_cmb_modelgrid.nii.gz is missing" in capsys.readouterr().err
    assert (out / "tiny_T2S_cmb_modelgrid.nii.gz").exists()


def test_a_click_result_is_not_reused_by_a_full_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    x, y, z = TRUTH[0]
    assert _predict(str(CASE), "-o", str(tmp_path), f"--at-ras={x},{y},{z}") == 0
    assert len(json.loads((tmp_path / "tiny_T2S_cmb.json").read_text())["candidates"]) == 1
    capsys.readouterr()
    assert _predict(str(CASE), "-o", str(tmp_path)) == 0
    assert "recomputing tiny_T2S: settings changed: at_ras" in capsys.readouterr().err
    assert json.loads((tmp_path / "tiny_T2S_cmb.json").read_text())["n_microbleeds"] >= 2


def test_a_click_never_replaces_the_whole_scan_prediction_in_its_folder(tmp_path: Path, capsys) -> None:
    # A click into the folder of the whole-scan run wrote the same NAME_cmb files: every microbleed found was replaced
    # by the one clicked (also when that folder's JSON was the --existing), silently, and the summary disagreed.
    assert _predict(str(CASE), "-o", str(tmp_path)) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert json.loads(before["tiny_T2S_cmb.json"])["n_microbleeds"] >= 2
    x, y, z = TRUTH[0]
    capsys.readouterr()
    rc = _predict(
        str(CASE), "-o", str(tmp_path), f"--at-ras={x},{y},{z}", "--existing", str(tmp_path / "tiny_T2S_cmb.json")
    )
    err = capsys.readouterr().err
    assert rc == 2 and "plkd: error:" in err and "another --output-dir" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # Into a folder of its own it works, and a second click there replaces the first.
    click = tmp_path / "click"
    for point in (TRUTH[0], TRUTH[1]):
        assert _predict(str(CASE), "-o", str(click), "--at-ras=" + ",".join(str(v) for v in point)) == 0
    assert len(json.loads((click / "tiny_T2S_cmb.json").read_text())["candidates"]) == 1


def test_sigterm_ends_predict_like_ctrl_c(tmp_path: Path) -> None:
    # kill (a batch scheduler's time limit) ended the process at once: a label map could stand without its
    # JSON. It now ends the run as Ctrl+C does (exit status 130, what the scan wrote removed).
    script = f"""
import os, signal, sys
import plkd.inference.outputs as outputs
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pthread_kill(signal.pthread_self(), 0)  # let the handler run here
outputs.write_json_atomic = killed
from plkd.cli import main
sys.exit(main(["predict", {str(CASE)!r}, "-o", {str(tmp_path / "out")!r}, "--model", {str(BUNDLE)!r},
               "--device", "cpu", "--progress", "none"]))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "plkd: interrupted" in proc.stderr
    assert not list((tmp_path / "out").glob("tiny_T2S_cmb*"))


def test_a_rerun_after_the_code_changed_recomputes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # plkd's version stays 0.1.0 from one change of the code to the next: outputs of other code (a result-changing
    # update, or a plkd from before the code was recorded) were skipped as "finished earlier with the same settings".
    from plkd.provenance import code_fingerprint

    out = tmp_path / "out"
    args = ["predict", str(CASE), "-o", str(out), "--model", str(BUNDLE), "--device", "cpu", "--progress", "none"]
    assert main(args) == 0
    doc_path = out / "tiny_T2S_cmb.json"
    doc = json.loads(doc_path.read_text())
    assert doc["settings"]["plkd_code"] == code_fingerprint()
    capsys.readouterr()
    assert main(args) == 0 and "skipped tiny_T2S" in capsys.readouterr().err  # the same code: reused
    for older in ("0123456789abcdef", None):
        doc["settings"]["plkd_code"] = older
        if older is None:
            del doc["settings"]["plkd_code"]
        doc_path.write_text(json.dumps(doc))
        assert main(args) == 0
        err = capsys.readouterr().err
        assert "skipped tiny_T2S" not in err and "recomputing tiny_T2S: settings changed: plkd_code" in err, err
        assert json.loads(doc_path.read_text())["settings"]["plkd_code"] == code_fingerprint()
