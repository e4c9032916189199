"""Threshold tuning (``plkd tune``): the search on hand-made cases, the tuned bundle, its use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from training_toydata import write_toy_dataset

from plkd.bundle import MANIFEST, load_bundle
from plkd.cli import main
from plkd.errors import BundleError, PLKDError
from plkd.inference.predictor import Predictor
from plkd.models import Calibration
from plkd.tuning import Case, choose_thresholds, score, search
from plkd.volumes import load_volume

BUNDLE = Path(__file__).resolve().parent / "data" / "tiny-bundle"


def _hand_made_case() -> Case:
    """Two microbleeds (A, B) and four candidates: A found, B found weakly, two false alarms."""
    truth = np.zeros((40, 20, 20), np.uint8)
    labels = np.zeros_like(truth, dtype=np.int32)
    truth[3:5, 3:5, 3:5] = 1  # A
    truth[13:15, 3:5, 3:5] = 1  # B
    labels[3:5, 3:5, 3:5] = 1  # on A: strong on both stages
    labels[13:15, 3:5, 3:5] = 2  # on B: weak screening score
    labels[25:27, 10:12, 10:12] = 3  # false alarm the segmenter is sure of
    labels[35:37, 10:12, 10:12] = 4  # false alarm the segmenter doubts
    probs = {1: (0.9, 0.9), 2: (0.4, 0.95), 3: (0.6, 0.99), 4: (0.95, 0.2)}
    # Cases store candidate logits; with the identity calibration sigmoid(logit) is the probability.
    scores = {k: (s, float(np.log(p / (1 - p)))) for k, (s, p) in probs.items()}
    return Case("sub-01", "hr", labels, truth, np.ones(3), scores)


def test_score_rethresholds_stored_candidates():
    case = _hand_made_case()
    assert case.kept(0.5, 0.5) == {1, 3}
    m = score([case], 0.5, 0.5)
    assert (m["TP"], m["FP"], m["FN"]) == (1, 1, 1)
    assert m["F1"] == pytest.approx(0.5)
    everything = score([case], 0.0, 0.0)
    assert (everything["TP"], everything["FP"]) == (2, 2)


def test_kept_follows_the_calibrated_probability():
    # A calibration that halves every logit: 0.9 -> 0.75, 0.95 -> 0.81, 0.99 -> 0.91, 0.2 -> 0.33.
    case = _hand_made_case()
    halve = Calibration(a=0.5, b=0.0)
    assert case.kept(0.0, 0.8) == {1, 2, 3}
    assert case.kept(0.0, 0.8, halve) == {2, 3}
    assert case.kept(0.0, 0.9, halve) == {3}


@pytest.mark.parametrize(
    ("max_fp", "expected", "f1"),
    [
        (1.0, (0.3, 0.3), 0.8),  # keep A, B and one false alarm: F1 = 4/5
        (0.5, (0.65, 0.3), 2 / 3),  # no false alarm allowed: A alone, loosest pair that drops both alarms
    ],
)
def test_search_picks_best_f1_within_the_false_positive_limit(max_fp, expected, f1):
    best = search([_hand_made_case()], max_fp)
    assert (best["screening"], best["segmentation"]) == expected
    assert best["metrics"]["F1"] == pytest.approx(f1) and best["feasible"]


def test_search_without_a_feasible_pair_says_so():
    case = _hand_made_case()
    case.scores = {3: (0.9, float(np.log(9.0)))}  # a false alarm at p = 0.9: above any threshold of the grid
    best = search([case], max_fp=0.5, screening_grid=(0.3,), segmentation_grid=(0.5,))
    assert not best["feasible"] and best["metrics"]["FP"] == 1


def test_search_when_nothing_is_found_prefers_fewer_false_positives_not_the_loosest_pair():
    # Hand count: B is missed at every pair (no candidate on it), A's candidate is absent too, so F1 = TPR = 0 at
    # every pair; the two false alarms (p 0.99 and 0.2) then decide: only segmentation >= 0.999 drops both.
    case = _hand_made_case()
    case.scores = {3: (0.6, float(np.log(99.0))), 4: (0.95, float(np.log(0.25)))}
    best = search([case], screening_grid=(0.3, 0.5), segmentation_grid=(0.1, 0.5, 0.999))
    assert (best["screening"], best["segmentation"]) == (0.3, 0.999)
    assert best["metrics"]["FP"] == 0


def test_search_refuses_validation_cases_without_microbleeds():
    case = _hand_made_case()
    case.truth = np.zeros_like(case.truth)
    with pytest.raises(PLKDError, match="no labelled microbleed"):
        search([case])


def test_tune_command_writes_a_bundle_whose_segmenters_carry_thresholds(tmp_path, caplog):
    data = write_toy_dataset(tmp_path / "val", n_subjects=2, seed=11)
    out = tmp_path / "tuned"
    args = ["tune", str(data), "--model", str(BUNDLE), "--out", str(out), "--progress", "none"]
    with caplog.at_level("WARNING", logger="plkd"):
        assert main(args + ["--students", "student_x4"]) == 0
    # The x4 student is tuned on LR@4 inputs that tune simulates itself: no warning that it met 1 mm slices.
    assert "chosen with --student" not in caplog.text
    tuned = load_bundle(out)  # checksums and schema still hold
    own = tuned.manifest["networks"]["student_x4"]["thresholds"]
    report = tuned.manifest["tuning"]["segmenters"]["student_x4"]
    assert own == {"screening": report["screening"], "segmentation": report["segmentation"]}
    assert "thresholds" not in tuned.manifest["networks"]["teacher"]  # not asked for
    assert report["inputs"] == 4 and report["conditions"] == ["interp", "slab"]
    # The validation data by its folder's name: a shared bundle carries no local path (it kept --data as typed).
    assert report["data"] == "val" and str(tmp_path) not in (out / "manifest.json").read_text(encoding="utf-8")
    # The bundle's own pair (0.5, 0.5) is on the grid, so tuning never lowers the validation F1.
    assert report["after"]["F1"] >= report["before"]["F1"] > 0
    # The predictor applies the student's own thresholds: every kept candidate passes both.
    image = load_volume(data / "sub-0001" / "sub-0001_space-T2S_desc-masked_T2S.nii.gz")
    result = Predictor(tuned, device="cpu").predict(image, lr_factor=4)
    assert result.student == "student_x4"
    assert result.thresholds["screening"] == own["screening"]  # recorded in NAME_cmb.json
    assert result.thresholds["segmentation"] == own["segmentation"]
    kept = [c for c in result.candidates if c["kept"]]
    assert kept
    assert all(c["screening_score"] >= own["screening"] and c["probability"] >= own["segmentation"] for c in kept)
    # Each candidate's probability is the student's calibration of its logit (Platt: sigmoid(a·z + b)).
    cal = tuned.manifest["networks"]["student_x4"]["calibration"]
    assert cal["method"] == "platt" and cal["n_candidates"] > 0 and 0 <= cal["ece_after"] <= 1
    for c in result.candidates:
        if c["logit"] is not None:
            expected = 1.0 / (1.0 + np.exp(-(cal["a"] * c["logit"] + cal["b"])))
            assert c["probability"] == pytest.approx(expected, abs=2e-3)
    assert Predictor(tuned, device="cpu").thresholds_for("teacher")["screening"] == tuned.thresholds["screening"]
    # An existing output is never replaced silently.
    assert main(args) == 2
    # Tuning the tuned bundle again (another segmenter) keeps the first record and thresholds.
    again = ["tune", str(data), "--model", str(out), "--out", str(tmp_path / "again"), "--progress", "none"]
    assert main(again + ["--students", "teacher"]) == 0
    both = load_bundle(tmp_path / "again").manifest
    assert set(both["tuning"]["segmenters"]) == {"student_x4", "teacher"}
    assert both["networks"]["student_x4"]["thresholds"] == own and "thresholds" in both["networks"]["teacher"]


def test_per_segmenter_thresholds_are_validated(tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(BUNDLE, bad)
    manifest = json.loads((bad / MANIFEST).read_text())
    manifest["networks"]["teacher"]["thresholds"] = {"screening": "high"}
    (bad / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="'thresholds' must map"):
        load_bundle(bad)


def test_tune_refuses_thick_slice_subjects_instead_of_thinning_them_again(tmp_path, capsys):
    # tune makes each student's LR inputs from HR subjects: 4 mm subjects were taken as HR for the teacher and made
    # 16 mm for the x4 student, and the thresholds chosen on them went into the bundle without a word.
    data = write_toy_dataset(tmp_path / "val", n_subjects=1, seed=11)
    thick = tmp_path / "val-4mm"
    assert (
        main(["lowres", "--dataset", str(data), "--thickness-mm", "4", "--out", str(thick), "--progress", "none"]) == 0
    )
    out = tmp_path / "tuned"
    rc = main(["tune", str(thick), "--model", str(BUNDLE), "--out", str(out), "--progress", "none"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "plkd: error: sub-0001: slices 4 times the model grid's" in err and "\n" not in err
    assert "give the HR validation data" in err and not out.exists()
    # LR@4 brought back to the HR grid (plkd lowres --factor 4): the voxels look HR, the header says LR@4.
    lr4 = tmp_path / "val-lr4"
    assert main(["lowres", "--dataset", str(data), "--factor", "4", "--out", str(lr4), "--progress", "none"]) == 0
    rc = main(["tune", str(lr4), "--model", str(BUNDLE), "--out", str(out), "--progress", "none"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "slices 4 times the model grid's (1x1x1 mm, LR@4 by its header)" in err and not out.exists()


def test_tune_keeps_a_segmenters_thresholds_when_no_pair_finds_a_microbleed(tmp_path, caplog):
    # The references lie where the scans show nothing (bright tissue 6+ mm from every dark ball): no candidate is
    # a microbleed at any threshold pair, F1 is 0 at all of them, and a pair chosen among them (by the tie-break)
    # was written into the bundle as "tuned". The segmenter now keeps its thresholds, said in a warning and a note.
    data = write_toy_dataset(tmp_path / "val", n_subjects=2, seed=11)
    for path in sorted(data.glob("sub-*/*_CMB.nii.gz")):
        img = nib.load(path)
        label = np.zeros(img.shape, np.uint8)
        centre = (np.asarray(img.shape) - 1) // 2
        label[centre[0] : centre[0] + 2, centre[1] + 15 : centre[1] + 17, centre[2] : centre[2] + 2] = 1
        nib.save(nib.Nifti1Image(label, img.affine), str(path))
    out = tmp_path / "tuned"
    args = ["tune", str(data), "--model", str(BUNDLE), "--out", str(out), "--progress", "none", "--students", "teacher"]
    with caplog.at_level("WARNING", logger="plkd"):
        assert main(args) == 0
    before = Predictor(BUNDLE, device="cpu").thresholds_for("teacher", overrides=False)
    manifest = load_bundle(out).manifest
    report = manifest["tuning"]["segmenters"]["teacher"]
    kept = {k: float(before[k]) for k in ("screening", "segmentation")}
    assert manifest["networks"]["teacher"]["thresholds"] == kept
    assert report["after"]["TP"] == 0 and report["thresholds_kept"]
    assert (report["screening"], report["segmentation"]) == (kept["screening"], kept["segmentation"])
    assert any("no threshold pair found any" in n for n in report["notes"])
    assert "no threshold pair found any" in caplog.text


def test_cv_summary_says_which_folds_kept_their_thresholds(tmp_path):
    # A fold whose student found no tuning microbleed keeps the bundle's thresholds; the summary's heading says
    # the thresholds were "tuned on" the tuning data, so that fold's pair says it was kept.
    from plkd.metrics.froc import FrocCurve
    from plkd.metrics.scored import ScoredSubjects
    from plkd.training.crossval import _write_summary

    curve = FrocCurve(np.array([np.inf, 0.5]), np.array([0.0, 0.5]), np.array([0.0, 1.0]), 1, 2).to_dict()
    pooled = {"TPR": 0.5, "PPV": 0.5, "FPavg": 1.0, "F1": 0.5, "Dice": 0.4}
    results = [
        {
            "test_ids": ["sub-01"],
            "thresholds": {"screening": 0.5, "segmentation": 0.5},
            "pooled": pooled,
            "froc": curve,
            "tuning": {"data": "val", "thresholds_kept": kept, "screening": 0.5, "segmentation": 0.5},
        }
        for kept in (False, True)
    ]
    cfg = {"cv": {"factor": 4}, "students": {"mode": "plkd"}}
    _write_summary(tmp_path, results, cfg, "", ScoredSubjects("plkd cv", ["sub-01", "sub-02"]))
    lines = (tmp_path / "summary.md").read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines if line.startswith(("| 1 |", "| 2 |"))]
    assert "kept" not in rows[0] and "(kept: no pair found a microbleed)" in rows[1]


def test_choose_thresholds_keeps_the_segmenters_pair_when_no_pair_finds_a_microbleed(caplog):
    # Hand count as above: A and B have no candidate, F1 = 0 at every pair; the tie-break's pair is not written.
    case = _hand_made_case()
    case.scores = {3: (0.6, float(np.log(99.0))), 4: (0.95, float(np.log(0.25)))}
    with caplog.at_level("WARNING", logger="plkd"):
        best, notes = choose_thresholds("teacher", [case], None, Calibration(), {"screening": 0.5, "segmentation": 0.5})
    assert (best["screening"], best["segmentation"]) == (0.5, 0.5) and best["kept"]
    assert best["metrics"]["FP"] == 1  # alarm 3 (0.6 / 0.99) passes 0.5 / 0.5
    assert len(notes) == 1 and "no threshold pair found any" in notes[0] and notes[0] in caplog.text


def test_choose_thresholds_says_when_no_pair_meets_the_false_positive_limit(caplog):
    # A found at p 0.9; a blob candidate (screening always passes) at p 0.99999 is a false alarm at every pair of
    # the grid (segmentation at most 0.999): 1 FP per subject however strict, above --max-fp 0.5.
    case = _hand_made_case()
    case.scores = {1: (0.9, float(np.log(9.0))), 3: (float("inf"), 12.0)}
    with caplog.at_level("WARNING", logger="plkd"):
        best, notes = choose_thresholds("teacher", [case], 0.5, Calibration(), {"screening": 0.5, "segmentation": 0.5})
    assert not best["feasible"] and not best.get("kept") and best["metrics"]["TP"] == 1
    assert len(notes) == 1 and "--max-fp 0.5" in notes[0] and "the fewest: 1.00" in notes[0]
    assert notes[0] in caplog.text
    # Within the limit, nothing is said.
    assert choose_thresholds("teacher", [case], 2.0, Calibration(), {"screening": 0.5, "segmentation": 0.5})[1] == []


def test_a_killed_tunes_copy_of_the_bundle_goes_with_the_next_tune(tmp_path):
    """plkd tune assembles the tuned bundle in a hidden copy beside --out, named after its process: one killed
    (SIGKILL, a node's time limit) left that copy of every weight file there for good. The next tune removes it."""
    import subprocess
    import sys

    from plkd.atomic import HOST_TAG

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    data = write_toy_dataset(tmp_path / "val", n_subjects=2, seed=11)
    leftover = tmp_path / f".tuned.{HOST_TAG}-{gone.pid}-0123abcd.partial"
    shutil.copytree(BUNDLE, leftover)
    args = ["tune", str(data), "--model", str(BUNDLE), "--out", str(tmp_path / "tuned"), "--progress", "none"]
    assert main([*args, "--students", "student_x4"]) == 0
    assert load_bundle(tmp_path / "tuned").manifest["tuning"]["segmenters"]["student_x4"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
