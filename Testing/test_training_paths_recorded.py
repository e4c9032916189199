"""Where a run's data and stages came from is recorded as absolute paths: as typed (``--data toy --out run1``),
run.json, each stage's ``init_from`` and the exported or tuned bundle named folders only the shell that ran the
command could find."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from training_toydata import write_toy_dataset

from plkd.cli import main
from plkd.tuning import _write_tuned_bundle

ROOT = Path(__file__).resolve().parents[1]


def test_train_and_export_with_relative_folders_record_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toy_dataset(tmp_path / "toy", n_subjects=3)
    monkeypatch.chdir(tmp_path)
    tiny = ["--config", "tiny", "--progress", "none", "--set", "num_threads=1"]
    assert main(["train", "all", "--data", "toy", "--out", "run1", *tiny]) == 0
    run = tmp_path / "run1"
    assert json.loads((run / "run.json").read_text(encoding="utf-8"))["data"] == str((tmp_path / "toy").resolve())
    finetune = json.loads((run / "students" / "finetune" / "done.json").read_text(encoding="utf-8"))
    assert finetune["init_from"] == str((run / "students" / "x8").resolve())
    assert main(["export", "run1", "--out", "bundle"]) == 0
    training = json.loads((tmp_path / "bundle" / "manifest.json").read_text(encoding="utf-8"))["training"]
    assert training["data"] == str((tmp_path / "toy").resolve())
    assert training["stages"]["student_x2"]["init_from"] == str((run / "teacher").resolve())
    # A run resumed from another working directory is the same run (same data, nothing to do).
    monkeypatch.chdir(run)
    assert main(["train", "all", "--data", "../toy", "--out", ".", *tiny]) == 0


def test_a_tuned_bundle_records_its_data_folder_as_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "Testing" / "data" / "tiny-bundle", src)
    monkeypatch.chdir(tmp_path)
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    name = next(n for n, net in manifest["networks"].items() if n != "screening")
    report = {
        name: {"screening": 0.4, "segmentation": 0.6, "calibration": {"method": "platt", "a": 1.0, "b": 0.0}},
    }
    _write_tuned_bundle(src, tmp_path / "tuned", report, "val", None)
    tuned = json.loads((tmp_path / "tuned" / "manifest.json").read_text(encoding="utf-8"))
    assert tuned["tuning"]["segmenters"][name]["data"] == str((tmp_path / "val").resolve())
    assert tuned["networks"][name]["calibration"]["data"] == str((tmp_path / "val").resolve())
