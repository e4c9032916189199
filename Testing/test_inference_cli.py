"""``plkd predict`` from the command line: outputs, sharding, skipping, progress and bad inputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plkd.cli import main
from plkd.inference.batch import shard_of
from plkd.inference.inputs import expand_inputs

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"
CASE = ROOT / "Testing" / "data" / "tiny-case" / "tiny_T2S.nii.gz"


def _predict(*args: str) -> int:
    return main(["predict", *args, "--model", str(BUNDLE), "--device", "cpu", "--progress", "none"])


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _copy_cases(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    return [Path(shutil.copy(CASE, folder / f"sub-{i:02d}_T2S.nii.gz")) for i in range(n)]


def test_predict_writes_label_map_and_json(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _predict(str(CASE), "--output-dir", str(out), "--save-probability") == 0
    assert _outputs(out) == ["plkd_summary.csv", "tiny_T2S_cmb.json", "tiny_T2S_cmb.nii.gz", "tiny_T2S_cmb_prob.nii.gz"]
    src, lab = nib.load(str(CASE)), nib.load(str(out / "tiny_T2S_cmb.nii.gz"))
    assert lab.shape == src.shape
    np.testing.assert_array_equal(lab.affine, src.affine)
    assert np.issubdtype(lab.get_data_dtype(), np.integer)
    doc = json.loads((out / "tiny_T2S_cmb.json").read_text())
    assert set(doc) >= {"input", "model", "student", "lr_factor", "n_microbleeds", "candidates", "timings", "notes"}
    kept = [c for c in doc["candidates"] if c["kept"]]
    assert doc["n_microbleeds"] == len(kept) == int(np.asarray(lab.dataobj).max()) == 3
    assert sorted(c["label"] for c in kept) == [1, 2, 3]
    assert all(
        set(c) >= {"id", "label", "center_ras", "voxels", "volume_mm3", "probability", "kept"}
        for c in doc["candidates"]
    )


def test_sharding_is_a_partition_that_files_arriving_between_launches_do_not_move(tmp_path: Path) -> None:
    _copy_cases(tmp_path / "in", 5)
    assert _predict(str(tmp_path / "in"), "--output-dir", str(tmp_path / "o0"), "--shard", "0/2") == 0
    # A scan arrives between the launches of shard 0 and shard 1, sorted before all the others: numbered by their
    # place in the sorted list, every scan moved to the other shard, so shard 1 redid shard 0's and lost its own.
    shutil.copy(CASE, tmp_path / "in" / "sub-000_T2S.nii.gz")
    assert _predict(str(tmp_path / "in"), "--output-dir", str(tmp_path / "o1"), "--shard", "1/2") == 0
    names0 = {n for n in _outputs(tmp_path / "o0") if n.endswith(".json")}
    names1 = {n for n in _outputs(tmp_path / "o1") if n.endswith(".json")} - {"sub-000_T2S_cmb.json"}
    assert not names0 & names1
    assert names0 | names1 == {f"sub-{i:02d}_T2S_cmb.json" for i in range(5)}
    # Each scan's shard is the sha256 of its path in the folder given, modulo n (documented): fixed across versions.
    assert names0 == {f"sub-{i:02d}_T2S_cmb.json" for i in (0, 2)}
    assert [shard_of(f"sub-{i:02d}_T2S.nii.gz", 2) for i in range(5)] == [0, 1, 0, 1, 1]
    assert main(["predict", str(CASE), "-o", str(tmp_path / "x"), "--shard", "2/2", "--model", str(BUNDLE)]) == 2


def test_a_scan_has_the_same_shard_wherever_the_study_is_mounted(tmp_path: Path) -> None:
    # Shards of one job array run on machines that mount the study at other paths, or are given it relatively.
    for root in (tmp_path / "a" / "study", tmp_path / "mnt" / "b" / "study"):
        (root / "sub-01" / "anat").mkdir(parents=True)
        shutil.copy(CASE, root / "sub-01" / "anat" / "sub-01_T2starw.nii.gz")
    keys = {scan.key for root in ("a", "mnt/b") for scan in expand_inputs([tmp_path / root / "study"]).scans}
    assert keys == {"sub-01/anat/sub-01_T2starw.nii.gz"}
    pattern = str(tmp_path / "a" / "study" / "sub-*" / "anat" / "*.nii.gz")
    assert [scan.key for scan in expand_inputs([pattern]).scans] == ["sub-01/anat/sub-01_T2starw.nii.gz"]
    # Files named one by one (a shell-expanded list): their paths as given, so files of one name in many folders
    # spread over the shards instead of all sharing the shard of their name.
    named = [str(tmp_path / r / "study" / "sub-01" / "anat" / "sub-01_T2starw.nii.gz") for r in ("a", "mnt/b")]
    assert [scan.key for scan in expand_inputs(named).scans] == [Path(n).as_posix() for n in named]
    assert {scan.key for scan in expand_inputs(["./x/../in/T2S.nii.gz"]).scans} == {"in/T2S.nii.gz"}


def test_finished_outputs_are_skipped_unless_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert _predict(str(CASE), "-o", str(out)) == 0
    label = out / "tiny_T2S_cmb.nii.gz"
    os.utime(label, (1, 1))  # a skipped input must not be touched
    assert _predict(str(CASE), "-o", str(out)) == 0
    assert label.stat().st_mtime == 1
    assert "1 skipped" in capsys.readouterr().err
    assert _predict(str(CASE), "-o", str(out), "--overwrite") == 0
    assert label.stat().st_mtime > 1
    assert nib.load(str(label)).shape == nib.load(str(CASE)).shape


def test_progress_lines_are_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["predict", str(CASE), "-o", str(tmp_path), "--model", str(BUNDLE), "--device", "cpu", "--progress", "jsonl"]
    assert main(argv) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]
    stages = {r["stage"] for r in records if "done" in r}
    assert {"load", "preprocess", "screen", "segment", "write"} <= stages
    assert all(0 <= r["done"] <= r["total"] for r in records if "done" in r)


def _write(path: Path, data: np.ndarray, zooms: tuple[float, ...] = (1.0, 1.0, 1.0)) -> Path:
    affine = np.diag([*zooms[:3], 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    good = np.asarray(nib.load(str(CASE)).dataobj).astype(np.float32)
    nan = good.copy()
    nan[3, 3, 3] = np.nan
    corrupt_bundle = tmp / "corrupt-bundle"
    shutil.copytree(BUNDLE, corrupt_bundle)
    weights = next(corrupt_bundle.glob("*.pt"))
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    return {
        "missing": ([str(tmp / "nope.nii.gz")], "not found"),
        "2d": ([str(_write(tmp / "flat.nii.gz", good[:, :, 0]))], "2-D"),
        "5d": ([str(_write(tmp / "five.nii.gz", good[..., None, None].repeat(2, 3).repeat(2, 4)))], "5-D"),
        "nan": ([str(_write(tmp / "nan.nii.gz", nan))], "NaN"),
        "constant": ([str(_write(tmp / "const.nii.gz", np.full((20, 20, 20), 7, np.float32)))], "constant"),
        "spacing": ([str(_write(tmp / "huge.nii.gz", good, (1.0, 1.0, 80.0)))], "absurd voxel spacing"),
        "empty-mask": (
            [str(CASE), "--mask", str(_write(tmp / "m0.nii.gz", np.zeros(good.shape, np.uint8)))],
            "empty",
        ),
        "mask-grid": (
            [str(CASE), "--mask", str(_write(tmp / "m1.nii.gz", np.ones((10, 10, 10), np.uint8)))],
            "does not lie on the image's grid",
        ),
        "bundle": ([str(CASE), "--model", str(corrupt_bundle)], "checksum"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "2d", "5d", "nan", "constant", "spacing", "empty-mask", "mask-grid", "bundle"]
)
def test_bad_input_gives_one_line_and_no_output(tmp_path: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    args, expected = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    model = [] if "--model" in args else ["--model", str(BUNDLE)]
    code = main(["predict", *args, "-o", str(out), *model, "--device", "cpu", "--progress", "none"])
    err = capsys.readouterr().err
    assert code != 0
    errors = [ln for ln in err.splitlines() if ln.startswith("plkd: error:")]
    assert len(errors) == 1 and expected.lower() in errors[0].lower(), err
    assert "Traceback" not in err
    # No outputs, no partial files; at most the run's summary, whose row names the failure.
    assert [p.name for p in out.glob("*")] in ([], ["plkd_summary.csv"])


def test_one_bad_input_does_not_stop_the_others(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "in").mkdir()
    shutil.copy(CASE, tmp_path / "in" / "a_T2S.nii.gz")
    (tmp_path / "in" / "b_T2S.nii.gz").write_bytes(b"not a nifti")
    assert _predict(str(tmp_path / "in"), "-o", str(tmp_path / "out")) == 2
    assert _outputs(tmp_path / "out") == ["a_T2S_cmb.json", "a_T2S_cmb.nii.gz", "plkd_summary.csv"]
    assert "b_T2S.nii.gz" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    import plkd.bundle

    monkeypatch.setattr(plkd.bundle, "find_default_bundle", lambda modality="T2S": None)
    assert main(["predict", str(CASE), "-o", str(tmp_path)]) == 2
    assert "plkd: error: no model bundle found" in capsys.readouterr().err


def test_at_ras_segments_one_point(tmp_path: Path) -> None:
    truth = json.loads((CASE.parent / "truth.json").read_text())
    x, y, z = truth["centres_ras"][0]
    assert _predict(str(CASE), "-o", str(tmp_path), "--at-ras", f"{x},{y},{z}") == 0
    doc = json.loads((tmp_path / "tiny_T2S_cmb.json").read_text())
    assert len(doc["candidates"]) == 1 and doc["candidates"][0]["label"] == 1
    assert main(["predict", str(CASE), "-o", str(tmp_path), "--at-ras", "1,2", "--model", str(BUNDLE)]) == 2


@pytest.mark.parametrize("point", ["inf,0,0", "0,-inf,0", "nan,0,0"])
def test_at_ras_that_is_no_point_is_one_line_error(tmp_path: Path, capsys, point: str) -> None:
    # inf passed the NaN check and ran on to "outside the image", after numpy's RuntimeWarning on stderr.
    assert main(["predict", str(CASE), "-o", str(tmp_path / "o"), f"--at-ras={point}", "--model", str(BUNDLE)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("plkd: error: --at-ras must be three numbers") and len(err) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("option", "message"), [(["--threads", "0"], "--threads"), (["--candidates", "-5"], "--candidates")]
)
def test_benchmark_counts_it_cannot_use_are_one_line_errors(tmp_path, capsys, option, message):
    # --threads 0 ended in torch's RuntimeError traceback (exit 1); --candidates -5 was timed and tabled (exit 0).
    out = tmp_path / "bench.json"
    args = ["benchmark", "--sizes", "1", "--shape", "40,40,32", "--model", str(BUNDLE), "--json", str(out), *option]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"plkd: error: {message} must be") and "\n" not in err
    assert not out.exists()


def test_benchmark_reports_both_methods_and_their_ratio(tmp_path):
    out = tmp_path / "bench.json"
    args = ["benchmark", "--sizes", "1,4", "--shape", "40,40,32", "--candidates", "2", "--threads", "1"]
    args += ["--baseline", "same-size", "--baseline-windows", "2"]
    assert main(args + ["--model", str(BUNDLE), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["method"] for r in rows[:2]] == ["two-stage", "two-stage"]
    assert rows[2]["method"].startswith("sliding-window") and rows[2]["baseline"] == "same-size"
    assert all(r["seconds"] > 0 and r["ratio_vs_baseline"] > 0 for r in rows[:2])
    assert rows[1]["student"] == "student_x4"  # 4 mm slices use the x4 student


@pytest.mark.parametrize("when", ["building the parser", "reading the options"])
def test_ctrl_c_while_plkd_starts_is_one_line_not_a_traceback(monkeypatch, capsys, when: str) -> None:
    # Ctrl+C in the first seconds (importing torch and the commands, reading the options) printed a 30-60 line
    # traceback and died by the signal: the run's own Ctrl+C handling only began with the command.
    import plkd.cli as cli

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    if when == "building the parser":
        monkeypatch.setattr(cli, "build_parser", interrupted)
    else:
        monkeypatch.setattr(cli.argparse.ArgumentParser, "parse_known_args", interrupted)
    capsys.readouterr()
    assert cli.main(["predict", str(CASE), "-o", "out"]) == 130
    assert capsys.readouterr().err == "plkd: interrupted\n"


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_a_gpu_the_machine_lacks_falls_back_to_the_cpu_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    # --device cuda on a laptop or a node without a GPU (a script written for the lab's GPU machine) was refused:
    # the scan was not analysed. It now runs on the CPU, said in one warning line and each JSON's notes.
    import torch

    import plkd.inference.device as devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    out = tmp_path / "out"
    args = ["predict", str(CASE), "-o", str(out), "--model", str(BUNDLE), "--device", device, "--progress", "none"]
    assert main(args) == 0
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "--device" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"--device {device} was requested") and "on the CPU" in said[0]
    doc = json.loads((out / "tiny_T2S_cmb.json").read_text())
    assert doc["n_microbleeds"] == 3
    assert any(f"--device {device}" in note and "on the CPU" in note for note in doc["notes"])


def test_ctrl_c_after_the_run_has_finished_is_no_traceback(tmp_path: Path) -> None:
    # After the last line ("plkd predict: 1 done ...") Python takes 2-3 s to shut torch and the rest down; Ctrl+C
    # then printed a traceback ("Exception ignored in atexit callback ... KeyboardInterrupt") over a finished run.
    import subprocess
    import sys

    argv = ["plkd", "predict", str(CASE), "-o", str(tmp_path / "out"), "--model", str(BUNDLE), "--device", "cpu"]
    script = f"""
import os, signal, sys, time
sys.argv = {[*argv, "--progress", "none"]!r}
from plkd.cli import main
rc = main()
os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl+C while the finished run exits
time.sleep(0.5)
print("exited as the run ended", file=sys.stderr)
sys.exit(rc)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.rstrip().endswith("exited as the run ended")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["predict", "x.nii.gz", "-o", "o", "--threads", "abc"],
            "plkd: error: predict: argument --threads: invalid int value: 'abc' (options: plkd predict --help)\n",
        ),
        (
            ["predict", "x.nii.gz", "-o", "o", "--bogus"],
            "plkd: error: predict: unrecognized arguments: --bogus (options: plkd predict --help)\n",
        ),
        (["--nope"], "plkd: error: unrecognized arguments: --nope (options: plkd --help)\n"),
    ],
)
def test_a_wrong_option_is_one_line_naming_the_command_not_the_usage_block(argv, said, tmp_path, capsys, monkeypatch):
    # argparse printed its usage block (up to 20 lines) before "plkd predict: error: ..."; every other refusal is one
    # line "plkd: error: ...", exit status 2, nothing written.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == said and captured.out == ""
    assert not any(tmp_path.iterdir())
