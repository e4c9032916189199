"""Per-size and per-location scoring: bin edges, millimetres on anisotropic grids, counts that add up."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plkd.location.summary import summarise
from plkd.metrics.sizes import SIZE_NAMES, equivalent_diameter_mm, size_bin


def test_size_bins_include_their_lower_edge_and_keep_large_blobs_apart() -> None:
    assert [size_bin(d) for d in (0.0, 2.999, 3.0, 4.999, 5.0, 9.99, 10.0, 25.0)] == [
        "<3 mm", "<3 mm", "3-5 mm", "3-5 mm", "5-10 mm", "5-10 mm", ">10 mm", ">10 mm",
    ]  # fmt: skip
    assert SIZE_NAMES == ("<3 mm", "3-5 mm", "5-10 mm", ">10 mm")
    with pytest.raises(ValueError):
        size_bin(float("nan"))


def test_a_blob_of_exactly_3_mm_is_not_binned_below_its_edge() -> None:
    # One voxel of 4.5·π mm³ is a sphere of exactly 3 mm; (6V/π)^(1/3) computes 2.999999999999999,
    # which the scripts' own bins put in "<3 mm".
    side = (4.5 * math.pi) ** (1.0 / 3.0)
    d = float(equivalent_diameter_mm(1, np.diag([side, side, side, 1.0])))
    assert d == pytest.approx(3.0) and d < 3.0  # the rounding this test is about
    assert size_bin(d) == "3-5 mm"


def test_diameters_are_millimetres_on_anisotropic_and_oblique_grids() -> None:
    # Three 1 x 1 x 3 mm voxels: 9 mm³, d = (54/π)^(1/3) = 2.580 mm (a voxel count alone says 1.79 mm).
    aniso = np.diag([1.0, 1.0, 3.0, 1.0])
    assert float(equivalent_diameter_mm(3, aniso)) == pytest.approx((54.0 / math.pi) ** (1.0 / 3.0))
    c, s = math.cos(0.4), math.sin(0.4)
    oblique = np.eye(4)
    oblique[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.0, 1.0, 3.0])
    assert float(equivalent_diameter_mm(3, oblique)) == pytest.approx(float(equivalent_diameter_mm(3, aniso)))


def test_location_counts_add_up_to_the_kept_candidates() -> None:
    candidates = [
        {"kept": True, "location": "lobar", "region": "frontal"},
        {"kept": True, "location": "Lobar"},  # not a class: unknown, not lost
        {"kept": True},  # no location: unknown
        {"kept": True, "location": "infratentorial", "region": "cerebellum"},
        {"kept": False, "location": "deep", "region": "thalamus"},  # rejected: not counted
    ]
    block = summarise(candidates)
    assert block["counts"] == {"lobar": 1, "deep": 0, "infratentorial": 1, "unknown": 2}
    assert sum(block["counts"].values()) == 4 == sum(block["regions"].values())
    assert "thalamus" not in block["regions"]


def _evaluate_by_size():  # noqa: ANN202 - the module scripts/evaluate_by_size.py
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "evaluate_by_size.py"
    spec = importlib.util.spec_from_file_location("evaluate_by_size", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_evaluate_by_size_counts_by_mm_bins_and_mars_class_on_an_anisotropic_grid() -> None:
    from plkd.volumes import Volume

    # Voxels of s × s × 2s mm = π/6 mm³: a 3×3×3 cube is a sphere of exactly 3 mm, 5×5×5 of 5 mm, 26 voxels 2.96 mm.
    s = (math.pi / 12.0) ** (1.0 / 3.0)
    affine = np.diag([s, s, 2.0 * s, 1.0])
    label = np.zeros((40, 20, 12), np.float32)
    label[2:5, 2:5, 2:5] = 1  # 3 mm: found
    label[10:15, 2:7, 2:7] = 1  # 5 mm: missed
    label[20:23, 2:5, 2:5] = 1
    label[22, 4, 4] = 0  # 26 voxels, < 3 mm: found
    pred = np.zeros(label.shape, np.int16)
    pred[2:5, 2:5, 2:5] = 1
    pred[20:23, 2:5, 2:5] = 2
    pred[35, 15, 10] = 3  # 9 mm and more from every microbleed: a false positive
    ras = lambda ijk: np.asarray(ijk, dtype=float) @ affine[:3, :3].T  # noqa: E731
    places = [(ras((3, 3, 3)) + [1.0, 0, 0], "lobar"), (ras((12, 4, 4)) + [0, 0.5, 0], "deep")]
    places.append((ras((21, 3, 3)) + [10.0, 0, 0], "infratentorial"))  # 10 mm away: the microbleed is n/a
    counts = _evaluate_by_size().count_subject(pred, Volume(data=label, affine=affine), places)
    assert (counts["TP"], counts["FN"], counts["FP"]) == (2, 1, 1)
    assert dict(counts["total"]) == {"3-5 mm": 1, "5-10 mm": 1, "<3 mm": 1, "lobar": 1, "deep": 1, "n/a": 1}
    assert dict(counts["found"]) == {"3-5 mm": 1, "5-10 mm": 0, "<3 mm": 1, "lobar": 1, "deep": 0, "n/a": 1}


def test_evaluate_by_size_leaves_rates_without_a_denominator_undefined(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from plkd.volumes import Volume

    mod = _evaluate_by_size()
    empty = Volume(data=np.zeros((8, 8, 8), np.float32), affine=np.eye(4))
    monkeypatch.setattr(mod, "load_subject", lambda subject: (empty, empty, empty))
    predictor = SimpleNamespace(predict=lambda image, mask, lr_factor: SimpleNamespace(label_map=np.zeros((8, 8, 8))))
    row = mod.evaluate(predictor, [(SimpleNamespace(id="sub-1"), {}), (SimpleNamespace(id="sub-2"), {})], "hr")
    # No microbleed and no prediction: TPR, PPV and F1 are undefined (written null), not 0 % as before.
    assert (row["subjects"], row["TP"], row["FP"], row["FN"], row["FP_per_subject"]) == (2, 0, 0, 0, 0.0)
    assert all(math.isnan(row[k]) for k in ("TPR", "PPV", "F1"))


def test_dice_by_size_scores_a_rim_beside_a_large_microbleed_low(tmp_path) -> None:
    import importlib.util
    from pathlib import Path

    import nibabel as nib

    path = Path(__file__).resolve().parents[1] / "scripts" / "dice_by_size.py"
    spec = importlib.util.spec_from_file_location("dice_by_size", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    label = np.zeros((40, 20, 20), np.uint8)
    label[2:10, 2:10, 2:10] = 1  # 512 mm³: 9.9 mm, found by a rim of 2 of its 8 planes and 1 plane outside
    label[20:22, 2:4, 2:4] = 1  # 8 mm³: 2.5 mm, outlined exactly
    pred = np.zeros(label.shape, np.int16)
    pred[2:10, 2:10, 8:11] = 1
    pred[20:22, 2:4, 2:4] = 2
    nib.save(nib.Nifti1Image(label, affine), tmp_path / "sub-01_CMB.nii.gz")
    nib.save(nib.Nifti1Image(pred, affine), tmp_path / "sub-01_cmb_pred.nii.gz")
    rows = mod.outline_rows(str(tmp_path / "sub-01_cmb_pred.nii.gz"), str(tmp_path / "sub-01_CMB.nii.gz"))
    large, small = sorted(rows, key=lambda r: -r["voxels"])
    assert large["found"] and (large["voxels"], large["predicted"], large["inside"]) == (512, 192, 128)
    assert large["dice"] == pytest.approx(2 * 128 / (512 + 192))
    assert small["found"] and small["dice"] == pytest.approx(1.0)
    assert size_bin(large["diameter_mm"]) == "5-10 mm" and size_bin(small["diameter_mm"]) == "<3 mm"


def test_dice_by_size_reads_references_and_names_left_out_subjects_as_plkd_evaluate_does(tmp_path, caplog) -> None:
    """A probability map given as the reference was cut at 0.25 without a word (plkd evaluate refuses it), and a
    prediction without a reference was left out of the per-bin means without a word."""
    import importlib.util
    import logging
    from pathlib import Path

    import nibabel as nib

    from plkd.errors import InputError

    path = Path(__file__).resolve().parents[1] / "scripts" / "dice_by_size.py"
    spec = importlib.util.spec_from_file_location("dice_by_size", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    affine = np.eye(4)
    label = np.zeros((20, 20, 20), np.float32)
    label[2:5, 2:5, 2:5] = 1.0
    pred = np.zeros(label.shape, np.int16)
    pred[2:5, 2:5, 2:5] = 1
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    nib.save(nib.Nifti1Image(label, affine), tmp_path / "ref" / "sub-01_CMB.nii.gz")
    nib.save(nib.Nifti1Image(pred, affine), tmp_path / "pred" / "sub-01_cmb_pred.nii.gz")
    nib.save(nib.Nifti1Image(pred, affine), tmp_path / "pred" / "sub-02_cmb_pred.nii.gz")  # no reference
    with caplog.at_level(logging.WARNING):
        rows = mod.outline_rows(str(tmp_path / "pred"), str(tmp_path / "ref"))
    assert [r["subject"] for r in rows] == ["sub-01"]
    assert "dice_by_size: scored 1 of 2 subject(s); left out 1: sub-02 (prediction without a reference)" in caplog.text
    soft = label * 0.7  # an interpolated label or a probability map
    nib.save(nib.Nifti1Image(soft, affine), tmp_path / "ref" / "sub-01_CMB.nii.gz")
    with pytest.raises(InputError, match="between the label values"):
        mod.outline_rows(str(tmp_path / "pred" / "sub-01_cmb_pred.nii.gz"), str(tmp_path / "ref" / "sub-01_CMB.nii.gz"))
