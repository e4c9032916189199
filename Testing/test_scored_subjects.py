"""Every evaluation says how many subjects it scored and which it left out, and why.

A subject without a label, a label without a prediction or a prediction of no subject used to be skipped
without a word, and a researcher reported figures on fewer subjects than they thought. Each entry point
(plkd evaluate, plkd cv, the evaluation scripts) now writes one warning line, a ``scored`` block and a note in
its JSON, and refuses with one ``plkd: error:`` line when nothing can be scored.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_metrics_evaluate import SHAPE, dataset, save  # noqa: F401 - dataset is a fixture
from training_toydata import write_toy_dataset

from plkd.cli import exit_code_of, main
from plkd.errors import PLKDError
from plkd.training import crossval
from plkd.training.config import load_config
from plkd.training.loop import TrainContext

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"


def _script(name: str):  # noqa: ANN202 - a module of scripts/
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run ``scripts/NAME.py ARGV`` as its ``__main__`` does; returns its exit code."""
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *map(str, argv)])
    return exit_code_of(_script(name).main)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "left out" in r.getMessage()]


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """Three toy subjects of a plkd synth layout; sub-0002 has lost its label file."""
    root = write_toy_dataset(tmp_path / "data", n_subjects=3, seed=3)
    (root / "sub-0002" / "sub-0002_space-T2S_CMB.nii.gz").unlink()
    return root


def test_plkd_evaluate_counts_a_prediction_without_reference_in_one_line_and_its_json(
    dataset: dict[str, Path],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    save(dataset["pred"] / "sub-099_cmb.nii.gz", np.zeros(SHAPE, np.uint8))
    save(dataset["pred"] / "sub-098_cmb.nii.gz", np.zeros(SHAPE, np.uint8))
    out = tmp_path / "r.json"
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", str(dataset["pred"]), str(dataset["truth"]), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["scored"]["n_scored"] == 2 and doc["scored"]["subjects"] == ["sub-001", "sub-002"]
    assert doc["scored"]["skipped"] == [
        {"subject": "sub-098", "reason": "prediction without a reference"},
        {"subject": "sub-099", "reason": "prediction without a reference"},
    ]
    (line,) = _warnings(caplog)  # one line for both
    assert line.startswith("plkd evaluate: scored 2 of 4 subject(s); left out 2: sub-098") and line in doc["notes"]
    assert "pooled over 2 subject(s)" in capsys.readouterr().out


def test_evaluate_by_size_scores_labelled_subjects_says_which_were_left_out_and_refuses_none(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    out = tmp_path / "sizes.json"
    argv = [BUNDLE, toy, "--conditions", "hr", "--json", out]
    with caplog.at_level(logging.WARNING):
        assert _run("evaluate_by_size", argv, monkeypatch) == 0
    doc = json.loads(out.read_text())
    assert doc["rows"][0]["subjects"] == 2 == doc["scored"]["n_scored"]
    assert doc["scored"]["skipped"] == [{"subject": "sub-0002", "reason": "no label"}]
    (line,) = _warnings(caplog)
    assert "scored 2 of 3 subject(s); left out 1: sub-0002 (no label)" in line and doc["notes"] == [line]
    for sid in ("sub-0001", "sub-0003"):
        (toy / sid / f"{sid}_space-T2S_CMB.nii.gz").unlink()
    out.unlink()
    assert _run("evaluate_by_size", argv, monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "plkd: error: evaluate_by_size: no subject could be scored (3 left out: no label)"
    assert not out.exists()


@pytest.mark.parametrize("script", ["screening_recall", "screening_capacity"])
def test_screening_scripts_refuse_a_data_set_without_labels(script: str, toy: Path, tmp_path, monkeypatch, capsys):
    for sid in ("sub-0001", "sub-0003"):
        (toy / sid / f"{sid}_space-T2S_CMB.nii.gz").unlink()
    argv = [toy, BUNDLE] if script == "screening_recall" else [toy, toy, tmp_path / "work", "--bundle", BUNDLE]
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # screening_capacity imports its neighbours
    assert _run(script, argv, monkeypatch) == 2
    assert f"plkd: error: {script}: no subject could be scored (3 left out: no label)" in capsys.readouterr().err


def _candidates_json(path: Path, centres: list[list[float]]) -> None:
    records = [{"id": i + 1, "center_ras": c, "probability": 0.8, "kept": True} for i, c in enumerate(centres)]
    path.write_text(json.dumps({"candidates": records}))


def test_calibration_and_false_positive_scripts_name_subjects_without_label_or_prediction_and_orphan_predictions(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    manifest = json.loads((toy / "manifest.json").read_text())["subjects"]
    pred = tmp_path / "pred"
    pred.mkdir()
    _candidates_json(pred / "sub-0001_T2S_cmb.json", [m["center_ras"] for m in manifest["sub-0001"]["microbleeds"]])
    _candidates_json(pred / "sub-0002_T2S_cmb.json", [[0.0, 0.0, 0.0]])  # unlabelled: counted as "no label"
    _candidates_json(pred / "sub-0009_T2S_cmb.json", [[0.0, 0.0, 0.0]])  # a subject DATA does not hold
    # sub-0003 is labelled but has no prediction.
    with caplog.at_level(logging.WARNING):
        assert _run("calibration_on_test", [pred, toy], monkeypatch) == 0
        assert _run("false_positives_by_kind", [toy, pred], monkeypatch) == 0
    lines = _warnings(caplog)
    assert len(lines) == 2
    for line in lines:
        assert (
            "scored 1 of 4 subject(s); left out 3: sub-0002 (no label), sub-0003 (no prediction), "
            "sub-0009_T2S_cmb.json (prediction without a subject in the data)"
        ) in line
    out = capsys.readouterr().out
    assert "1 subject(s), 3 candidates, 3 on a microbleed" in out
    assert f"| {pred} | 1 | 3 | 0 |" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run("calibration_on_test", [empty, toy], monkeypatch) == 2
    assert "plkd: error: calibration_on_test: no subject could be scored" in capsys.readouterr().err


def test_plkd_cv_says_which_subjects_no_fold_holds(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folds, summaries = [], []
    monkeypatch.setattr(crossval, "_run_fold", lambda root, fold, *a: folds.append(fold) or {})
    monkeypatch.setattr(crossval, "_write_summary", lambda *a: summaries.append(a[-1]) or {})
    ctx = TrainContext(device=torch.device("cpu"))
    with caplog.at_level(logging.WARNING):
        summary = crossval.run_cv(toy, tmp_path / "cv", load_config("tiny", []), ctx, folds=2)
    assert sorted(s for f in folds for s in f.test_ids) == ["sub-0001", "sub-0003"]
    assert summary["scored"]["skipped"] == [{"subject": "sub-0002", "reason": "no label"}]
    assert summary["scored"]["n_scored"] == 2 and summary["notes"] == _warnings(caplog)
    assert summaries[0].sentence() == "plkd cv: scored 2 of 3 subject(s); left out 1: sub-0002 (no label)"


def test_a_cv_fold_scores_its_test_subjects_and_names_those_it_cannot(toy: Path, caplog) -> None:
    ids = ["sub-0001", "sub-0002", "sub-0404"]  # labelled, unlabelled since the split, gone
    with caplog.at_level(logging.WARNING):
        result = crossval.evaluate_fold(BUNDLE, toy, ids, 4, torch.device("cpu"))
    assert list(result["subjects"]) == ["sub-0001"] and result["scored"]["n_scored"] == 1
    assert result["scored"]["skipped"] == [
        {"subject": "sub-0002", "reason": "no label"},
        {"subject": "sub-0404", "reason": "no longer in the data set"},
    ]
    assert result["notes"] == _warnings(caplog)
    with pytest.raises(PLKDError, match="plkd cv fold: no subject could be scored"):
        crossval.evaluate_fold(BUNDLE, toy, ["sub-0002"], 4, torch.device("cpu"))
