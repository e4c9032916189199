"""``plkd predict --metadata-from``: the original of a copy is read whatever its format, as plkd reads that format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from plkd.cli import main
from plkd.inference.inputs import ScanInput, with_metadata_from
from plkd.inference.modality import detect_modality

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"
CASE = ROOT / "Testing" / "data" / "tiny-case" / "tiny_T2S.nii.gz"
SWI_TYPE = {"ImageType": ["ORIGINAL", "PRIMARY", "M", "SWI", "NORM"]}


@pytest.mark.parametrize(
    "name", ["x_study_3.mgz", "x_study_3.mgh.gz", "x_study_3.hdr", "x_study_3.vtk", "x_study_3.nii.bz2"]
)
def test_the_sidecar_of_an_original_in_any_image_format_is_read(tmp_path: Path, name: str) -> None:
    # Slicer loads FreeSurfer, Analyze and VTK volumes too; the module read their NAME.json before it passed the
    # file with --metadata-from, which read no sidecar of them: the SWI scan went to the T2* model without a word.
    copy = Path(shutil.copy(CASE, tmp_path / "volume.nii.gz"))
    original = tmp_path / "data" / name
    original.parent.mkdir()
    original.write_bytes(b"\0" * 16)
    (tmp_path / "data" / "x_study_3.json").write_text(json.dumps(SWI_TYPE))
    d = detect_modality(with_metadata_from([ScanInput(copy)], original).described_by)
    assert (d.modality, d.source) == ("SWI", "sidecar")


def test_a_dicom_original_is_read_for_its_series_tags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # A NIfTI copy of a DICOM series (a converter that writes no sidecar): --metadata-from the series' file or
    # folder read nothing of it (no sidecar, no header) and the SWI series was analysed with the T2* model as
    # "no sequence information".
    pytest.importorskip("SimpleITK")
    import numpy as np
    from test_predict_dicom import _case, write_series

    data, affine, _truth = _case()
    series = tmp_path / "dicom" / "series-7"
    tags = {"0008|103e": "study 4711", "0008|0008": "ORIGINAL\\PRIMARY\\M\\SWI", "0018|0020": "GR"}
    write_series(series, data[..., :8] * 10, np.diag([1.0, 1.0, 2.0, 1.0]), "1.2.826.0.1.3680043.8.498.91", tags=tags)
    (tmp_path / "work").mkdir()
    copy = Path(shutil.copy(CASE, tmp_path / "work" / "volume.nii.gz"))
    out = tmp_path / "out"
    args = ["predict", str(copy), "-o", str(out), "--model", str(BUNDLE), "--progress", "none", "--device", "cpu"]
    for source in (sorted(series.iterdir())[0], series):
        assert main([*args, f"--metadata-from={source}", "--overwrite"]) == 0, capsys.readouterr().err
        decision = json.loads((out / "volume_cmb.json").read_text())["modality"]
        assert decision["modality"] == "SWI" and decision["reason"].startswith("dicom ImageType"), decision
        assert decision["metadata_from"] == str(source)
    capsys.readouterr()
    assert main([*args, f"--metadata-from={series}"]) == 0  # the rerun check reads the same tags: reused
    assert "skipped volume: finished earlier" in capsys.readouterr().err
    # A folder of several series describes no one scan: refused in one line, before any work.
    write_series(series, data[..., :8] * 10, np.diag([1.0, 1.0, 2.0, 1.0]), "1.2.826.0.1.3680043.8.498.92", prefix="b")
    capsys.readouterr()
    assert main([*args, f"--metadata-from={series}"]) == 2
    assert "plkd: error: --metadata-from" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name",
    ["sub-01_part-real_T2starw", "sub-01_part-imag_T2starw", "sub-01_echo-2_part-imag_MEGRE", "x_swi_3_real",
     "x_swi_3_imaginary"],
)  # fmt: skip
def test_real_and_imaginary_parts_are_not_taken_for_magnitude_images(tmp_path: Path, name: str) -> None:
    # BIDS part-real/part-imag and dcm2niix's _real/_imaginary hold the signed parts of a complex image, which
    # ImageType R/I already marked as not magnitude: by name, a walk took them and counted "microbleeds" on them.
    from plkd.inference.input_kinds import classify
    from plkd.inference.modality import phase_reason

    scan = Path(shutil.copy(CASE, tmp_path / f"{name}.nii.gz"))
    assert classify(scan) == "phase image"
    assert "real or imaginary" in (phase_reason(scan) or "")
    for magnitude in ("sub-01_part-mag_T2starw", "x_swi_3", "sub-01_acq-realtime_swi"):
        assert phase_reason(Path(shutil.copy(CASE, tmp_path / f"{magnitude}.nii.gz"))) is None


@pytest.mark.parametrize("named", ["scan.hdr", "scan.img"])
def test_a_nifti_pair_original_is_read_for_its_header_text(tmp_path: Path, named: str) -> None:
    """``--metadata-from`` a NIfTI pair (SPM's ``.hdr`` + ``.img``) read the header text of ``x.nii.gz``, a file that
    does not exist, so the SWI pair's copy went to the T2* model as "no sequence information"; a pair analysed
    itself read no header text or sidecar either."""
    import nibabel as nib
    import numpy as np

    pair = nib.Nifti1Pair(np.random.default_rng(0).random((6, 7, 8)).astype(np.float32), np.eye(4))
    pair.header["descrip"] = b"SWI_Images"
    (tmp_path / "orig").mkdir()
    nib.save(pair, str(tmp_path / "orig" / "scan.hdr"))  # no word of SWI in the name: only the header says it
    copy = Path(shutil.copy(CASE, tmp_path / "volume.nii.gz"))
    original = tmp_path / "orig" / named
    d = detect_modality(with_metadata_from([ScanInput(copy)], original).described_by)
    assert (d.modality, d.source) == ("SWI", "header")
    assert detect_modality(tmp_path / "orig" / "scan.hdr").modality == "SWI"  # the pair itself
    # Its own sidecar (scan.json) is read too.
    (tmp_path / "orig" / "scan.json").write_text(json.dumps(SWI_TYPE))
    assert detect_modality(tmp_path / "orig" / "scan.hdr").source == "sidecar"
