"""A run continued on other training data is refused: run.json (and so the exported bundle) describes one
data set for the whole run, and the stages already trained never saw the new one."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from training_toydata import TINY_TRAIN, started_run, train_stage, write_toy_dataset

from plkd.cli import main

TINY = TINY_TRAIN
_train = train_stage


@pytest.fixture()
def started(tmp_path: Path) -> tuple[Path, Path]:
    return started_run(tmp_path)


def test_other_subjects_on_resume_are_refused(started, tmp_path: Path, capsys) -> None:
    data, run = started
    other = write_toy_dataset(tmp_path / "other", n_subjects=2, seed=7)
    before = (run / "run.json").read_text(encoding="utf-8")
    assert _train("teacher", other, run) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("plkd: error:")
    assert "screening started" in err[0] and "sub-0003" in err[0]
    assert not (run / "teacher").exists()
    assert (run / "run.json").read_text(encoding="utf-8") == before  # still names the data screening learnt


def test_a_relabelled_subject_on_resume_is_refused(started, capsys) -> None:
    data, run = started
    path = data / "sub-0002" / "sub-0002_space-T2S_CMB.nii.gz"
    img = nib.load(path)
    label = np.asarray(img.dataobj)
    label[:, :, : label.shape[2] // 2] = 0  # the researcher corrected the label: half its microbleeds gone
    nib.save(nib.Nifti1Image(label, img.affine), str(path))
    assert _train("teacher", data, run) == 2
    assert "other labels" in capsys.readouterr().err


def test_the_same_data_moved_elsewhere_resumes(started, tmp_path: Path) -> None:
    data, run = started
    moved = tmp_path / "moved"
    shutil.move(str(data), str(moved))
    assert _train("teacher", moved, run) == 0
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert info["data"] == str(moved) and info["n_train_subjects"] == 3


def test_other_student_settings_on_resume_are_said(tmp_path: Path, caplog) -> None:
    """Continuing the students with another --beta (or step count) was said for every section but the students'."""
    data = write_toy_dataset(tmp_path / "data", n_subjects=3)
    run = tmp_path / "run"
    assert _train("all", data, run) == 0
    (run / "students" / "finetune" / "done.json").unlink()  # the last stage was interrupted
    with caplog.at_level(logging.WARNING):
        assert main(["train", "all", "--data", str(data), "--out", str(run), *TINY, "--beta", "5"]) == 0
    assert "started with other settings (students)" in caplog.text
    caplog.clear()
    # Students of another mode live in their own folder: nothing of the PLKD students' settings applies to them.
    with caplog.at_level(logging.WARNING):
        assert main(["train", "students", "--data", str(data), "--out", str(run), *TINY, "--mode", "kd"]) == 0
    assert "other settings" not in caplog.text


def test_an_image_changed_on_resume_is_refused(started, capsys) -> None:
    # Same grid, same label, other voxel values (the researcher bias-corrected or re-masked a scan): the stages
    # already trained learnt the old image, and the bundle would describe data no stage saw whole.
    data, run = started
    path = data / "sub-0001" / "sub-0001_space-T2S_desc-masked_T2S.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 1.5, img.affine), str(path))
    before = (run / "run.json").read_text(encoding="utf-8")
    assert _train("teacher", data, run) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("plkd: error:") and "other images (1, e.g. sub-0001" in err[0]
    assert not (run / "teacher").exists() and (run / "run.json").read_text(encoding="utf-8") == before


def test_a_finished_run_called_with_other_settings_keeps_its_configuration(tmp_path: Path, caplog) -> None:
    """Nothing trains when every stage has finished; config.yaml was overwritten with the call's settings anyway (and
    run.json kept no record), so plkd export wrote a segmentation patch the networks never saw into the bundle."""
    data = write_toy_dataset(tmp_path / "data", n_subjects=3)
    run = tmp_path / "run"
    assert _train("all", data, run) == 0
    before = (run / "config.yaml").read_text(encoding="utf-8")
    other = ["--set", "sampling.segmentation_patch=[24,24,16]", "--set", "teacher.steps=50"]
    with caplog.at_level(logging.WARNING):
        assert main(["train", "all", "--data", str(data), "--out", str(run), *TINY, *other]) == 0
    assert (run / "config.yaml").read_text(encoding="utf-8") == before
    assert "other settings given (sampling, teacher) were not used" in caplog.text
    assert "settings_changed" not in json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert main(["export", str(run), "--out", str(tmp_path / "bundle")]) == 0
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["patch_size"]["segmentation"] == [16, 16, 8]  # the tiny configuration's, trained with


@pytest.mark.parametrize(
    "setting",
    ["data.clip_percentiles=[1,99]", "sampling.segmentation_patch=[24,24,16]", "data.spacing_mm=[1.5,1.5,1.5]"],
)
def test_a_setting_the_bundle_records_for_every_network_changed_on_resume_is_refused(started, setting, capsys) -> None:
    # Continued, the teacher trained with the new value and the bundle recorded it for the screening network too
    # (trained on images clipped or sampled otherwise), with only a note in training.notes.
    data, run = started
    before = {name: (run / name).read_text(encoding="utf-8") for name in ("config.yaml", "run.json")}
    assert main(["train", "teacher", "--data", str(data), "--out", str(run), *TINY, "--set", setting]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("plkd: error:") and setting.split("=")[0] in err[0]
    assert "screening started" in err[0]
    assert not (run / "teacher").exists()
    assert {name: (run / name).read_text(encoding="utf-8") for name in before} == before


def test_a_refused_resume_leaves_the_runs_configuration_as_it_was(started, tmp_path: Path) -> None:
    # Other data is refused after the settings were read: config.yaml was already rewritten with the refused call's
    # settings, so the next call with the run's own settings was told they differed (and recorded a change).
    data, run = started
    before = (run / "config.yaml").read_text(encoding="utf-8")
    other = write_toy_dataset(tmp_path / "other", n_subjects=2, seed=7)
    assert main(["train", "teacher", "--data", str(other), "--out", str(run), *TINY, "--set", "teacher.lr=0.01"]) == 2
    assert (run / "config.yaml").read_text(encoding="utf-8") == before


def test_settings_of_stages_not_started_yet_are_not_recorded_as_a_mismatch(started, caplog) -> None:
    """Another --beta (or teacher.lr) given after only the screening stage had run was recorded in run.json, and by
    plkd export in the bundle's notes, as "screening ... do(es) not all match the recorded configuration", and the
    warning said unfinished stages would not match an uninterrupted run: the screening network never uses them, and
    the stages that do start with them. Only settings a started stage uses are recorded and warned about now."""
    data, run = started  # screening finished
    with caplog.at_level(logging.WARNING):
        assert _train("teacher", data, run, "--beta", "5", "--set", "teacher.lr=0.002") == 0
    assert "settings_changed" not in json.loads((run / "run.json").read_text(encoding="utf-8"))
    said = [r.getMessage() for r in caplog.records if "other settings" in r.getMessage()]
    assert len(said) == 1 and "no started stage uses them" in said[0] and "(students, teacher)" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # one the started stages use: recorded with those stages only
        assert (
            _train("students", data, run, "--beta", "5", "--set", "teacher.lr=0.002", "--set", "optim.grad_clip=1") == 0
        )
    said = [r.getMessage() for r in caplog.records if "other settings" in r.getMessage()]
    assert len(said) == 1 and "(optim)" in said[0] and "screening, teacher had started" in said[0]
    changes = json.loads((run / "run.json").read_text(encoding="utf-8"))["settings_changed"]
    assert changes == [{"settings": ["optim"], "stages_started": ["screening", "teacher"]}]
