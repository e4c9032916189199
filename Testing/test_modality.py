"""T2*-GRE or SWI: the contrast read from a scan's metadata, and the model each scan is given."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plkd.cli import main
from plkd.inference.modality import (
    decide_modality,
    detect_modality,
    modality_of_text,
    phase_reason,
    projection_reason,
)

ROOT = Path(__file__).resolve().parents[1]
TINY_BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"
CASE = ROOT / "Testing" / "data" / "tiny-case" / "tiny_T2S.nii.gz"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*swi3d1r", "SWI"),  # Siemens SequenceName of an SWI reconstruction
        ("ORIGINAL\\PRIMARY\\M\\SWI\\NORM\\DIS2D", "SWI"),  # Siemens ImageType
        ("DERIVED\\PRIMARY\\MNIP\\SWI", "SWI"),  # minimum-intensity projection
        ("SWAN 3D", "SWI"),  # GE
        ("swi_3d_gre", "SWI"),  # an SWI protocol is a GRE sequence: SWI wins
        ("T2* GRE axial", "T2S"),
        ("t2_fl2d_tra_hemo", "T2S"),
        ("*fl3d1r", "T2S"),
        ("T2_star_axial", "T2S"),
        ("Ax T2 star", "T2S"),
        ("VEN_BOLD", "SWI"),  # Philips
        ("clearswi", None),  # not the word "swi"
        ("T1w MPRAGE", None),
    ],
)
def test_sequence_words_name_the_contrast(text, expected):
    assert modality_of_text(text) == expected


def _nifti(path: Path, descrip: str = "") -> Path:
    img = nib.load(str(CASE))
    out = nib.Nifti1Image(img.get_fdata(dtype="float32"), img.affine, img.header.copy())
    out.header["descrip"] = descrip.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(path))
    return path


def test_the_most_trusted_source_decides(tmp_path):
    # The BIDS suffix says T2*, the dcm2niix sidecar says SWI: the sidecar is read first.
    scan = _nifti(tmp_path / "sub-01_T2starw.nii.gz")
    assert detect_modality(scan).modality == "T2S" and detect_modality(scan).source == "file name"
    (tmp_path / "sub-01_T2starw.json").write_text(json.dumps({"SequenceName": "*swi3d1r", "EchoTime": 0.02}))
    d = detect_modality(scan)
    assert (d.modality, d.source) == ("SWI", "sidecar") and "*swi3d1r" in d.reason
    # A DICOM series' own tags come before anything else.
    d = detect_modality(scan, {"sequence_name": "*fl3d1r", "series_description": "GRE"})
    assert (d.modality, d.source) == ("T2S", "dicom")


def test_header_description_and_default(tmp_path):
    d = detect_modality(_nifti(tmp_path / "scan.nii.gz", descrip="SWI magnitude"))
    assert (d.modality, d.source) == ("SWI", "header")
    d = detect_modality(_nifti(tmp_path / "other.nii.gz"))
    assert (d.modality, d.source) == ("T2S", "default")


def test_folder_names_are_never_read(tmp_path):
    # The case: a GRE file inside a folder whose name contains "swi".
    scan = _nifti(tmp_path / "clearswi-small" / "sub-01_GRE.nii.gz")
    assert detect_modality(scan).modality == "T2S"


def test_a_stated_modality_is_the_decision():
    assert decide_modality("SWI", "x_T2S.nii.gz").source == "stated"
    assert decide_modality("t2*", "x_swi.nii.gz").modality == "T2S"
    with pytest.raises(ValueError):
        decide_modality("FLAIR", "x.nii.gz")


def _install(folder: Path, modalities: tuple[str, ...]) -> None:
    """Installed bundles: copies of the tiny bundle, one per modality, named after it."""
    for modality in modalities:
        dest = folder / f"cmb-{modality.lower()}"
        shutil.copytree(TINY_BUNDLE, dest)
        manifest = json.loads((dest / "manifest.json").read_text())
        manifest.update(modality=modality, name=f"tiny-{modality.lower()}")
        (dest / "manifest.json").write_text(json.dumps(manifest))


def _doc(out: Path, stem: str) -> dict:
    return json.loads((out / f"{stem}_cmb.json").read_text())


@pytest.fixture
def installed(tmp_path, monkeypatch):
    import plkd.bundle

    folder = tmp_path / "bundled"
    folder.mkdir()
    monkeypatch.setattr(plkd.bundle, "default_bundle_dir", lambda: folder)
    return folder


def test_auto_gives_each_scan_the_model_of_its_contrast(tmp_path, installed, capsys):
    _install(installed, ("T2S", "SWI"))
    scans = tmp_path / "in"
    _nifti(scans / "a_swi.nii.gz")
    _nifti(scans / "b_T2starw.nii.gz")
    _nifti(scans / "c.nii.gz")
    (scans / "c.json").write_text(json.dumps({"ImageType": ["ORIGINAL", "PRIMARY", "M", "SWI"]}))
    out = tmp_path / "out"
    assert main(["predict", str(scans), "-o", str(out), "--progress", "none"]) == 0
    for stem, modality, source in (
        ("a_swi", "SWI", "file name"),
        ("b_T2starw", "T2S", "file name"),
        ("c", "SWI", "sidecar"),
    ):
        doc = _doc(out, stem)
        assert doc["model"].startswith(f"tiny-{modality.lower()}"), (stem, doc["model"])
        assert doc["modality"]["modality"] == modality and doc["modality"]["source"] == source
        assert doc["modality"]["model_modality"] == modality and not any("trained on" in w for w in doc["warnings"])
    # The summary says, scan by scan, which contrast each was taken to be and which model's read it.
    rows = {r["scan"]: r for r in csv.DictReader((out / "plkd_summary.csv").open(encoding="utf-8"))}
    assert {k: (r["modality"], r["model_modality"], r["model"][:8]) for k, r in rows.items()} == {
        "a_swi": ("SWI", "SWI", "tiny-swi"),
        "b_T2starw": ("T2S", "T2S", "tiny-t2s"),
        "c": ("SWI", "SWI", "tiny-swi"),
    }
    # Stating the contrast overrides the metadata, and a different choice is recomputed, not reused.
    assert main(["predict", str(scans), "-o", str(out), "--progress", "none", "--modality", "T2S"]) == 0
    assert all(_doc(out, s)["model"].startswith("tiny-t2s") for s in ("a_swi", "b_T2starw", "c"))
    assert _doc(out, "a_swi")["modality"]["source"] == "stated"
    err = capsys.readouterr().err
    assert "3 done, 0 skipped" in err and "recomputing a_swi: settings changed: modality 'auto' -> 'T2S'" in err


def test_a_missing_model_or_a_mismatch_is_a_warning(tmp_path, installed):
    _install(installed, ("T2S",))
    scan = _nifti(tmp_path / "in" / "a_swi.nii.gz")
    assert main(["predict", str(scan), "-o", str(tmp_path / "o1"), "--progress", "none"]) == 0
    doc = _doc(tmp_path / "o1", "a_swi")
    assert doc["model"].startswith("tiny-t2s")
    assert any("no SWI model is installed" in w for w in doc["warnings"])
    # A given model analyses every scan; a stated contrast it was not trained on is said.
    args = ["predict", str(scan), "-o", str(tmp_path / "o2"), "--model", str(TINY_BUNDLE), "--progress", "none"]
    assert main([*args, "--modality", "SWI"]) == 0
    doc = _doc(tmp_path / "o2", "a_swi")
    assert doc["modality"] == {
        "modality": "SWI",
        "source": "stated",
        "reason": "--modality SWI",
        "conflict": None,
        "stated": "SWI",
        "model_modality": "T2S",
        "model_reason": None,
    }
    assert any("trained on T2* images" in w for w in doc["warnings"])


def test_a_projection_over_slices_is_recognised(tmp_path):
    # Siemens' minimum-intensity projection, by series description, ImageType, BIDS suffix.
    assert projection_reason(tmp_path / "x", {"series_description": "mIP_Images(SW)"}) is not None
    scan = _nifti(tmp_path / "sub-01_swi.nii.gz")
    assert projection_reason(scan) is None
    (tmp_path / "sub-01_swi.json").write_text(json.dumps({"ImageType": ["DERIVED", "PRIMARY", "MNIP", "NORM"]}))
    assert "MNIP" in projection_reason(scan)
    assert projection_reason(_nifti(tmp_path / "sub-02_minIP.nii.gz")) == "the word 'minip' in the file name"
    # The SWI magnitude itself, and words that only contain the letters, are not projections.
    assert projection_reason(tmp_path / "x", {"image_type": ["ORIGINAL", "PRIMARY", "M", "SWI"]}) is None
    assert projection_reason(_nifti(tmp_path / "mipmap_T2starw.nii.gz")) is None
    assert projection_reason(tmp_path / "sub-mip_T2starw.nii.gz") is None  # a subject label, not a projection
    assert projection_reason(tmp_path / "sub-01_rec-minIP_swi.nii.gz") is not None


def test_a_projection_is_analysed_with_a_warning(tmp_path, installed):
    _install(installed, ("T2S", "SWI"))
    scan = _nifti(tmp_path / "in" / "sub-01_minIP.nii.gz")
    assert main(["predict", str(scan), "-o", str(tmp_path / "out"), "--progress", "none"]) == 0
    doc = _doc(tmp_path / "out", "sub-01_minIP")
    assert doc["modality"]["modality"] == "SWI"
    warned = [w for w in doc["warnings"] if "projection over several slices" in w]
    assert len(warned) == 1 and "positions, sizes and counts are unreliable" in warned[0]
    assert warned[0] in doc["notes"]


def test_an_unknown_modality_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(CASE), "-o", str(tmp_path), "--modality", "FLAIR"])
    assert exc.value.code == 2 and "--modality" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


# --- a hostile user's cases: no wrong model, and no right one for a wrong reason, without a word --------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # Philips: the pulse sequence is an FFE (a GRE), the series an SWIp: SWI, whatever the field order.
        ({"PulseSequenceName": "FFE", "SeriesDescription": "SWIp", "ProtocolName": "SWIp"}, "SWI"),
        ({"SequenceName": "*fl3d1r", "ImageType": ["ORIGINAL", "PRIMARY", "M", "SWI", "NORM"]}, "SWI"),
        ({"SequenceName": "*fl2d1", "SeriesDescription": "t2_fl2d_tra_hemo"}, "T2S"),
        ({"SequenceName": "*me2d1r4", "SeriesDescription": "t2_medic_tra"}, "T2S"),  # Siemens MEDIC
        ({"SeriesDescription": "Ax MERGE"}, "T2S"),  # GE's multi-echo GRE
        ({"SeriesDescription": "T2*W_FFE"}, "T2S"),  # Philips
        ({"ImageType": ["ORIGINAL", "PRIMARY", "M"], "ImageTypeText": ["ORIGINAL", "PRIMARY", "M", "SWI"]}, "SWI"),
    ],
)
def test_every_field_of_a_source_is_read(tmp_path, fields, expected):
    scan = _nifti(tmp_path / "scan.nii.gz")
    (tmp_path / "scan.json").write_text(json.dumps(fields), encoding="utf-8-sig")  # as Windows Notepad saves it
    d = detect_modality(scan)
    assert (d.modality, d.source, d.conflict) == (expected, "sidecar", None)  # a GRE-family word is SWI's own
    # The same tags read from a DICOM series (those it has).
    keys = {"SequenceName": "sequence_name", "ImageType": "image_type", "SeriesDescription": "series_description"}
    record = {keys[k]: "\\".join(v) if isinstance(v, list) else v for k, v in fields.items() if k in keys}
    if set(fields) <= set(keys):
        assert detect_modality(tmp_path / "series-3", record).modality == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sub-swi01_ses-gre2_run-1.nii.gz", None),  # a study's labels, not sequences
        ("swi01.nii.gz", None),
        ("sub-swi01-T2starw.nii.gz", "T2S"),  # the Slicer module's input file name ("_" made "-")
        ("sub-01_acq-swi_run-1.nii.gz", "SWI"),  # acq- describes the sequence
        ("sub-01_acq-swi_part-mag_GRE.nii.gz", "T2S"),  # the BIDS suffix decides (the GRE magnitude itself)
        ("sub-01_rec-minIP_swi.nii.gz", "SWI"),
        ("sub-01_SWI.nii.gz", "SWI"),
        ("sub-01_T2starw.nii.gz", "T2S"),
    ],
)
def test_only_names_of_sequences_count(name, expected):
    d = detect_modality(name)
    assert (d.modality if d.source == "file name" else None) == expected, d


def test_a_phase_image_is_recognised(tmp_path):
    from plkd.inference.inputs import classify

    siemens_phase = {"sequence_name": "*swi3d1r", "image_type": "ORIGINAL\\PRIMARY\\P\\ND"}
    assert "ImageType" in phase_reason(tmp_path / "series-4", siemens_phase)
    assert "Pha_Images" in phase_reason(tmp_path / "series-5", {"series_description": "Pha_Images"})
    scan = _nifti(tmp_path / "sub-01_swi.nii.gz")
    assert phase_reason(scan) is None
    (tmp_path / "sub-01_swi.json").write_text(json.dumps({"ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]}))
    assert "ImageType" in phase_reason(scan)
    for name in ("sub-01_part-phase_swi.nii.gz", "swi_e1_ph.nii.gz", "sub-01_swi_phase.nii"):
        assert phase_reason(tmp_path / name) is not None, name
        assert classify(tmp_path / name) == "phase image", name  # and a folder walk skips it
    # Maps computed from the same acquisition are no magnitude images either: a walk skips them.
    assert classify(tmp_path / "sub-01_T2starmap.nii.gz") == "quantitative map (T2starmap)"
    assert classify(tmp_path / "sub-01_Chimap.nii.gz") == "quantitative map (Chimap)"
    assert "ImageType" in phase_reason(tmp_path / "series-7", {"image_type": "ORIGINAL\\PRIMARY\\R\\ND"})  # real
    for magnitude in ({"image_type": "ORIGINAL\\PRIMARY\\M\\SWI"}, {"series_description": "SWI_Images"}):
        assert phase_reason(tmp_path / "series-6", magnitude) is None
    assert phase_reason(tmp_path / "sub-01_acq-graph_T2starw.nii.gz") is None


def test_a_phase_image_named_is_analysed_with_a_warning(tmp_path, installed):
    _install(installed, ("T2S", "SWI"))
    scan = _nifti(tmp_path / "in" / "sub-01_part-phase_swi.nii.gz")
    assert main(["predict", str(scan), "-o", str(tmp_path / "out"), "--progress", "none"]) == 0
    doc = _doc(tmp_path / "out", "sub-01_part-phase_swi")
    warned = [w for w in doc["warnings"] if "looks like a phase image" in w]
    assert len(warned) == 1 and warned[0] in doc["notes"]


def test_evidence_against_the_decision_is_said(tmp_path, installed, capsys):
    _install(installed, ("T2S", "SWI"))
    scans = tmp_path / "in"
    # The file name says SWI, the dcm2niix sidecar GRE: the sidecar decides, and the name's word is not lost.
    scan = _nifti(scans / "sub-01_swi.nii.gz")
    (scans / "sub-01_swi.json").write_text(json.dumps({"SequenceName": "*fl2d1", "SeriesDescription": "t2_gre"}))
    d = detect_modality(scan)
    assert (d.modality, d.source, d.conflict) == ("T2S", "sidecar", "file name suffix '_swi' says SWI")
    # Within one source: SWI wins, and a field naming a T2* sequence that is not SWI is said.
    d = detect_modality(tmp_path / "series-9", {"sequence_name": "*swi3d1r", "series_description": "t2star_hemo"})
    assert (d.modality, d.conflict) == ("SWI", "dicom SeriesDescription 't2star_hemo' says T2*")
    # Against SWI only a T2* sequence counts: "_GRE" (the BIDS name of SWI's own GRE magnitude) does not.
    swi_sidecar = json.dumps({"SequenceName": "*swi3d1r"})
    for name, conflict in (("sub-03_GRE", None), ("sub-03_T2starw", "file name suffix '_T2starw' says T2*")):
        (scans / f"{name}.json").write_text(swi_sidecar)
        assert detect_modality(_nifti(scans / f"{name}.nii.gz")).conflict == conflict
    # Agreeing sources leave no conflict; a stated modality the scan contradicts keeps the evidence.
    assert detect_modality(_nifti(scans / "sub-02_swi.nii.gz")).conflict is None
    assert decide_modality("SWI", scan).conflict == "sidecar SequenceName '*fl2d1' says T2*"
    assert decide_modality("T2S", scan).conflict is None
    out = tmp_path / "out"
    assert main(["predict", str(scan), "-o", str(out), "--progress", "tqdm"]) == 0
    doc = _doc(out, "sub-01_swi")
    assert doc["model"].startswith("tiny-t2s") and doc["modality"]["conflict"] == "file name suffix '_swi' says SWI"
    warned = [w for w in doc["warnings"] if "file name suffix '_swi' says SWI" in w]
    assert len(warned) == 1 and "taken as T2*" in warned[0] and warned[0] in doc["notes"]
    # The line on the terminal says what the JSON says.
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("sub-01_swi: "))
    assert line.endswith("; T2* model (sidecar SequenceName '*fl2d1')"), line
    assert main(["predict", str(scan), "-o", str(out), "--progress", "none", "--modality", "SWI"]) == 0
    doc = _doc(out, "sub-01_swi")
    assert doc["model"].startswith("tiny-swi")
    assert any("--modality SWI" in w and "says T2*" in w for w in doc["warnings"])


def test_the_terminal_line_names_the_model_used_and_the_contrast(tmp_path, installed, capsys):
    _install(installed, ("T2S",))
    scan = _nifti(tmp_path / "in" / "sub-01_swi.nii.gz")
    assert main(["predict", str(scan), "-o", str(tmp_path / "o1"), "--progress", "tqdm"]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("sub-01_swi: "))
    # The T2* model analysed it: not "T2* model (file name suffix '_swi')", as if the suffix had said T2*.
    assert line.endswith("; T2* model for an SWI scan (file name suffix '_swi')"), line
    row = next(x for x in err.splitlines() if x.startswith("sub-01_swi  done"))  # the summary table
    assert "SWI, T2* model" in row, row
    args = ["predict", str(scan), "-o", str(tmp_path / "o2"), "--progress", "tqdm", "--model", str(TINY_BUNDLE)]
    assert main(args) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("sub-01_swi: "))
    assert line.endswith("; T2* model for an SWI scan (file name suffix '_swi')"), line
    doc = _doc(tmp_path / "o2", "sub-01_swi")
    assert (doc["modality"]["modality"], doc["modality"]["model_modality"]) == ("SWI", "T2S")


def test_a_given_model_is_the_contrast_of_a_scan_without_evidence(tmp_path, installed):
    _install(installed, ("T2S", "SWI"))
    swi_model = installed / "cmb-swi"
    scan = _nifti(tmp_path / "in" / "scan.nii.gz")
    out = tmp_path / "out"
    assert main(["predict", str(scan), "-o", str(out), "--progress", "none", "--model", str(swi_model)]) == 0
    doc = _doc(out, "scan")
    # Not "T2S by default" beside an SWI model, with no warning: the JSON agrees with itself.
    assert doc["modality"]["modality"] == "SWI" and doc["modality"]["source"] == "model"
    assert doc["modality"]["model_modality"] == "SWI" and not any("trained on" in w for w in doc["warnings"])
    # Evidence still decides: a Siemens MEDIC (a T2* GRE) given to the SWI model is a mismatch, said.
    (tmp_path / "in" / "scan.json").write_text(json.dumps({"SequenceName": "*me2d1r4"}))
    assert main(["predict", str(scan), "-o", str(out), "--progress", "none", "--model", str(swi_model)]) == 0
    doc = _doc(out, "scan")
    assert (doc["modality"]["modality"], doc["modality"]["source"]) == ("T2S", "sidecar")
    assert any("trained on SWI images" in w for w in doc["warnings"])


def test_an_installed_bundle_of_another_contrast_is_said(tmp_path, installed):
    # cmb-swi replaced by a T2* bundle (its manifest says so): SWI scans go to it, but not in silence.
    _install(installed, ("T2S", "SWI"))
    manifest = installed / "cmb-swi" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "modality": "T2S"}))
    scan = _nifti(tmp_path / "in" / "sub-01_swi.nii.gz")
    assert main(["predict", str(scan), "-o", str(tmp_path / "out"), "--progress", "none"]) == 0
    doc = _doc(tmp_path / "out", "sub-01_swi")
    assert doc["model"].startswith("tiny-swi") and doc["modality"]["model_modality"] == "T2S"
    assert any("trained on T2* images" in w for w in doc["warnings"])


def test_a_manifest_may_write_the_contrast_as_people_do():
    from plkd.inference.model_choice import ChosenModel

    def chosen(value):
        return ChosenModel(type("Bundle", (), {"manifest": {"modality": value}})(), "b", None).modality

    assert [chosen(v) for v in ("T2*", "t2s", "swi", None, "FLAIR")] == ["T2S", "T2S", "SWI", None, "FLAIR"]


def test_a_dicom_series_is_decided_by_its_own_tags(tmp_path, installed):
    from test_predict_dicom import write_series

    _install(installed, ("T2S", "SWI"))
    img = nib.load(str(CASE))
    data = np.asarray(img.dataobj, dtype=np.float32) * 10
    # A folder named like a T2* series holding Siemens SWI magnitude, and the phase series of the same protocol.
    swi = {"0018|0024": "*swi3d1r", "0008|0008": "ORIGINAL\\PRIMARY\\M\\SWI\\NORM", "0008|103e": "SWI_Images"}
    write_series(tmp_path / "in" / "t2star_gre", data, img.affine, "1.2.826.0.1.3680043.8.498.71", tags=swi)
    phase = {**swi, "0008|0008": "ORIGINAL\\PRIMARY\\P\\ND", "0008|103e": "Pha_Images"}
    write_series(tmp_path / "in" / "series-8", data, img.affine, "1.2.826.0.1.3680043.8.498.72", tags=phase)
    out = tmp_path / "out"
    # The phase series named by one of its files (a folder walk skips phase series; a file named is analysed).
    inputs = [str(tmp_path / "in" / "t2star_gre"), str(tmp_path / "in" / "series-8" / "IM0000.dcm")]
    assert main(["predict", *inputs, "-o", str(out), "--progress", "none"]) == 0
    doc = _doc(out, "t2star_gre")
    assert (doc["modality"]["modality"], doc["modality"]["source"]) == ("SWI", "dicom")
    assert doc["model"].startswith("tiny-swi") and "SequenceName '*swi3d1r'" in doc["modality"]["reason"]
    assert doc["modality"]["conflict"] == "file name suffix '_gre' says T2*"  # the folder is the series' name
    doc = _doc(out, "series-8")
    assert any("looks like a phase image, not a magnitude one (dicom ImageType" in w for w in doc["warnings"])


def test_tune_takes_the_installed_model_of_the_subjects_contrast(tmp_path, installed):
    # plkd tune without --model took the T2* model whatever the subjects: SWI validation subjects tuned it silently.
    from plkd.data.datasets import Subject
    from plkd.inference.model_choice import model_for_subjects

    _install(installed, ("T2S", "SWI"))
    swi = [
        Subject("sub-01", tmp_path / "a.nii.gz", meta={"modality": "SWI"}),
        Subject("sub-02", tmp_path / "b_swi.nii"),
    ]
    bundle, warning = model_for_subjects(None, swi)
    assert bundle.manifest["modality"] == "SWI" and warning is None
    t2s = [Subject("sub-03", tmp_path / "sub-03_T2starw.nii.gz")]
    assert model_for_subjects(None, t2s)[0].manifest["modality"] == "T2S"
    # Subjects of both contrasts, or a given model of the other one: tuned as asked, and said.
    bundle, warning = model_for_subjects(None, swi + t2s)
    assert bundle.manifest["modality"] == "T2S" and warning.startswith("2 SWI subject(s), but the model tiny-t2s")
    assert "trained on T2* images" in model_for_subjects(str(TINY_BUNDLE), swi)[1]


def test_a_click_on_a_result_of_the_other_model_is_said(tmp_path, installed):
    _install(installed, ("T2S", "SWI"))
    scan = _nifti(tmp_path / "in" / "a_swi.nii.gz")
    assert main(["predict", str(scan), "-o", str(tmp_path / "out"), "--progress", "none"]) == 0
    centre = json.loads((CASE.parent / "truth.json").read_text())["centres_ras"][0]
    click = ["predict", str(scan), "--at-ras=" + ",".join(map(str, centre)), "--progress", "none"]
    click += ["--existing", str(tmp_path / "out" / "a_swi_cmb.json")]
    assert main([*click, "-o", str(tmp_path / "same")]) == 0  # auto: the SWI model again, nothing to say
    assert not any("--existing" in w for w in _doc(tmp_path / "same", "a_swi")["warnings"])
    assert main([*click, "-o", str(tmp_path / "other"), "--modality", "T2S"]) == 0
    warned = [w for w in _doc(tmp_path / "other", "a_swi")["warnings"] if "--existing a_swi_cmb.json" in w]
    assert len(warned) == 1 and "segmented by the T2* model" in warned[0] and "made by the SWI model" in warned[0]


def _thick(path: Path, slice_mm: float) -> Path:
    """The tiny case with its header saying slices ``slice_mm`` thick (the voxels are the same)."""
    img = nib.load(str(CASE))
    affine = img.affine.copy()
    affine[:3, 2] *= slice_mm / float(np.linalg.norm(affine[:3, 2]))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(img.get_fdata(dtype="float32"), affine), str(path))
    return path


def _hand_thick_slices_over(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["thick_slices"] = {
        "from_lr_factor": 3.5,
        "below_lr_factor": 5.66,
        "model_modality": "T2S",
        "why": "F1 58.6 vs 53.5",
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_thick_swi_slices_are_handed_to_the_model_the_swi_bundle_names(tmp_path, installed, capsys):
    _install(installed, ("T2S", "SWI"))
    _hand_thick_slices_over(installed / "cmb-swi")
    scans = tmp_path / "in"
    _thick(scans / "thick_swi.nii.gz", 4.0)
    _thick(scans / "thin_swi.nii.gz", 1.0)
    _thick(scans / "three_swi.nii.gz", 3.0)
    _thick(scans / "six_swi.nii.gz", 6.0)
    _thick(scans / "thick_T2starw.nii.gz", 4.0)
    out = tmp_path / "out"
    assert main(["predict", str(scans), "-o", str(out), "--progress", "tqdm"]) == 0
    err = capsys.readouterr().err
    thick = _doc(out, "thick_swi")
    assert thick["model"].startswith("tiny-t2s")
    assert (thick["modality"]["modality"], thick["modality"]["model_modality"]) == ("SWI", "T2S")
    reason = thick["modality"]["model_reason"]
    assert "LR factor 4" in reason and "from 3.5 to below 5.66 the SWI model hands them to the T2* model" in reason
    assert "F1 58.6 vs 53.5" in reason
    # The tool's own choice, not a mismatch: no "trained on T2* images" warning.
    assert not any("trained on" in w for w in thick["warnings"])
    line = next(x for x in err.splitlines() if x.startswith("thick_swi: "))
    assert line.endswith(f"; T2* model for an SWI scan (file name suffix '_swi'; {reason})"), line
    kept = (("thin_swi", "tiny-swi"), ("three_swi", "tiny-swi"), ("six_swi", "tiny-swi"), ("thick_T2starw", "tiny-t2s"))
    for stem, model in kept:
        doc = _doc(out, stem)
        assert doc["model"].startswith(model) and doc["modality"]["model_reason"] is None, (stem, doc["model"])
    # Stated SWI is handed over the same way; --lr-factor is the thickness the rule reads when given.
    stated = ["--modality", "SWI", "--progress", "none"]
    assert (
        main(["predict", str(scans / "thin_swi.nii.gz"), "-o", str(tmp_path / "lr"), "--lr-factor", "4", *stated]) == 0
    )
    doc = _doc(tmp_path / "lr", "thin_swi")
    assert doc["model"].startswith("tiny-t2s") and "LR factor 4 (--lr-factor)" in doc["modality"]["model_reason"]
    # A model given with --model is always the one used.
    given = ["--model", str(installed / "cmb-swi")]
    assert main(["predict", str(scans / "thick_swi.nii.gz"), "-o", str(tmp_path / "given"), *given, *stated]) == 0
    doc = _doc(tmp_path / "given", "thick_swi")
    assert doc["model"].startswith("tiny-swi") and doc["modality"]["model_reason"] is None


def test_no_hand_over_without_the_model_it_names(tmp_path, installed):
    _install(installed, ("SWI",))
    _hand_thick_slices_over(installed / "cmb-swi")
    scan = _thick(tmp_path / "in" / "thick_swi.nii.gz", 4.0)
    assert main(["predict", str(scan), "-o", str(tmp_path / "out"), "--progress", "none"]) == 0
    doc = _doc(tmp_path / "out", "thick_swi")
    assert doc["model"].startswith("tiny-swi") and doc["modality"]["model_reason"] is None
    assert not any("model" in w for w in doc["warnings"])


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("4 mm", "'thick_slices' must be an object"),
        ({"from_lr_factor": 0.5, "model_modality": "T2S"}, "from_lr_factor' must be a number, 1 to 16"),
        ({"from_lr_factor": "4", "model_modality": "T2S"}, "from_lr_factor' must be a number, 1 to 16"),
        ({"from_lr_factor": 4, "model_modality": "FLAIR"}, "'thick_slices.model_modality' must be one of T2S, SWI"),
        (
            {"from_lr_factor": 4, "below_lr_factor": 4, "model_modality": "T2S"},
            "below_lr_factor' must be a number above",
        ),
        ({"from_lr_factor": 4, "model_modality": "T2S", "why": 3}, "'thick_slices.why' must be a string"),
    ],
)
def test_a_malformed_hand_over_is_refused_when_the_bundle_loads(tmp_path, entry, problem):
    from plkd.bundle import load_bundle
    from plkd.errors import BundleError

    bundle = tmp_path / "b"
    shutil.copytree(TINY_BUNDLE, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["thick_slices"] = entry
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=problem.replace("*", r"\*")):
        load_bundle(bundle)
