"""JSON metadata stated higher up in a BIDS data set (the inheritance principle) counts as a file's own sidecar."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from plkd.cli import main
from plkd.inference.input_kinds import classify, sidecar_tags
from plkd.inference.modality import detect_modality, phase_reason
from plkd.sidecars import applicable_files, bids_name, read_sidecar

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"
CASE = ROOT / "Testing" / "data" / "tiny-case" / "tiny_T2S.nii.gz"
SWI_TYPE = {"ImageType": ["ORIGINAL", "PRIMARY", "M", "SWI", "NORM"]}


def _scan(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(CASE, path))


def _json(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A BIDS data set whose SWI magnitudes are stored as ``T2starw`` (BIDS has no SWI suffix of its own), the
    sequence stated once at the root."""
    root = tmp_path / "study"
    _json(root / "dataset_description.json", {"Name": "x", "BIDSVersion": "1.9.0"})
    _json(root / "T2starw.json", {**SWI_TYPE, "EchoTime": 0.02})
    for sub in ("01", "02"):
        _scan(root / f"sub-{sub}" / "anat" / f"sub-{sub}_T2starw.nii.gz")
    return root


def test_metadata_at_the_root_decides_the_contrast(study: Path) -> None:
    # Only the file's own sidecar was read: each scan went to the T2* model by its suffix, the root's SWI unread.
    d = detect_modality(study / "sub-01" / "anat" / "sub-01_T2starw.nii.gz")
    assert (d.modality, d.source) == ("SWI", "sidecar")
    assert d.reason.startswith("sidecar ../../T2starw.json ImageType") and "SWI" in d.reason
    assert d.conflict == "file name suffix '_T2starw' says T2*"  # and the name's word against it is kept


def test_deeper_files_replace_the_values_above_them(study: Path) -> None:
    # Subject 02 was scanned with a plain T2* GRE: its subject-level file says so, for every session below it.
    _json(study / "sub-02" / "sub-02_T2starw.json", {"ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]})
    scan1 = study / "sub-01" / "anat" / "sub-01_T2starw.nii.gz"
    scan2 = study / "sub-02" / "anat" / "sub-02_T2starw.nii.gz"
    assert detect_modality(scan2).modality == "T2S"
    assert read_sidecar(scan2).fields == {"ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"], "EchoTime": 0.02}
    assert detect_modality(scan1).modality == "SWI"
    # The file's own sidecar is the deepest of all.
    _json(study / "sub-01" / "anat" / "sub-01_T2starw.json", {"ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]})
    assert "ImageType" in phase_reason(scan1)
    assert sidecar_tags(scan1)["image_type"] == "ORIGINAL\\PRIMARY\\P\\ND"


def test_only_files_whose_entities_and_suffix_fit_apply(study: Path, tmp_path: Path) -> None:
    scan = study / "sub-01" / "anat" / "sub-01_T2starw.nii.gz"
    _json(study / "acq-fast_T2starw.json", {"SeriesDescription": "fast"})  # an entity the scan does not have
    _json(study / "T1w.json", {"SeriesDescription": "t1"})  # another suffix
    _json(study / "sub-02_T2starw.json", {"SeriesDescription": "two"})  # another subject
    _json(tmp_path / "T2starw.json", {"SeriesDescription": "above the data set"})  # outside it
    assert applicable_files(scan) == [study / "T2starw.json"]
    assert "SeriesDescription" not in read_sidecar(scan).fields
    # Several files of one folder fit: the most specific one (BIDS allows only one).
    _json(study / "sub-01_T2starw.json", {"SeriesDescription": "one"})
    assert applicable_files(scan) == [study / "sub-01_T2starw.json"]


def test_the_root_without_a_dataset_description_is_above_the_subject_folders(tmp_path: Path) -> None:
    root = tmp_path / "exported"
    scan = _scan(root / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_T2starw.nii.gz")
    _json(root / "T2starw.json", SWI_TYPE)
    _json(tmp_path / "sub-01_ses-1_T2starw.json", {"SeriesDescription": "not of this data set"})
    assert detect_modality(scan).modality == "SWI"
    assert applicable_files(scan) == [root / "T2starw.json"]
    # A name that is not a BIDS name (dcm2niix's) has only its own sidecar.
    other = _scan(root / "sub-01" / "x_swi_20230101_8.nii.gz")
    _json(root / "sub-01" / "8.json", {"ImageType": ["ORIGINAL", "PRIMARY", "P"]})
    assert applicable_files(other) == [] and bids_name("x_swi_20230101_8") is None


def test_a_walk_reads_what_the_root_says(study: Path) -> None:
    # Localizers stored as an (invalid, but met) "scout" suffix: the root states the series of all of them.
    _scan(study / "sub-01" / "anat" / "sub-01_acq-loc_scout.nii.gz")
    _json(study / "acq-loc_scout.json", {"SeriesDescription": "AAHead_Scout"})
    assert classify(study / "sub-01" / "anat" / "sub-01_acq-loc_scout.nii.gz") == "localizer image"


def test_predict_uses_the_model_the_root_names_and_recomputes_when_it_changes(
    study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import plkd.bundle

    installed = tmp_path / "bundled"
    for modality in ("T2S", "SWI"):
        shutil.copytree(BUNDLE, installed / f"cmb-{modality.lower()}")
        manifest = json.loads((installed / f"cmb-{modality.lower()}" / "manifest.json").read_text())
        manifest.update(modality=modality, name=f"tiny-{modality.lower()}")
        (installed / f"cmb-{modality.lower()}" / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(plkd.bundle, "default_bundle_dir", lambda: installed)
    out = tmp_path / "out"
    assert main(["predict", str(study), "-o", str(out), "--progress", "none"]) == 0
    doc = json.loads((out / "sub-01_T2starw_cmb.json").read_text())
    assert doc["model"].startswith("tiny-swi") and doc["modality"]["modality"] == "SWI"
    # The root's file corrected: the images' bytes are unchanged, yet the results are of the other model.
    _json(study / "T2starw.json", {"ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]})
    capsys.readouterr()
    assert main(["predict", str(study), "-o", str(out), "--progress", "none"]) == 0
    assert "recomputing sub-01_T2starw: the contrast is now decided as T2S" in capsys.readouterr().err
    assert json.loads((out / "sub-01_T2starw_cmb.json").read_text())["model"].startswith("tiny-t2s")


def test_lowres_carries_the_inherited_metadata_to_its_output(study: Path, tmp_path: Path) -> None:
    # plkd lowres copied only the file's own sidecar: a thick version written outside the data set lost the root's
    # SWI and was analysed as T2*.
    out = tmp_path / "thick" / "sub-01_lr.nii.gz"
    assert (
        main(["lowres", str(study / "sub-01" / "anat" / "sub-01_T2starw.nii.gz"), "--factor", "2", "--out", str(out)])
        == 0
    )
    side = json.loads((tmp_path / "thick" / "sub-01_lr.json").read_text())
    assert side["ImageType"] == SWI_TYPE["ImageType"] and side["PLKDLowres"]["source"] == "../../T2starw.json"
    assert detect_modality(out).modality == "SWI"


def test_metadata_from_reads_the_original_of_a_copy_as_plkd_reads_the_original(
    study: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # The Slicer module analyses a copy of the loaded volume, named after its node, in a working folder: nothing of
    # the data set's metadata lies beside it. --metadata-from names the original, read as `plkd predict` reads it.
    original = study / "sub-01" / "anat" / "sub-01_T2starw.nii.gz"
    copy = _scan(tmp_path / "work" / "input" / "sub-01_T2starw.nii.gz")
    out = tmp_path / "out"
    args = ["predict", str(copy), "-o", str(out), "--model", str(BUNDLE), "--progress", "none"]
    assert main([*args, f"--metadata-from={original}"]) == 0
    decision = json.loads((out / "sub-01_T2starw_cmb.json").read_text())["modality"]
    assert decision["modality"] == "SWI" and decision["reason"].startswith("sidecar ../../T2starw.json ImageType")
    assert decision["metadata_from"] == str(original)
    # Without it the copy is read by its own name (T2*): the earlier result is not reused.
    capsys.readouterr()
    assert main(args) == 0
    assert "recomputing sub-01_T2starw: the contrast is now decided as T2S" in capsys.readouterr().err
    # Refused before any work, in one line: a missing file, several inputs (one file describes one scan).
    assert main([*args, "--metadata-from", str(tmp_path / "gone.nii.gz")]) == 2
    assert "plkd: error: --metadata-from " in capsys.readouterr().err
    assert main(["predict", str(copy), str(original), *args[2:], "--metadata-from", str(original)]) == 2
    assert "describes one NIfTI input" in capsys.readouterr().err


def test_metadata_from_reads_the_sidecar_and_name_of_other_formats_and_what_a_walk_would_say(tmp_path: Path) -> None:
    from plkd.inference.inputs import ScanInput, with_metadata_from
    from plkd.inference.modality import phase_reason

    copy = _scan(tmp_path / "work" / "volume.nii.gz")
    # A volume Slicer loaded from NRRD (dcm2niix -e y writes NRRD with its JSON sidecar): NAME.json is read.
    nrrd = tmp_path / "data" / "x_swi_3.nrrd"
    nrrd.parent.mkdir()
    nrrd.write_bytes(b"NRRD0004\n")
    _json(tmp_path / "data" / "x_swi_3.json", SWI_TYPE)
    scan = with_metadata_from([ScanInput(copy)], nrrd)
    assert scan.described_by == tmp_path / "data" / "x_swi_3.nii.gz"
    d = detect_modality(scan.described_by)
    assert (d.modality, d.source, d.reason) == ("SWI", "sidecar", "sidecar ImageType 'ORIGINAL PRIMARY M SWI NORM'")
    # What a folder walk would say of the original, not of the copy: another contrast by its name.
    t1 = _scan(tmp_path / "data" / "sub-01_T1w.nii.gz")
    assert with_metadata_from([ScanInput(copy)], t1).caveat == "other contrast (T1w)"
    assert ScanInput(copy).caveat is None and ScanInput(copy).described_by == copy
    phase = _scan(tmp_path / "data" / "x_swi_3_ph.nii.gz")
    assert phase_reason(with_metadata_from([ScanInput(copy)], phase).described_by) is not None
