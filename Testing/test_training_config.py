"""Training configuration: defaults, files, typed ``--set`` overrides and their errors."""

from __future__ import annotations

import pytest
import yaml

from plkd.cli import main
from plkd.errors import ConfigError
from plkd.training.config import load_config, loss_weights, set_value


def test_set_overrides_are_typed_by_the_default():
    cfg = load_config(
        None, ["teacher.steps=12", "students.alpha=0.5", "amp=yes", "sampling.segmentation_patch=[32,32,16]"]
    )
    assert cfg["teacher"]["steps"] == 12 and isinstance(cfg["teacher"]["steps"], int)
    assert cfg["students"]["alpha"] == 0.5
    assert cfg["amp"] is True
    assert cfg["sampling"]["segmentation_patch"] == [32, 32, 16]


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("teacher.stepz=3", "unknown configuration key 'teacher.stepz'"),
        ("teacher.steps=many", "must be an integer"),
        ("teacher.steps=1.5", "must be an integer"),
        ("compile=perhaps", "true or false"),
        ("students.mode=distil", "students.mode"),
        ("students.target_factor=6", "power of two"),
        ("no_equals_sign", "key=value"),
    ],
)
def test_bad_overrides_are_config_errors(override, words):
    with pytest.raises(ConfigError, match=words):
        load_config(None, [override])


def test_network_hparams_are_an_open_section():
    cfg = load_config(None, ["networks.segmenter.hparams.fcm=false", "networks.segmenter.hparams.in_channels=2"])
    assert cfg["networks"]["segmenter"]["hparams"]["fcm"] is False
    assert cfg["networks"]["segmenter"]["hparams"]["in_channels"] == 2


def test_config_file_then_overrides(tmp_path):
    path = tmp_path / "my.yaml"
    # "3e-4" is a string to YAML 1.1 (PyYAML), a number to the user.
    path.write_text("teacher:\n  steps: 7\n  lr: 3e-4\nseed: 3\n")
    cfg = load_config(path, ["seed=5", "students.lr=1e-5"])
    assert (cfg["teacher"]["steps"], cfg["teacher"]["lr"], cfg["seed"]) == (7, 3e-4, 5)
    assert cfg["students"]["lr"] == 1e-5
    path.write_text("teacher:\n  stpes: 7\n")
    with pytest.raises(ConfigError, match="teacher.stpes"):
        load_config(path)


def test_tiny_config_and_modality_loss_weights():
    cfg = load_config("tiny")
    assert cfg["networks"]["segmenter"]["hparams"]["base_channels"] == 4
    assert loss_weights(cfg, "T2S") == (0.7, 0.3)
    assert loss_weights(cfg, "SWI") == (0.6, 0.4)
    assert loss_weights(set_value(cfg, "students.beta", "0.2"), "SWI") == (0.6, 0.2)


def test_cli_print_config_and_error(capsys):
    assert main(["train", "teacher", "--data", "x", "--out", "y", "--set", "teacher.steps=9", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["teacher"]["steps"] == 9
    assert main(["train", "teacher", "--data", "x", "--out", "y", "--set", "teacher.nope=1"]) == 2
    assert "unknown configuration key" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["train", "all"], ["cv"]])
def test_print_config_needs_no_data_or_run_folder(command, capsys):
    """README: `plkd train all --print-config` shows every setting (it stopped at 'the following arguments
    are required: --data, --out'); the shipped presets are named in --config's help."""
    assert main([*command, "--print-config", "--config", "gpu"]) == 0
    assert "teacher" in yaml.safe_load(capsys.readouterr().out)
    assert main(command) == 2
    assert "--data and --out are required (except with --print-config)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    assert "ablation, cpu, default, gpu, tiny" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", ["train", "cv", "export"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and "--out" in out
