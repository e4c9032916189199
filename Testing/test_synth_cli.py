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
        ["--seed", "-5"],  # numpy's ValueError traceback, exit 1
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, options):
    rc = main(["synth", str(tmp_path / "o"), "--progress", "none", *options])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("plkd: error:") and "\n" not in err
    assert not (tmp_path / "o" / "manifest.json").exists()


@pytest.mark.parametrize(("given", "modality"), [("swi", "SWI"), ("T2*", "T2S"), ("t2s", "T2S"), ("SWI", "SWI")])
def test_modality_is_spelt_as_plkd_predict_takes_it(given, modality):
    from plkd.cli import build_parser

    args = build_parser().parse_args(["synth", "out", "--modality", given])
    assert args.modality == modality


@pytest.mark.parametrize("given", ["auto", "FLAIR"])  # a data set has one contrast
def test_other_modalities_are_refused_as_predict_refuses_them(tmp_path, capsys, given):
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(tmp_path / "o"), "--modality", given])
    assert exc.value.code == 2
    assert f"argument --modality: must be T2S (T2*) or SWI, not '{given}'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_phase_mask_share_picks_that_share_of_subjects_reproducibly():
    half = phase_masked_subjects(1000, 400, 0.5)
    assert 0.4 < half.mean() < 0.6
    assert np.array_equal(half, phase_masked_subjects(1000, 400, 0.5))
    assert not np.array_equal(half, phase_masked_subjects(1001, 400, 0.5))
    assert phase_masked_subjects(1000, 50, 1.0).all() and not phase_masked_subjects(1000, 50, 0.0).any()
    # A larger share keeps every subject a smaller one chose: one draw per subject, compared to the share.
    assert np.all(phase_masked_subjects(1000, 400, 0.7)[half])


def test_synth_over_an_earlier_data_set_leaves_no_subject_of_it_behind(tmp_path, capsys):
    # Written over a data set of 2 subjects, a run of 1 subject (or another seed) left the earlier sub-0002 beside the
    # new one: plkd predict and plkd evaluate, which walk the folder, then scored both data sets together.
    from plkd.data import find_subjects
    from plkd.inference.inputs import expand_inputs

    out = tmp_path / "synth"
    tiny = ["--spacing", "2", "--fine-spacing", "2", "--count", "1", "--progress", "none"]
    assert main(["synth", str(out), "--n-subjects", "2", "--seed", "7", *tiny]) == 0
    before = (out / "manifest.json").read_text()
    for options in (["--n-subjects", "1", "--seed", "7"], ["--n-subjects", "2", "--seed", "8"]):
        rc = main(["synth", str(out), *options, *tiny])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("plkd: error:") and "\n" not in err and "--overwrite" in err
        assert (out / "manifest.json").read_text() == before and (out / "sub-0002").is_dir()  # nothing touched
    assert "sub-0002" in err or "seed" in err
    assert main(["synth", str(out), "--n-subjects", "1", "--seed", "8", "--overwrite", *tiny]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "sub-0001"]
    assert [s.id for s in find_subjects(out)] == ["sub-0001"]
    assert len(expand_inputs([out], tmp_path / "pred").scans) == 1
    # The same settings again, with more subjects (or after an interruption): the subjects come back as they were.
    first = load_volume(out / "sub-0001" / "sub-0001_space-T2S_desc-masked_T2S.nii.gz").data
    assert main(["synth", str(out), "--n-subjects", "2", "--seed", "8", *tiny]) == 0
    again = load_volume(out / "sub-0001" / "sub-0001_space-T2S_desc-masked_T2S.nii.gz").data
    assert np.array_equal(first, again) and [s.id for s in find_subjects(out)] == ["sub-0001", "sub-0002"]
    # Another contrast leaves no T2* image beside the SWI one of the same subject.
    assert main(["synth", str(out), "--n-subjects", "1", "--seed", "8", "--modality", "SWI", *tiny]) == 2
    capsys.readouterr()


def test_synth_refuses_a_folder_holding_files_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "data"
    (out / "sub-01").mkdir(parents=True)
    (out / "sub-01" / "sub-01_T2S.nii.gz").write_bytes(b"a scan of someone's")
    for extra in ([], ["--overwrite"]):
        rc = main(["synth", str(out), "--n-subjects", "1", "--spacing", "2", "--progress", "none", *extra])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "did not write (sub-01)" in err and "\n" not in err
        assert (out / "sub-01" / "sub-01_T2S.nii.gz").is_file() and not (out / "manifest.json").exists()
