"""LR@k simulation, true thick-slice volumes and ``plkd lowres``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plkd.cli import main
from plkd.errors import PLKDError
from plkd.lowres import lowres_pair, simulate_lowres, thick_slab_labels, thick_slab_volume
from plkd.volumes import Volume, load_volume


def _blob(shape: tuple[int, int, int], centre: tuple[float, float, float], sigma: float = 2.0) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
    return np.exp(-0.5 * r2 / sigma**2).astype(np.float32)


def _com_voxel(data: np.ndarray) -> np.ndarray:
    idx = np.indices(data.shape).reshape(3, -1).astype(np.float64)
    w = data.reshape(-1).astype(np.float64)
    return (idx * w).sum(axis=1) / w.sum()


def _com_ras(vol: Volume) -> np.ndarray:
    v = _com_voxel(vol.data)
    return (vol.affine @ np.append(v, 1.0))[:3]


def _oblique_lps_affine(spacing: float = 1.0) -> np.ndarray:
    """Rotated about two axes, stored LPS-like (first two axes flipped), with an offset."""
    a, b = np.deg2rad(17.0), np.deg2rad(-9.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([-spacing, -spacing, spacing])
    aff[:3, 3] = [40.0, -12.5, 7.0]
    return aff


# ----------------------------------------------------------------------------------------------
# simulate_lowres


@pytest.mark.parametrize("mode", ["interp", "slab"])
@pytest.mark.parametrize("factor", [2, 4, 8])
def test_lowres_keeps_shape_and_constant(mode: str, factor: int) -> None:
    # 37 slices: not a multiple of any factor, so the edge padding is exercised too.
    const = np.full((5, 6, 37), 3.5, dtype=np.float32)
    out = simulate_lowres(const, factor, mode=mode)
    assert out.shape == const.shape
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 3.5, rtol=1e-5)


def test_lowres_factor_one_is_identity(rng: np.random.Generator) -> None:
    x = rng.random((6, 7, 9)).astype(np.float32)
    for mode in ("interp", "slab"):
        np.testing.assert_array_equal(simulate_lowres(x, 1, mode=mode), x)


def test_lowres_removes_through_plane_detail_only() -> None:
    vol = np.zeros((8, 8, 32), dtype=np.float32)
    vol[:, :, 13] = 1.0  # a one-slice-thick bright plane
    assert simulate_lowres(vol, 1)[0, 0, 13] == 1.0
    slab = simulate_lowres(vol, 4, mode="slab")[3, 3]
    assert slab.max() < 0.5  # averaged with three dark slices
    assert np.count_nonzero(slab > 0.05) >= 3  # and spread over several
    # Interp keeps slices 1, 5, 9, 13, ... at offset 1: the plane survives but is blurred along Z ...
    hit = simulate_lowres(vol, 4, mode="interp", offset=1)[3, 3]
    assert hit[13] == pytest.approx(1.0, abs=1e-5)
    assert np.count_nonzero(hit > 0.05) >= 5
    # ... and at offset 0 (slices 12, 16, ...) it falls between the kept slices and is lost.
    assert simulate_lowres(vol, 4, mode="interp", offset=0)[3, 3].max() < 0.05
    # In-plane detail (a checkerboard constant along Z) passes unchanged.
    in_plane = (np.indices((8, 8)).sum(axis=0) % 2).astype(np.float32) * 10
    checker = np.repeat(in_plane[..., None], 32, axis=2)
    for mode in ("interp", "slab"):
        np.testing.assert_allclose(simulate_lowres(checker, 4, mode=mode), checker, atol=1e-4)


@pytest.mark.parametrize("mode", ["interp", "slab"])
@pytest.mark.parametrize("centre", [17.3, 20.0, 22.6])
def test_lowres_does_not_shift_structures(mode: str, centre: float) -> None:
    blob = _blob((3, 3, 48), (1, 1, centre), sigma=2.0)
    for factor in (2, 4):
        offsets = range(factor) if mode == "interp" else [None]
        for offset in offsets:
            out = simulate_lowres(blob, factor, mode=mode, offset=offset)
            assert abs(_com_voxel(out)[2] - _com_voxel(blob)[2]) < 0.5, (factor, offset)


def test_lowres_slab_and_interp_hit_hand_computed_samples() -> None:
    x = np.array([0, 3, 6, 1, 1, 1, 9, 0, 0], dtype=np.float32)[None, None]
    # Factor 3: slab means 3, 1, 3 sit at the slab centres (slices 1, 4, 7); the cubic spline
    # interpolates, so those slices hold exactly the means.
    slab = simulate_lowres(x, 3, mode="slab")[0, 0]
    np.testing.assert_allclose(slab[[1, 4, 7]], [3.0, 1.0, 3.0], atol=1e-5)
    # Interp keeps slices offset, offset+3, ...: they come back unchanged.
    for offset in range(3):
        kept = simulate_lowres(x, 3, mode="interp", offset=offset)[0, 0]
        np.testing.assert_allclose(kept[offset::3], x[0, 0, offset::3], atol=1e-5)


def test_lowres_other_axis_and_channel_first(rng: np.random.Generator) -> None:
    x = rng.random((4, 10, 12, 16)).astype(np.float32)
    along_y = simulate_lowres(x, 2, axis=2, mode="slab")
    # Same as running on each (transposed) channel separately.
    ref = np.stack([simulate_lowres(c.transpose(0, 2, 1), 2, mode="slab").transpose(0, 2, 1) for c in x])
    np.testing.assert_allclose(along_y, ref, atol=1e-5)


def test_lowres_noise_is_seeded_and_sized() -> None:
    x = np.full((16, 16, 16), 100.0, dtype=np.float32)
    a = simulate_lowres(x, 2, mode="slab", noise_std=0.05, noise="gaussian", rng=7)
    b = simulate_lowres(x, 2, mode="slab", noise_std=0.05, noise="gaussian", rng=7)
    np.testing.assert_array_equal(a, b)
    # Noise is added to the slab samples, 5 % of the 99th percentile (100) = 5.
    lr_samples = simulate_lowres(x, 1, noise_std=0.05, noise="rician", rng=3)
    assert 4.5 < float(lr_samples.std()) < 5.5
    assert not np.allclose(a, 100.0)


def test_lowres_pair(rng: np.random.Generator) -> None:
    patch = rng.random((1, 12, 12, 16)).astype(np.float32)
    hr, lr = lowres_pair(patch, 4, "interp", np.random.default_rng(5))
    assert hr.shape == lr.shape == patch.shape
    np.testing.assert_array_equal(hr, patch)
    _, lr2 = lowres_pair(patch, 4, "interp", np.random.default_rng(5))
    np.testing.assert_array_equal(lr, lr2)
    assert not np.allclose(lr, patch)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"factor": 0}, "factor"), ({"factor": 2.5}, "factor"), ({"factor": 2, "mode": "box"}, "mode")],
)
def test_lowres_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(PLKDError, match=message):
        simulate_lowres(np.zeros((4, 4, 8)), **kwargs)
    with pytest.raises(PLKDError, match="offset"):
        simulate_lowres(np.zeros((4, 4, 8)), 2, offset=2)
    with pytest.raises(PLKDError, match="interp"):
        simulate_lowres(np.zeros((4, 4, 8)), 2, mode="slab", offset=0)


# ----------------------------------------------------------------------------------------------
# thick slabs on their own grid


def test_thick_slab_averages_with_fractional_weights() -> None:
    x = np.arange(8, dtype=np.float32)[None, None].repeat(2, 0).repeat(2, 1)
    vol = Volume(x, np.eye(4))
    four = thick_slab_volume(vol, 4.0)
    np.testing.assert_allclose(four.data[0, 0], [1.5, 5.5])
    # 2.5 mm: 8 mm / 2.5 = 3.2 → 3 slabs [0, 2.5), [2.5, 5), [5, 7.5) (in mm from the first edge).
    frac = thick_slab_volume(vol, 2.5)
    np.testing.assert_allclose(
        frac.data[0, 0], [(0 + 1 + 0.5 * 2) / 2.5, (0.5 * 2 + 3 + 4) / 2.5, (5 + 6 + 0.5 * 7) / 2.5]
    )
    np.testing.assert_allclose(frac.spacing, [1, 1, 2.5])


@pytest.mark.parametrize("thickness", [3.0, 4.0])
@pytest.mark.parametrize("oblique", [False, True])
def test_thick_slab_preserves_world_position(thickness: float, oblique: bool) -> None:
    affine = _oblique_lps_affine() if oblique else np.diag([1.0, 1.0, 1.0, 1.0])
    if not oblique:
        affine[:3, 3] = [-20, -22, -30]
    vol = Volume(_blob((24, 26, 48), (11.4, 12.0, 21.7), sigma=2.5), affine)
    thick = thick_slab_volume(vol, thickness)
    assert thick.shape == (24, 26, round(48 / thickness))
    np.testing.assert_allclose(thick.spacing, [1, 1, thickness], atol=1e-9)
    np.testing.assert_allclose(_com_ras(thick), _com_ras(vol), atol=0.25)
    # The outer edge of the first slab is the outer edge of the first HR slice.
    edge_hr = affine @ np.array([0, 0, -0.5, 1.0])
    edge_thick = thick.affine @ np.array([0, 0, -0.5, 1.0])
    np.testing.assert_allclose(edge_thick, edge_hr, atol=1e-9)


def test_thick_slab_default_axis_is_the_coarsest_else_z() -> None:
    data = np.ones((12, 12, 12), dtype=np.float32)
    assert thick_slab_volume(Volume(data, np.eye(4)), 3).shape == (12, 12, 4)
    aniso = np.diag([1.0, 2.0, 1.0, 1.0])
    assert thick_slab_volume(Volume(data, aniso), 4).shape == (12, 6, 12)
    with pytest.raises(PLKDError, match="thinner"):
        thick_slab_volume(Volume(data, aniso), 1.5)


def _sagittal(axial: np.ndarray, axial_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored sagittally: array axes (A, S, L), i.e. stored Z runs right to left."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

    ornt = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(("A", "S", "L")))
    data = apply_orientation(axial, ornt)
    affine = axial_affine @ inv_ornt_aff(ornt, axial.shape)
    assert nib.aff2axcodes(affine) == ("A", "S", "L")
    return data, affine


@pytest.mark.parametrize("how", [["--thickness-mm", "3"], ["--factor", "3"]])
def test_cli_isotropic_sagittal_input_gets_axial_thick_slices(tmp_path: Path, how: list[str]) -> None:
    """An isotropic volume is thinned along world S-I however it is stored: a sagittally stored one gave thick
    left-right slices (its stored Z), which no axial protocol writes and no student was trained on."""
    rng = np.random.default_rng(3)
    axial_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    axial_affine[:3, 3] = [-10.0, -12.0, -8.0]
    axial = (rng.random((14, 16, 18)) * 100 + 10).astype(np.float32)
    sag, sag_affine = _sagittal(axial, axial_affine)
    ax_in, sag_in = _save(tmp_path / "ax.nii.gz", axial, axial_affine), _save(tmp_path / "sag.nii.gz", sag, sag_affine)
    ax_out, sag_out = tmp_path / "o" / "ax.nii.gz", tmp_path / "o" / "sag.nii.gz"
    assert main(["lowres", str(ax_in), *how, "--out", str(ax_out), "--progress", "none"]) == 0
    assert main(["lowres", str(sag_in), *how, "--out", str(sag_out), "--progress", "none"]) == 0
    a, s = load_volume(ax_out), load_volume(sag_out)
    if how[0] == "--thickness-mm":
        np.testing.assert_allclose(a.spacing, (1, 1, 3), atol=1e-5)
        np.testing.assert_allclose(s.spacing, (1, 3, 1), atol=1e-5)  # stored axis 1 is S-I
    # The two outputs are the same image in the world: same voxel centres, same values.
    back, back_affine = _sagittal(a.data, a.affine)
    np.testing.assert_allclose(back_affine, s.affine, atol=1e-5)
    np.testing.assert_allclose(back, s.data, rtol=1e-5, atol=1e-3)


def test_thick_slab_default_axis_keeps_a_thick_axis_however_stored() -> None:
    """An input with a thick axis is thinned along it, even when it is not the one closest to S-I."""
    data = np.ones((12, 12, 12), dtype=np.float32)
    coronal_thick = np.diag([1.0, 2.5, 1.0, 1.0])  # 2.5 mm along A-P
    assert thick_slab_volume(Volume(data, coronal_thick), 5).shape == (12, 6, 12)
    _, sag_affine = _sagittal(data, np.eye(4))
    near_iso = sag_affine.copy()
    near_iso[:3, 2] *= 1.1  # left-right 1.1 mm: below the 1.2 anisotropy ratio, still isotropic
    assert thick_slab_volume(Volume(data, near_iso), 3).shape == (12, 4, 12)


def test_thick_slab_noise_level_and_seed() -> None:
    vol = Volume(np.full((20, 20, 24), 200.0, dtype=np.float32), np.eye(4))
    a = thick_slab_volume(vol, 3, noise_std=0.02, rng=1)
    b = thick_slab_volume(vol, 3, noise_std=0.02, rng=1)
    np.testing.assert_array_equal(a.data, b.data)
    assert 3.5 < float(a.data.std()) < 4.5  # 2 % of 200


def test_thick_slab_labels_keep_small_lesions_detectable() -> None:
    lab = np.zeros((16, 16, 24), dtype=np.float32)
    lab[3:6, 3:6, 3:5] = 1  # 2 mm thick, split between 4 mm slabs 0 and 1: 1/4 of each
    lab[9:12, 9:12, 8:16] = 2  # fills slabs 2 and 3 completely
    vol = Volume(lab, _oblique_lps_affine())
    thick = thick_slab_labels(vol, 4.0)
    assert thick.shape == (16, 16, 6)
    np.testing.assert_allclose(thick.affine, thick_slab_volume(vol, 4.0).affine)
    assert np.count_nonzero(thick.data[3:6, 3:6] == 1) > 0
    assert np.count_nonzero(thick.data == 2) == 9 * 2
    assert set(np.unique(thick.data)) == {0.0, 1.0, 2.0}
    # Without the rescue, the 1/4-covered lesion would vanish at the 0.5 threshold.
    plain = thick_slab_labels(vol, 4.0, keep_every_lesion=False)
    assert not np.any(plain.data == 1)
    # The kept lesion stays where it was in the world.
    lesion_ras = _com_ras(Volume((lab == 1).astype(np.float32), vol.affine))
    kept_ras = _com_ras(Volume((thick.data == 1).astype(np.float32), thick.affine))
    assert np.linalg.norm(kept_ras - lesion_ras) < 2.0 + 1e-6  # half a slab at most


# ----------------------------------------------------------------------------------------------
# command line


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _no_partials(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if ".partial" in p.name]


def test_cli_factor_and_thickness(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    affine = _oblique_lps_affine()
    img = _save(tmp_path / "in" / "s1.nii.gz", _blob((16, 16, 24), (7, 8, 11)) * 100 + 1, affine)
    lab = _save(tmp_path / "in" / "s1_label.nii.gz", (_blob((16, 16, 24), (7, 8, 11)) > 0.5).astype(np.uint8), affine)

    out = tmp_path / "out" / "s1_lr4.nii.gz"
    assert main(["lowres", str(img), "--factor", "4", "--out", str(out)]) == 0
    lr = load_volume(out)
    assert lr.shape == (16, 16, 24)
    np.testing.assert_allclose(lr.affine, affine, atol=1e-5)
    expected = simulate_lowres(load_volume(img).data, 4)
    np.testing.assert_allclose(lr.data, expected, atol=1e-4)

    thick = tmp_path / "out" / "s1_3mm.nii.gz"
    thick_lab = tmp_path / "out" / "s1_3mm_label.nii.gz"
    args = ["lowres", str(img), "--thickness-mm", "3", "--label", str(lab), "--out", str(thick), "--label-out"]
    assert main([*args, str(thick_lab)]) == 0
    tv, tl = nib.load(str(thick)), nib.load(str(thick_lab))
    assert tv.shape == tl.shape == (16, 16, 8)
    np.testing.assert_allclose(tv.header.get_zooms(), (1, 1, 3), atol=1e-5)
    np.testing.assert_allclose(tv.affine, tl.affine)
    assert tl.get_data_dtype() == np.uint8 and np.asanyarray(tl.dataobj).any()
    assert "wrote" in capsys.readouterr().out
    _no_partials(tmp_path)


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.nii.gz"
    assert main(["lowres", str(missing), "--factor", "2", "--out", str(tmp_path / "o.nii.gz")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "o.nii.gz").exists()
    img = _save(tmp_path / "a.nii.gz", np.arange(64, dtype=np.float32).reshape(4, 4, 4), np.eye(4))
    assert main(["lowres", str(img), "--factor", "2", "--out", str(img)]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["lowres", str(img), "--thickness-mm", "2", "--mode", "slab", "--out", str(tmp_path / "b.nii")]) == 2
    assert "--mode" in capsys.readouterr().err
    assert main(["lowres", "--factor", "2", "--out", str(tmp_path / "b.nii")]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert main(["lowres", str(img), "--factor", "0", "--out", str(tmp_path / "c.nii")]) == 2
    assert "factor" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["lowres", str(img), "--factor", "2", "--thickness-mm", "3", "--out", str(tmp_path / "c.nii")])


def test_cli_negative_seed_is_one_line_error(tmp_path: Path, capsys) -> None:
    # numpy's default_rng(-5) raised a ValueError traceback (exit 1).
    img = _save(tmp_path / "a.nii.gz", np.arange(512, dtype=np.float32).reshape(8, 8, 8), np.eye(4))
    out = tmp_path / "lr.nii.gz"
    argv = ["lowres", str(img), "--factor", "2", "--noise-std", "0.1", "--seed", "-5", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("plkd: error: --seed must be a whole number ≥ 0") and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-0.1"])
def test_cli_noise_that_is_no_number_is_refused_before_writing(tmp_path: Path, value: str, capsys) -> None:
    # --noise-std nan passed the `< 0` check and nan or inf wrote an image of NaN voxels with exit status 0.
    img = _save(tmp_path / "a.nii.gz", np.arange(512, dtype=np.float32).reshape(8, 8, 8), np.eye(4))
    for how in (["--factor", "2"], ["--thickness-mm", "2"]):
        out = tmp_path / "lr.nii.gz"
        assert main(["lowres", str(img), *how, "--noise-std", value, "--out", str(out), "--progress", "none"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("plkd: error: --noise-std must be a number ≥ 0") and "\n" not in err
        assert not out.exists()
    with pytest.raises(PLKDError, match="noise standard deviation"):
        simulate_lowres(np.ones((4, 4, 8)), 2, noise_std=float(value))
    _no_partials(tmp_path)


def _fake_synth(root: Path) -> None:
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-10, -10, -12]
    subjects = {}
    for i, centre in enumerate([(8, 9, 10.0), (10, 7, 13.0)], start=1):
        sid = f"sub-{i:04d}"
        folder = root / sid
        img = _blob((20, 20, 24), centre) * -50 + 100
        lab = (_blob((20, 20, 24), centre) > 0.6).astype(np.uint8)
        _save(folder / f"{sid}_space-T2S_desc-masked_T2S.nii.gz", img.astype(np.float32), affine)
        _save(folder / f"{sid}_space-T2S_CMB.nii.gz", lab, affine)
        _save(folder / f"{sid}_space-T2S_desc-brain_mask.nii.gz", np.ones((20, 20, 24), np.uint8), affine)
        ras = (affine @ np.append(centre, 1.0))[:3].tolist()
        mb = {"id": 1, "center_ras": ras, "center_voxel": [int(c) for c in centre], "diameter_mm": 3.0}
        subjects[sid] = {
            "seed": i,
            "shape": [20, 20, 24],
            "microbleeds": [mb],
            "hidden_microbleeds": [mb],
            "mimics": [],
        }
    manifest = {"format": "plkd-synth/1", "modality": "T2S", "spacing_mm": [1.0, 1.0, 1.0], "subjects": subjects}
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_cli_dataset_thick_slices(tmp_path: Path) -> None:
    from plkd.data import find_subjects, load_subject

    src, dst = tmp_path / "synth", tmp_path / "synth_4mm"
    _fake_synth(src)
    rc = main(["lowres", "--dataset", str(src), "--thickness-mm", "4", "--out", str(dst), "--progress", "none"])
    assert rc == 0
    _no_partials(dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    assert manifest["format"] == "plkd-synth/1"
    assert manifest["spacing_mm"] == [1.0, 1.0, 4.0]
    assert manifest["lowres"]["thickness_mm"] == 4.0
    subjects = find_subjects(dst)
    assert [s.id for s in subjects] == ["sub-0001", "sub-0002"]
    for s in subjects:
        image, label, mask = load_subject(s)
        assert image.shape == label.shape == mask.shape == (20, 20, 6)
        assert label.data.any() and mask.data.all()
        # The microbleed's voxel centre was rewritten for the 4 mm grid.
        assert s.meta["shape"] == [20, 20, 6]
        for mb in (s.meta["microbleeds"][0], s.meta["hidden_microbleeds"][0]):
            world = image.affine @ np.append(mb["center_voxel"], 1.0)
            assert np.linalg.norm(world[:3] - np.asarray(mb["center_ras"])) <= 2.0 + 1e-6
    # --factor keeps the HR grid: images become LR@k, labels and masks are carried over unchanged.
    lr2 = tmp_path / "synth_lr2"
    assert main(["lowres", "--dataset", str(src), "--factor", "2", "--mode", "slab", "--out", str(lr2)]) == 0
    manifest = json.loads((lr2 / "manifest.json").read_text())
    assert manifest["spacing_mm"] == [1.0, 1.0, 1.0] and manifest["lowres"]["mode"] == "slab"
    for s_src, s_lr in zip(find_subjects(src), find_subjects(lr2), strict=True):
        (img_hr, lab_hr, _), (img_lr, lab_lr, _) = load_subject(s_src), load_subject(s_lr)
        np.testing.assert_array_equal(lab_lr.data, lab_hr.data)
        np.testing.assert_allclose(img_lr.data, simulate_lowres(img_hr.data, 2, mode="slab"), atol=1e-4)
        assert s_lr.meta["microbleeds"] == s_src.meta["microbleeds"]
    with pytest.raises(SystemExit):
        main(["lowres", "--dataset", str(src), "--out", str(dst)])  # neither --factor nor --thickness-mm
    assert main(["lowres", "--dataset", str(src), "--factor", "2", "--out", str(src / "inside")]) == 2


def test_cli_dataset_over_an_earlier_conversion_leaves_none_of_it(tmp_path: Path, capsys) -> None:
    # Converting into a folder that held an earlier conversion (of a data set with more subjects, or with other
    # settings) replaced only what it wrote: the other subjects stayed, and predicting/evaluating the folder scored
    # them.
    import shutil

    from plkd.data import find_subjects

    src, dst = tmp_path / "synth", tmp_path / "synth_4mm"
    _fake_synth(src)
    run = ["lowres", "--dataset", str(src), "--out", str(dst), "--progress", "none"]
    assert main([*run, "--thickness-mm", "4"]) == 0
    assert main([*run, "--thickness-mm", "4"]) == 0  # the same conversion again (e.g. after an interruption)
    before = {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert main([*run, "--thickness-mm", "3"]) == 2  # other settings: the 4 mm images would stay until replaced
    assert "--overwrite" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()} == before
    # The data set now has one subject: the earlier conversion's sub-0002 must not stay beside it.
    shutil.rmtree(src / "sub-0002")
    manifest = json.loads((src / "manifest.json").read_text())
    del manifest["subjects"]["sub-0002"]
    (src / "manifest.json").write_text(json.dumps(manifest))
    assert main([*run, "--thickness-mm", "4"]) == 2
    assert "sub-0002" in capsys.readouterr().err
    assert main([*run, "--thickness-mm", "4", "--overwrite"]) == 0
    assert [s.id for s in find_subjects(dst)] == ["sub-0001"]
    assert not [p for p in dst.rglob("*.nii.gz") if "sub-0002" in p.name]


def test_cli_dataset_the_same_conversion_runs_again_after_an_interruption_and_for_a_plain_folder(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The conversion was recognised by the synth manifest, written at the end: after an interruption (no manifest
    # yet) the same command was refused as "images of another conversion", and a plain folder of image/label pairs
    # (no manifest ever) could not be converted again at all, although README promised both.
    from plkd.commands import lowres as command

    src, dst = tmp_path / "synth", tmp_path / "synth_4mm"
    _fake_synth(src)
    run = ["lowres", "--dataset", str(src), "--out", str(dst), "--progress", "none", "--thickness-mm", "4"]
    real, calls = command.save_image, []

    def interrupted(*args: object, **kwargs: object) -> None:
        calls.append(args[0])
        if len(calls) == 4:  # sub-0001's image, label and mask are written; then Ctrl+C
            raise KeyboardInterrupt
        real(*args, **kwargs)

    monkeypatch.setattr(command, "save_image", interrupted)
    assert main(run) == 130
    monkeypatch.undo()
    assert not (dst / "manifest.json").exists() and len(list(dst.rglob("*.nii.gz"))) == 3
    assert main(run) == 0
    assert len(list(dst.rglob("*.nii.gz"))) == 6 and (dst / "manifest.json").is_file()
    assert main([*run[:-1], "3"]) == 2  # other settings are still refused
    assert "another conversion" in capsys.readouterr().err

    plain, plain_out = tmp_path / "plain", tmp_path / "plain_lr2"
    _save(plain / "case1_T2S.nii.gz", (_blob((20, 20, 24), (9, 9, 10)) * -50 + 100).astype(np.float32), np.eye(4))
    _save(plain / "case1_CMB.nii.gz", (_blob((20, 20, 24), (9, 9, 10)) > 0.6).astype(np.uint8), np.eye(4))
    again = ["lowres", "--dataset", str(plain), "--factor", "2", "--out", str(plain_out), "--progress", "none"]
    assert main(again) == 0
    assert main(again) == 0
    assert main([*again, "--noise-std", "0.1"]) == 2
    _no_partials(plain_out)


@pytest.mark.parametrize("how", [["--thickness-mm", "3"], ["--factor", "2"]])
def test_cli_label_that_cannot_be_converted_leaves_no_output(tmp_path: Path, capsys, how: list[str]) -> None:
    """A label with a negative value: thick slices wrote the image, then failed on the label (an image without
    its label left behind); LR@k wrote -1 as 255 into a uint8 map, a microbleed numbered 255."""
    img = _save(tmp_path / "img.nii.gz", _blob((12, 12, 12), (6, 6, 6)) * 100 + 1, np.eye(4))
    label = np.zeros((12, 12, 12), dtype=np.int16)
    label[3, 3, 3] = -1
    lab = _save(tmp_path / "lab.nii.gz", label, np.eye(4))
    out, lab_out = tmp_path / "o" / "img.nii.gz", tmp_path / "o" / "lab.nii.gz"
    args = ["lowres", str(img), *how, "--label", str(lab), "--out", str(out), "--label-out", str(lab_out)]
    assert main([*args, "--progress", "none"]) == 2
    assert "negative values" in capsys.readouterr().err
    assert not out.exists() and not lab_out.exists()


def _swi_sidecar(n_slices: int) -> dict:
    """What dcm2niix writes beside a 3D SWI scan of ``n_slices`` 1 mm slices (the fields that matter here)."""
    return {
        "Modality": "MR",
        "MagneticFieldStrength": 3,
        "SequenceName": "*swi3d1r",
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"],
        "EchoTime": 0.02,
        "RepetitionTime": 0.028,
        "SliceThickness": 1,
        "SpacingBetweenSlices": 1,
        "SliceTiming": [0.01 * k for k in range(n_slices)],
        "MultibandAccelerationFactor": 2,
        "AcquisitionDuration": 312.5,
        "SliceEncodingDirection": "k",
        "dcmmeta_shape": [16, 16, n_slices],
    }


@pytest.mark.parametrize("how", [["--thickness-mm", "3"], ["--factor", "4"]])
def test_cli_output_sidecar_keeps_the_contrast_and_drops_what_the_new_slices_falsify(tmp_path: Path, how) -> None:
    """plkd lowres wrote no sidecar, so an SWI scan made thick was analysed as T2*; a copy would have kept the
    input's 1 mm SliceThickness and 24-slice SliceTiming for an image of 8 thick slices."""
    from plkd.inference.modality import detect_modality

    img = _save(tmp_path / "in" / "s1_swi.nii.gz", _blob((16, 16, 24), (7, 8, 11)) * 100 + 1, np.eye(4))
    lab = _save(
        tmp_path / "in" / "s1_swi_label.nii.gz", (_blob((16, 16, 24), (7, 8, 11)) > 0.5).astype(np.uint8), np.eye(4)
    )
    (tmp_path / "in" / "s1_swi.json").write_text(json.dumps(_swi_sidecar(24)))
    out, lab_out = tmp_path / "out" / "s1_lr.nii.gz", tmp_path / "out" / "s1_lr_label.nii.gz"
    assert main(["lowres", str(img), *how, "--out", str(out), "--label", str(lab), "--label-out", str(lab_out)]) == 0
    side = json.loads((tmp_path / "out" / "s1_lr.json").read_text())
    assert detect_modality(out).modality == "SWI"  # the contrast is still the input's
    for key in ("Modality", "MagneticFieldStrength", "SequenceName", "ImageType", "EchoTime", "RepetitionTime"):
        assert side[key] == _swi_sidecar(24)[key]
    gone = {"SliceTiming", "MultibandAccelerationFactor", "AcquisitionDuration"}
    assert not gone & set(side)
    record = side["PLKDLowres"]
    assert record["source"] == "s1_swi.json" and record["axis"] == 2
    if how[0] == "--thickness-mm":
        # True 3 mm slices on their own grid: what the sidecar says is what the image is.
        assert (side["SliceThickness"], side["SpacingBetweenSlices"], side["SliceEncodingDirection"]) == (3.0, 3.0, "k")
        assert nib.load(str(out)).header.get_zooms()[2] == pytest.approx(3.0) and "dcmmeta_shape" not in side
        assert record["mode"] == "thick-slab" and set(record["removed"]) == gone | {"dcmmeta_shape"}
        assert record["set"] == {"SliceThickness": 3.0, "SpacingBetweenSlices": 3.0, "SliceEncodingDirection": "k"}
    else:
        # LR@4 on the 1 mm grid: its slices were 4 mm apart; the 1 mm values are gone, the grid's are kept.
        assert "SliceThickness" not in side and "SpacingBetweenSlices" not in side
        assert side["dcmmeta_shape"] == [16, 16, 24] and record["factor"] == 4 and record["mode"] == "interp"
        assert set(record["removed"]) == gone | {"SliceThickness", "SpacingBetweenSlices"} and record["set"] == {}
    # The label had none: its sidecar holds the record of the conversion only (and what thick slices set).
    label_side = json.loads((tmp_path / "out" / "s1_lr_label.json").read_text())
    assert set(label_side) <= {"PLKDLowres", "SliceThickness", "SpacingBetweenSlices", "SliceEncodingDirection"}
    assert label_side["PLKDLowres"]["source"] is None
    # Converted again from an input that lost its sidecar: the one written before describes nothing now.
    (tmp_path / "in" / "s1_swi.json").unlink()
    assert main(["lowres", str(img), *how, "--out", str(out)]) == 0
    assert set(json.loads((tmp_path / "out" / "s1_lr.json").read_text())) <= set(label_side)
    assert detect_modality(out).modality == "T2S"  # nothing of the earlier SWI sidecar is left
    _no_partials(tmp_path)
    # s1_swi.nii beside s1_swi.nii.gz would share the input's sidecar: refused before anything is written.
    (tmp_path / "in" / "s1_swi.json").write_text(json.dumps(_swi_sidecar(24)))
    assert main(["lowres", str(img), *how, "--out", str(tmp_path / "in" / "s1_swi.nii")]) == 2
    assert json.loads((tmp_path / "in" / "s1_swi.json").read_text()) == _swi_sidecar(24)
    assert not (tmp_path / "in" / "s1_swi.nii").exists()


@pytest.mark.parametrize("how", [["--thickness-mm", "3"], ["--factor", "2"]])
def test_one_file_without_a_sidecar_gets_the_record_the_dataset_mode_keeps(tmp_path: Path, how) -> None:
    """One file converted from an input without a sidecar was written with no record at all (settings, header fields
    changed), while ``--dataset`` records both in ``.plkd-lowres.json``; its sidecar now records them, with the same
    settings the data set's record names."""
    shape = (16, 16, 24)
    img = _save(tmp_path / "plain" / "s1.nii.gz", (_blob(shape, (7, 8, 11)) * -50 + 100).astype(np.float32), np.eye(4))
    out = tmp_path / "one" / "s1.nii.gz"
    extra = ["--noise-std", "0.01", "--seed", "3"]
    assert main(["lowres", str(img), *how, "--out", str(out), *extra, "--progress", "none"]) == 0
    record = json.loads((tmp_path / "one" / "s1.json").read_text())["PLKDLowres"]
    assert record["source"] is None and record["header_changed"]
    assert main(["lowres", "--dataset", str(img.parent), *how, "--out", str(tmp_path / "set"), *extra]) == 0
    dataset = json.loads((tmp_path / "set" / ".plkd-lowres.json").read_text())["lowres"]
    settings = {k: v for k, v in dataset.items() if k not in ("source", "axis", "header_changed")}
    assert settings and {k: record[k] for k in settings} == settings  # seed and noise were not recorded
    assert record["header_changed"] == dataset["header_changed"]["s1.nii.gz"]


def test_cli_dataset_carries_each_images_sidecar(tmp_path: Path) -> None:
    src, dst = tmp_path / "synth", tmp_path / "synth_4mm"
    _fake_synth(src)
    (src / "sub-0001" / "sub-0001_space-T2S_desc-masked_T2S.json").write_text(json.dumps(_swi_sidecar(24)))
    assert main(["lowres", "--dataset", str(src), "--thickness-mm", "4", "--out", str(dst), "--progress", "none"]) == 0
    side = json.loads((dst / "sub-0001" / "sub-0001_space-T2S_desc-masked_T2S.json").read_text())
    assert side["SliceThickness"] == 4.0 and "SliceTiming" not in side and side["SequenceName"] == "*swi3d1r"
    assert [p.name for p in dst.rglob("*.json") if p.name not in ("manifest.json", ".plkd-lowres.json")] == [
        "sub-0001_space-T2S_desc-masked_T2S.json"
    ]


@pytest.mark.parametrize("how", [["--thickness-mm", "3"], ["--factor", "2"]])
def test_cli_keeps_microbleeds_labelled_0_5(tmp_path: Path, how: list[str]) -> None:
    """A microbleed labelled 0.5 (rater agreement, as VALDO's references hold it and plkd evaluate scores it) stays
    0.5: the label was rounded to integers and 0.5 became background, losing the microbleed without a word."""
    shape = (20, 20, 24)
    image = (100 - 50 * _blob(shape, (6, 6, 10)) - 50 * _blob(shape, (14, 14, 14))).astype(np.float32)
    label = np.zeros(shape, dtype=np.float32)
    label[_blob(shape, (6, 6, 10)) > 0.6] = 1.0
    label[_blob(shape, (14, 14, 14)) > 0.6] = 0.5
    img = _save(tmp_path / "plain" / "case1_T2S.nii.gz", image, np.eye(4))
    lab = _save(tmp_path / "plain" / "case1_CMB.nii.gz", label, np.eye(4))

    single = tmp_path / "one" / "case1_CMB.nii.gz"
    args = ["lowres", str(img), *how, "--out", str(tmp_path / "one" / "case1_T2S.nii.gz"), "--label", str(lab)]
    assert main([*args, "--label-out", str(single), "--progress", "none"]) == 0
    folder = tmp_path / "set"
    assert main(["lowres", "--dataset", str(tmp_path / "plain"), *how, "--out", str(folder), "--progress", "none"]) == 0
    for path in (single, folder / "case1_CMB.nii.gz"):
        values = np.asanyarray(nib.load(str(path)).dataobj)
        assert sorted(np.unique(values).tolist()) == [0.0, 0.5, 1.0], path
        assert abs(_com_voxel(values == 0.5)[0] - 14) <= 1.0 and abs(_com_voxel(values == 1.0)[0] - 6) <= 1.0


def test_cli_label_that_is_a_probability_map_is_refused(tmp_path: Path, capsys) -> None:
    """``--label`` follows the label rule of ``--dataset``: values between 0, 0.5 and whole numbers are refused in
    one line (they were rounded to the nearest integer and written as a label)."""
    shape = (16, 16, 24)
    img = _save(tmp_path / "s1.nii.gz", (_blob(shape, (7, 8, 11)) * -50 + 100).astype(np.float32), np.eye(4))
    lab = _save(tmp_path / "s1_label.nii.gz", _blob(shape, (7, 8, 11)).astype(np.float32), np.eye(4))
    out, lab_out = tmp_path / "o" / "s1.nii.gz", tmp_path / "o" / "s1_label.nii.gz"
    args = ["lowres", str(img), "--factor", "2", "--out", str(out), "--label", str(lab), "--label-out", str(lab_out)]
    assert main(args) == 2
    assert "between the label values" in capsys.readouterr().err
    assert not out.exists() and not lab_out.exists()


@pytest.mark.parametrize("codes", [(1, 2), (2, 0), (0, 0)])
def test_thick_slices_keep_the_input_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], codes: tuple[int, int]
) -> None:
    """--thickness-mm writes a new grid but keeps every header field the grid leaves true: qform and sform each with
    its own code and matrix (the qform got the sform's code, 1 became 2), the TR in pixdim[4] (reset to 1), units,
    descrip; slice timing of the old slices goes. The printed line names what changed."""
    sform = _oblique_lps_affine()
    qform = sform.copy()
    qform[:3, 3] += [0.5, -0.25, 0.0]  # a qform that differs from the sform (as scanners' can, by rounding)
    img = nib.Nifti1Image((_blob((8, 8, 12), (4, 4, 6)) * 100 + 1).astype(np.float32), None)
    qcode, scode = codes
    img.set_sform(sform, code=scode)
    img.set_qform(qform, code=qcode)
    hdr = img.header
    hdr["pixdim"][4] = 2.5
    hdr.set_xyzt_units("mm", "sec")
    hdr["descrip"] = b"swi3d1r"
    hdr.set_dim_info(freq=0, phase=1, slice=2)
    hdr["slice_code"], hdr["slice_end"], hdr["slice_duration"] = 1, 11, 0.1
    src = tmp_path / "s1.nii.gz"
    nib.save(img, str(src))
    out = tmp_path / "s1_3mm.nii.gz"

    assert main(["lowres", str(src), "--thickness-mm", "3", "--axis", "2", "--out", str(out)]) == 0
    o = nib.load(str(out)).header
    assert (int(o["qform_code"]), int(o["sform_code"])) == ((1, 1) if codes == (0, 0) else codes)
    assert o["pixdim"][4] == pytest.approx(2.5)
    assert o.get_xyzt_units() == ("mm", "sec") and bytes(o["descrip"]).rstrip(b"\0") == b"swi3d1r"
    assert o.get_dim_info() == (0, 1, 2)
    assert (int(o["slice_code"]), int(o["slice_end"]), float(o["slice_duration"])) == (0, 0, 0.0)
    # each transform moved onto the thick voxels: voxel (i, j, k) of the output is voxel (i, j, 3k + 1) of the input
    to_old = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 3, 1], [0, 0, 0, 1]], dtype=np.float64)
    if qcode:
        np.testing.assert_allclose(o.get_qform(), qform @ to_old, atol=1e-4)
    if scode:
        np.testing.assert_allclose(o.get_sform(), sform @ to_old, atol=1e-4)
    said = capsys.readouterr().out
    assert "header changed: dim, pixdim" in said and "slice_code" in said and "descrip" not in said


def test_header_changes_are_recorded_not_only_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The header fields a conversion changed were printed on the ``wrote`` line and stored nowhere: a later reader of
    the output (its sidecar, the data set's ``.plkd-lowres.json`` and synth manifest) could not tell the header from
    the input's. Each record now names them, per file, as the line does."""
    img = _save(tmp_path / "in" / "s1_swi.nii.gz", _blob((16, 16, 24), (7, 8, 11)) * 100 + 1, _oblique_lps_affine())
    (tmp_path / "in" / "s1_swi.json").write_text(json.dumps(_swi_sidecar(24)))
    out = tmp_path / "out" / "s1_3mm.nii.gz"
    assert main(["lowres", str(img), "--thickness-mm", "3", "--out", str(out)]) == 0
    said = capsys.readouterr().out.split("header changed: ")[1].rstrip(")\n").split(", ")
    record = json.loads((tmp_path / "out" / "s1_3mm.json").read_text())["PLKDLowres"]
    assert record["header_changed"] == said and "dim" in said and "pixdim" in said
    # LR@k on the input's grid: the header changes only in descrip (which says LR@k), and the record says so.
    assert main(["lowres", str(img), "--factor", "2", "--out", str(tmp_path / "out" / "s1_lr2.nii.gz")]) == 0
    assert json.loads((tmp_path / "out" / "s1_lr2.json").read_text())["PLKDLowres"]["header_changed"] == ["descrip"]

    src, dst = tmp_path / "synth", tmp_path / "synth_4mm"
    _fake_synth(src)
    assert main(["lowres", "--dataset", str(src), "--thickness-mm", "4", "--out", str(dst), "--progress", "none"]) == 0
    for record in (
        json.loads((dst / ".plkd-lowres.json").read_text())["lowres"],
        json.loads((dst / "manifest.json").read_text())["lowres"],
    ):
        changed = record["header_changed"]
        assert sorted(changed) == sorted(
            f"{sid}/{sid}_space-T2S_{kind}.nii.gz"
            for sid in ("sub-0001", "sub-0002")
            for kind in ("desc-masked_T2S", "CMB", "desc-brain_mask")
        )
        assert all({"dim", "pixdim"} <= set(fields) for fields in changed.values())
    # The same conversion again reuses the folder (the record of the changes does not make it "another conversion").
    assert main(["lowres", "--dataset", str(src), "--thickness-mm", "4", "--out", str(dst), "--progress", "none"]) == 0


def test_dataset_overwrite_removes_only_an_earlier_conversion(tmp_path: Path, capsys) -> None:
    """``--overwrite`` removed every NIfTI file under ``--out``, recorded as a conversion or not: a folder of the
    user's own scans given as --out lost them all. Files no conversion recorded are now refused, and kept."""
    src, dst = tmp_path / "synth", tmp_path / "mine"
    _fake_synth(src)
    own = _save(dst / "scans" / "patient_T2S.nii.gz", np.ones((4, 4, 4), np.float32), np.eye(4))
    run = ["lowres", "--dataset", str(src), "--thickness-mm", "4", "--out", str(dst), "--progress", "none"]
    assert main([*run, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scans/patient_T2S.nii.gz" in err[0] and "no plkd lowres conversion" in err[0]
    assert own.is_file() and not list(dst.rglob("sub-*"))
    # An earlier conversion (recorded) is still removed by --overwrite, also when it had more subjects.
    own.unlink()
    assert main(run) == 0
    shutil.rmtree(src / "sub-0002")
    manifest = json.loads((src / "manifest.json").read_text())
    del manifest["subjects"]["sub-0002"]
    (src / "manifest.json").write_text(json.dumps(manifest))
    assert main([*run, "--overwrite"]) == 0
    assert not list(dst.rglob("sub-0002*"))
