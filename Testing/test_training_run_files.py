"""A training run's own files lost or damaged between calls, and a full disk while it writes them."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
import torch
from training_toydata import train_stage, write_toy_dataset

from plkd.cli import exit_code_of
from plkd.errors import PLKDError
from plkd.training.config import load_config, set_value
from plkd.training.export import export_run
from plkd.training.pipeline import make_context, train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), n_subjects=3)


def _interrupted_teacher(data_root: Path, run: Path):
    cfg = set_value(set_value(load_config("tiny"), "teacher.steps", "4"), "teacher.checkpoint_every", "100")
    with pytest.raises(KeyboardInterrupt):
        train("teacher", data_root, run, cfg, make_context(cfg, progress="none", stop_after=2))
    return cfg


def test_a_started_run_without_its_config_yaml_is_refused_not_resumed_with_other_settings(data_root, tmp_path):
    run = tmp_path / "run"
    cfg = _interrupted_teacher(data_root, run)
    (run / "config.yaml").unlink()
    # Another grid: with config.yaml there this is refused (the bundle records one grid for every network).
    other = set_value(cfg, "data.spacing_mm", "[0.8, 0.8, 0.8]")
    with pytest.raises(PLKDError, match=r"config.yaml is missing, but teacher started training"):
        train("teacher", data_root, run, other, make_context(other, progress="none"))
    assert not (run / "config.yaml").exists()  # not written anew as if the run had started so
    assert torch.load(run / "teacher" / "checkpoint.pt", weights_only=True)["step"] == 2  # kept


@pytest.mark.parametrize("text", ["teacher: [unclosed\n", "- a list\n"])
def test_a_damaged_config_yaml_is_one_line(data_root, tmp_path, text):
    run = tmp_path / "run"
    cfg = _interrupted_teacher(data_root, run)
    (run / "config.yaml").write_text(text)
    with pytest.raises(PLKDError, match="config.yaml"):
        train("teacher", data_root, run, cfg, make_context(cfg, progress="none"))


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _torch_write_failed(*_args, **_kwargs):
    # What torch.save raises when the disk fills under it: no errno, no OSError.
    raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0")


def _left_over(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".partial" in p.name]


@pytest.mark.parametrize("failure", [_no_space, _torch_write_failed])
def test_a_full_disk_while_training_is_one_line_and_leaves_no_half_written_file(
    data_root, tmp_path, monkeypatch, capsys, failure
):
    run = tmp_path / "run"
    monkeypatch.setattr(torch, "save", failure)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    assert train_stage("teacher", data_root, run, "--set", "teacher.checkpoint_every=1") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("plkd: error:")]
    assert "no space left on the disk writing" in line and "checkpoint.pt" in line and ".partial" not in line
    assert _left_over(run) == [] and not (run / "teacher" / "checkpoint.pt").exists()


def test_a_full_disk_while_exporting_is_one_line_and_leaves_no_bundle(data_root, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    for stage in ("screening", "teacher"):
        assert train_stage(stage, data_root, run) == 0
    capsys.readouterr()
    monkeypatch.setattr(torch, "save", _no_space)
    assert exit_code_of(lambda: export_run(run, tmp_path / "bundle", students=[])) == 2
    err = capsys.readouterr().err
    assert err.startswith("plkd: error: no space left on the disk writing") and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no bundle, no temporary folder
