"""Training robustness: settings out of range are refused up front, a NaN loss is one error line,
and a stage is finished only with everything it writes (a kill after its last checkpoint heals)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from plkd.cli import main
from plkd.errors import ConfigError, TrainingError
from plkd.training.config import load_config
from plkd.training.loop import StageSpec, TrainContext, is_done, run_stage


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("teacher.steps=-5", "teacher.steps must be >= 1"),
        ("students.stage_steps=-1", "students.stage_steps must be >= 1"),
        ("screening.batch_size=0", "screening.batch_size must be >= 1"),
        ("teacher.lr=-0.001", "teacher.lr must be > 0"),
        ("optim.warmup_steps=-10", "optim.warmup_steps must be >= 0"),
        ("seed=-3", "seed must be >= 0"),
        ("augment.flip_p=1.5", "augment.flip_p must be >= 0 and <= 1"),
        ("export.thresholds.segmentation=-0.2", "export.thresholds.segmentation"),
        ("data.spacing_mm=[0,1,1]", "data.spacing_mm"),
    ],
)
def test_settings_out_of_range_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, [override])


def test_shipped_configurations_are_valid() -> None:
    for name in ("default", "cpu", "tiny", "ablation"):
        assert load_config(name)["teacher"]["steps"] >= 1


def test_negative_steps_on_the_command_line_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        ["train", "teacher", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--set", "teacher.steps=-5"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "plkd: error: teacher.steps must be >= 1, not -5"
    assert not (tmp_path / "r").exists()


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))


def _spec(out: Path, steps: int = 4, loss=None) -> StageSpec:  # noqa: ANN001
    def default_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        loss = ((model.w - batch["x"]) ** 2).mean()
        return loss, {}

    return StageSpec(
        "tiny",
        out,
        _Tiny(),
        steps=steps,
        lr=0.1,
        batch_fn=lambda rng: {"x": rng.normal(size=3).astype("float32")},
        loss_fn=loss or default_loss,
        salt=7,
        checkpoint_every=2,
        log_every=1,
    )


def test_nan_loss_is_a_training_error(tmp_path: Path) -> None:
    def nan_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        return model.w.sum() * float("nan"), {}

    with pytest.raises(TrainingError, match="the loss became nan at step 0"):
        run_stage(_spec(tmp_path / "s", loss=nan_loss), TrainContext(device=torch.device("cpu")))
    assert not is_done(tmp_path / "s")


def test_stage_killed_after_its_last_checkpoint_is_completed_with_its_log(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    ctx = TrainContext(device=torch.device("cpu"))
    run_stage(_spec(out), ctx)
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    # The kill: the final checkpoint is on disk, nothing after it (log, weights, done.json).
    for name in ("log.csv", "model.pt", "done.json", "curve.png"):
        (out / name).unlink(missing_ok=True)
    assert not is_done(out)
    run_stage(_spec(out), ctx)
    assert is_done(out)
    assert list(csv.DictReader((out / "log.csv").open())) == rows
    # A stage whose log alone is missing is not finished either.
    (out / "log.csv").unlink()
    assert not is_done(out)
