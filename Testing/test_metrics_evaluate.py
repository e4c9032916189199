"""``evaluate_paths`` and ``plkd evaluate``: pairing files, world-space grids, JSON, FROC plot, errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plkd.cli import main
from plkd.errors import InputError
from plkd.metrics import evaluate_paths, format_table
from plkd.resample import grid_with_spacing

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])
AFFINE[:3, 3] = [-10.0, -12.0, -8.0]
SHAPE = (20, 20, 20)


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.asarray(data), affine).to_filename(str(path))
    return path


def ball(
    shape: tuple[int, ...], affine: np.ndarray, centres_ras: list[tuple[float, float, float]], r: float
) -> np.ndarray:
    """A uint8 map with balls of radius ``r`` mm around world points."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    out = np.zeros(len(ras), dtype=np.uint8)
    for c in centres_ras:
        out[np.linalg.norm(ras - np.asarray(c), axis=1) <= r] = 1
    return out.reshape(shape)


def vox_to_ras(ijk: tuple[int, int, int]) -> list[float]:
    return (AFFINE[:3, :3] @ np.asarray(ijk, dtype=float) + AFFINE[:3, 3]).tolist()


@pytest.fixture
def dataset(tmp_path: Path) -> dict[str, Path]:
    """A VALDO-style reference folder (images next to labels), a plain one, and predictions."""
    truth = tmp_path / "truth"
    pred = tmp_path / "pred"
    img = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    # sub-001, VALDO layout: two microbleeds; image and brain mask beside the label.
    ref1 = np.zeros(SHAPE, np.uint8)
    ref1[5, 5, 5] = ref1[14, 14, 14] = 1
    save(truth / "sub-001" / "sub-001_space-T2S_desc-masked_T2S.nii.gz", img)
    save(truth / "sub-001" / "sub-001_space-T2S_CMB.nii.gz", ref1)
    save(truth / "sub-001" / "sub-001_space-T2S_desc-brain_mask.nii.gz", np.ones(SHAPE, np.uint8))
    # sub-002, plain name: one microbleed.
    ref2 = np.zeros(SHAPE, np.uint8)
    ref2[10, 10, 10] = 1
    save(truth / "sub-002.nii.gz", ref2)
    # Predictions as `plkd predict` names them: instance labels; one hit + one FP, one hit.
    p1 = np.zeros(SHAPE, np.int16)
    p1[5, 5, 5], p1[2, 17, 2] = 1, 2
    save(pred / "sub-001_T2S_cmb.nii.gz", p1)
    p2 = np.zeros(SHAPE, np.int16)
    p2[10, 10, 11] = 1
    save(pred / "sub-002_cmb.nii.gz", p2)
    cands = {
        "sub-001": [((5, 5, 5), 0.95), ((2, 17, 2), 0.7), ((14, 14, 14), 0.2)],
        "sub-002": [((10, 10, 11), 0.9)],
    }
    for sid, items in cands.items():
        stem = "sub-001_T2S_cmb" if sid == "sub-001" else "sub-002_cmb"
        # As plkd predict writes them: kept candidates carry their label, a rejected one label 0.
        records = [
            {
                "id": i + 1,
                "label": i + 1 if p >= 0.5 else 0,
                "center_ras": vox_to_ras(c),
                "voxels": 1,
                "volume_mm3": 1.0,
                "probability": p,
                "kept": p >= 0.5,
                "reason": "kept" if p >= 0.5 else "below threshold",
            }
            for i, (c, p) in enumerate(items)
        ]
        doc = {"input": "x", "thresholds": {"segmentation": 0.5}, "n_microbleeds": 2, "candidates": records}
        (pred / f"{stem}.json").write_text(json.dumps(doc))
    return {"truth": truth, "pred": pred, "root": tmp_path}


def test_pairs_by_subject_across_naming_schemes(dataset: dict[str, Path]) -> None:
    r = evaluate_paths(dataset["pred"], dataset["truth"])
    assert sorted(r["subjects"]) == ["sub-001", "sub-002"]
    assert r["files"]["sub-001"]["reference"].endswith("sub-001_space-T2S_CMB.nii.gz")
    s1, s2 = r["subjects"]["sub-001"], r["subjects"]["sub-002"]
    assert (s1["TP"], s1["FP"], s1["FN"]) == (1, 1, 1)
    assert (s2["TP"], s2["FP"], s2["FN"]) == (1, 0, 0)
    assert (r["pooled"]["TP"], r["pooled"]["FP"], r["pooled"]["FN"]) == (2, 1, 1)
    # The candidates JSONs beside the predictions give a FROC curve automatically.
    assert r["froc"]["n_references"] == 3
    assert r["froc"]["sensitivity_at_fp"]["1"] == pytest.approx(1.0)  # 0.5 FP/subject before the last TP


def test_prediction_on_finer_grid_is_compared_in_world_space(tmp_path: Path) -> None:
    centre = (2.0, -3.0, 1.0)
    ref = ball(SHAPE, AFFINE, [centre], 2.0)
    fine_affine, fine_shape = grid_with_spacing(AFFINE, SHAPE, np.array([0.5, 0.5, 0.5]))
    pred = ball(fine_shape, fine_affine, [centre], 2.0)
    assert pred.shape == (40, 40, 40)
    save(tmp_path / "truth" / "sub-007_CMB.nii.gz", ref)
    save(tmp_path / "pred" / "sub-007_cmb.nii.gz", pred, fine_affine)
    r = evaluate_paths(tmp_path / "pred", tmp_path / "truth")["subjects"]["sub-007"]
    assert (r["TP"], r["FP"], r["FN"]) == (1, 0, 0)
    assert r["Dice"] > 0.8


def test_shifted_grid_with_different_shape_still_matches(tmp_path: Path) -> None:
    centre = (0.0, 0.0, 0.0)
    shifted = AFFINE.copy()
    shifted[:3, 3] += [-3.0, 2.0, -1.0]
    save(tmp_path / "t.nii.gz", ball(SHAPE, AFFINE, [centre], 1.5))
    save(tmp_path / "p.nii.gz", ball((26, 18, 22), shifted, [centre], 1.5), shifted)
    r = evaluate_paths(tmp_path / "p.nii.gz", tmp_path / "t.nii.gz")
    s = next(iter(r["subjects"].values()))
    assert (s["TP"], s["FP"], s["FN"]) == (1, 0, 0)
    assert s["Dice"] == pytest.approx(1.0)


def test_references_placed_elsewhere_or_losing_predictions_are_reported(tmp_path: Path) -> None:
    # The same voxel grid, but the reference was saved without orientation (qform/sform codes 0):
    # its header puts it up to 40.4 mm away (at ITK's (-i, -j, k)), so the prediction moves and two of its three
    # microbleeds fall outside the reference, the third elsewhere on it. Scoring that without a word reports a
    # wrong 0 % (3 FN).
    ref = np.zeros(SHAPE, np.uint8)
    ref[3:5, 3:5, 3:5] = ref[10:12, 10:12, 10:12] = ref[16:18, 6:8, 14:16] = 1
    save(tmp_path / "pred" / "sub-001_cmb.nii.gz", ref.astype(np.int16))
    hdr = nib.Nifti1Image(ref, AFFINE).header
    hdr["qform_code"] = hdr["sform_code"] = 0
    (tmp_path / "truth").mkdir()
    nib.Nifti1Image(ref, None, header=hdr).to_filename(str(tmp_path / "truth" / "sub-001_CMB.nii.gz"))
    r = evaluate_paths(tmp_path / "pred", tmp_path / "truth")
    (note,) = r["notes"]
    assert note.startswith("sub-001: prediction and reference have the same grid size (20, 20, 20)")
    assert "up to 40.4 mm apart" in note
    assert "2 of 3 predicted microbleed(s) have no voxel on the reference grid" in note

    # On one grid: no note. On a coarser reference, a prediction smaller than its voxels is reported.
    save(tmp_path / "truth" / "sub-001_CMB.nii.gz", ref)
    assert evaluate_paths(tmp_path / "pred", tmp_path / "truth")["notes"] == []
    coarse = AFFINE.copy()
    coarse[:3, :3] *= 4.0
    save(tmp_path / "truth" / "sub-001_CMB.nii.gz", np.zeros((5, 5, 5), np.uint8), coarse)
    one = np.zeros(SHAPE, np.int16)
    one[1, 1, 1] = 1  # between the 4 mm reference voxels' centres
    save(tmp_path / "pred" / "sub-001_cmb.nii.gz", one)
    (note,) = evaluate_paths(tmp_path / "pred", tmp_path / "truth")["notes"]
    assert note == (
        "sub-001: 1 of 1 predicted microbleed(s) have no voxel on the reference grid (outside its field of view "
        "or smaller than its voxels) and are not scored"
    )

    # Fields of view that do not meet at all: refused in one line.
    far = AFFINE.copy()
    far[:3, 3] += 500.0
    save(tmp_path / "truth" / "sub-001_CMB.nii.gz", ref, far)
    with pytest.raises(InputError, match="do not overlap in space"):
        evaluate_paths(tmp_path / "pred", tmp_path / "truth")


def test_a_float_reference_with_rounding_noise_keeps_its_microbleeds(tmp_path: Path) -> None:
    # A reference saved as floats with 1e-6 on every background voxel (a resampled or scaled NIfTI) passes as a
    # label map, but read as "> 0" its whole field of view was one microbleed: 0 TP, Dice 0.001 for a right answer.
    ref = ball(SHAPE, AFFINE, [vox_to_ras((5, 5, 5)), vox_to_ras((14, 14, 12))], 1.5).astype(np.float32)
    save(tmp_path / "ref" / "sub-01_CMB.nii.gz", ref + np.float32(1e-6))
    save(tmp_path / "ref" / "sub-02_CMB.nii.gz", ref * 0.5 - np.float32(1e-6))  # rater agreement 0.5, noise below
    pred = ball(SHAPE, AFFINE, [vox_to_ras((5, 5, 5))], 1.5)
    for sid in ("sub-01", "sub-02"):
        save(tmp_path / "pred" / f"{sid}_pred.nii.gz", pred)
    result = evaluate_paths(tmp_path / "pred", tmp_path / "ref", froc=False)
    for sid, weight in (("sub-01", 1.0), ("sub-02", 0.5)):
        s = result["subjects"][sid]
        assert (s["n_reference"], s["TP"], s["FP"], s["FN"]) == (2, 1, 0, 1)
        assert s["Dice"] == pytest.approx(2 / 3)
        assert (s["valdo_TP"], s["valdo_FN"]) == (weight, weight)


def test_cli_writes_json_and_png(dataset: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out_json = dataset["root"] / "out" / "results.json"
    out_png = dataset["root"] / "out" / "froc.png"
    code = main(
        ["evaluate", str(dataset["pred"]), str(dataset["truth"]), "--json", str(out_json), "--froc", str(out_png)]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "pooled" in text and "VALDO" in text and "sub-002" in text
    data = json.loads(out_json.read_text())
    assert set(data["pooled"]) >= {"TPR", "PPV", "FPavg", "F1", "Dice", "TP", "FP", "FN", "n_subjects"}
    assert data["pooled"]["TPR"] == pytest.approx(2 / 3)
    assert data["pooled"]["PPV"] == pytest.approx(2 / 3)
    assert data["pooled"]["FPavg"] == pytest.approx(0.5)
    assert set(data["valdo"]) >= {"F1_median", "F1_mean", "count_difference_median", "Dice_median"}
    sub = data["subjects"]["sub-002"]
    assert set(sub) >= {"valdo_F1", "valdo_count_difference", "valdo_Dice", "n_reference", "n_predicted"}
    assert sub["valdo_Dice"] == 0.0  # the hit is one voxel off: matched, but no overlap
    assert data["froc"]["points"][0]["threshold"] is None  # +inf start written as null
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_candidates_folder_option(dataset: dict[str, Path]) -> None:
    cand_dir = dataset["root"] / "cands"
    cand_dir.mkdir()
    for f in dataset["pred"].glob("*.json"):
        f.rename(cand_dir / f.name)
    assert "froc" not in evaluate_paths(dataset["pred"], dataset["truth"])
    r = evaluate_paths(dataset["pred"], dataset["truth"], candidates=cand_dir)
    assert r["froc"]["n_subjects"] == 2
    (cand_dir / "sub-002_cmb.json").unlink()
    with pytest.raises(InputError, match="sub-002"):
        evaluate_paths(dataset["pred"], dataset["truth"], candidates=cand_dir)


def test_candidates_folder_of_a_study_with_sessions(dataset: dict[str, Path]) -> None:
    # Subjects paired by subject and session ("sub-001_ses-1") never found their JSON in --candidates DIR.
    root = dataset["root"]
    for folder in ("pred", "truth"):
        for f in sorted((root / folder).rglob("sub-00*")):
            if f.is_file():
                f.rename(
                    f.with_name(f.name.replace("_", "_ses-1_", 1).replace("sub-002.nii.gz", "sub-002_ses-1.nii.gz"))
                )
    cand_dir = root / "cands"
    cand_dir.mkdir()
    for f in (root / "pred").glob("*.json"):
        f.rename(cand_dir / f.name)
    r = evaluate_paths(root / "pred", root / "truth", candidates=cand_dir)
    assert sorted(r["subjects"]) == ["sub-001_ses-1", "sub-002_ses-1"] and r["froc"]["n_subjects"] == 2
    assert r["froc"]["n_references"] == 3


def test_missing_prediction_is_error_unless_flag(dataset: dict[str, Path]) -> None:
    (dataset["pred"] / "sub-002_cmb.nii.gz").unlink()
    with pytest.raises(InputError, match="sub-002.*--missing-as-empty"):
        evaluate_paths(dataset["pred"], dataset["truth"])
    r = evaluate_paths(dataset["pred"], dataset["truth"], missing_as_empty=True, froc=False)
    assert r["unmatched"]["references"] == ["sub-002"]
    assert (r["subjects"]["sub-002"]["TP"], r["subjects"]["sub-002"]["FN"]) == (0, 1)


def test_prediction_without_reference_is_reported(dataset: dict[str, Path]) -> None:
    save(dataset["pred"] / "sub-099_cmb.nii.gz", np.zeros(SHAPE, np.uint8))
    r = evaluate_paths(dataset["pred"], dataset["truth"])
    assert r["unmatched"]["predictions"] == ["sub-099"]
    assert "sub-099" not in r["subjects"]


def test_clear_errors(dataset: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(dataset["root"] / "nowhere"), str(dataset["truth"])]) == 2
    assert "prediction not found" in capsys.readouterr().err
    other = dataset["root"] / "other"
    save(other / "sub-500_cmb.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(InputError, match="no prediction/reference pairs"):
        evaluate_paths(other, dataset["truth"])
    # Two label-like files for one subject cannot be told apart.
    save(dataset["truth"] / "sub-002" / "sub-002_seg.nii.gz", np.zeros(SHAPE, np.uint8))
    save(dataset["truth"] / "sub-002" / "sub-002_label.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(InputError, match="sub-002 has 2 candidate files"):
        evaluate_paths(dataset["pred"], dataset["truth"])


def test_single_prediction_file_against_reference_folder(dataset: dict[str, Path]) -> None:
    r = evaluate_paths(dataset["pred"] / "sub-002_cmb.nii.gz", dataset["truth"])
    assert list(r["subjects"]) == ["sub-002"]
    assert r["subjects"]["sub-002"]["TP"] == 1
    assert r["froc"]["n_subjects"] == 1  # the candidates JSON beside the prediction file


def demo_folder(root: Path, stem: str = "demo-s1-4mm_T2S") -> Path:
    """What 'plkd demo' leaves behind: image, truth, brain mask and its own prediction + JSON."""
    ref = np.zeros(SHAPE, np.uint8)
    ref[5, 5, 5] = ref[14, 14, 14] = 1
    pred = np.zeros(SHAPE, np.int16)
    pred[5, 5, 5] = 1
    save(root / f"{stem}.nii.gz", np.random.default_rng(1).random(SHAPE).astype(np.float32))
    save(root / f"{stem}_truth.nii.gz", ref)
    save(root / f"{stem}_brainmask.nii.gz", np.ones(SHAPE, np.uint8))
    save(root / f"{stem}_cmb.nii.gz", pred)
    rec = {"id": 1, "label": 1, "center_ras": vox_to_ras((5, 5, 5)), "probability": 0.9, "kept": True}
    (root / f"{stem}_cmb.json").write_text(json.dumps({"input": "x", "candidates": [rec]}))
    return root


def test_a_prediction_is_never_the_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 15: 'plkd evaluate pred/ plkd-demo/' took the demo's own _cmb as reference (100 %)."""
    demo = demo_folder(tmp_path / "plkd-demo")
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in demo.glob("*_cmb.*"):
        (pred / f.name).write_bytes(f.read_bytes())
    out_json = tmp_path / "r.json"
    assert main(["evaluate", str(pred), str(demo), "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    data = json.loads(out_json.read_text())
    pair = data["pairing"]["pairs"][0]
    assert pair["reference"].endswith("demo-s1-4mm_T2S_truth.nii.gz")
    assert pair["prediction"] == str(pred / "demo-s1-4mm_T2S_cmb.nii.gz")
    assert f"{pair['prediction']} <- {pair['reference']}" in text  # the pairing is printed
    assert data["pooled"]["TPR"] == pytest.approx(0.5)  # 1 of 2, not 100 %
    roles = {Path(i["file"]).name: i["role"] for i in data["pairing"]["ignored"] if i["side"] == "reference"}
    assert roles == {
        "demo-s1-4mm_T2S.nii.gz": "image",
        "demo-s1-4mm_T2S_brainmask.nii.gz": "mask",
        "demo-s1-4mm_T2S_cmb.nii.gz": "prediction",
    }
    # The demo folder on both sides pairs its prediction with its truth.
    r = evaluate_paths(demo, demo)
    assert r["files"]["demo-s1-4mm"]["prediction"].endswith("_cmb.nii.gz")
    assert r["files"]["demo-s1-4mm"]["reference"].endswith("_truth.nii.gz")
    # Named explicitly, a prediction file or a brain mask is refused as the reference, in one line.
    with pytest.raises(InputError, match="is a prediction written by 'plkd predict'"):
        evaluate_paths(pred / "demo-s1-4mm_T2S_cmb.nii.gz", demo / "demo-s1-4mm_T2S_cmb.nii.gz")
    with pytest.raises(InputError, match="brain mask"):
        evaluate_paths(pred / "demo-s1-4mm_T2S_cmb.nii.gz", demo / "demo-s1-4mm_T2S_brainmask.nii.gz")
    # An image given as the reference is refused by its values.
    with pytest.raises(InputError, match="is not a label map"):
        evaluate_paths(pred / "demo-s1-4mm_T2S_cmb.nii.gz", demo / "demo-s1-4mm_T2S.nii.gz")


@pytest.mark.parametrize(
    ("reference", "extras"),
    [
        ("sub-01/sub-01_space-T2S_CMB.nii.gz", ["sub-01/sub-01_space-T2S_desc-masked_T2S.nii.gz"]),  # VALDO, synth
        ("sub-01/anat/sub-01_space-T2S_label-CMB_mask.nii.gz", ["sub-01/anat/sub-01_T2starw.nii.gz"]),  # BIDS
        ("sub-01/anat/sub-01_T2starw_dseg.nii.gz", ["sub-01/anat/sub-01_desc-brain_mask.nii.gz"]),  # BIDS dseg
        ("labelsTr/sub-01.nii.gz", ["imagesTr/sub-01_0000.nii.gz"]),  # nnU-Net
        ("sub-01_label.nii.gz", ["sub-01.nii.gz"]),  # plain side by side
        ("sub-01_T2S_truth.nii.gz", ["sub-01_T2S.nii.gz", "sub-01_T2S_brainmask.nii.gz"]),  # plkd demo
    ],
)
def test_reference_found_in_every_layout(tmp_path: Path, reference: str, extras: list[str]) -> None:
    ref = np.zeros(SHAPE, np.uint8)
    ref[5, 5, 5] = 1
    save(tmp_path / "truth" / reference, ref)
    for e in extras:
        save(tmp_path / "truth" / e, np.random.default_rng(2).random(SHAPE).astype(np.float32))
    save(tmp_path / "pred" / "sub-01_T2S_cmb.nii.gz", ref)
    r = evaluate_paths(tmp_path / "pred", tmp_path / "truth")
    assert r["files"]["sub-01"]["reference"] == str(tmp_path / "truth" / reference)
    assert r["pooled"]["TP"] == 1


def test_unmarked_files_are_never_guessed_and_ambiguity_is_one_line(tmp_path: Path) -> None:
    ref = np.zeros(SHAPE, np.uint8)
    ref[5, 5, 5] = 1
    save(tmp_path / "pred" / "sub-01_cmb.nii.gz", ref)
    save(tmp_path / "pred" / "sub-02_cmb.nii.gz", ref)
    # sub-01: two unmarked files (T2S and T1 images): neither is taken as the reference.
    save(tmp_path / "truth" / "sub-01_T2S.nii.gz", ref)
    save(tmp_path / "truth" / "sub-01_T1.nii.gz", ref)
    save(tmp_path / "truth" / "sub-02_CMB.nii.gz", ref)
    r = evaluate_paths(tmp_path / "pred", tmp_path / "truth")
    assert list(r["subjects"]) == ["sub-02"] and r["unmatched"]["predictions"] == ["sub-01"]
    assert {Path(i["file"]).name for i in r["pairing"]["ignored"]} == {"sub-01_T2S.nii.gz", "sub-01_T1.nii.gz"}
    save(tmp_path / "truth" / "sub-02_seg.nii.gz", ref)
    with pytest.raises(InputError, match=r"^reference: subject sub-02 has 2 candidate files \(") as err:
        evaluate_paths(tmp_path / "pred", tmp_path / "truth")
    assert "\n" not in str(err.value)
    # The same file on both sides is refused.
    with pytest.raises(InputError, match="both the prediction and its reference"):
        evaluate_paths(tmp_path / "truth" / "sub-02_CMB.nii.gz", tmp_path / "truth" / "sub-02_CMB.nii.gz")


def test_a_threshold_is_a_probability_and_label_maps_say_it_changes_nothing(dataset: dict[str, Path], capsys) -> None:
    # --threshold 2 (or 50, meant as per cent) cut the label maps' lowest microbleed numbers away: sub-001's hit
    # (label 1) vanished and the table scored a miss; 0.8 on a label map changed nothing, unsaid, though a user took
    # it for another candidate probability.
    argv = ["evaluate", str(dataset["pred"]), str(dataset["truth"])]
    for value in ("2", "50"):
        assert main([*argv, "--threshold", value]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("plkd: error: --threshold must be a probability") and "\n" not in err
    r = evaluate_paths(dataset["pred"], dataset["truth"], threshold=0.8)
    assert (r["pooled"]["TP"], r["pooled"]["FP"]) == (2, 1)  # the same as at 0.5: these are microbleed numbers
    assert any("label maps" in n and "plkd predict --threshold" in n for n in r["notes"])
    assert not any("label maps" in n for n in evaluate_paths(dataset["pred"], dataset["truth"])["notes"])
    # A probability map is cut where asked, without the note.
    prob = np.zeros(SHAPE, np.float32)
    prob[10, 10, 11] = 0.7
    save(dataset["root"] / "prob" / "sub-002_prob.nii.gz", prob)
    single = dataset["truth"] / "sub-002.nii.gz"
    assert evaluate_paths(dataset["root"] / "prob", single, threshold=0.6)["pooled"]["TP"] == 1
    at_08 = evaluate_paths(dataset["root"] / "prob", single, threshold=0.8)
    assert at_08["pooled"]["TP"] == 0 and not any("label maps" in n for n in at_08["notes"])


def test_a_subject_twice_under_one_name_is_refused_naming_both_folders(tmp_path: Path) -> None:
    ref = np.zeros(SHAPE, np.uint8)
    ref[5, 5, 5] = 1
    save(tmp_path / "truth" / "sub-01_CMB.nii.gz", ref)
    save(tmp_path / "pred" / "site-a" / "sub-01_seg.nii.gz", ref)
    save(tmp_path / "pred" / "site-b" / "sub-01_seg.nii.gz", ref)
    with pytest.raises(InputError, match="sub-01 has 2 candidate files") as err:
        evaluate_paths(tmp_path / "pred", tmp_path / "truth")
    assert "site-a" in str(err.value) and "site-b" in str(err.value)  # not "sub-01_seg.nii.gz, sub-01_seg.nii.gz"


def test_distances_use_the_voxel_size_of_the_sform_not_a_stale_pixdim(tmp_path: Path) -> None:
    # A reference whose sform was rewritten to 3 mm slices while its pixdim (the qform's) still says 1 mm, and a
    # prediction two slices away: 2 × 3 mm = 6 mm, beyond 5 mm. Measured with the pixdim it was "2 mm", a hit.
    ref, pred = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    ref[10, 10, 5] = pred[10, 10, 7] = 1
    for path, data in ((tmp_path / "sub-1_CMB.nii.gz", ref), (tmp_path / "p" / "sub-1_cmb.nii.gz", pred)):
        path.parent.mkdir(exist_ok=True)
        img = nib.Nifti1Image(data, None)
        img.set_qform(np.eye(4), code=1)
        img.set_sform(np.diag([1.0, 1.0, 3.0, 1.0]), code=2)
        img.to_filename(str(path))
    assert nib.load(str(tmp_path / "sub-1_CMB.nii.gz")).header.get_zooms() == (1.0, 1.0, 1.0)
    r = evaluate_paths(tmp_path / "p" / "sub-1_cmb.nii.gz", tmp_path / "sub-1_CMB.nii.gz")
    s = r["subjects"]["sub-1"]
    assert (s["TP"], s["FP"], s["FN"]) == (0, 1, 1)
    assert any("pixdim says 1 × 1 × 1 mm" in n and "1 × 1 × 3 mm" in n for n in r["notes"])
    # One slice away (3 mm) is a hit; a consistent header adds no note.
    save(tmp_path / "q" / "sub-1_cmb.nii.gz", np.roll(pred, -1, axis=2), np.diag([1.0, 1.0, 3.0, 1.0]))
    save(tmp_path / "t" / "sub-1_CMB.nii.gz", ref, np.diag([1.0, 1.0, 3.0, 1.0]))
    r = evaluate_paths(tmp_path / "q", tmp_path / "t")
    assert r["subjects"]["sub-1"]["TP"] == 1 and r["notes"] == []


@pytest.mark.parametrize("side", ["reference", "prediction"])
def test_negative_labels_are_refused_not_read_as_background(tmp_path: Path, side: str, capsys) -> None:
    # A 0/255 mask stored as int8 reads 255 as -1. Cut at >= 0.5 (prediction) or > 0 (reference), its microbleeds
    # vanished: a reference of them scored as empty (F1 '-', every prediction a false positive), a prediction of them
    # as nothing found, exit status 0 and no note.
    mask = np.zeros(SHAPE, np.uint8)
    mask[5, 5, 5] = mask[12, 12, 12] = 1
    signed = np.where(mask > 0, np.int8(-1), np.int8(0)).astype(np.int8)
    save(tmp_path / "pred" / "sub-01_pred.nii.gz", signed if side == "prediction" else mask)
    save(tmp_path / "truth" / "sub-01_CMB.nii.gz", signed if side == "reference" else mask)
    json_out = tmp_path / "r.json"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "truth"), "--json", str(json_out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"plkd: error: {side} ") and "negative values (down to -1)" in err and "\n" not in err
    assert not json_out.exists()
    # An interpolated probability map's small overshoot below 0 is still a probability map.
    prob = mask.astype(np.float32)
    prob[0, 0, 0] = -0.01
    save(tmp_path / "pred" / "sub-01_pred.nii.gz", prob)
    save(tmp_path / "truth" / "sub-01_CMB.nii.gz", mask)
    assert evaluate_paths(tmp_path / "pred", tmp_path / "truth")["pooled"]["TP"] == 2


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_a_matching_distance_that_is_no_distance_is_refused(dataset: dict[str, Path], value: str, capsys) -> None:
    # --max-distance nan passed the `<= 0` check, and since no distance is `< nan` every prediction was scored a
    # false positive: TPR 0, exit status 0.
    json_out = dataset["root"] / "r.json"
    argv = ["evaluate", str(dataset["pred"]), str(dataset["truth"]), "--json", str(json_out)]
    assert main([*argv, "--max-distance", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("plkd: error: --max-distance must be a positive number of mm") and "\n" not in err
    assert not json_out.exists()


def test_froc_records_the_matching_distance_it_used(dataset: dict[str, Path]) -> None:
    r = evaluate_paths(dataset["pred"], dataset["truth"], max_distance_mm=3.0)
    assert r["settings"]["max_distance_mm"] == 3.0
    assert r["froc"]["max_distance_mm"] == 3.0  # was always written as 5


def test_missing_predictions_scored_as_empty_keep_the_froc_curve(dataset: dict[str, Path]) -> None:
    # sub-002 (one microbleed) has no prediction: with --missing-as-empty it is scored as empty, so its microbleed
    # is missed at every threshold. It used to need a candidates JSON nobody could have (no curve, or an error).
    for f in dataset["pred"].glob("sub-002_*"):
        f.unlink()
    r = evaluate_paths(dataset["pred"], dataset["truth"], missing_as_empty=True, froc=True)
    froc, pooled = r["froc"], r["pooled"]
    assert (froc["n_subjects"], froc["n_references"]) == (2, 3)
    assert (pooled["TP"], pooled["FP"], pooled["FN"]) == (1, 1, 2)
    # sub-001: TP at p 0.95, FP at 0.7, its second microbleed's candidate (p 0.2) at [14,14,14] a TP below.
    points = [(p["threshold"], p["sensitivity"], p["fp_per_subject"]) for p in froc["points"]]
    assert points == [(None, 0.0, 0.0), (0.95, 1 / 3, 0.0), (0.7, 1 / 3, 0.5), (0.2, 2 / 3, 0.5)]
    op = froc["operating_point"]
    assert (op["sensitivity"], op["fp_per_subject"]) == (pytest.approx(1 / 3), 0.5)  # the point at 0.7
    assert not any("FROC curve skipped" in n for n in r["notes"])


def test_a_probability_map_scaled_to_per_cent_is_not_taken_silently_for_a_label_map(tmp_path: Path) -> None:
    # A 0-100 probability map: whole numbers, so read as microbleed numbers with every voxel >= 1 (1 %) foreground;
    # the 5 % halo around the microbleed made its one blob far bigger. Scored as given, but said.
    ref = np.zeros(SHAPE, np.uint8)
    ref[10, 10, 10] = 1
    prob = np.zeros(SHAPE, np.uint8)
    prob[8:13, 8:13, 8:13] = 5
    prob[9:12, 9:12, 9:12] = 40
    prob[10, 10, 10] = 90
    save(tmp_path / "t" / "sub-1_CMB.nii.gz", ref)
    save(tmp_path / "p" / "sub-1_cmb.nii.gz", prob)
    r = evaluate_paths(tmp_path / "p", tmp_path / "t")
    assert r["subjects"]["sub-1"]["voxel_FP"] == 124  # the whole 5x5x5 block, as given
    assert any("sub-1: the prediction holds whole numbers up to 90" in n and "0-100 or 0-255" in n for n in r["notes"])
    # plkd predict's label maps (one number per microbleed) and 0/255 masks get no such note.
    labels = np.zeros(SHAPE, np.int16)
    labels[8:10, 8:10, 8:10], labels[14:16, 14:16, 14:16] = 1, 2
    for data in (labels, (labels > 0).astype(np.uint8) * 255):
        save(tmp_path / "p" / "sub-1_cmb.nii.gz", data)
        assert evaluate_paths(tmp_path / "p", tmp_path / "t")["notes"] == []


def test_hand_made_cohort_on_four_grids_gives_the_hand_computed_tables(tmp_path: Path) -> None:
    """Split, touching and covering microbleeds, an LPS-stored and a thick-slice prediction, two subjects without
    microbleeds; every number below is worked out by hand from the VALDO rule and the paper's formulas."""
    eye, truth, pred = np.eye(4), tmp_path / "truth", tmp_path / "pred"
    # sub-1: microbleed A (one voxel) predicted as two pieces, 0 and 2 mm from it (a one-voxel gap: the nearer is
    # the TP, the other a FP); B = two voxels touching at a corner, one microbleed, predicted whole. Stored LPS.
    ref = np.zeros(SHAPE, np.uint8)
    ref[5, 5, 5] = ref[12, 12, 12] = ref[13, 13, 13] = 1
    p = ref.copy()
    p[5, 5, 7] = 1
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps[:2, 3] = SHAPE[0] - 1
    save(truth / "sub-1_CMB.nii.gz", ref, eye)
    save(pred / "sub-1_cmb.nii.gz", p[::-1, ::-1, :].copy(), lps)
    # sub-2: two microbleeds 4 mm apart under one prediction made on 4 mm slices (slab 2 = 1 mm slices 8-11):
    # its centre (6, 10, 9.5) is 2.5 mm from both; the first in array order takes it, the other is missed.
    ref = np.zeros(SHAPE, np.uint8)
    ref[4, 10, 8] = ref[8, 10, 8] = 1
    thick = np.diag([1.0, 1.0, 4.0, 1.0])
    thick[2, 3] = 1.5
    p = np.zeros((20, 20, 5), np.uint8)
    p[4:9, 10, 2] = 1
    save(truth / "sub-2_CMB.nii.gz", ref, eye)
    save(pred / "sub-2_cmb.nii.gz", p, thick)
    # sub-3: no microbleed, nothing predicted. sub-4: no microbleed, one false positive.
    save(truth / "sub-3_CMB.nii.gz", np.zeros(SHAPE, np.uint8), eye)
    save(pred / "sub-3_cmb.nii.gz", np.zeros(SHAPE, np.uint8), eye)
    p = np.zeros(SHAPE, np.uint8)
    p[3, 15, 3] = 1
    save(truth / "sub-4_CMB.nii.gz", np.zeros(SHAPE, np.uint8), eye)
    save(pred / "sub-4_cmb.nii.gz", p, eye)

    r = evaluate_paths(pred, truth)
    s = r["subjects"]
    counts = {k: (v["TP"], v["FP"], v["FN"], v["n_reference"], v["n_predicted"]) for k, v in s.items()}
    assert counts == {
        "sub-1": (2, 1, 0, 2, 3), "sub-2": (1, 0, 1, 2, 1), "sub-3": (0, 0, 0, 0, 0), "sub-4": (0, 1, 0, 0, 1),
    }  # fmt: skip
    assert r["notes"] == []  # the LPS prediction is turned exactly, the thick one resampled without loss
    # Per subject: undefined where the paper's ratios divide by zero.
    assert np.isnan(s["sub-3"]["TPR"]) and np.isnan(s["sub-3"]["F1"]) and np.isnan(s["sub-4"]["TPR"])
    assert s["sub-4"]["PPV"] == 0.0 and s["sub-4"]["F1"] == 0.0
    # Pooled (paper): counts summed, FPavg over all 4 subjects; voxel Dice from summed voxels
    # (sub-1: 3 of 4 predicted voxels right; sub-2: 2 of the 5 × 4 = 20; sub-4: 1 wrong) = 2·5 / (2·5 + 20 + 0).
    pooled = r["pooled"]
    assert (pooled["TP"], pooled["FP"], pooled["FN"], pooled["n_subjects"]) == (3, 2, 1, 4)
    assert (pooled["voxel_TP"], pooled["voxel_FP"], pooled["voxel_FN"]) == (5, 20, 0)
    assert pooled["TPR"] == pytest.approx(3 / 4) and pooled["PPV"] == pytest.approx(3 / 5)
    assert pooled["FPavg"] == pytest.approx(0.5) and pooled["F1"] == pytest.approx(6 / 9)
    assert pooled["Dice"] == pytest.approx(10 / 30)
    # VALDO (per subject, medians over the 2 subjects with microbleeds for F1 and Dice, all 4 for the count).
    assert s["sub-1"]["valdo_F1"] == pytest.approx(4 / 5) and s["sub-2"]["valdo_F1"] == pytest.approx(2 / 3)
    # V-Dice: A against both pieces (2·1 / (1 + 2)), B exact (1); sub-2: the found one against the 20-voxel blob.
    assert s["sub-1"]["valdo_Dice"] == pytest.approx((2 / 3 + 1) / 2)
    assert s["sub-2"]["valdo_Dice"] == pytest.approx(2 / 21) and s["sub-2"]["valdo_Dice_all"] == pytest.approx(1 / 21)
    v = r["valdo"]
    assert v["n_subjects_with_reference"] == 2 and v["F1_median"] == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert v["count_difference_median"] == 1.0 and v["count_difference_mean"] == pytest.approx(0.75)
    assert v["F1_pooled"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    table = format_table(r)
    assert "F1 and Dice over the 2 subject(s) with microbleeds, the count difference over all 4" in table
    assert "TPR 75.0  PPV 60.0  FPavg 0.50  F1 66.7  Dice 33.3" in table


def test_a_prediction_on_an_oblique_grid_is_scored_where_it_lies(tmp_path: Path) -> None:
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    oblique = AFFINE.copy()
    oblique[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([0.9, 0.9, 1.1])
    centres = [(2.0, -3.0, 1.0), (-4.0, 3.0, -2.0)]
    save(tmp_path / "t" / "sub-1_CMB.nii.gz", ball(SHAPE, AFFINE, centres, 1.8))
    save(tmp_path / "p" / "sub-1_cmb.nii.gz", ball((24, 24, 20), oblique, centres[:1], 1.8), oblique)
    r = evaluate_paths(tmp_path / "p", tmp_path / "t")["subjects"]["sub-1"]
    assert (r["TP"], r["FP"], r["FN"]) == (1, 0, 1)
    assert r["valdo_Dice"] > 0.6


def test_froc_at_the_applied_threshold_is_the_pooled_table_when_a_rejected_probability_rounds_up_to_it(
    dataset: dict[str, Path],
) -> None:
    # plkd predict writes probabilities to 4 decimals: a candidate rejected at 0.49996 reads 0.5, the threshold.
    path = dataset["pred"] / "sub-002_cmb.json"
    doc = json.loads(path.read_text())
    far = {"id": 2, "label": 0, "center_ras": vox_to_ras((2, 2, 17)), "probability": 0.5, "kept": False}
    doc["candidates"].append({**far, "voxels": 0, "volume_mm3": 0.0, "reason": "below threshold"})
    path.write_text(json.dumps(doc))
    r = evaluate_paths(dataset["pred"], dataset["truth"])
    op = r["froc"]["operating_point"]
    assert (op["sensitivity"], op["fp_per_subject"]) == (pytest.approx(2 / 3), 0.5)
    points = [(p["threshold"], p["sensitivity"], p["fp_per_subject"]) for p in r["froc"]["points"]]
    kept = [pt for pt in points if pt[0] is None or pt[0] >= 0.5]
    # Keeping what p >= 0.5 keeps is the pooled table; the point at "0.5" said 1 FP/subject with the rejected one.
    assert kept[-1][1:] == (pytest.approx(2 / 3), 0.5) and max(pt[2] for pt in kept) == 0.5
    below = [pt for pt in points if pt[0] is not None and 0.2 < pt[0] < 0.5]
    assert [pt[1:] for pt in below] == [(pytest.approx(2 / 3), 1.0)]


@pytest.mark.parametrize(
    ("pred_name", "truth_name"),
    [("case_{n}_cmb", "case_{n}_label"), ("CMB_{n}_0000_cmb", "labelsTs/CMB_{n}")],
    ids=["plain-folder", "nnU-Net"],
)
def test_case_names_holding_an_underscore_pair_by_case(tmp_path: Path, pred_name: str, truth_name: str) -> None:
    # plkd train reads case_001 (and nnU-Net's CMB_001) as whole case names; evaluate cut every name at its first
    # "_", so all predictions were one subject "case" and the data set could not be scored.
    truth_centres = {"001": [(0.0, 0.0, 0.0)], "002": [(-4.0, 3.0, 2.0), (5.0, -4.0, 4.0)], "003": [(2.0, 2.0, -3.0)]}
    found = {"001": [(0.0, 0.0, 0.0)], "002": [(-4.0, 3.0, 2.0)], "003": []}  # 002 misses one, 003 all
    for n, centres in truth_centres.items():
        save(tmp_path / "truth" / (truth_name.format(n=n) + ".nii.gz"), ball(SHAPE, AFFINE, centres, 1.5))
        # TRUTH is the data set folder: its images lie beside the labels (nnU-Net: imagesTs/CMB_001_0000).
        image = pred_name.replace("_cmb", "").format(n=n)
        save(tmp_path / "truth" / ("imagesTs/" if "0000" in image else "") / (image + ".nii.gz"), np.ones(SHAPE))
        pred = save(tmp_path / "pred" / (pred_name.format(n=n) + ".nii.gz"), ball(SHAPE, AFFINE, found[n], 1.5))
        pred.with_name(pred.name.replace(".nii.gz", ".json")).write_text('{"candidates": []}', encoding="utf-8")
    r = evaluate_paths(tmp_path / "pred", tmp_path / "truth", froc=False)
    case = pred_name.split("{n}")[0]
    assert sorted(r["subjects"]) == [f"{case}{n}" for n in truth_centres]
    tp_fn = {sid[-3:]: (s["TP"], s["FN"]) for sid, s in r["subjects"].items()}
    assert tp_fn == {"001": (1, 0), "002": (1, 1), "003": (0, 1)}
    # A case without a prediction is named by its case name, not refused as several files of "case".
    (tmp_path / "pred" / (pred_name.format(n="003") + ".nii.gz")).unlink()
    with pytest.raises(InputError, match=f"1 reference subject\\(s\\) have no prediction: {case}003"):
        evaluate_paths(tmp_path / "pred", tmp_path / "truth", froc=False)


def test_a_float_label_of_0_999_is_read_as_training_reads_it_and_a_soft_map_is_refused(tmp_path: Path) -> None:
    # plkd train, tune and cv read a label saved as floats with 0.999 for 1 as 1; plkd evaluate refused the same
    # label as "not a label map ... give the microbleed label, not an image".
    ref = ball(SHAPE, AFFINE, [vox_to_ras((5, 5, 5)), vox_to_ras((14, 14, 12))], 1.5).astype(np.float32)
    save(tmp_path / "ref" / "sub-01_CMB.nii.gz", ref * np.float32(0.999))
    save(tmp_path / "pred" / "sub-01_pred.nii.gz", ball(SHAPE, AFFINE, [vox_to_ras((5, 5, 5))], 1.5))
    s = evaluate_paths(tmp_path / "pred", tmp_path / "ref", froc=False)["subjects"]["sub-01"]
    assert (s["n_reference"], s["TP"], s["FN"], s["valdo_TP"]) == (2, 1, 1, 1.0)
    # Values between the label values (an interpolated label, a probability map) are still no reference.
    save(tmp_path / "ref" / "sub-01_CMB.nii.gz", ref * np.float32(0.7))
    with pytest.raises(InputError, match=r"holds values between the label values .*\(e\.g\. 0\.7\)") as err:
        evaluate_paths(tmp_path / "pred", tmp_path / "ref", froc=False)
    assert "\n" not in str(err.value)


def test_a_reference_of_another_scan_of_the_session_is_not_paired(tmp_path: Path, capsys) -> None:
    """BIDS ``acq-``/``ce-``/``rec-``/``run-`` entities that differ between a prediction and a reference of one subject
    and session name two scans (an SWI and a GRE): they were paired by subject and session and scored against each
    other without a word. A label without those entities still pairs with the session's one prediction."""
    found = ball(SHAPE, AFFINE, [vox_to_ras((5, 5, 5))], 1.5)
    pred = save(tmp_path / "pred" / "sub-01_ses-1_acq-swi_T2starw_cmb.nii.gz", found.astype(np.int16))
    truth = tmp_path / "bids" / "derivatives" / "manual" / "sub-01" / "ses-1" / "anat"
    save(
        truth / "sub-01_ses-1_acq-gre_label-CMB_mask.nii.gz",
        found | ball(SHAPE, AFFINE, [vox_to_ras((14, 14, 14))], 1.5),
    )
    assert main(["evaluate", str(pred.parent), str(tmp_path / "bids")]) == 2
    assert "different scans (acq-swi and acq-gre)" in capsys.readouterr().err
    result = evaluate_paths(pred.parent, tmp_path / "bids", missing_as_empty=True)
    assert result["subjects"]["sub-01_ses-1"]["TP"] == 0  # the GRE's label, with no prediction of the GRE
    assert "different scans" in result["scored"]["skipped"][0]["reason"]

    (truth / "sub-01_ses-1_acq-gre_label-CMB_mask.nii.gz").rename(truth / "sub-01_ses-1_label-CMB_mask.nii.gz")
    result = evaluate_paths(pred.parent, tmp_path / "bids")
    assert result["subjects"]["sub-01_ses-1"]["TP"] == 1 and result["subjects"]["sub-01_ses-1"]["FN"] == 1
    # The same run written with and without its leading zero is one scan (a BIDS index is a number).
    pred.rename(pred.with_name("sub-01_ses-1_acq-swi_run-01_T2starw_cmb.nii.gz"))
    pred = pred.with_name("sub-01_ses-1_acq-swi_run-01_T2starw_cmb.nii.gz")
    (truth / "sub-01_ses-1_label-CMB_mask.nii.gz").rename(truth / "sub-01_ses-1_run-1_label-CMB_mask.nii.gz")
    result = evaluate_paths(pred.parent, tmp_path / "bids")
    assert result["subjects"]["sub-01_ses-1"]["TP"] == 1 and result["subjects"]["sub-01_ses-1"]["FN"] == 1


def test_an_older_candidates_json_is_said_to_count_every_candidate_below_the_threshold(
    dataset: dict[str, Path],
) -> None:
    """A JSON of plkd predict before session 16 does not say which candidates below the threshold predict would keep:
    the FROC curve counts each, and a note says so for that subject only."""
    notes = [n for n in evaluate_paths(dataset["pred"], dataset["truth"])["notes"] if "older plkd predict" in n]
    assert len(notes) == 1 and notes[0].startswith("sub-001:") and "1 candidate(s)" in notes[0]
    path = dataset["pred"] / "sub-001_T2S_cmb.json"
    doc = json.loads(path.read_text())
    for c in doc["candidates"]:
        if c["reason"] == "below threshold":
            c["if_threshold_lowered"] = "kept"
    path.write_text(json.dumps(doc))
    assert not [n for n in evaluate_paths(dataset["pred"], dataset["truth"])["notes"] if "older plkd predict" in n]
