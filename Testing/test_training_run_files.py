"""A training run's own files lost or damaged between calls, and a full disk while it writes them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_toydata import write_toy_dataset

from plkd.errors import PLKDError
from plkd.training.config import load_config, set_value
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
