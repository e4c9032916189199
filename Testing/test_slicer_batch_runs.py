"""The batch script (``Slicer --python-script batchProcess.py``) over a folder, against a real MRML scene.

Volumes are loaded as ``slicer.util.loadVolume`` loads them (``vtkSlicerVolumesLogic.AddArchetypeVolume``), the
result is imported and exported by the module's own code; only the engine run of ``CMBSegmentationLogic.process``
(a subprocess, and a module file that needs Slicer's Qt) is replaced by hand-written engine outputs that follow
docs/design.md ("Prediction outputs").
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "CMBSegmentation"))

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package has no MRML classes (slicer-core missing)", allow_module_level=True)

from CMBSegmentationLib import batchOutputs, reportExport, resultImport  # noqa: E402
from CMBSegmentationLib.volumeIO import ijkToRas  # noqa: E402

AFFINE = np.array([[-1.0, 0, 0, 12.0], [0, 1.0, 0, -14.0], [0, 0, 2.0, -9.0], [0, 0, 0, 1]])
SHAPE = (24, 28, 10)
#: label -> (voxels, probability); the engine applied 0.3 (the model's own threshold).
LESIONS = {1: ((slice(5, 7), slice(6, 8), slice(3, 5)), 0.9), 2: ((slice(15, 16), slice(20, 21), slice(6, 7)), 0.35)}
APPLIED = 0.3


def _batchScript():
    script = REPO / "CMBSegmentation/Resources/Scripts/batchProcess.py"
    spec = importlib.util.spec_from_file_location("batchProcess", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scan(path: Path, value: float = 400.0) -> Path:
    image = np.full(SHAPE, value, np.float32)
    nib.save(nib.Nifti1Image(image, AFFINE), str(path))
    return path


def _engineOutputs(folder: Path, affine: np.ndarray, notes=()) -> tuple[Path, Path]:
    """``NAME_cmb.nii.gz`` and ``NAME_cmb.json`` as ``plkd predict`` writes them for a scan on ``affine``."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.zeros(SHAPE, np.int16)
    candidates = []
    for label, (index, probability) in LESIONS.items():
        labels[index] = label
        centre = (affine @ np.r_[np.argwhere(labels == label).mean(axis=0), 1.0])[:3]
        voxels = int((labels == label).sum())
        candidates.append({"id": label, "label": label, "center_ras": centre.tolist(), "voxels": voxels,
                           "volume_mm3": 2.0 * voxels, "probability": probability, "kept": True,
                           "segmentation": "network"})  # fmt: skip
    labelPath, jsonPath = folder / "scan_cmb.nii.gz", folder / "scan_cmb.json"
    nib.save(nib.Nifti1Image(labels, affine), str(labelPath))
    jsonPath.write_text(json.dumps({"input": "scan.nii.gz", "model": "tiny", "candidates": candidates,
                                    "thresholds": {"screening": 0.5, "segmentation": APPLIED},
                                    "n_microbleeds": len(candidates), "notes": list(notes)}))  # fmt: skip
    return labelPath, jsonPath


@pytest.fixture
def batch_run(tmp_path, monkeypatch):
    """``run(args) -> exit code`` of the batch script's ``main`` in a real scene; ``calls`` lists the process() calls
    (their keyword arguments); ``notes``: the engine notes each run writes."""
    batch = _batchScript()
    scene = slicer.vtkMRMLScene()
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(scene)

    def loadVolume(file_name, properties=None):
        properties = properties or {}
        name = properties.get("name", Path(file_name).name.split(".")[0])
        node = volumes.AddArchetypeVolume(str(file_name), name, 0)
        if node is None:
            raise RuntimeError(f"Failed to load node from file: {file_name}")
        return node

    calls, notes = [], []

    class Logic:
        def process(self, volume, **kwargs):
            calls.append(kwargs)
            labelPath, jsonPath = _engineOutputs(tmp_path / "engine" / str(len(calls)), ijkToRas(volume), notes)
            return resultImport.importResults(
                scene, volume, labelPath, jsonPath, None, kwargs.get("candidateTable"), runThreshold=kwargs["threshold"]
            ).segmentationNode

    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer.util, "loadVolume", loadVolume)
    monkeypatch.setitem(sys.modules, "CMBSegmentation", types.SimpleNamespace(CMBSegmentationLogic=Logic))

    def run(args):
        return batch.main([str(a) for a in args])

    run.calls, run.notes, run.batch = calls, notes, batch
    return run


def _folders(tmp_path, names=("a.nii.gz", "b.nii.gz")):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name in names:
        _scan(inputs / name)
    return inputs, out


def test_the_batch_reports_the_microbleeds_of_each_scan_with_the_threshold_the_engine_applied(batch_run, tmp_path):
    # --threshold 0 means each segmenter's own threshold (0.1-0.4 in the shipped bundles), but the report said
    # "threshold": 0.0, as if every candidate had been kept.
    inputs, out = _folders(tmp_path)
    for threshold in ([], ["--threshold", "0"]):
        assert batch_run(["--input-dir", inputs, "--output-dir", out, *threshold]) == 0
        for name in ("a", "b"):
            report = json.loads((out / f"{name}_cmb-report.json").read_text())
            assert report["input"] == name and report["n_microbleeds"] == 2
            assert report["threshold"] == APPLIED
            assert [m["probability"] for m in report["microbleeds"]] == [0.9, 0.35]


@pytest.mark.parametrize(
    "bad, says",
    [
        (["--threshold", "5"], "--threshold: must be a number within [0, 1], got '5'"),
        (["--threshold", "-0.1"], "got '-0.1'"),
        (["--threshold", "nan"], "got 'nan'"),
        (["--threshold", "0.3x"], "got '0.3x'"),
        (["--model", "no/such/bundle"], "--model no/such/bundle: no such file or folder"),
        (["--model", "{empty}"], "a folder without a bundle's manifest.json"),
        (["--model", "{text}"], "neither a bundle folder nor a bundle .zip"),
    ],
)
def test_a_mistyped_option_is_refused_before_any_earlier_result_is_removed(batch_run, tmp_path, capsys, bad, says):
    # Refused by the engine for each input in turn, a --threshold out of range or a --model that is no bundle removed
    # the earlier results of every input (an input that fails loses its earlier outputs) and reported N failures.
    inputs, out = _folders(tmp_path)
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(before) == 10  # four files per input, the summary and its hashes
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("a model")
    bad = [a.format(empty=tmp_path / "empty", text=tmp_path / "notes.txt") for a in bad]
    assert batch_run(["--input-dir", inputs, "--output-dir", out, *bad]) == 2
    assert says in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert len(batch_run.calls) == 2  # the first run's only


def test_a_bundle_folder_or_zip_is_taken_as_a_model(batch_run, tmp_path):
    import shutil

    inputs, out = _folders(tmp_path, ("a.nii.gz",))
    bundle = REPO / "Testing" / "data" / "tiny-bundle"
    archive = shutil.make_archive(str(tmp_path / "tiny"), "zip", bundle.parent, bundle.name)
    for model in (bundle, archive):
        assert batch_run(["--input-dir", inputs, "--output-dir", out, "--model", model]) == 0
    assert [c["modelPath"] for c in batch_run.calls] == [str(bundle), archive]
    assert reportExport.outputPaths(out, "a")[3].exists()


def _readerExportRaisingTheThreshold(scan, out, work):
    """The module's Export of a review of ``scan`` into ``out`` whose reader's only change was the review threshold
    (0.5): no status decision. Returns the export's files."""
    from CMBSegmentationLib import reviewState

    scene = slicer.vtkMRMLScene()
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(scene)
    name = Path(scan).name.split(".")[0]
    volume = volumes.AddArchetypeVolume(str(scan), name, 0)
    result = resultImport.importResults(scene, volume, *_engineOutputs(work, ijkToRas(volume)))
    reviewState.setReviewThreshold(result.segmentationNode, result.tableNode, 0.5)
    return reportExport.exportReview(result.segmentationNode, result.tableNode, volume, out, name)


def test_a_reader_s_export_is_never_replaced_even_without_a_status_decision(batch_run, tmp_path, capsys):
    # The batch took a report for a reader's only when it counted accepted, rejected or added microbleeds: a review
    # whose reader raised the review threshold (or erased a false positive with the Segment Editor) and changed no
    # status was replaced by an unreviewed result without a word.
    inputs, out = _folders(tmp_path)
    files = _readerExportRaisingTheThreshold(inputs / "a.nii.gz", out, tmp_path / "reader")
    assert files.reportJson == out / "a_cmb-report.json" and files.count == 1
    reviewed = {p.name: p.read_bytes() for p in out.glob("a_cmb*")}
    assert json.loads(reviewed["a_cmb-report.json"])["exported_by"] == "review"
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 2
    assert "a_cmb-report.json (a reader's review)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.glob("a_cmb*")} == reviewed
    assert not list(out.glob("b_cmb*"))  # refused before any work
    # A report of an older version (no exported_by) with decisions is a reader's: the run is refused.
    older = json.loads(reviewed["a_cmb-report.json"])
    del older["exported_by"]
    older["microbleeds"][0]["status"] = "accepted"
    (out / "a_cmb-report.json").write_text(json.dumps(older))
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 2
    assert "a_cmb-report.json (1 decision(s))" in capsys.readouterr().err


def test_a_report_of_an_older_version_without_exported_by_is_never_replaced_as_the_batch_s_own(
    batch_run, tmp_path, capsys
):
    # Before exported_by, the module's Export and the batch wrote the same report: one without status decisions was
    # taken for the batch's and replaced with its files, also a reader's review whose reader erased a false positive,
    # painted an outline or raised the review threshold (changed no status). Nothing proves it a batch run's.
    inputs, out = _folders(tmp_path)
    files = _readerExportRaisingTheThreshold(inputs / "a.nii.gz", out, tmp_path / "reader")
    report = json.loads(files.reportJson.read_text())
    del report["exported_by"]  # as an older version wrote it
    assert not report["n_rejected"] and {m["status"] for m in report["microbleeds"]} == {"not yet seen"}
    files.reportJson.write_text(json.dumps(report, indent=2))
    older = {p.name: p.read_bytes() for p in out.glob("a_cmb*")}
    assert len(older) == 4
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 1
    err = capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.glob("a_cmb*")} == older
    assert "a.nii.gz: FAILED: a_cmb-report.json in the output folder is a report of an older version" in err
    rows = {r["input"]: r for r in _summary(out)}
    assert rows["a.nii.gz"]["status"] == "failed" and "left as they are" in rows["a.nii.gz"]["reason"]
    assert rows["b.nii.gz"]["status"] == "ok" and len(batch_run.calls) == 1
    # Moved away by the user: the next run processes a, and replaces its own reports from then on.
    for name in older:
        (out / name).unlink()
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    assert json.loads((out / "a_cmb-report.json").read_text())["exported_by"] == "batch"


def test_a_run_of_another_folder_never_replaces_the_results_of_other_scans_of_the_same_name(
    batch_run, tmp_path, capsys
):
    # One output folder for the batch runs of several patients' folders (p1/swi.nii.gz, then p2/swi.nii.gz): each run
    # replaced the results of the one before without a word, and the folder held the last patient's alone.
    out = tmp_path / "out"
    for folder, value in (("p1", 400.0), ("p2", 300.0), ("copy-of-p1", 400.0)):
        (tmp_path / folder).mkdir()
        _scan(tmp_path / folder / "swi.nii.gz", value)
    assert batch_run(["--input-dir", tmp_path / "p1", "--output-dir", out]) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert json.loads(first["swi_cmb-report.json"])["input_file"] == str((tmp_path / "p1" / "swi.nii.gz").resolve())
    assert batch_run(["--input-dir", tmp_path / "p2", "--output-dir", out]) == 2
    err = capsys.readouterr().err
    assert "output folder holds results of other scans of the same names: swi_cmb-report.json is of " in err
    assert str(tmp_path / "p1" / "swi.nii.gz") in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first and len(batch_run.calls) == 1
    # The same scan again, or a copy of it elsewhere: its own result, replaced.
    assert batch_run(["--input-dir", tmp_path / "p1", "--output-dir", out]) == 0
    assert batch_run(["--input-dir", tmp_path / "copy-of-p1", "--output-dir", out]) == 0
    # The scan of the result moved away (renamed, deleted): nothing tells it is another one.
    (tmp_path / "copy-of-p1" / "swi.nii.gz").rename(tmp_path / "copy-of-p1" / "swi-old.nii.gz")
    (tmp_path / "p1" / "swi.nii.gz").unlink()
    assert batch_run(["--input-dir", tmp_path / "p2", "--output-dir", out]) == 0
    report = json.loads((out / "swi_cmb-report.json").read_text())
    assert report["input_file"] == str((tmp_path / "p2" / "swi.nii.gz").resolve())


def _corruptedBundle(folder):
    """A copy of the tiny bundle whose screening weights changed after it was made: its checksum fails."""
    import shutil

    bundle = folder / "corrupted-bundle"
    shutil.copytree(REPO / "Testing" / "data" / "tiny-bundle", bundle)
    weights = bundle / "screening.pt"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return bundle


def _gpuAvailable() -> bool:
    torch = pytest.importorskip("torch")
    return torch.cuda.is_available() or torch.backends.mps.is_available()


@pytest.mark.parametrize("bad", ["corrupted bundle", "gpu"])
def test_a_device_or_bundle_the_engine_refuses_stops_the_run_before_any_earlier_result_is_removed(
    batch_run, tmp_path, capsys, bad
):
    # --device gpu on a node without one (a scheduler that gave no GPU), or a bundle whose weights fail their
    # checksum: the engine refused each input in turn, and each took its earlier results with it.
    if bad == "gpu" and _gpuAvailable():
        pytest.skip("this machine has a GPU")
    inputs, out = _folders(tmp_path)
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    option = ["--model", _corruptedBundle(tmp_path)] if bad == "corrupted bundle" else ["--device", "gpu"]
    assert batch_run(["--input-dir", inputs, "--output-dir", out, *option]) == 2
    err = capsys.readouterr().err
    says = "screening.pt" if bad == "corrupted bundle" else "--device cuda was requested but PyTorch sees no CUDA GPU"
    assert "batchProcess: error: " in err and says in err and "nothing was run" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and len(batch_run.calls) == 2
    # The bundle as shipped and the CPU pass.
    bundle = REPO / "Testing" / "data" / "tiny-bundle"
    assert batch_run(["--input-dir", inputs, "--output-dir", out, "--model", bundle, "--device", "cpu"]) == 0


@pytest.mark.parametrize("found", ["own file", "half-written report", "report edited", "label map edited"])
def test_a_rerun_never_removes_files_it_cannot_prove_a_batch_run_wrote(batch_run, tmp_path, capsys, found):
    # A rerun removed whatever lay at an input's output names before processing it: a user's own file of that name
    # (no report beside it), a report cut short by a copy that stopped, a report or label map edited since the batch
    # wrote it (its report's file_sha256 says so): all gone without a word.
    inputs, out = _folders(tmp_path, ("a.nii.gz", "b.nii.gz", "c.nii.gz"))
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    files = {p.name: p for p in out.glob("b_cmb*")}
    if found == "own file":
        for path in files.values():
            path.unlink()
        files = {"b_cmb-report.csv": out / "b_cmb-report.csv"}
        files["b_cmb-report.csv"].write_text("patient;count\nb;3\n")  # a reader's own table of that name
    elif found == "half-written report":
        report = files["b_cmb-report.json"]
        report.write_bytes(report.read_bytes()[:100])
    elif found == "report edited":
        files["b_cmb-report.csv"].write_text(files["b_cmb-report.csv"].read_text() + "reader: two more in the pons\n")
    else:
        nib.save(nib.Nifti1Image(np.ones(SHAPE, np.int16), AFFINE), str(files["b_cmb-final.nii.gz"]))
    kept = {name: path.read_bytes() for name, path in files.items()}
    others = {p.name: p.stat().st_mtime_ns for p in out.glob("[ac]_cmb*")}
    capsys.readouterr()
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 1
    err = capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.glob("b_cmb*")} == kept
    assert "b.nii.gz: FAILED: " in err and "left as they are" in err
    assert ("without a batch report" if found == "own file" else "b_cmb-report") in err
    assert len(batch_run.calls) == 3 + 2  # b was not run; a and c were
    assert all(p.stat().st_mtime_ns != others[p.name] for p in out.glob("[ac]_cmb*"))
    # Moved away by the user: the next rerun processes b again.
    for path in files.values():
        path.unlink()
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    assert json.loads((out / "b_cmb-report.json").read_text())["exported_by"] == "batch"


def _summary(out: Path) -> list[dict]:
    import csv

    with open(out / "cmb-batch-summary.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_the_batch_writes_one_summary_row_per_input_with_its_files_counts_model_and_thresholds(
    batch_run, tmp_path, capsys
):
    # The batch wrote one report per input and no table over them: a researcher had to open every JSON to count the
    # microbleeds of a study, and an input that failed showed only as a line in the log.
    inputs, out = _folders(tmp_path, ("a.nii.gz", "b.nii.gz"))
    (inputs / "bad.nii.gz").write_bytes(b"not a volume")
    bundle = REPO / "Testing" / "data" / "tiny-bundle"
    assert batch_run(["--input-dir", inputs, "--output-dir", out, "--model", bundle]) == 1
    rows = _summary(out)
    assert [r["input"] for r in rows] == ["a.nii.gz", "b.nii.gz", "bad.nii.gz"]
    a, _, bad = rows
    assert a["input_file"] == str((inputs / "a.nii.gz").resolve())
    assert (a["status"], a["reason"], a["n_microbleeds"], a["n_candidates"]) == ("ok", "", "2", "2")
    assert [a[k] for k in ("label_map", "segmentation", "report_csv", "report_json")] == [
        p.name for p in reportExport.outputPaths(out, "a")
    ]
    assert all((out / a[k]).is_file() for k in ("label_map", "segmentation", "report_csv", "report_json"))
    assert (a["model"], a["bundle"]) == ("tiny", str(bundle))
    assert (float(a["segmentation_threshold"]), float(a["screening_threshold"])) == (APPLIED, 0.5)
    assert a["threshold_option"] == ""  # the model's own
    assert bad["status"] == "failed" and "Failed to load node" in bad["reason"] and bad["n_microbleeds"] == ""
    assert bad["report_json"] == "" and bad["bundle"] == str(bundle)
    # Written under a temporary name, then renamed; its hashes beside it (see the test of an edited summary).
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".cmb-batch-summary.csv.sha256"]
    # A rerun replaces the summary with its own rows: the bad input fixed, --threshold given.
    _scan(inputs / "bad.nii.gz")
    assert batch_run(["--input-dir", inputs, "--output-dir", out, "--threshold", "0.3"]) == 0
    rows = _summary(out)
    assert [r["status"] for r in rows] == ["ok"] * 3 and {r["threshold_option"] for r in rows} == {"0.3"}
    assert {r["bundle"] for r in rows} == {"installed"}


def test_an_interrupted_batch_leaves_a_summary_that_says_which_inputs_were_not_processed(
    batch_run, tmp_path, monkeypatch
):
    inputs, out = _folders(tmp_path, ("a.nii.gz", "b.nii.gz", "c.nii.gz"))
    process = batch_run.batch.processOne

    def processOne(path, args):
        if path.name == "b.nii.gz":
            raise KeyboardInterrupt
        return process(path, args)

    monkeypatch.setattr(batch_run.batch, "processOne", processOne)
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 130
    rows = _summary(out)
    assert [(r["input"], r["status"]) for r in rows] == [
        ("a.nii.gz", "ok"),
        ("b.nii.gz", "failed"),
        ("c.nii.gz", "not run"),
    ]
    assert "interrupted" in rows[1]["reason"] and "earlier run" in rows[2]["reason"]


def test_a_summary_of_that_name_that_no_batch_wrote_is_never_replaced(batch_run, tmp_path, capsys):
    inputs, out = _folders(tmp_path, ("a.nii.gz",))
    out.mkdir()
    (out / "cmb-batch-summary.csv").write_text("patient,microbleeds\na,3\n")  # the researcher's own table
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 2
    assert "cmb-batch-summary.csv" in capsys.readouterr().err and not batch_run.calls
    assert (out / "cmb-batch-summary.csv").read_text() == "patient,microbleeds\na,3\n"


def test_a_rerun_names_the_earlier_results_of_scans_it_no_longer_has(batch_run, tmp_path, capsys):
    # A scan taken out of the input folder (a failed acquisition, a withdrawn subject) kept its results of the earlier
    # run beside those of the rerun: a count over the folder's reports still held it, and nothing said so.
    inputs, out = _folders(tmp_path, ("a.nii.gz", "b.nii.gz", "c.nii.gz"))
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    assert "not among this run's inputs" not in capsys.readouterr().err
    (inputs / "b.nii.gz").unlink()
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    err = capsys.readouterr().err
    assert "output folder also holds the results of 1 scan(s) not among this run's inputs: b_cmb-report.json" in err
    assert [r["input"] for r in _summary(out)] == ["a.nii.gz", "c.nii.gz"]


def test_an_interruption_between_two_inputs_is_an_interruption_and_keeps_the_next_input_s_results(
    batch_run, tmp_path, monkeypatch, capsys
):
    # A Ctrl+C or SIGTERM that came while the batch checked the next input's earlier files (outside the input's own
    # try) ended Slicer with a traceback and exit code 1 instead of 130, and the summary kept that input "not run".
    inputs, out = _folders(tmp_path, ("a.nii.gz", "b.nii.gz"))
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    before = {p.name: p.read_bytes() for p in out.glob("b_cmb*")}
    check = batchOutputs.foreignOutputs

    def foreignOutputs(folder, base):
        if base == "b":
            raise KeyboardInterrupt
        return check(folder, base)

    monkeypatch.setattr(batchOutputs, "foreignOutputs", foreignOutputs)  # main calls it there
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 130
    assert {p.name: p.read_bytes() for p in out.glob("b_cmb*")} == before  # not cleared yet: kept
    rows = _summary(out)
    assert [r["status"] for r in rows] == ["ok", "failed"] and "before it was processed" in rows[1]["reason"]
    assert "1 of 2 input(s) processed" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_an_output_folder_that_cannot_be_made_is_refused_in_one_line(batch_run, tmp_path, capsys, where):
    # --output-dir naming a file (a typo: results.csv) ended Slicer with a FileExistsError traceback and exit 1.
    inputs, _ = _folders(tmp_path, ("a.nii.gz",))
    (tmp_path / "results.csv").write_text("mine\n")
    out = tmp_path / "results.csv" if where == "a file" else tmp_path / "results.csv" / "out"
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("batchProcess: error: ") and "Traceback" not in err and str(out) in err
    assert (tmp_path / "results.csv").read_text() == "mine\n" and not batch_run.calls


def test_the_summary_carries_the_engine_s_notes_of_each_input(batch_run, tmp_path):
    # An input the engine analysed with a caveat (a phase image, the model of the other contrast, its candidate count
    # capped) read "ok" in the summary like the others: the caveat stood only in that input's JSON report.
    inputs, out = _folders(tmp_path, ("a.nii.gz",))
    batch_run.notes.append("candidate count capped at 100 (the scan holds more dark spots)")
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    (row,) = _summary(out)
    assert row["status"] == "ok" and row["warnings"] == "candidate count capped at 100 (the scan holds more dark spots)"
    batch_run.notes.clear()
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    assert _summary(out)[0]["warnings"] == ""


def test_a_4d_input_fails_saying_what_it_is_and_what_reads_it(batch_run, tmp_path, capsys):
    # A multi-echo GRE stored as one 4-D NIfTI (plkd predict combines its echoes) failed in the batch with Slicer's
    # "Failed to load node from file" alone, in the log and the summary: nothing said why, nor what reads it.
    inputs, out = _folders(tmp_path, ("a.nii.gz",))
    echoes = np.stack([np.full(SHAPE, v, np.float32) for v in (400.0, 300.0, 200.0)], axis=-1)
    nib.save(nib.Nifti1Image(echoes, AFFINE), str(inputs / "me.nii.gz"))
    nib.save(nib.Nifti1Image(echoes[..., :1], AFFINE), str(inputs / "one.nii.gz"))  # one volume: read as 3-D
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 1
    rows = {r["input"]: r for r in _summary(out)}
    assert rows["a.nii.gz"]["status"] == rows["one.nii.gz"]["status"] == "ok"
    reason = rows["me.nii.gz"]["reason"]
    assert rows["me.nii.gz"]["status"] == "failed" and "4-D image of 3 volumes" in reason and "plkd predict" in reason
    assert "me.nii.gz: FAILED: a 4-D image of 3 volumes" in capsys.readouterr().err


def _csvRows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_the_report_csvs_of_a_batch_put_together_still_say_which_scan_each_row_is_from(batch_run, tmp_path):
    # The per-input report CSVs named no scan: a researcher who put a batch's reports into one table (a common step)
    # could no longer tell which scan each microbleed was found in.
    inputs, out = _folders(tmp_path)
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    together = [row for name in ("a", "b") for row in _csvRows(out / f"{name}_cmb-report.csv")]
    assert [r["input_file"] for r in together] == [str((inputs / "a.nii.gz").resolve())] * 2 + [
        str((inputs / "b.nii.gz").resolve())
    ] * 2
    # The same value as the JSON report's and the summary's input_file.
    assert {r["input_file"] for r in _summary(out)} == {r["input_file"] for r in together}
    assert json.loads((out / "a_cmb-report.json").read_text())["input_file"] == together[0]["input_file"]
    # The module's own Export (a reader's review) says it too.
    scene = slicer.vtkMRMLScene()
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(scene)
    volume = volumes.AddArchetypeVolume(str(inputs / "a.nii.gz"), "a", 0)
    result = resultImport.importResults(scene, volume, *_engineOutputs(tmp_path / "reader", ijkToRas(volume)))
    files = reportExport.exportReview(result.segmentationNode, result.tableNode, volume, tmp_path / "review", "a")
    assert [r["input_file"] for r in _csvRows(files.reportCsv)] == [str((inputs / "a.nii.gz").resolve())] * 2


def test_a_report_of_an_older_version_without_the_input_column_is_still_taken_as_the_batch_s_own(batch_run, tmp_path):
    # Reports written before the CSV had input_file lie in output folders: a rerun must take them as its own (their
    # JSON's file_sha256 names the CSV as written) and replace them, as before.
    import hashlib

    inputs, out = _folders(tmp_path, ("a.nii.gz",))
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    csvPath, jsonPath = out / "a_cmb-report.csv", out / "a_cmb-report.json"
    older = "".join(line.rsplit(",", 1)[0] + "\n" for line in csvPath.read_text().splitlines())
    assert older.splitlines()[0].endswith(",outline")
    csvPath.write_text(older)
    report = json.loads(jsonPath.read_text())
    report["file_sha256"][csvPath.name] = hashlib.sha256(older.encode()).hexdigest()
    jsonPath.write_text(json.dumps(report))
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    assert {r["input_file"] for r in _csvRows(csvPath)} == {str((inputs / "a.nii.gz").resolve())}


def test_a_nifti_pair_is_one_input_read_by_slicer_and_an_analyze_image_is_left_out_saying_why(
    batch_run, tmp_path, capsys
):
    # Slicer's volume reader loads a NIfTI pair (.hdr + .img, as SPM writes it) by either file, and plkd predict reads
    # pairs, but the batch told the user to convert it ("a format the batch does not read"). An Analyze 7.5 image
    # (the same two files without NIfTI's magic) does not say where left and right are: still left out, as by plkd.
    inputs, out = _folders(tmp_path, ("a.nii.gz",))
    image = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    nib.save(nib.Nifti1Pair(image, AFFINE), str(inputs / "p.img"))
    nib.save(nib.Nifti1Pair(np.ones(SHAPE, np.uint8), AFFINE), str(inputs / "p_bet.hdr"))  # its brain mask, a pair
    nib.save(nib.AnalyzeImage(image, AFFINE), str(inputs / "an.hdr"))
    nib.save(nib.Nifti1Pair(image, AFFINE), str(inputs / "c.hdr"))
    _scan(inputs / "c.nii.gz")  # the same scan converted beside its pair: one input, not two of one output name
    nib.save(nib.Nifti1Pair(image, AFFINE), str(inputs / "half.hdr"))
    (inputs / "half.hdr").unlink()
    assert batch_run(["--input-dir", inputs, "--output-dir", out, "--mask-suffix", "_bet"]) == 0
    rows = {r["input"]: r for r in _summary(out)}
    assert list(rows) == ["a.nii.gz", "c.nii.gz", "p.hdr", "an.hdr", "c.hdr", "half.img"]
    assert {rows[n]["status"] for n in ("an.hdr", "c.hdr", "half.img")} == {"left out"}
    assert rows["p.hdr"]["status"] == "ok" and rows["p.hdr"]["brain_mask"] == "p_bet.hdr"
    assert rows["p.hdr"]["input_file"] == str((inputs / "p.hdr").resolve())
    report = json.loads((out / "p_cmb-report.json").read_text())
    assert report["input"] == "p" and report["n_microbleeds"] == 2
    assert report["input_file"] == str((inputs / "p.hdr").resolve())
    # On the pair's grid, placed as Slicer's reader places the same scan saved as one .nii.gz file.
    labels, single = nib.load(out / "p_cmb-final.nii.gz"), nib.load(out / "a_cmb-final.nii.gz")
    assert labels.shape == SHAPE and np.allclose(labels.affine, single.affine, atol=1e-5)
    assert np.array_equal(np.asarray(labels.dataobj), np.asarray(single.dataobj))
    err = capsys.readouterr().err
    assert "an.hdr (an Analyze 7.5 image (no NIfTI magic in its .hdr)" in err and "plkd predict refuses it" in err
    assert "c.hdr (a NIfTI pair beside c.nii.gz (the same scan converted?), which is taken)" in err
    assert "half.img (an .img without its header half.hdr" in err
    assert "a format the batch does not read" not in err
    assert not list(out.glob("an_cmb*")) and not list(out.glob("half_cmb*"))


def test_a_run_of_another_folder_never_replaces_the_results_of_another_nifti_pair_with_the_same_header(
    batch_run, tmp_path, capsys
):
    # Two patients' pairs of one protocol have byte-identical .hdr files: compared by the header alone, the second
    # folder's run took the first patient's results for its own scan's and replaced them.
    out = tmp_path / "out"
    for folder, value in (("p1", 400.0), ("p2", 300.0)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Pair(np.full(SHAPE, value, np.float32), AFFINE), str(tmp_path / folder / "swi.hdr"))
    assert (tmp_path / "p1" / "swi.hdr").read_bytes() == (tmp_path / "p2" / "swi.hdr").read_bytes()
    assert batch_run(["--input-dir", tmp_path / "p1", "--output-dir", out]) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert batch_run(["--input-dir", tmp_path / "p2", "--output-dir", out]) == 2
    assert "swi_cmb-report.json is of " in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first


def test_a_gzipped_nifti_pair_is_one_input_as_an_uncompressed_pair_is(batch_run, tmp_path, capsys):
    # A NIfTI pair written compressed (NAME.hdr.gz + NAME.img.gz, which Slicer's reader and plkd predict read) was
    # neither processed nor named: "1 of 1 input(s) processed" over a folder of two scans, and no row in the summary.
    inputs, out = _folders(tmp_path, ("a.nii.gz",))
    image = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    nib.save(nib.Nifti1Pair(image, AFFINE), str(inputs / "p.hdr.gz"))
    assert (inputs / "p.img.gz").is_file()
    nib.save(nib.Nifti1Pair(np.ones(SHAPE, np.uint8), AFFINE), str(inputs / "p_bet.hdr.gz"))  # its brain mask
    nib.save(nib.AnalyzeImage(image, AFFINE), str(inputs / "an.hdr.gz"))
    nib.save(nib.Nifti1Pair(image, AFFINE), str(inputs / "half.hdr.gz"))
    (inputs / "half.hdr.gz").unlink()
    assert batch_run(["--input-dir", inputs, "--output-dir", out, "--mask-suffix", "_bet"]) == 0
    rows = {r["input"]: r for r in _summary(out)}
    assert list(rows) == ["a.nii.gz", "p.hdr.gz", "an.hdr.gz", "half.img.gz"]
    assert rows["half.img.gz"]["status"] == "left out" and "without its header" in rows["half.img.gz"]["reason"]
    assert rows["p.hdr.gz"]["status"] == "ok" and rows["p.hdr.gz"]["brain_mask"] == "p_bet.hdr.gz"
    report = json.loads((out / "p_cmb-report.json").read_text())
    assert report["input"] == "p" and report["n_microbleeds"] == 2
    assert report["input_file"] == str((inputs / "p.hdr.gz").resolve())
    labels, single = nib.load(out / "p_cmb-final.nii.gz"), nib.load(out / "a_cmb-final.nii.gz")
    assert labels.shape == SHAPE and np.allclose(labels.affine, single.affine, atol=1e-5)
    assert np.array_equal(np.asarray(labels.dataobj), np.asarray(single.dataobj))
    err = capsys.readouterr().err
    assert "an.hdr.gz (an Analyze 7.5 image (no NIfTI magic in its .hdr)" in err
    assert "half.img.gz (an .img.gz without its header half.hdr.gz" in err


def test_a_nifti_pair_with_one_file_gzipped_is_named_as_such(batch_run, tmp_path, capsys):
    # q.hdr beside q.img.gz (one file compressed by hand): plkd predict does not read it, and the batch said
    # "q.img is missing" with q.img.gz in the folder, and "an .img.gz without its header" for the same pair.
    import gzip

    inputs, out = _folders(tmp_path, ("a.nii.gz",))
    nib.save(nib.Nifti1Pair(np.full(SHAPE, 300.0, np.float32), AFFINE), str(inputs / "q.hdr"))
    (inputs / "q.img.gz").write_bytes(gzip.compress((inputs / "q.img").read_bytes()))
    (inputs / "q.img").unlink()
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    assert [(r["input"], r["status"]) for r in _summary(out)] == [("a.nii.gz", "ok"), ("q.hdr", "left out")]
    err = capsys.readouterr().err
    assert "q.hdr (a NIfTI pair of which one file is gzipped and the other not (q.hdr + q.img.gz)" in err
    assert "missing" not in err and "without its header" not in err and "1 file(s) in the input folder" in err


def _killedWriter(out: Path, names, tagged: bool = True) -> list[Path]:
    """The temporary files a batch run killed (kill -9, the system out of memory) while writing ``names`` into ``out``
    leaves: made by the module's own writer in a process that dies before it renames them."""
    import subprocess

    code = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO / 'CMBSegmentation')!r})\n"
        "from pathlib import Path\n"
        "from CMBSegmentationLib import atomicFiles, batchOutputs\n"
        f"tag = batchOutputs.partialTag(os.getpid()) if {tagged!r} else ''\n"
        "with atomicFiles.temporaryTag(tag):\n"
        f"    writing = atomicFiles.atomicPaths([Path({str(out)!r}) / n for n in {list(names)!r}])\n"
        "    for temporary in writing.__enter__():\n"
        "        temporary.write_bytes(b'half')\n"
        "os._exit(9)\n"
    )
    before = set(out.iterdir())
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 9
    return sorted(set(out.iterdir()) - before)


def test_a_rerun_removes_the_temporary_files_a_killed_batch_run_left_and_says_so(batch_run, tmp_path, capsys):
    # A batch run killed while writing (kill -9, out of memory, a power cut) left hidden ".NAME.partial-..." files in
    # the output folder, and every later run left them there: a folder of results that grew dead files without a word.
    import subprocess

    inputs, out = _folders(tmp_path)
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    left = _killedWriter(out, ["a_cmb-final.nii.gz", "a_cmb-report.json", "cmb-batch-summary.csv"])
    assert len(left) == 3 and all(p.name.startswith(".") and ".partial-" in p.name for p in left)
    # Not provably a batch run's: the module's Export (or an older version) killed while writing, and a batch run
    # still writing (its process alive: two runs into one folder).
    untagged = _killedWriter(out, ["b_cmb-report.json"], tagged=False)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = out / f".b_cmb-report.csv.partial-{batch_run.batch.batchOutputs.partialTag(alive.pid)}x1.csv"
        running.write_bytes(b"half")
        capsys.readouterr()
        assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
        err = capsys.readouterr().err
    finally:
        alive.kill()
        alive.wait()
    assert not any(p.exists() for p in left)
    assert "removed 3 temporary file(s) that a batch run killed while writing left" in err
    assert all(p.name in err for p in left)
    assert all(p.read_bytes() == b"half" for p in (*untagged, running))
    assert "not provably a batch run's, left as they are" in err and untagged[0].name in err and running.name in err
    assert [r["status"] for r in _summary(out)] == ["ok", "ok"]
    # The run's own writes leave none behind.
    hidden = {untagged[0].name, running.name, ".cmb-batch-summary.csv.sha256"}
    assert {p.name for p in out.iterdir() if p.name.startswith(".")} == hidden


def test_the_same_scan_under_two_names_is_said_in_the_summary_of_both(batch_run, tmp_path, capsys):
    # An archive holding a scan twice (a copy "a_copy.nii.gz", a link, the same NIfTI pair under another name) had each
    # processed as a scan of its own, and nothing said so: a total over the summary counted its microbleeds twice.
    import os
    import shutil

    inputs, out = _folders(tmp_path, ("a.nii.gz", "b.nii.gz"))
    _scan(inputs / "c.nii.gz", 300.0)  # another scan of the same size
    shutil.copy(inputs / "a.nii.gz", inputs / "a_copy.nii.gz")
    os.symlink(inputs / "a.nii.gz", inputs / "z-link.nii.gz")
    nib.save(nib.Nifti1Pair(np.full(SHAPE, 300.0, np.float32), AFFINE), str(inputs / "p.hdr"))
    nib.save(nib.Nifti1Pair(np.full(SHAPE, 200.0, np.float32), AFFINE), str(inputs / "q.hdr"))  # the same .hdr bytes
    shutil.copy(inputs / "p.hdr", inputs / "p2.hdr")
    shutil.copy(inputs / "p.img", inputs / "p2.img")
    assert (inputs / "p.hdr").read_bytes() == (inputs / "q.hdr").read_bytes()
    assert (inputs / "a.nii.gz").read_bytes() == (inputs / "b.nii.gz").read_bytes()  # _folders: one image twice
    _scan(inputs / "b.nii.gz", 350.0)
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    rows = {r["input"]: r for r in _summary(out)}
    assert all(r["status"] == "ok" for r in rows.values()) and len(rows) == 8
    same = "the same scan as another input (identical file content): "
    assert rows["a_copy.nii.gz"]["warnings"] == same + "a.nii.gz, z-link.nii.gz"
    assert rows["a.nii.gz"]["warnings"] == same + "a_copy.nii.gz, z-link.nii.gz"
    assert rows["p2.hdr"]["warnings"] == same + "p.hdr" and rows["p.hdr"]["warnings"] == same + "p2.hdr"
    assert rows["b.nii.gz"]["warnings"] == rows["c.nii.gz"]["warnings"] == rows["q.hdr"]["warnings"] == ""
    err = capsys.readouterr().err
    assert "batchProcess: warning: 2 scan(s) are in the input folder under several names" in err
    assert "a.nii.gz = a_copy.nii.gz = z-link.nii.gz" in err and "p.hdr = p2.hdr" in err


def test_a_killed_run_s_temporary_file_that_cannot_be_removed_is_named_as_such(tmp_path, monkeypatch):
    # Not as "not provably a batch run's": it is one, but the folder does not let it go (no permission there).
    out = tmp_path / "out"
    out.mkdir()
    (left,) = _killedWriter(out, ["a_cmb-report.json"])
    unlink = Path.unlink

    def refuse(path, *args, **kwargs):
        if path.name == left.name:
            raise PermissionError(13, "Permission denied")
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", refuse)
    assert batchOutputs.removeKilledPartials(out) == ([], [], [f"{left.name} (Permission denied)"])
    monkeypatch.undo()
    assert batchOutputs.removeKilledPartials(out) == ([left.name], [], []) and not left.exists()


def test_a_link_to_a_scan_that_is_gone_is_named_not_skipped_without_a_word(batch_run, tmp_path, capsys):
    # An archive of links to scans (a study folder linking into a PACS export) whose targets moved: the dangling links
    # were left out silently, and the run said "1 of 1 input(s) processed" over a folder of two scans.
    import os

    inputs, out = _folders(tmp_path, ("a.nii.gz",))
    os.symlink(tmp_path / "moved" / "b.nii.gz", inputs / "b.nii.gz")
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    assert [(r["input"], r["status"]) for r in _summary(out)] == [("a.nii.gz", "ok"), ("b.nii.gz", "left out")]
    err = capsys.readouterr().err
    assert "b.nii.gz (a link to " in err and str(tmp_path / "moved" / "b.nii.gz") in err and "which is not there" in err


def test_the_summary_says_which_input_was_under_way_when_the_run_died(batch_run, tmp_path, monkeypatch):
    # Slicer killed or crashed during an input (out of memory, a reader's segfault on a damaged file) left a summary
    # whose row for that input said "the run has not reached it", as for those after it: the researcher could not tell
    # which scan to look at, and a rerun died on it again.
    inputs, out = _folders(tmp_path, ("a.nii.gz", "b.nii.gz", "c.nii.gz"))
    process, seen = batch_run.batch.processOne, {}

    def processOne(path, args):
        seen[path.name] = [(r["input"], r["status"]) for r in _summary(out)]  # what a crash now would leave
        return process(path, args)

    monkeypatch.setattr(batch_run.batch, "processOne", processOne)
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    assert seen["b.nii.gz"] == [("a.nii.gz", "ok"), ("b.nii.gz", "running"), ("c.nii.gz", "not run")]
    monkeypatch.setattr(batch_run.batch, "processOne", process)
    (row,) = [r for r in _summary(out) if r["input"] == "b.nii.gz"]
    assert row["status"] == "ok"


def test_an_archive_in_the_input_folder_is_named_not_skipped_without_a_word(batch_run, tmp_path, capsys):
    # Scans often come as a zipped series or study: the batch left "study2.zip" out without a word and said
    # "1 of 1 input(s) processed".
    import zipfile

    inputs, out = _folders(tmp_path, ("a.nii.gz",))
    with zipfile.ZipFile(inputs / "study2.zip", "w") as archive:
        archive.writestr("b.nii.gz", (inputs / "a.nii.gz").read_bytes())
    (inputs / "study3.tar.gz").write_bytes(b"\x1f\x8b")
    (inputs / "a.json").write_text("{}")  # a sidecar: not named
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    err = capsys.readouterr().err
    assert "2 file(s) in the input folder are not T2*/SWI scans" in err
    assert "study2.zip (an archive: unpack it" in err and "study3.tar.gz (an archive" in err and "a.json" not in err


def test_every_file_left_out_is_a_row_of_the_summary_with_its_reason(batch_run, tmp_path, capsys):
    # Files left out (a format the batch does not read, an Analyze pair, a DICOM series, a folder) were named in one
    # warning line, the first three only ("and 2 more"), and not in the summary: a researcher reading the table over
    # a study could not tell that scans of the folder were never analysed, nor which.
    inputs, out = _folders(tmp_path, ("a.nii.gz",))
    for name in ("b.mgz", "c.nhdr", "d.nii.bz2"):
        (inputs / name).write_bytes(b"x")
    nib.save(nib.AnalyzeImage(np.ones(SHAPE, np.float32), AFFINE), str(inputs / "an.hdr"))
    (inputs / "series1").mkdir()
    _scan(inputs / "a_CMB.nii.gz")  # a label map: left out as not a scan
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    captured = capsys.readouterr()
    assert "and 3 more" in captured.err and "1 of 1 input(s) processed" in captured.out  # inputs counted
    rows = _summary(out)
    assert [(r["input"], r["status"]) for r in rows] == [("a.nii.gz", "ok")] + [
        (name, "left out") for name in ("a_CMB.nii.gz", "an.hdr", "b.mgz", "c.nhdr", "d.nii.bz2", "series1")
    ]
    left = {r["input"]: r for r in rows[1:]}
    assert "a format the batch does not read" in left["d.nii.bz2"]["reason"]
    assert "Analyze 7.5" in left["an.hdr"]["reason"] and "a folder" in left["series1"]["reason"]
    assert left["a_CMB.nii.gz"]["reason"] == "label map or mask"
    assert left["b.mgz"]["input_file"] == str((inputs / "b.mgz").resolve())
    assert all(r[k] == "" for r in left.values() for k in ("n_microbleeds", "report_json", "bundle", "model"))


def test_a_summary_edited_since_the_batch_wrote_it_is_never_replaced(batch_run, tmp_path, capsys):
    # A researcher who added notes to cmb-batch-summary.csv in a spreadsheet (its columns kept) lost them to the next
    # run without a word: any file starting with the summary's columns was taken for the batch's own.
    inputs, out = _folders(tmp_path)
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 0  # its own summary it replaces
    summary = out / "cmb-batch-summary.csv"
    edited = summary.read_text().replace(",ok,", ",ok (checked by JS),", 1)
    summary.write_text(edited)
    capsys.readouterr()
    assert batch_run(["--input-dir", inputs, "--output-dir", out]) == 2
    err = capsys.readouterr().err
    assert "cmb-batch-summary.csv in the output folder changed since the batch run wrote it" in err
    assert summary.read_text() == edited and len(batch_run.calls) == 4
