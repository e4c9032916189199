"""Segment at a click (``plkd predict --at-ras``): the microbleed under the click is found at every
planted microbleed, whatever the signs of its R, A and S coordinates, on an oblique LPS-stored
grid; negative coordinates parse; a click on a microbleed found earlier is not added twice."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plkd.bundle import load_bundle
from plkd.cli import main
from plkd.errors import InputError
from plkd.inference import Predictor
from plkd.inference.click import DarkBlob, load_existing, outlines
from plkd.volumes import Volume

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "PLKDTraining" / "plkd" / "bundled" / "cmb-t2s"
SHAPE = (64, 64, 44)
#: Microbleed centres (RAS mm): one per octant, so every sign of R, A and S occurs.
CENTRES = np.array([[sx * 12.0, sy * 14.0, sz * 9.0] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
DIAMETERS = np.array([1.6, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0])


def _lps_oblique_affine() -> np.ndarray:
    """Voxels stored L→R flipped and P→A flipped (LPS), rotated 12° about S, 1 mm; centre at RAS 0."""
    a = np.deg2rad(12.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    m = rot @ np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = m
    affine[:3, 3] = -m @ ((np.asarray(SHAPE) - 1) / 2)
    return affine


@pytest.fixture(scope="module")
def subject() -> tuple[Volume, np.ndarray]:
    """A T2*-like head (textured tissue in an ellipsoid) with dark microbleeds; their label map."""
    rng = np.random.default_rng(42)
    affine = _lps_oblique_affine()
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"), axis=-1).astype(np.float64)
    ras = idx @ affine[:3, :3].T + affine[:3, 3]
    brain = ((ras / np.array([28.0, 29.0, 20.0])) ** 2).sum(-1) <= 1.0
    from scipy import ndimage

    texture = ndimage.gaussian_filter(rng.standard_normal(SHAPE), 3.0)
    image = np.where(brain, 400.0 + 600.0 * texture, 0.0)
    labels = np.zeros(SHAPE, np.int16)
    for k, (c, d) in enumerate(zip(CENTRES, DIAMETERS, strict=True), start=1):
        r2 = ((ras - c) ** 2).sum(-1)
        image *= 1.0 - 0.8 * np.exp(-r2 / (2 * (d / 2.5) ** 2))  # hypointense, blooming edges
        labels[r2 <= (d / 2) ** 2] = k
    image = np.where(brain, image + 12.0 * rng.standard_normal(SHAPE), 0.0).clip(0)
    return Volume(image.astype(np.float32), affine), labels


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(load_bundle(SHIPPED), device="cpu", batch_size=4)


def _voxel(affine: np.ndarray, ras: np.ndarray) -> tuple[int, ...]:
    inv = np.linalg.inv(affine)
    return tuple(int(v) for v in np.round(inv[:3, :3] @ ras + inv[:3, 3]))


@pytest.mark.parametrize("k", range(1, len(DIAMETERS) + 1))
def test_every_planted_microbleed_is_segmented_at_a_click(subject, predictor: Predictor, k: int) -> None:
    vol, labels = subject
    assert {tuple(np.sign(c)) for c in CENTRES} == {(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)}
    rng = np.random.default_rng(k)
    centre, diameter = CENTRES[k - 1], DIAMETERS[k - 1]
    offset = rng.standard_normal(3)
    click = centre + 1.5 * offset / np.linalg.norm(offset)  # a reader's click, 1.5 mm off centre
    result = predictor.segment_at(vol, click)
    rec = result.candidates[0]
    where = f"microbleed {k} ({diameter} mm at {centre.tolist()})"
    assert result.label_map[_voxel(vol.affine, centre)] == 1, where
    assert rec["segmentation"] in ("network", "intensity") and rec["segmented"], where
    assert np.linalg.norm(np.asarray(rec["center_ras"]) - centre) < 1.5, where
    truth = int((labels == k).sum())
    assert rec["voxels"] <= 3 * truth + 8, f"{where}: {rec['voxels']} voxels for a {truth}-voxel microbleed"
    # Most of the microbleed, not a rim beside it (the 6 mm ball's network mask held 47 of its 118 voxels).
    held = int(((result.label_map == 1) & (labels == k)).sum())
    assert held >= 0.6 * truth, f"{where}: {held} of its {truth} voxels"
    assert rec["click_ras"] == [round(float(v), 3) for v in click]


def test_a_network_mask_outlines_the_spot_only_when_it_holds_most_of_it() -> None:
    """A rim beside a large dark spot touches its minimum but is not its outline; a mask that blooms past the
    spot's intensity region is."""
    grid = np.stack(np.meshgrid(*(np.arange(-6, 7),) * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    r = np.linalg.norm(grid, axis=1)
    spot = DarkBlob(seed=np.zeros(3, int), voxels=grid[r <= 3.0], contrast=2.0)  # a 6 mm ball, 123 voxels
    spacing = np.ones(3)
    rim = grid[(r <= 3.0) & (grid[:, 0] >= 1)]  # the half beside the centre, 1 mm from the minimum
    assert not outlines(rim, spot, spacing)
    assert outlines(grid[r <= 4.0], spot, spacing)  # blooming: larger than the spot
    assert not outlines(grid[(r <= 4.0) & (r >= 2.0)], spot, spacing)  # a shell around a hole at the minimum
    assert not outlines(np.zeros((0, 3), int), spot, spacing)


def test_a_click_where_nothing_is_darker_segments_nothing(subject, predictor: Predictor) -> None:
    vol, _ = subject
    smooth = np.where(vol.data > 0, 500.0, 0.0).astype(np.float32)  # tissue without any dark spot
    result = predictor.segment_at(Volume(smooth, vol.affine), (0.0, 0.0, 0.0))
    assert result.candidates[0]["voxels"] == 0 and result.n_microbleeds == 0
    assert not result.candidates[0]["segmented"] and result.candidates[0]["segmentation"] is None


def _write_case(tmp: Path, vol: Volume) -> Path:
    path = tmp / "click_T2S.nii.gz"
    img = nib.Nifti1Image(vol.data, vol.affine)
    img.set_qform(vol.affine, 1)
    img.set_sform(vol.affine, 1)
    nib.save(img, str(path))
    return path


def test_negative_coordinates_parse_in_both_forms(subject, tmp_path: Path) -> None:
    vol, _ = subject
    case = _write_case(tmp_path, vol)
    x, y, z = CENTRES[0]  # all three negative
    found = []
    for i, form in enumerate((["--at-ras", f"{x},{y},{z}"], [f"--at-ras={x},{y},{z}"])):
        out = tmp_path / f"o{i}"
        assert main(["predict", str(case), "-o", str(out), "--model", str(SHIPPED), "--progress", "none", *form]) == 0
        found.append(json.loads((out / "click_T2S_cmb.json").read_text())["candidates"][0])
    assert found[0]["center_ras"] == found[1]["center_ras"] and found[0]["voxels"] > 0


def test_a_click_on_a_microbleed_found_earlier_returns_that_one(subject, tmp_path: Path) -> None:
    vol, labels = subject
    case = _write_case(tmp_path, vol)
    earlier = np.where(labels == 3, 5, 0).astype(np.int16)  # microbleed 3 was found as label 5
    img = nib.Nifti1Image(earlier, vol.affine)
    nib.save(img, str(tmp_path / "click_T2S_cmb.nii.gz"))
    # Outlined by intensity in the earlier run (as a large microbleed is); the click's own outline is the network's.
    record = {"id": 9, "label": 5, "kept": True, "center_ras": CENTRES[2].tolist(), "volume_mm3": 14.0}
    record["segmentation"] = "intensity"
    (tmp_path / "click_T2S_cmb.json").write_text(json.dumps({"candidates": [record]}))

    def click(k: int, existing: Path) -> dict:
        out = tmp_path / f"out{k}"
        x, y, z = CENTRES[k - 1] + 0.8
        argv = ["predict", str(case), "-o", str(out), "--model", str(SHIPPED), "--progress", "none"]
        assert main([*argv, f"--at-ras={x},{y},{z}", "--existing", str(existing)]) == 0
        doc = json.loads((out / "click_T2S_cmb.json").read_text())
        doc["labels"] = np.asarray(nib.load(str(out / "click_T2S_cmb.nii.gz")).dataobj)
        return doc

    again = click(3, tmp_path / "click_T2S_cmb.json")
    rec = again["candidates"][0]
    assert (rec["existing_label"], rec["existing_id"], rec["label"]) == (5, 9, 1)
    np.testing.assert_array_equal(again["labels"] > 0, labels == 3)  # the earlier voxels, not a second copy
    assert rec["voxels"] == int((labels == 3).sum())
    assert rec["segmentation"] == "intensity"  # the earlier outline's, as the voxels are (it said the click's)
    new = click(4, tmp_path / "click_T2S_cmb.nii.gz")["candidates"][0]
    assert "existing_label" not in new and new["voxels"] > 0
    # Candidates alone (no label map beside them): matched by distance to a kept candidate.
    (tmp_path / "click_T2S_cmb.nii.gz").unlink()
    only_json = load_existing(tmp_path / "click_T2S_cmb.json", vol)
    assert only_json.labels is None and only_json.candidates == [record]
    assert click(3, tmp_path / "click_T2S_cmb.json")["candidates"][0]["existing_id"] == 9


def test_an_existing_json_alone_must_be_of_this_scan(subject, tmp_path: Path, caplog) -> None:
    vol, _ = subject
    record = {"id": 1, "label": 1, "kept": True, "center_ras": CENTRES[0].tolist(), "volume_mm3": 14.0}
    doc = {"candidates": [record], "label_shape": list(vol.shape), "input_sha256": "a" * 64}
    (tmp_path / "mine_cmb.json").write_text(json.dumps(doc))
    with caplog.at_level("WARNING", logger="plkd"):
        assert load_existing(tmp_path / "mine_cmb.json", vol, "a" * 64).candidates == [record]
    assert not caplog.records
    # Made from another file: matched by position, said once.
    with caplog.at_level("WARNING", logger="plkd"):
        load_existing(tmp_path / "mine_cmb.json", vol, "b" * 64)
    assert len(caplog.records) == 1 and "sha256 differs" in caplog.records[0].getMessage()
    # Made on another grid: refused in one line.
    (tmp_path / "other_cmb.json").write_text(json.dumps({**doc, "label_shape": [10, 10, 10]}))
    with pytest.raises(InputError, match="grid, not this image's") as err:
        load_existing(tmp_path / "other_cmb.json", vol, "a" * 64)
    assert "\n" not in str(err.value)


def test_a_click_is_refused_for_several_scans(subject, tmp_path: Path, capsys) -> None:
    # The same RAS point was "clicked" in every scan of a folder: a microbleed added wherever it fell in each.
    volume, _labels = subject
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a_T2S.nii.gz", "b_T2S.nii.gz"):
        nib.save(nib.Nifti1Image(volume.data, volume.affine), str(folder / name))
    out = tmp_path / "out"
    argv = ["predict", str(folder), "-o", str(out), "--model", str(SHIPPED), "--device", "cpu", "--progress", "none"]
    assert main([*argv, "--at-ras=1,2,3"]) == 2
    assert "plkd: error: --at-ras is a point in one scan; the inputs hold 2 scans" in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())


def test_a_click_carries_the_location_fields_of_a_whole_scan_prediction(tmp_path: Path) -> None:
    """A click's candidate gets the MARS location, region and MNI point that every candidate of a whole-scan
    prediction has (the same registration step), so the reader's added microbleed is counted by location too."""
    from test_location import POINTS, _moved_scan

    image, affine, _to_mni, sub_to_mni = _moved_scan(np.random.default_rng(3))
    mni_point, mars_class = POINTS["thalamus"]
    from_mni = np.linalg.inv(sub_to_mni)
    click = from_mni[:3, :3] @ np.asarray(mni_point) + from_mni[:3, 3]
    # A dark microbleed of 5 mm at the click, in the thalamus.
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    ball = np.linalg.norm(ras - click, axis=1) <= 2.5
    image = image.copy()
    image[tuple(ijk[ball].T)] *= 0.2
    case = _write_case(tmp_path, Volume(image, affine))
    out = tmp_path / "out"
    point = ",".join(f"{v:.2f}" for v in click)
    tiny = ROOT / "Testing" / "data" / "tiny-bundle"
    args = ["predict", str(case), "-o", str(out), "--model", str(tiny), "--progress", "none"]
    assert main([*args, f"--at-ras={point}"]) == 0
    doc = json.loads((out / "click_T2S_cmb.json").read_text())
    (cand,) = doc["candidates"]
    assert (cand["location"], cand["region"]) == (mars_class, "thalamus"), cand
    assert np.linalg.norm(np.subtract(cand["center_mni"], mni_point)) < 6.0
    assert doc["location"]["status"] == "ok" and doc["location"]["registration"]["dice"] >= 0.8
    assert "location" in doc["timings"]


def test_a_click_on_a_predicted_scan_reuses_its_registration(tmp_path: Path, monkeypatch) -> None:
    """A click with ``--existing`` of the same file places its microbleed in MNI through the registration that
    prediction made (its JSON's ``scan_to_mni``) instead of registering the scan again (seconds per click); a
    prediction of another file is not trusted for it."""
    from test_location import _moved_scan

    import plkd.location.locate as locate

    image, affine, _to_mni, _ = _moved_scan(np.random.default_rng(5))
    image = image.copy()
    image[40:44, 50:54, 30:34] *= 0.2  # a dark spot, so the whole-scan run has candidates to locate
    case = _write_case(tmp_path, Volume(image, affine))
    tiny = ROOT / "Testing" / "data" / "tiny-bundle"
    out = tmp_path / "out"
    args = ["predict", str(case), "-o", str(out), "--model", str(tiny), "--progress", "none"]
    assert main(args) == 0
    whole = json.loads((out / "click_T2S_cmb.json").read_text())
    assert whole["location"]["status"] == "ok"
    matrix = np.asarray(whole["location"]["scan_to_mni"])
    click = affine[:3, :3] @ np.array([42.0, 52.0, 32.0]) + affine[:3, 3]
    point = ",".join(f"{v:.2f}" for v in click)
    fresh = tmp_path / "fresh"
    assert main([*args[:2], "-o", str(fresh), *args[4:], f"--at-ras={point}"]) == 0
    fresh_doc = json.loads((fresh / "click_T2S_cmb.json").read_text())
    registered = fresh_doc["candidates"][0]

    calls = []
    register = locate.register_to_mni

    def counted(*a, **k):
        calls.append(1)
        return register(*a, **k)

    monkeypatch.setattr(locate, "register_to_mni", counted)
    existing = ["--existing", str(out / "click_T2S_cmb.json")]
    assert main([*args[:2], "-o", str(tmp_path / "c"), *args[4:], f"--at-ras={point}", *existing]) == 0
    doc = json.loads((tmp_path / "c" / "click_T2S_cmb.json").read_text())
    (cand,) = doc["candidates"]
    assert not calls and doc["location"]["registration"]["reused_from"] == "click_T2S_cmb.json"
    assert np.allclose(doc["location"]["scan_to_mni"], matrix)
    # The returned microbleed is the earlier one (its outline, its centre), placed as the click's own registration
    # would place that centre.
    fresh_to_mni = np.asarray(fresh_doc["location"]["scan_to_mni"])
    expected = fresh_to_mni[:3, :3] @ np.asarray(cand["center_ras"]) + fresh_to_mni[:3, 3]
    assert np.linalg.norm(np.subtract(cand["center_mni"], expected)) <= 0.15
    assert cand["location"] == registered["location"]
    # The same prediction said to be of another file: the click registers the scan itself.
    whole["input_sha256"] = "0" * 64
    (out / "click_T2S_cmb.json").write_text(json.dumps(whole))
    assert main([*args[:2], "-o", str(tmp_path / "d"), *args[4:], f"--at-ras={point}", *existing]) == 0
    assert calls == [1]
    assert (
        "reused_from" not in json.loads((tmp_path / "d" / "click_T2S_cmb.json").read_text())["location"]["registration"]
    )
