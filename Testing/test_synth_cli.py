"""``plkd synth``: data set layout, manifest, and one-line errors for bad options."""

from __future__ import annotations

import json

import numpy as np
import pytest

from plkd.cli import main
from plkd.synth.dataset import phase_masked_subjects
from plkd.volumes import load_label, load_volume

pytest.importorskip("nilearn")


def test_synth_writes_the_documented_layout(tmp_path, capsys):
    out = tmp_path / "synth"
    rc = main(
        ["synth", str(out), "--n-subjects", "2", "--seed", "7", "--spacing", "2", "--fine-spacing", "2",
         "--count", "2-4", "--modality", "SWI", "--preview", "--progress", "none"]
    )  # fmt: skip
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "plkd-synth/1" and manifest["modality"] == "SWI"
    assert manifest["spacing_mm"] == [2.0, 2.0, 2.0]
    assert sorted(manifest["subjects"]) == ["sub-0001", "sub-0002"]
    seeds = set()
    for sid, entry in manifest["subjects"].items():
        d = out / sid
        image = load_volume(d / f"{sid}_space-SWI_desc-masked_SWI.nii.gz")
        label = load_label(d / f"{sid}_space-SWI_CMB.nii.gz")
        mask = load_label(d / f"{sid}_space-SWI_desc-brain_mask.nii.gz", allow_empty=False)
        assert (d / f"{sid}_preview.png").stat().st_size > 10_000
        assert image.shape == label.shape == mask.shape
        assert np.allclose(image.affine, label.affine) and np.allclose(image.spacing, 2.0)
        assert set(np.unique(label.data)) <= {0.0, 1.0}
        n_total = len(entry["microbleeds"]) + len(entry["hidden_microbleeds"])
        assert 2 <= n_total <= 4
        for mb in entry["microbleeds"]:
            assert {"id", "center_ras", "center_voxel", "diameter_mm", "region", "location"} <= set(mb)
            assert mb["location"] in ("lobar", "deep", "infratentorial")
            assert label.data[tuple(mb["center_voxel"])] == 1
        assert all({"kind", "center_ras"} <= set(m) for m in entry["mimics"])
        seeds.add(entry["seed"])
    assert len(seeds) == 2
    assert str(out / "manifest.json") in capsys.readouterr().out


@pytest.mark.parametrize(
    "options",
    [
        ["--count", "5-2"],
        ["--count", "many"],
        ["--spacing", "1,1"],
        ["--spacing", "50"],
        ["--n-subjects", "0"],
        ["--jobs", "0"],
        ["--phase-mask"],
        ["--modality", "SWI", "--phase-mask", "1.5"],
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, options):
    rc = main(["synth", str(tmp_path / "o"), "--progress", "none", *options])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("plkd: error:") and "\n" not in err
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_phase_mask_share_picks_that_share_of_subjects_reproducibly():
    half = phase_masked_subjects(1000, 400, 0.5)
    assert 0.4 < half.mean() < 0.6
    assert np.array_equal(half, phase_masked_subjects(1000, 400, 0.5))
    assert not np.array_equal(half, phase_masked_subjects(1001, 400, 0.5))
    assert phase_masked_subjects(1000, 50, 1.0).all() and not phase_masked_subjects(1000, 50, 0.0).any()
    # A larger share keeps every subject a smaller one chose: one draw per subject, compared to the share.
    assert np.all(phase_masked_subjects(1000, 400, 0.7)[half])
