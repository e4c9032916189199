"""``plkd predict`` over an archive as researchers keep one: subjects linked in from elsewhere, folders and
patterns that give nothing or cannot be read, files in formats plkd does not read, DICOM exports and dcm2niix
conversions holding every series of a visit, reference labels where the outputs go, copies of one scan,
reruns over part of a folder or with more shards than scans. Nothing may be left out, analysed as a T2*/SWI
scan or replaced without a word.

Inputs are built in the test: tiny NIfTI files for the folder walks, the tiny case for the runs.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plkd.cli import main
from plkd.dicom import DicomSeries
from plkd.errors import InputError
from plkd.inference.batch import predict_files
from plkd.inference.input_kinds import classify_series
from plkd.inference.inputs import ScanInput, assign_stems, expand_inputs, separate_echo_notes

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"
CASE = ROOT / "Testing" / "data" / "tiny-case" / "tiny_T2S.nii.gz"


def _predict(*args: str) -> int:
    return main(["predict", *args, "--model", str(BUNDLE), "--device", "cpu", "--progress", "none"])


def _touch_nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), str(path))
    return path


def test_linked_subject_folders_are_walked_once(tmp_path: Path) -> None:
    # os.walk does not enter linked folders: a study whose subjects are links into the raw store gave no scan
    # of them (or, beside real folders, silently fewer results).
    raw = tmp_path / "raw"
    images = [_touch_nifti(raw / "4711" / "sub-01_T2S.nii.gz"), _touch_nifti(raw / "4712" / "sub-02_T2S.nii.gz")]
    real = _touch_nifti(tmp_path / "study" / "sub-03" / "sub-03_T2S.nii.gz")
    (tmp_path / "study" / "sub-01").symlink_to(raw / "4711", target_is_directory=True)
    (tmp_path / "study" / "sub-02").symlink_to(raw / "4712", target_is_directory=True)
    (tmp_path / "study" / "sub-02" / "loop").symlink_to(tmp_path / "study", target_is_directory=True)  # a cycle
    (tmp_path / "study" / "again").symlink_to(raw / "4711", target_is_directory=True)  # one folder, two links
    found = expand_inputs([tmp_path / "study"])
    assert sorted(s.path.resolve() for s in found.scans) == sorted([*images, real])
    assert sorted(s.stem for s in found.scans) == ["sub-01_T2S", "sub-02_T2S", "sub-03_T2S"]
    # Scans of one name, and DICOM series, are named after the linked folders, not the raw store's (4711_T2S).
    linked = tmp_path / "linked"
    for sub, raw_id in (("sub-01", "4711"), ("sub-02", "4712")):
        _touch_nifti(raw / "named" / raw_id / "T2S.nii.gz")
        (linked / sub).parent.mkdir(exist_ok=True)
        (linked / sub).symlink_to(raw / "named" / raw_id, target_is_directory=True)
    assert sorted(s.stem for s in expand_inputs([linked]).scans) == ["sub-01_T2S", "sub-02_T2S"]
    series = ScanInput(linked / "sub-01", series=DicomSeries(linked / "sub-01", "1.2.3", ()))
    assert [s.stem for s in assign_stems([series])] == ["sub-01"]


def test_a_folder_or_pattern_that_gives_no_scan_fails_in_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # A pattern with a typo, or a folder converted to another format, added nothing, and the run ended
    # "1 done, 0 failed", exit 0, its summary one row short with nothing saying so.
    shutil.copy(CASE, tmp_path / "s1_T2S.nii.gz")
    (tmp_path / "mgz").mkdir()
    (tmp_path / "mgz" / "s2_T2S.mgz").write_bytes(b"\0" * 64)
    _touch_nifti(tmp_path / "mgz" / "s2_T1w.nii.gz")
    out = tmp_path / "out"
    pattern = str(tmp_path / "nifti" / "*.nii.gz")
    assert _predict(str(tmp_path / "s1_T2S.nii.gz"), str(tmp_path / "mgz"), pattern, "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert f"plkd: error: {pattern}: matches no file" in err.splitlines()
    assert (
        f"plkd: error: {tmp_path / 'mgz'}: holds no NIfTI image or DICOM series to analyse (not analysed: "
        "not NIfTI or DICOM (.mgz: convert it to NIfTI): 1, other contrast (T1w): 1)"
    ) in err.splitlines()
    assert "1 done, 0 skipped, 2 failed of 3" in err
    rows = list(csv.DictReader((out / "plkd_summary.csv").open()))
    assert sorted((r["input"], r["status"]) for r in rows) == sorted(
        [(str(tmp_path / "s1_T2S.nii.gz"), "done"), (str(tmp_path / "mgz"), "failed"), (pattern, "failed")]
    )
    # Only one shard of a sharded run says it, so the shards' summaries together hold it once.
    capsys.readouterr()
    args = (str(tmp_path / "s1_T2S.nii.gz"), pattern, "-o", str(tmp_path / "sharded"))
    assert _predict(*args, "--shard", "0/2") == 2  # the pattern's failure, whichever shard holds s1
    assert _predict(*args, "--shard", "1/2") == 0  # shard 1 says nothing of the pattern
    rows = [r for p in (tmp_path / "sharded").glob("plkd_summary*.csv") for r in csv.DictReader(p.open())]
    assert sorted((r["input"], r["status"]) for r in rows) == [
        (pattern, "failed"),
        (str(tmp_path / "s1_T2S.nii.gz"), "done"),
    ]
    # The pattern fixed: a rerun (another sharding) withdraws the old failed row with the rows of its scans.
    assert _predict(str(tmp_path / "s1_T2S.nii.gz"), "-o", str(tmp_path / "sharded")) == 0
    assert [p.name for p in (tmp_path / "sharded").glob("plkd_summary*.csv")] == ["plkd_summary.csv"]


def test_no_scan_at_all_names_each_input_that_gave_none(tmp_path: Path) -> None:
    (tmp_path / "conv").mkdir()
    (tmp_path / "conv" / "a.nrrd").write_bytes(b"NRRD0004\n")
    with pytest.raises(InputError) as info:
        predict_files([tmp_path / "conv", str(tmp_path / "x*.nii")], tmp_path / "out", model=str(BUNDLE))
    assert str(info.value) == (
        "no input scans found (give NIfTI files, DICOM series folders, folders or glob patterns); "
        f"{tmp_path / 'conv'}: holds no NIfTI image or DICOM series to analyse (not analysed: not NIfTI or DICOM "
        f"(.nrrd: convert it to NIfTI): 1); {tmp_path / 'x*.nii'}: matches no file"
    )
    assert not (tmp_path / "out").exists()


def test_series_of_one_folder_are_told_apart_by_their_uids(tmp_path: Path) -> None:
    # Siemens series UIDs end in ".0.0.0": two series of one folder were both named FOLDER_0, and the whole run
    # was refused ("... (DICOM series) and ... (DICOM series) would all be written as ...", the same path twice).
    folder = tmp_path / "visit"
    uids = [
        "1.3.12.2.1107.5.2.43.166003.2023101211223344556677.0.0.0",
        "1.3.12.2.1107.5.2.43.166003.2023101211230012345678.0.0.0",
        "1.2.826.0.1.3680043.8.498.7",
    ]
    scans = assign_stems([ScanInput(folder, series=DicomSeries(folder, uid, ())) for uid in uids])
    assert sorted(s.stem for s in scans) == [
        "visit_2023101211223344556677.0.0.0",
        "visit_2023101211230012345678.0.0.0",
        "visit_7",  # a UID whose last part is its own keeps the short name
    ]
    alone = assign_stems([ScanInput(folder, series=DicomSeries(folder, uids[0], ()))])
    assert [s.stem for s in alone] == ["visit"]


def test_a_visit_exported_from_pacs_gives_only_its_t2star_and_swi_series(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Every series of a visit in one folder, as PACS exports write them: each was analysed as T2* and got a
    # "microbleed" count of its own in the summary (localizer, T1, T2 TSE, phase: exit 0, "5 done").
    pytest.importorskip("SimpleITK")
    from test_predict_dicom import _case, write_series

    data, _affine, _truth = _case()
    visit = tmp_path / "visit"
    uid = "1.3.12.2.1107.5.2.43.166003.20231012112233{}.0.0.0"
    series = {
        "t2_fl2d_tra_hemo": ({"0008|103e": "t2_fl2d_tra_hemo", "0008|0008": "ORIGINAL\\PRIMARY\\M\\ND"}, True),
        "AAHead_Scout": ({"0008|103e": "AAHead_Scout_64ch", "0018|0024": "*fl2d1"}, False),
        "t1_mprage": ({"0008|103e": "t1_mprage_sag", "0018|0024": "*tfl3d1_16ns"}, False),
        "t1_fl2d": ({"0008|103e": "t1_fl2d_tra", "0018|0024": "*fl2d1"}, False),
        "t2_tse": ({"0008|103e": "t2_tse_tra", "0018|0024": "*tse2d1_15"}, False),
        "SWI_Pha": ({"0008|103e": "Pha_Images", "0008|0008": "ORIGINAL\\PRIMARY\\P\\ND"}, False),
        "SWI_Mag": ({"0008|103e": "Mag_Images", "0018|0024": "*swi3d1r"}, True),
        "report": ({"0008|103e": "dose report", "0008|0060": "SR"}, False),
    }
    for n, (name, (tags, _taken)) in enumerate(series.items()):
        write_series(visit, data[..., :8] * 10, np.diag([1.0, 1.0, 2.0, 1.0]), uid.format(n), tags=tags, prefix=name)
    found = expand_inputs([visit])
    taken = sorted(s.series.uid for s in found.scans)
    assert taken == sorted(uid.format(n) for n, (_t, keep) in enumerate(series.values()) if keep)
    assert Counter(reason for _path, reason in found.skipped) == {
        "localizer series": 1,
        "other contrast (t1)": 2,  # a T1 gradient echo (fl2d) too
        "other contrast (t2)": 1,
        "phase series (DICOM ImageType)": 1,
        "not an MR series (Modality SR)": 1,
    }
    # One file of a series named on the command line takes it whatever its tags.
    (named,) = expand_inputs([visit / "t1_mprage0000.dcm"]).scans
    assert named.series is not None and named.series.uid == uid.format(2)
    out = tmp_path / "out"
    assert _predict(str(tmp_path), "-o", str(out)) == 0
    err = capsys.readouterr().err
    assert "2 done, 0 skipped, 0 failed of 2" in err
    assert "localizer series: 1" in err and "not an MR series (Modality SR): 1" in err
    rows = list(csv.DictReader((out / "plkd_summary.csv").open()))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"done"}


def test_a_pattern_that_also_covers_the_output_folder_never_analyses_the_last_runs_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # 'data/*/*.nii.gz' -o data/plkd: the rerun matched data/plkd/s1_T2S_cmb.nii.gz (a failure, exit 2, every
    # rerun) and s1_T2S_cmb_prob.nii.gz, analysed as a T2* image into s1_T2S_cmb_prob_cmb.*, a "scan" in the
    # summary; the run after matched that in turn.
    (tmp_path / "data" / "s1").mkdir(parents=True)
    shutil.copy(CASE, tmp_path / "data" / "s1" / "s1_T2S.nii.gz")
    out = tmp_path / "data" / "plkd"
    pattern = str(tmp_path / "data" / "*" / "*.nii.gz")
    assert _predict(pattern, "-o", str(out), "--save-probability") == 0
    capsys.readouterr()
    assert _predict(pattern, "-o", str(out), "--save-probability") == 0
    err = capsys.readouterr().err
    assert "0 done, 1 skipped, 0 failed of 1" in err and "plkd prediction: 2" in err
    # The shell expands an unquoted pattern: the same files, named one by one.
    names = sorted(str(p) for p in (tmp_path / "data").glob("*/*.nii.gz"))
    assert len(names) == 3
    assert _predict(*names, "-o", str(out), "--save-probability") == 0
    assert "0 done, 1 skipped, 0 failed of 1" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*_cmb.json")) == ["s1_T2S_cmb.json"]
    (row,) = csv.DictReader((out / "plkd_summary.csv").open())
    assert row["scan"] == "s1_T2S"


def test_labels_and_other_tools_outputs_beside_the_images_are_not_scans(tmp_path: Path) -> None:
    # 3D Slicer names label maps NAME-label and Segmentation-label; another tool's probability map passes every
    # image check (many distinct values) and got a "microbleed" count as if it were a scan.
    root = tmp_path / "study"
    image = _touch_nifti(root / "sub-01" / "sub-01_T2S.nii.gz")
    skipped = {
        _touch_nifti(root / "sub-01" / "sub-01_T2S-label.nii.gz"): "label map or mask",
        _touch_nifti(root / "sub-01" / "Segmentation-label.nii"): "label map or mask",
        _touch_nifti(root / "sub-01" / "sub-01_T2S_segmentation.nii.gz"): "label map or mask",
        _touch_nifti(root / "sub-01" / "sub-01_T2S_synthseg.nii.gz"): "label map or mask",
        _touch_nifti(root / "sub-01" / "sub-01_T2S_prob.nii.gz"): "prediction or probability map",
        _touch_nifti(root / "sub-01" / "sub-01_T2S_pred.nii.gz"): "prediction or probability map",
    }
    (root / "sub-01" / "sub-01_cmb-final.seg.nrrd").write_bytes(b"NRRD0004\n")  # the Slicer module's export
    skipped[root / "sub-01" / "sub-01_cmb-final.seg.nrrd"] = "label map or mask"
    kept = _touch_nifti(root / "sub-02" / "sub-02_part-mag_T2S.nii.gz")  # a "-" in the name is no label
    found = expand_inputs([root])
    assert sorted(s.path for s in found.scans) == sorted([image, kept])
    assert dict(found.skipped) == skipped


def test_a_reference_label_where_an_output_goes_is_never_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Outputs beside the inputs: the rater's sub-01_cmb.nii.gz was taken for a stale output ("recomputing: the JSON
    # is missing"), deleted and replaced by the prediction, which plkd evaluate then scored against itself.
    folder = tmp_path / "study"
    folder.mkdir()
    shutil.copy(CASE, folder / "sub-01.nii.gz")
    shutil.copy(CASE, folder / "sub-02.nii.gz")
    img = nib.load(str(CASE))
    reference = np.zeros(img.shape, np.uint8)
    reference[20:22, 20:22, 10] = 1
    nib.save(nib.Nifti1Image(reference, img.affine), str(folder / "sub-01_cmb.nii.gz"))
    (folder / "sub-02_cmb.json").write_text('{"rater": "A", "microbleeds": 3}')  # another tool's notes
    before = {name: (folder / name).read_bytes() for name in ("sub-01_cmb.nii.gz", "sub-02_cmb.json")}
    for extra in ((), ("--overwrite",)):
        assert _predict(str(folder), "-o", str(folder), *extra) == 2
        err = capsys.readouterr().err
        assert (
            f"plkd: error: sub-01.nii.gz: {folder / 'sub-01_cmb.nii.gz'} is not an output of plkd "
            "(no sub-01_cmb.json beside it; a reference label?)"
        ) in err
        assert f"{folder / 'sub-02_cmb.json'} is not an output of plkd (not a plkd record;" in err
        assert "0 done, 0 skipped, 2 failed of 2" in err
        assert {name: (folder / name).read_bytes() for name in before} == before
        assert not (folder / "sub-01_cmb.json").exists() and not (folder / "sub-02_cmb.nii.gz").exists()


def test_a_dcm2niix_conversion_gives_only_its_t2star_and_swi_images(tmp_path: Path) -> None:
    # dcm2niix names files FOLDER_PROTOCOL_TIME_SERIES (a phase image ..._ph): no BIDS suffix, so a walk took the
    # T1, the localizer and the phase image as scans. Their sidecars say what they are.
    folder = tmp_path / "conv"
    sidecars = {
        "x_t2_fl2d_tra_hemo_20230101_5": (
            {"SeriesDescription": "t2_fl2d_tra_hemo", "ImageType": ["ORIGINAL", "M"]},
            None,
        ),
        "x_swi_20230101_7": ({"SequenceName": "*swi3d1r", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]}, None),
        "x_swi_20230101_8": (  # a phase series of its own: only its sidecar tells
            {"ProtocolName": "swi", "ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]},
            "phase image (sidecar ImageType)",
        ),
        "x_t1_mprage_sag_20230101_3": ({"ProtocolName": "t1_mprage_sag", "Modality": "MR"}, "other contrast (t1)"),
        "x_AAHead_Scout_20230101_1": ({"SeriesDescription": "AAHead_Scout_64ch-head-coil"}, "localizer image"),
    }
    for name, (sidecar, _reason) in sidecars.items():
        _touch_nifti(folder / f"{name}.nii.gz")
        (folder / f"{name}.json").write_text(json.dumps(sidecar))
    timepoint = _touch_nifti(folder / "sub-01_ses-t1_T2S.nii.gz")  # "t1" in a name without sidecar: a time point
    named = _touch_nifti(folder / "sub-01_T2starw.nii.gz")  # a BIDS suffix naming T2* wins over its sidecar
    (folder / "sub-01_T2starw.json").write_text(json.dumps({"SeriesDescription": "t1_fl2d_tra"}))
    found = expand_inputs([folder])
    assert sorted(s.path for s in found.scans) == sorted(
        [timepoint, named, *(folder / f"{n}.nii.gz" for n, (_s, reason) in sidecars.items() if reason is None)]
    )
    assert dict(found.skipped) == {folder / f"{n}.nii.gz": r for n, (_s, r) in sidecars.items() if r is not None}


def test_echoes_that_dcm2niix_wrote_one_per_file_are_said_to_be_analysed_one_by_one(tmp_path: Path) -> None:
    # dcm2niix writes a multi-echo GRE as x_megre_5_e1, _e2, ...: each echo was a scan with a result of its own,
    # without the note the BIDS echo-N files get.
    folder = tmp_path / "conv"
    for n in (1, 2, 3):
        _touch_nifti(folder / f"x_megre_20230101_5_e{n}.nii.gz")
    _touch_nifti(folder / "x_swi_20230101_7_e2.nii")  # one echo alone: nothing to say
    notes = separate_echo_notes(expand_inputs([folder]).scans)
    assert sorted(p.name for p in notes) == [f"x_megre_20230101_5_e{n}.nii.gz" for n in (1, 2, 3)]
    assert notes[folder / "x_megre_20230101_5_e2.nii.gz"].startswith(
        "x_megre_20230101_5_e2.nii.gz is echo 2 of a multi-echo GRE stored one echo per file (echoes 1, 2, 3 in"
    )
    # Its phase images (dcm2niix "_ph"), without a sidecar, are skipped by name.
    phase = _touch_nifti(folder / "x_megre_20230101_6_e1_ph.nii.gz")
    assert dict(expand_inputs([folder]).skipped) == {phase: "phase image"}


def test_a_shard_left_without_scans_keeps_no_rows_of_an_earlier_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # A job array of 3 shards over a study that lost a scan: shard 1 had none left and was refused ("no input scans
    # found", exit 2), leaving its summary of the run before, whose row for s1 no scan of the run now held.
    (tmp_path / "in").mkdir()
    for name in ("s1_T2S", "s2_T2S", "s3_T2S"):
        shutil.copy(CASE, tmp_path / "in" / f"{name}.nii.gz")
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in"), "-o", str(out), "--shard", "1/3") == 0  # s1's shard (sha256 of its name)
    assert [r["scan"] for r in csv.DictReader((out / "plkd_summary_shard-1-of-3.csv").open())] == ["s1_T2S"]
    (tmp_path / "in" / "s1_T2S.nii.gz").unlink()
    capsys.readouterr()
    assert _predict(str(tmp_path / "in"), "-o", str(out), "--shard", "1/3", "--threshold", "0.9") == 0
    assert "plkd predict: shard 1/3 holds none of the 2 scans" in capsys.readouterr().err
    assert _predict(str(tmp_path / "in"), "-o", str(out), "--shard", "0/3", "--threshold", "0.9") == 0
    rows = [r for p in sorted(out.glob("plkd_summary*.csv")) for r in csv.DictReader(p.open())]
    assert [(r["scan"], r["status"]) for r in rows] == [("s2_T2S", "done"), ("s3_T2S", "done")]
    assert json.loads((out / "s3_T2S_cmb.json").read_text())["settings"]["threshold"] == 0.9


@pytest.mark.parametrize(
    ("description", "reason"),
    [
        ("t2_fl2d_tra_hemo", None),  # Siemens T2*: "t2" beside a T2* word
        ("sT2W/FFE", None),  # Philips T2*-weighted FFE
        ("Ax SWAN", None),  # GE SWI
        ("VEN_BOLD", None),  # Philips SWI (venous BOLD), not fMRI
        ("SWIp", None),
        ("mIP_Images(SW)", None),  # a projection: analysed with a warning
        ("T2star GRE test", None),
        ("study 4711", None),  # nothing said: taken, as before
        ("t1_fl3d_tra_ce", "other contrast (t1)"),  # a T1 gradient echo
        ("T1 TFE", "other contrast (t1)"),
        ("t2_tse_tra", "other contrast (t2)"),
        ("t2_space_dark-fluid", "other contrast (t2)"),
        ("ep2d_diff_tra", "other contrast (diff)"),
        ("ep2d_bold_moco", "other contrast (bold)"),
        ("gre_field_mapping", "other contrast (field)"),
        ("Survey", "localizer series"),
    ],
)
def test_series_names_of_the_vendors_are_read_as_their_contrast(description: str, reason: str | None) -> None:
    assert classify_series({"modality": "MR", "series_description": description}) == reason
    # A converter's own spelling of MR (or post-processing's "OT") is no reason to skip a scan.
    for modality in ("MRI", "OT", ""):
        assert classify_series({"modality": modality, "series_description": description}) == reason


def test_a_double_star_pattern_matches_at_any_depth(tmp_path: Path) -> None:
    # 'bids/**/*_T2starw.nii.gz' matched one folder level only (glob without recursive): of a BIDS tree with
    # and without sessions, the subjects without sessions were taken and the others silently left out.
    shallow = _touch_nifti(tmp_path / "bids" / "sub-01" / "sub-01_T2starw.nii.gz")
    deep = _touch_nifti(tmp_path / "bids" / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T2starw.nii.gz")
    found = expand_inputs([str(tmp_path / "bids" / "**" / "*_T2starw.nii.gz")])
    assert sorted(s.path for s in found.scans) == [shallow, deep]


def test_a_copy_of_another_input_is_said_to_give_a_second_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The same scan kept in two places (raw/ and a sorted copy): two results, both counted in the summary,
    # without a word.
    shutil.copy(CASE, tmp_path / "a_T2S.nii.gz")
    (tmp_path / "sorted").mkdir()
    shutil.copy(CASE, tmp_path / "sorted" / "sub-07_T2S.nii.gz")
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "a_T2S.nii.gz"), str(tmp_path / "sorted"), "-o", str(out)) == 0
    says = f"sub-07_T2S.nii.gz holds the same bytes as {tmp_path / 'a_T2S.nii.gz'} (a_T2S_cmb.*): the run gives two"
    assert any(r.levelname == "WARNING" and r.getMessage().startswith(says) for r in caplog.records)
    assert any(w.startswith(says) for w in json.loads((out / "sub-07_T2S_cmb.json").read_text())["warnings"])
    assert not any("same bytes" in w for w in json.loads((out / "a_T2S_cmb.json").read_text())["warnings"])
    rows = {r["scan"]: r for r in csv.DictReader((out / "plkd_summary.csv").open())}
    assert says in rows["sub-07_T2S"]["warnings"] and "same bytes" not in rows["a_T2S"]["warnings"]


def test_a_summary_of_part_of_the_folder_says_what_it_leaves_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Rerunning the scans that failed, once fixed, rewrote plkd_summary.csv with those alone: the study's table
    # read from it lost every other scan of the folder without a word.
    (tmp_path / "in").mkdir()
    for name in ("s1_T2S", "s2_T2S", "s3_T2S"):
        shutil.copy(CASE, tmp_path / "in" / f"{name}.nii.gz")
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in"), "-o", str(out)) == 0
    assert "other scan" not in capsys.readouterr().err
    assert _predict(str(tmp_path / "in" / "s2_T2S.nii.gz"), "-o", str(out)) == 0
    assert (
        f"plkd predict: plkd_summary.csv lists the 1 scan(s) of this run; {out} also holds the results of 2 other "
        "scan(s) (a run over all the inputs reuses them and lists every scan)"
    ) in capsys.readouterr().err.splitlines()


def test_a_series_missing_its_last_files_is_said_to_be_incomplete(tmp_path: Path) -> None:
    # A copy that stopped early keeps the first slices on a regular grid: analysed as a whole scan, without a word.
    pytest.importorskip("SimpleITK")
    from test_predict_dicom import _case, write_series

    data, _affine, _truth = _case()
    folder = tmp_path / "series"
    write_series(
        folder, data * 10, np.diag([1.0, 1.0, 1.0, 1.0]), "1.2.826.0.1.3680043.8.498.91", tags={"0020|1002": "32"}
    )
    out = tmp_path / "out"
    assert _predict(str(folder), "-o", str(out)) == 0
    assert not any("Images in Acquisition" in w for w in json.loads((out / "series_cmb.json").read_text())["warnings"])
    for k in range(24, data.shape[2]):
        (folder / f"IM{k:04d}.dcm").unlink()
    assert _predict(str(folder), "-o", str(out)) == 0
    warnings = json.loads((out / "series_cmb.json").read_text())["warnings"]
    assert any("holds 24 files but its Images in Acquisition (0020,1002) counts 32" in w for w in warnings)


def test_a_folder_the_walk_cannot_read_is_a_failed_input(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # os.walk passes over a folder it cannot list (permissions, a stale network mount) without a word: its
    # subjects were missing from a run that ended "all done", exit 0.
    import os

    (tmp_path / "study" / "sub-01").mkdir(parents=True)
    shutil.copy(CASE, tmp_path / "study" / "sub-01" / "sub-01_T2S.nii.gz")
    locked = _touch_nifti(tmp_path / "study" / "sub-02" / "sub-02_T2S.nii.gz").parent
    real_scandir = os.scandir

    def scandir(path="."):  # as for a folder without read permission (the tests may run as root)
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "study"), "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert f"plkd: error: {locked}: cannot be read (PermissionError): no scan in it is analysed" in err.splitlines()
    assert "1 done, 0 skipped, 1 failed of 2" in err
    rows = list(csv.DictReader((out / "plkd_summary.csv").open()))
    assert sorted((r["input"], r["status"]) for r in rows) == sorted(
        [(str(locked), "failed"), (str(tmp_path / "study" / "sub-01" / "sub-01_T2S.nii.gz"), "done")]
    )
