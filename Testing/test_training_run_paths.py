"""Where a run's record points: students distilled from another run's teacher, runs resumed and exported from other
working directories, and bundles that carry no local paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from training_toydata import TINY_TRAIN, write_toy_dataset

from plkd.bundle import load_bundle
from plkd.cli import main
from plkd.training.checkpoint import load_weights


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """``root/data``; ``root/runs/a`` (screening and teacher); ``root/runs/b``, students only, distilled from
    ``a``'s teacher: all given as paths relative to ``root``, the working directory of the calls."""
    root = tmp_path_factory.mktemp("paths")
    write_toy_dataset(root / "data", n_subjects=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert main(["train", "teacher", "--data", "data", "--out", "runs/a", *TINY_TRAIN]) == 0
        assert main(["train", "screening", "--data", "data", "--out", "runs/a", *TINY_TRAIN]) == 0
        students = ["train", "students", "--data", "data", "--out", "runs/b", "--teacher", "runs/a/teacher"]
        assert main([*students, *TINY_TRAIN]) == 0
    return root


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))


def test_a_students_only_run_exports_with_the_teacher_it_was_distilled_from(
    two_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exporting a run whose students were distilled from another run's teacher (--teacher) failed with "RUN/screening
    has not finished training; run 'plkd train' first", though no screening stage was ever started there. Its bundle
    now takes that teacher, and the screening network beside it (which the students mined their hard negatives
    from), from any working directory."""
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(two_runs / "runs" / "b"), "--out", "bundle"]) == 0
    bundle = load_bundle(tmp_path / "bundle")
    assert {"screening", "teacher", "student_x2", "student_x4", "student_x8"} <= set(bundle.manifest["networks"])
    teacher = load_weights(two_runs / "runs" / "a" / "teacher" / "model.pt")
    exported = bundle.network("teacher", "cpu").state_dict()
    assert all(torch.equal(teacher[k], exported[k].float()) for k in teacher)
    # The students learnt from the false positives of the screening network the bundle runs them with.
    info = json.loads((two_runs / "runs" / "b" / "run.json").read_text(encoding="utf-8"))
    assert info["sources"]["screening"]["relative"] == "../a/screening"
    assert info["sources"]["teacher"]["relative"] == "../a/teacher"
    notes = " ".join(bundle.manifest["training"]["notes"])
    assert "teacher and screening network of the run a" in notes


def test_a_students_only_run_whose_teacher_is_gone_says_what_is_missing(two_runs: Path, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(two_runs / "runs" / "b", runs / "b")  # without a
    info = json.loads((runs / "b" / "run.json").read_text(encoding="utf-8"))
    for role in ("teacher", "screening"):  # and a removed from where it was
        info["sources"][role]["path"] = str(tmp_path / "removed" / "a" / role)
    (runs / "b" / "run.json").write_text(json.dumps(info), encoding="utf-8")
    assert main(["export", str(runs / "b"), "--out", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("plkd: error: ")
    assert "distilled from the teacher" in err[0] and str(tmp_path / "removed" / "a" / "teacher") in err[0]
    assert "not found" in err[0] and "put that run folder back" in err[0]
    assert not (tmp_path / "bundle").exists()


def test_runs_moved_together_still_find_each_other(two_runs: Path, tmp_path: Path) -> None:
    """The other run is recorded relative to the run as well: a project folder moved or copied elsewhere (another
    machine) uses its own copy of the teacher, not the one at the old place."""
    moved = tmp_path / "moved"
    shutil.copytree(two_runs / "runs", moved)
    weights = moved / "a" / "teacher" / "model.pt"
    changed = {k: v + 1 if v.is_floating_point() else v for k, v in load_weights(weights).items()}
    torch.save(changed, weights)
    assert main(["export", str(moved / "b"), "--out", str(tmp_path / "bundle")]) == 0
    exported = load_bundle(tmp_path / "bundle").network("teacher", "cpu").state_dict()
    assert all(torch.equal(changed[k], exported[k].float()) for k in changed)


def test_bundles_carry_no_local_paths(two_runs: Path, tmp_path: Path) -> None:
    """training.data was the --data folder as typed (an absolute path of the trainer's machine when typed so) and the
    students' init_from the teacher's folder as typed; a shared bundle now names folders, never where they lay."""
    assert main(["export", str(two_runs / "runs" / "b"), "--out", str(tmp_path / "bundle")]) == 0
    text = (tmp_path / "bundle" / "manifest.json").read_text(encoding="utf-8")
    assert str(two_runs) not in text and str(tmp_path) not in text and "runs/" not in text
    training = _manifest(tmp_path / "bundle")["training"]
    assert training["data"] == "data"
    assert training["stages"]["student_x2"]["init_from"] == "a/teacher"
    assert training["stages"]["student_x4"]["init_from"] == "students/x2"


def test_a_run_resumes_from_another_working_directory_without_data(
    two_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """run.json kept --data as typed (relative to wherever plkd train was called), so nothing could find the data
    from elsewhere; it is now also recorded absolute and relative to the run, and a resume may leave --data out."""
    run = tmp_path / "run"
    shutil.copytree(two_runs / "runs" / "a", run)
    shutil.rmtree(run / "teacher")  # the teacher to train again
    monkeypatch.chdir(tmp_path)
    assert main(["train", "teacher", "--out", "run", *TINY_TRAIN]) == 0
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert info["data"] == str(two_runs / "data")
    assert (run / info["data_relative"]).resolve() == (two_runs / "data").resolve()
    # A new run needs --data.
    assert main(["train", "teacher", "--out", "new", *TINY_TRAIN]) == 2
    assert "--data" in capsys.readouterr().err


def test_a_teacher_of_a_run_with_another_grid_or_normalisation_is_refused(
    two_runs: Path, tmp_path: Path, capsys
) -> None:
    """The bundle records one grid, normalisation and patch size for all its networks: students distilled (and a
    bundle made) with the teacher of a run that clipped or sampled otherwise fed that teacher images it never saw,
    and applied the students' settings to it in the bundle, without a word."""
    runs = tmp_path / "runs"
    shutil.copytree(two_runs / "runs", runs)
    config = runs / "a" / "config.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("[0.0, 99.5]", "[0.0, 99.0]"), encoding="utf-8")
    assert main(["export", str(runs / "b"), "--out", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.clip_percentiles" in err[0] and "a" in err[0]
    assert not (tmp_path / "bundle").exists()
    students = ["train", "students", "--data", str(two_runs / "data"), "--out", str(tmp_path / "c"), *TINY_TRAIN]
    assert main([*students, "--teacher", str(runs / "a" / "teacher")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.clip_percentiles" in err[0]
    assert not (tmp_path / "c").exists()


def test_a_screening_folder_given_that_is_not_a_finished_stage_is_refused(
    two_runs: Path, tmp_path: Path, capsys
) -> None:
    """--screening naming a folder without a finished screening stage (a typo, the run folder instead of its
    screening/) trained the teacher and students without any mined hard negatives, and said nothing."""
    data = str(two_runs / "data")
    for given in (tmp_path / "typo", two_runs / "runs" / "a"):
        args = ["train", "teacher", "--data", data, "--out", str(tmp_path / "c"), "--screening", str(given)]
        assert main([*args, *TINY_TRAIN]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--screening {given} is not a finished screening stage" in err[0]
        assert not (tmp_path / "c").exists()


def test_an_init_from_bundle_replaced_since_the_run_started_is_refused(two_runs: Path, tmp_path: Path, capsys) -> None:
    """--init-from names a bundle by its path: one replaced there since (re-exported, re-tuned in place) gave the stages
    still to train other starting networks than the started ones, and plkd export recorded the new bundle's checksum
    as the one the run started from. The run records the bundle's manifest checksum and refuses another."""
    bundle = tmp_path / "start"
    shutil.copytree(Path(__file__).resolve().parent / "data" / "tiny-bundle", bundle)
    args = ["--data", str(two_runs / "data"), "--out", str(tmp_path / "run"), "--init-from", str(bundle), *TINY_TRAIN]
    assert main(["train", "screening", *args]) == 0
    capsys.readouterr()
    info = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    assert info["init_from"]["name"] == "tiny-test-bundle" and len(info["init_from"]["manifest_sha256"]) == 64
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    manifest["name"] = "re-exported"
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert main(["train", "teacher", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "changed since the run started" in err[0]
    assert not (tmp_path / "run" / "teacher").exists()


def test_a_students_only_run_without_a_record_exports_with_the_teacher_named(
    two_runs: Path, tmp_path: Path, capsys
) -> None:
    """A students-only run trained before run.json recorded its teacher could not be exported at all; export names
    them with --teacher and --screening, and says so when it has none."""
    run = tmp_path / "b"
    shutil.copytree(two_runs / "runs" / "b", run)
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    del info["sources"]
    (run / "run.json").write_text(json.dumps(info), encoding="utf-8")
    assert main(["export", str(run), "--out", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no teacher network" in err[0] and "plkd export --teacher" in err[0]
    a = two_runs / "runs" / "a"
    args = ["--teacher", str(a / "teacher"), "--screening", str(a / "screening")]
    assert main(["export", str(run), "--out", str(tmp_path / "bundle"), *args]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "b2"), "--teacher", str(a)]) == 2
    assert "is not a finished teacher stage" in capsys.readouterr().err
