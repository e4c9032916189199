"""DICOM Scanning Sequence (0018,0020) and Sequence Variant (0018,0021): what they may conclude, and what not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from plkd.cli import main
from plkd.inference.input_kinds import classify, classify_series
from plkd.inference.inputs import expand_inputs
from plkd.inference.modality import detect_modality

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"
CASE = ROOT / "Testing" / "data" / "tiny-case" / "tiny_T2S.nii.gz"


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        ({"scanning_sequence": "SE"}, "other contrast (no gradient echo: ScanningSequence 'SE')"),  # T2 TSE
        ({"scanning_sequence": "SE\\IR"}, "other contrast (no gradient echo: ScanningSequence 'SE\\IR')"),  # FLAIR
        ({"scanning_sequence": "SE\\EP"}, "other contrast (no gradient echo: ScanningSequence 'SE\\EP')"),  # DWI
        (
            {"scanning_sequence": "GR\\IR", "sequence_variant": "SK\\SP\\MP"},  # MPRAGE
            "other contrast (a T1-weighted prepared gradient echo: ScanningSequence 'GR\\IR', "
            "SequenceVariant 'SK\\SP\\MP')",
        ),
        (
            {"scanning_sequence": "GR_IR"},
            "other contrast (a T1-weighted prepared gradient echo: ScanningSequence 'GR_IR')",
        ),  # dcm2niix's spelling  # fmt: skip
        ({"scanning_sequence": "GR\\EP"}, "other contrast (an echo-planar gradient echo: ScanningSequence 'GR\\EP')"),
        ({"scanning_sequence": "GR", "sequence_variant": "SP\\OSP"}, None),  # T2*-GRE or SWI: taken
        ({"scanning_sequence": "GR", "series_description": "study 4711"}, None),
        # Words that name T2* or SWI are the stronger evidence: taken (and warned about when analysed).
        ({"scanning_sequence": "SE", "series_description": "SWI_Images"}, None),
        ({}, None),
    ],
)
def test_a_walk_skips_series_that_are_no_gradient_echo(tags: dict, reason: str | None) -> None:
    # The tags were not read: a series whose description named nothing was analysed as T2* whatever it was.
    assert classify_series({"modality": "MR", **tags}) == reason


def test_gradient_echo_is_weak_evidence(tmp_path: Path) -> None:
    # "GR" is T2*-GRE's value and SWI's: it never decides between them, nor argues against SWI.
    d = detect_modality(tmp_path / "series-3", {"scanning_sequence": "GR"})
    assert (d.modality, d.source, d.conflict) == ("T2S", "default", None)
    assert "dicom ScanningSequence 'GR' says gradient echo" in d.reason and "SWI" in d.reason
    d = detect_modality(tmp_path / "series-3", {"scanning_sequence": "GR", "sequence_name": "*swi3d1r"})
    assert (d.modality, d.source, d.conflict) == ("SWI", "dicom", None)
    scan = Path(shutil.copy(CASE, tmp_path / "sub-01_swi.nii.gz"))
    (tmp_path / "sub-01_swi.json").write_text(json.dumps({"ScanningSequence": "GR", "SequenceVariant": "SP"}))
    d = detect_modality(scan)
    assert (d.modality, d.source, d.conflict) == ("SWI", "file name", None)


def test_a_spin_echo_scan_is_skipped_by_a_walk_and_warned_about_when_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # dcm2niix names say nothing; the sidecar's ScanningSequence says it is a spin echo (a T2 TSE).
    folder = tmp_path / "visit"
    folder.mkdir()
    tse = Path(shutil.copy(CASE, folder / "x_study_20230101_5.nii.gz"))
    (folder / "x_study_20230101_5.json").write_text(json.dumps({"ScanningSequence": "SE", "SequenceVariant": "SK"}))
    said = "no gradient echo: ScanningSequence 'SE'"
    assert classify(tse) == f"other contrast ({said})"
    assert expand_inputs([folder]).scans == []
    # A T2starw-named file whose sidecar says spin echo: taken for its name, analysed with one warning and a note.
    named = Path(shutil.copy(CASE, folder / "sub-01_T2starw.nii.gz"))
    (folder / "sub-01_T2starw.json").write_text(json.dumps({"ScanningSequence": "SE"}))
    assert [s.path for s in expand_inputs([folder]).scans] == [named]
    out = tmp_path / "out"
    args = ["--model", str(BUNDLE), "--device", "cpu", "--progress", "none", "-o", str(out)]
    assert main(["predict", str(named), *args]) == 0
    assert main(["predict", str(tse), *args]) == 0
    for stem in ("sub-01_T2starw", "x_study_20230101_5"):
        doc = json.loads((out / f"{stem}_cmb.json").read_text())
        assert sum(said in note for note in doc["notes"]) == 1, doc["notes"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and said in r.getMessage()]
    assert len(warned) == 2, warned


def test_dicom_series_are_read_for_their_scanning_sequence(tmp_path: Path) -> None:
    pytest.importorskip("SimpleITK")
    import numpy as np
    from test_predict_dicom import _case, write_series

    from plkd.dicom import load_dicom_series

    data, _affine, _truth = _case()
    visit = tmp_path / "visit"
    uid = "1.2.826.0.1.3680043.8.498.77{}"
    for n, (name, sequence) in enumerate((("a", "SE"), ("b", "GR"))):
        tags = {"0008|103e": "study 4711", "0018|0020": sequence}
        write_series(visit, data[..., :8] * 10, np.diag([1.0, 1.0, 2.0, 1.0]), uid.format(n), tags=tags, prefix=name)
    found = expand_inputs([visit])
    assert [s.series.uid for s in found.scans] == [uid.format(1)]
    assert [reason for _path, reason in found.skipped] == ["other contrast (no gradient echo: ScanningSequence 'SE')"]
    _volume, record = load_dicom_series(found.scans[0].series)
    assert record["scanning_sequence"] == "GR"
    assert "ScanningSequence 'GR'" in detect_modality(visit, record).reason


def test_a_given_model_keeps_what_the_default_rested_on(tmp_path: Path) -> None:
    from plkd.inference.model_choice import ModelChooser

    chooser = ModelChooser(BUNDLE, "auto", lambda bundle: None)
    d = chooser.decide(tmp_path / "series-3", {"scanning_sequence": "GR"})
    assert d.source == "model" and d.reason.startswith("dicom ScanningSequence 'GR' says gradient echo")
    assert "taken as T2*, the contrast of the given model" in d.reason
