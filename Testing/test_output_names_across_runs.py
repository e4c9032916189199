"""Output names of ``plkd predict`` keep to their inputs from one run to the next into one folder.

A scan named after its file gets parent folders in front only when something else shares its name. That
used to be decided by the run alone: a partial rerun wrote ``T2S_cmb.*`` beside the ``ses-1_T2S_cmb.*`` of
the whole run (``plkd evaluate`` went on scoring the old result), and a run of ``ses-2/T2S.nii.gz`` after one
of ``ses-1/T2S.nii.gz`` replaced ses-1's result ("the input changed"). Built from the tiny case and bundle.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from plkd.cli import main
from plkd.inference.inputs import ScanInput
from plkd.inference.stems import settle_stems

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"
CASE = ROOT / "Testing" / "data" / "tiny-case" / "tiny_T2S.nii.gz"


def _predict(*args: str) -> int:
    return main(["predict", *args, "--model", str(BUNDLE), "--device", "cpu", "--progress", "none"])


def _two_sessions(root: Path) -> tuple[Path, Path]:
    paths = []
    for ses in ("ses-1", "ses-2"):
        (root / ses).mkdir(parents=True)
        paths.append(Path(shutil.copy(CASE, root / ses / "T2S.nii.gz")))
    return paths[0], paths[1]


def _inputs(out: Path) -> dict[str, str]:
    return {p.name: Path(json.loads(p.read_text())["input"]).parent.name for p in sorted(out.glob("*_cmb.json"))}


def test_a_partial_rerun_replaces_the_result_under_its_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ses1, _ = _two_sessions(tmp_path / "in")
    out = tmp_path / "out"
    assert _predict(str(tmp_path / "in"), "-o", str(out)) == 0
    assert _inputs(out) == {"ses-1_T2S_cmb.json": "ses-1", "ses-2_T2S_cmb.json": "ses-2"}
    capsys.readouterr()
    # The first session again, alone and with another threshold: its result is replaced, none is added.
    assert _predict(str(ses1), "-o", str(out), "--threshold", "0.99") == 0
    err = capsys.readouterr().err
    assert "recomputing ses-1_T2S: settings changed" in err
    assert _inputs(out) == {"ses-1_T2S_cmb.json": "ses-1", "ses-2_T2S_cmb.json": "ses-2"}
    assert json.loads((out / "ses-1_T2S_cmb.json").read_text())["settings"]["threshold"] == 0.99
    # ... and the same again is skipped under that name.
    assert _predict(str(ses1), "-o", str(out), "--threshold", "0.99") == 0
    assert "skipped ses-1_T2S" in capsys.readouterr().err


def test_a_scan_of_the_same_name_never_replaces_another_scans_result(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ses1, ses2 = _two_sessions(tmp_path / "in")
    out = tmp_path / "out"
    assert _predict(str(ses1), "-o", str(out)) == 0
    assert _inputs(out) == {"T2S_cmb.json": "ses-1"}
    capsys.readouterr()
    assert _predict(str(ses2), "-o", str(out)) == 0
    err = capsys.readouterr().err
    assert "is written as ses-2_T2S_cmb.*: T2S_cmb.* in" in err and "input changed" not in err
    assert _inputs(out) == {"T2S_cmb.json": "ses-1", "ses-2_T2S_cmb.json": "ses-2"}
    # Both together afterwards: the run tells ses-1 apart from ses-2 now, so its result takes the more specific
    # name (moved, not computed again: plkd evaluate pairs sub-01_... by subject), and both are reused.
    assert _predict(str(tmp_path / "in"), "-o", str(out)) == 0
    err = capsys.readouterr().err
    assert "renamed T2S_cmb.* to ses-1_T2S_cmb.*" in err and "0 done, 2 skipped" in err
    assert _inputs(out) == {"ses-1_T2S_cmb.json": "ses-1", "ses-2_T2S_cmb.json": "ses-2"}
    assert sorted(p.name for p in out.glob("*_cmb.nii.gz")) == ["ses-1_T2S_cmb.nii.gz", "ses-2_T2S_cmb.nii.gz"]


def test_outputs_of_an_input_that_is_gone_do_not_hold_the_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ses1, _ = _two_sessions(tmp_path / "in")
    out = tmp_path / "out"
    assert _predict(str(ses1), "-o", str(out)) == 0
    moved = tmp_path / "moved" / "T2S.nii.gz"
    moved.parent.mkdir()
    ses1.rename(moved)
    capsys.readouterr()
    # The same bytes under another path: the usual rerun rule reuses them under the same name.
    assert _predict(str(moved), "-o", str(out)) == 0
    assert "skipped T2S" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*_cmb.json")) == ["T2S_cmb.json"]


def test_results_of_one_input_under_several_names_are_named(tmp_path: Path) -> None:
    ses1, _ = _two_sessions(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("T2S", "ses-1_T2S"):  # as plkd versions that named by the run alone left them
        (out / f"{name}_cmb.json").write_text(json.dumps({"input": str(ses1), "candidates": []}))
    settled = settle_stems([ScanInput(ses1, "T2S")], out)
    assert [s.stem for s in settled.scans] == ["T2S"] and not settled.renames
    (line,) = settled.lines
    assert "ses-1_T2S_cmb.*" in line and "plkd evaluate would score each" in line
