"""``scripts/lowres_visibility.py`` (docs/results.md, section 2): its options read like every other script's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from plkd.volumes import save_volume

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "lowres_visibility.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_help_prints_the_usage_instead_of_looking_for_a_folder_named_help() -> None:
    done = _run("--help")
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout and "FACTORS" in done.stdout  # it said: data set folder not found: --help


def test_a_factor_that_is_no_whole_number_is_refused_in_one_line(tmp_path: Path) -> None:
    done = _run(str(tmp_path), "2,x")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("lowres_visibility.py: error:")  # not a traceback
    assert "Traceback" not in done.stderr and not done.stdout


def test_counts_the_microbleeds_with_a_voxel_on_a_kept_slice(tmp_path: Path) -> None:
    label = np.zeros((8, 8, 8), dtype=np.uint8)
    label[2, 2, 0] = 1  # slice 0: kept at LR@2 (phase 0), not at LR@4 (phase 1)
    label[5, 5, 1] = 1  # slice 1: kept at LR@4 only
    sub = tmp_path / "sub-0001"
    sub.mkdir()
    image = np.random.default_rng(0).uniform(100, 200, (8, 8, 8)).astype(np.float32)
    save_volume(sub / "sub-0001_space-T2S_desc-masked_T2S.nii.gz", image, np.eye(4))
    save_volume(sub / "sub-0001_space-T2S_CMB.nii.gz", label, np.eye(4))
    done = _run(str(tmp_path), "2,4")
    assert done.returncode == 0, done.stderr
    assert "| LR@2 | 1 | 50.0 % |" in done.stdout and "| LR@4 | 1 | 50.0 % |" in done.stdout
