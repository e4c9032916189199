"""plkd export writes what the run trained: an unfinished run, or students of another mode, are refused
instead of giving a bundle without them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from training_toydata import write_toy_dataset

from plkd.cli import main

TINY = ["--config", "tiny", "--progress", "none"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    data = write_toy_dataset(root / "data", n_subjects=3)
    assert main(["train", "all", "--data", str(data), "--out", str(root / "run"), *TINY]) == 0
    return root / "run"


def test_an_interrupted_run_is_not_exported_as_finished(finished: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "students" / "x8" / "done.json").unlink()  # killed in x8: x8 and the fine-tune unfinished
    shutil.rmtree(run / "students" / "finetune")
    assert main(["export", str(run), "--out", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "students x8, finetune have not finished" in err[0]
    assert not (tmp_path / "bundle").exists()
    # Chosen by name, the finished ones are exported.
    assert main(["export", str(run), "--out", str(tmp_path / "bundle"), "--students", "x2,x4"]) == 0
    names = json.loads((tmp_path / "bundle" / "manifest.json").read_text(encoding="utf-8"))["networks"]
    assert set(names) == {"screening", "teacher", "student_x2", "student_x4"}


def test_students_of_another_mode_are_named(finished: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(finished), "--out", str(tmp_path / "bundle"), "--mode", "kd"]) == 2
    assert "has no kd students but plkd students: export with --mode plkd" in capsys.readouterr().err
    assert main(["export", str(finished), "--out", str(tmp_path / "bundle")]) == 0
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text(encoding="utf-8"))
    assert {"student_x2", "student_x4", "student_x8"} <= set(manifest["networks"])
    # The bundle records the percentiles the run normalised with (inference uses them).
    assert manifest["normalisation"] == {"method": "brain-zscore", "clip_percentiles": [0.0, 99.5]}


def test_the_bundle_records_the_runs_caveats_and_resumes_with_other_settings(tmp_path: Path) -> None:
    data = write_toy_dataset(tmp_path / "data", n_subjects=3)
    run = tmp_path / "run"
    assert main(["train", "screening", "--data", str(data), "--out", str(run), *TINY]) == 0
    args = ["train", "all", "--data", str(data), "--out", str(run), *TINY]
    assert main([*args, "--set", "augment.flip_p=0.0"]) == 0  # the teacher and students trained otherwise
    assert main([*args, "--set", "augment.flip_p=0.0"]) == 0  # nothing left: no further change to record
    assert main(["export", str(run), "--out", str(tmp_path / "bundle")]) == 0
    training = json.loads((tmp_path / "bundle" / "manifest.json").read_text(encoding="utf-8"))["training"]
    (note,) = training["notes"]
    assert note.startswith("resumed with other settings (augment) after screening had started")
    assert training["data_sha256"] == json.loads((run / "run.json").read_text(encoding="utf-8"))["data_sha256"]


@pytest.mark.parametrize("target", ["run", "folder"])
def test_overwrite_replaces_only_a_bundle(finished: Path, tmp_path: Path, capsys, target: str) -> None:
    """``plkd export RUN --out RUN --overwrite`` replaced the training run with its bundle (every stage, checkpoint and
    log gone), and ``--out`` a folder of the user's with --overwrite deleted everything in it; ``plkd tune --out DATA
    --overwrite`` deleted the validation data. --overwrite now replaces a bundle (or a .zip file), nothing else."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    own = tmp_path / "thesis"
    (own / "chapters").mkdir(parents=True)
    (own / "chapters" / "one.tex").write_text("months of work")
    out = {"run": run, "folder": own}[target]
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main(["export", str(run), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a model bundle" in err[0] and "--overwrite" in err[0]
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left beside it
    # A bundle is replaced, as before.
    bundle = tmp_path / "bundle"
    assert main(["export", str(run), "--out", str(bundle)]) == 0
    assert main(["export", str(run), "--out", str(bundle), "--overwrite", "--students", "x2"]) == 0
    assert "student_x4" not in json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))["networks"]
    if target == "folder":
        data = write_toy_dataset(tmp_path / "val", n_subjects=1, seed=5)
        kept = sorted(p.relative_to(data) for p in data.rglob("*"))
        args = ["tune", str(data), "--model", str(bundle), "--out", str(data), "--overwrite", "--progress", "none"]
        assert main(args) == 2
        assert "is not a model bundle" in capsys.readouterr().err
        assert sorted(p.relative_to(data) for p in data.rglob("*")) == kept


def test_a_student_that_does_not_exist_is_named_as_such(finished: Path, tmp_path: Path, capsys) -> None:
    """--students student_x4 (the bundle's name) or x4 with --mode kd said "RUN/students/student_x4 has not finished
    training; run 'plkd train' first", sending the user to train a stage that no command makes."""
    out = str(tmp_path / "bundle")
    assert main(["export", str(finished), "--out", out, "--students", "student_x4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no plkd student stage student_x4" in err and "x2, x4, x8, finetune" in err
    assert main(["export", str(finished), "--out", out, "--students", "x4", "--mode", "kd"]) == 2
    assert "has no kd student stage x4 (its kd students: none)" in capsys.readouterr().err


def test_a_run_given_as_dot_is_named_after_its_folder(finished: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """``plkd export . --out B`` from inside the run failed with "manifest.json: 'name' must be a non-empty string"."""
    monkeypatch.chdir(finished)
    assert main(["export", ".", "--out", str(tmp_path / "bundle")]) == 0
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text(encoding="utf-8"))["name"] == finished.name
