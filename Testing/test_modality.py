"""T2*-GRE or SWI: the contrast read from a scan's metadata, and the model each scan is given."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import pytest

from plkd.cli import main
from plkd.inference.modality import decide_modality, detect_modality, modality_of_text, projection_reason

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
        "stated": "SWI",
        "model_modality": "T2S",
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
