"""``plkd demo`` end to end (the README's first command), and its reruns into the same folder.

Run with the tiny bundle, so the prediction takes seconds; the simulation is the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from plkd import synth
from plkd.cli import main
from plkd.errors import PLKDError

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"


def _demo(out: Path, *args: str) -> int:
    return main(["demo", "--out", str(out), "--model", str(BUNDLE), "--progress", "none", *args])


@pytest.mark.slow
def test_demo_writes_what_it_says_and_a_failed_rerun_leaves_no_earlier_result(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("nilearn")  # the simulator's anatomy
    out = tmp_path / "plkd-demo"
    assert _demo(out, "--n-microbleeds", "4", "--device", "cpu") == 0
    printed = capsys.readouterr().out
    stem = "demo-s1-4mm_T2S"
    names = {p.name for p in out.iterdir()}
    assert {
        f"{stem}{s}" for s in (".nii.gz", "_truth.nii.gz", "_brainmask.nii.gz", "_cmb.nii.gz", "_cmb.json")
    } <= names
    assert {"overview.png", "candidates.png", "demo_summary.json"} <= names
    summary = json.loads((out / "demo_summary.json").read_text())
    assert f"found {summary['found']} of {summary['of']} microbleeds" in printed
    assert summary["student"] == "student_x4"  # 4 mm slices: the x4 student of the bundle

    # Again with fewer microbleeds, and the run fails: nothing of the first run may stay beside the new subject (a
    # failure after the simulation let plkd evaluate score the earlier prediction against the new truth, and the
    # pictures showed the earlier subject). The earlier results go before the simulation, so it may fail there.
    def stop(*_args: object, **_kwargs: object) -> None:
        raise PLKDError("stopped")

    monkeypatch.setattr(synth, "generate_subject", stop)
    assert _demo(out, "--n-microbleeds", "2", "--device", "cpu") == 2
    assert "stopped" in capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert not {f"{stem}_cmb.nii.gz", f"{stem}_cmb.json", "overview.png", "candidates.png", "demo_summary.json"} & names


def test_a_device_name_plkd_does_not_know_is_refused_before_the_simulation(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "plkd-demo"
    assert _demo(out, "--device", "tpu") == 2
    assert "plkd: error: unknown device 'tpu'" in capsys.readouterr().err
    assert not out.exists()


def test_a_gpu_the_machine_lacks_is_replaced_by_the_cpu_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # plkd demo --device cuda on a laptop was refused before the simulation; it now runs the demo on the CPU, said in
    # one warning line and in the prediction's notes.
    from plkd.commands import demo

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    predictor, _name = demo._load_model(BUNDLE, "cuda", "none")
    assert predictor.device.type == "cpu"
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "--device" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("--device cuda was requested") and "on the CPU" in said[0]
    assert said == predictor.state.warnings  # the notes of its JSON


@pytest.mark.parametrize("option", [["--seed", "-1"], ["--n-microbleeds", "500"], ["--n-microbleeds", "-1"]])
def test_a_seed_or_count_the_simulator_refuses_is_one_line_before_any_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture, option: list[str]
) -> None:
    # --seed -1 ended in numpy's ValueError traceback (exit 1); a refused count left an empty output folder.
    pytest.importorskip("nilearn")
    out = tmp_path / "plkd-demo"
    assert _demo(out, "--device", "cpu", *option) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("plkd: error:") and ("seed" in err[-1] or "microbleed count" in err[-1])
    assert not out.exists()


def test_a_demo_without_microbleeds_to_find_prints_no_nan(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # plkd demo --n-microbleeds 0 (or one whose microbleeds are all too small for its slices) printed "F1 nan, Dice
    # nan": scores undefined without a microbleed, shown as numbers that are none.
    from plkd.synth.subject import SynthSubject
    from plkd.volumes import Volume

    rng = np.random.default_rng(0)
    shape, affine = (40, 40, 10), np.diag([1.0, 1.0, 4.0, 1.0])
    brain = (np.indices(shape) - np.array([19.5, 19.5, 4.5])[:, None, None, None]) / np.array([16, 16, 4])[
        :, None, None, None
    ]
    brain = (brain**2).sum(0) < 1.0
    image = np.where(brain, rng.normal(500.0, 10.0, shape), 0.0).astype(np.float32)
    empty = np.zeros(shape, np.uint8)
    subject = SynthSubject(
        Volume(image, affine), Volume(empty, affine), Volume(brain.astype(np.uint8), affine), [], [], 1
    )
    monkeypatch.setattr(synth, "generate_subject", lambda *_args, **_kwargs: subject)
    assert _demo(tmp_path / "plkd-demo", "--n-microbleeds", "0", "--device", "cpu") == 0
    printed = capsys.readouterr().out
    assert "found 0 of 0 microbleeds, 0 false alarm(s)" in printed
    assert "nan" not in printed and "F1 and Dice undefined without a microbleed" in printed
