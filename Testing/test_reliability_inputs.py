"""Bad input is refused in one line before any work: values no scanner produces, non-magnitude
images, grids too small, files shorter than their header, unwritable output locations; and a
killed write leaves nothing behind after a rerun."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from plkd.atomic import HOST_TAG, check_output_location, remove_stale_temporaries, write_text_atomic
from plkd.cli import main
from plkd.errors import InputError, OutputError, PLKDError
from plkd.volumes import load_label, load_volume

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "Testing" / "data" / "tiny-bundle"
CASE = ROOT / "Testing" / "data" / "tiny-case" / "tiny_T2S.nii.gz"


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None, slope: float | None = None) -> Path:
    img = nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(path))
    return path


def _one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("plkd: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "\n  " not in err, err
    return lines[0]


def _brain(shape=(40, 40, 24), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A magnitude-like image: bright ellipsoid (tissue ~ 300) on a dark background (~ 10)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    centre = (np.asarray(shape) - 1) / 2
    inside = (((grid - centre) / (np.asarray(shape) * 0.4)) ** 2).sum(-1) <= 1
    img = np.where(inside, 300.0, 10.0) + 8 * rng.standard_normal(shape)
    return np.abs(img).astype(np.float32), inside


# ------------------------------------------------------------------ values no scanner produces


def test_absurd_values_are_refused_by_predict_and_lowres(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    img, _ = _brain()
    huge = _save(tmp_path / "huge_T2S.nii.gz", img.astype(np.float64) * 1e298)
    sloped = _save(tmp_path / "slope_T2S.nii.gz", np.clip(img, 0, 3000).astype(np.int16), slope=1e30)
    for path in (huge, sloped):
        code = main(["predict", str(path), "-o", str(tmp_path / "p"), "--model", str(BUNDLE), "--progress", "none"])
        assert code == 2
        assert "no scanner produces" in _one_error_line(capsys)
        assert main(["lowres", str(path), "--factor", "2", "--out", str(tmp_path / "lr.nii.gz")]) == 2
        assert "no scanner produces" in _one_error_line(capsys)
    assert not (tmp_path / "lr.nii.gz").exists()
    # No output for a refused scan (the batch summary lists the failure, nothing else is written).
    assert not list((tmp_path / "p").glob("*_cmb*")) if (tmp_path / "p").exists() else True
    # A real 16-bit range with an ordinary float rescale is fine.
    ok = load_volume(_save(tmp_path / "ok.nii.gz", np.clip(img * 100, 0, 32000).astype(np.int16), slope=0.25))
    assert float(ok.data.max()) == pytest.approx(float(np.clip(img * 100, 0, 32000).astype(np.int16).max()) * 0.25)


def test_training_refuses_absurd_values_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from training_toydata import write_toy_dataset

    root = write_toy_dataset(tmp_path / "toy", n_subjects=2)
    image = sorted(root.rglob("*_T2S.nii.gz"))[0]
    src = nib.load(str(image))
    _save(image, np.asarray(src.dataobj, dtype=np.float64) * 1e298, src.affine)
    code = main(["train", "screening", "--data", str(root), "--out", str(tmp_path / "run"), "--config", "tiny"])
    assert code == 2
    line = _one_error_line(capsys)
    assert image.name in line and "no scanner produces" in line


@pytest.mark.parametrize(
    ("shape", "zooms"),
    [((40, 40, 1), (1.0, 1.0, 1.0)), ((3, 3, 3), (1.0, 1.0, 1.0)), ((40, 40, 3), (0.2, 0.2, 1.0))],
    ids=["single-slice", "3x3x3", "3-slices-of-1mm"],
)
def test_grids_too_small_for_a_brain_are_refused(tmp_path: Path, shape, zooms) -> None:
    rng = np.random.default_rng(0)
    path = _save(tmp_path / "small.nii.gz", rng.uniform(1, 2, shape).astype(np.float32), np.diag([*zooms, 1.0]))
    with pytest.raises(InputError, match="a brain volume needs at least"):
        load_volume(path)


def test_complex_prediction_is_refused_by_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    truth = np.zeros((16, 16, 16), np.uint8)
    truth[8, 8, 8] = 1
    _save(tmp_path / "sub-01_CMB.nii.gz", truth)
    pred = _save(tmp_path / "sub-01_pred.nii.gz", truth.astype(np.complex64) * (1 + 1j))
    with pytest.raises(InputError, match="complex"):
        load_label(pred)
    assert main(["evaluate", str(pred), str(tmp_path / "sub-01_CMB.nii.gz")]) != 0
    assert "complex" in _one_error_line(capsys)


# ------------------------------------------------------------------ magnitude images only


def _phase_images(tmp: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    mag, inside = _brain()
    grid = np.indices(mag.shape).astype(np.float32)
    field = 0.02 * ((grid - 20) ** 2).sum(0) + rng.normal(0, 0.2, mag.shape)
    phase = np.angle(np.exp(1j * field)).astype(np.float32) * inside  # wrapped, zero outside the head
    signal = mag * np.exp(1j * field)
    return {
        "phase-radians": _save(tmp / "phase_rad.nii.gz", phase),
        "phase-int-4096": _save(tmp / "phase_int.nii.gz", np.round(phase / np.pi * 4096).astype(np.int16)),
        "real-part": _save(tmp / "real.nii.gz", signal.real.astype(np.float32)),
        "imaginary-part": _save(tmp / "imag.nii.gz", signal.imag.astype(np.float32)),
        "multi-echo-phase": _save(tmp / "me_phase.nii.gz", np.stack([phase, -phase, phase * 0.5], axis=-1)),
        "complex": _save(tmp / "cplx.nii.gz", signal.astype(np.complex64)),
    }


@pytest.mark.parametrize(
    "kind", ["phase-radians", "phase-int-4096", "real-part", "imaginary-part", "multi-echo-phase", "complex"]
)
def test_non_magnitude_images_are_refused(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture) -> None:
    path = _phase_images(tmp_path)[kind]
    out = tmp_path / "out"
    assert main(["predict", str(path), "-o", str(out), "--model", str(BUNDLE), "--progress", "none"]) == 2
    line = _one_error_line(capsys)
    assert path.name in line and "give the magnitude image" in line
    assert "phase" in line or kind == "complex"
    assert not list(out.glob("*.json")) if out.exists() else True


def test_magnitude_images_with_some_negative_voxels_are_accepted(tmp_path: Path) -> None:
    mag, inside = _brain()
    rng = np.random.default_rng(5)
    # Interpolation ringing: a few percent of voxels slightly below zero at the head's edge.
    ringing = mag.copy()
    edge = np.argwhere(~inside)[rng.choice(int((~inside).sum()), size=int(0.03 * mag.size), replace=False)]
    ringing[tuple(edge.T)] = -rng.uniform(1, 15, len(edge))
    # Noise-floor subtraction (denoising): the background scatters around 0, tissue stays bright.
    denoised = np.where(inside, mag, rng.normal(0, 8, mag.shape)).astype(np.float32)
    for name, data in (("ringing", ringing), ("denoised", denoised)):
        vol = load_volume(_save(tmp_path / f"{name}.nii.gz", data))
        assert float(vol.data.min()) < 0 < float(vol.data.max())


def test_label_maps_and_masks_given_as_the_image_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # A glob such as 'sub-01/*.nii.gz' (or the shell's expansion of it) also names the label map and the
    # brain mask; analysed as images they gave "0 microbleeds", a clean-looking row in the summary.
    mag, inside = _brain()
    labels = np.zeros(mag.shape, np.uint8)
    labels[10:12, 10:12, 10:12], labels[25:27, 20:22, 12:14] = 1, 2
    inputs = {
        "sub-01_T2S.nii.gz": mag,
        "sub-01_brainmask.nii.gz": inside.astype(np.float32) * 1000.0,  # a mask scaled to any value
        "sub-01_space-T2S_CMB.nii.gz": labels,
        "sub-01_aseg.nii.gz": (inside * (1 + np.indices(mag.shape)[0] // 4)).astype(np.int16),  # 11 labels
    }
    for name, data in inputs.items():
        _save(tmp_path / name, data)
    out = tmp_path / "out"
    assert main(["predict", *(str(tmp_path / n) for n in inputs), "-o", str(out), "--model", str(BUNDLE)]) == 2
    err = capsys.readouterr().err
    refused = [ln for ln in err.splitlines() if ln.startswith("plkd: error:")]
    assert len(refused) == 3, err
    assert all("a label map or mask, not an MR image" in ln for ln in refused)
    assert "holds only 3 distinct whole-number values (0, 1, 2)" in err
    assert sorted(p.name for p in out.glob("*_cmb.json")) == ["sub-01_T2S_cmb.json"]
    # An 8-bit magnitude image (whole numbers, but many of them) is an image.
    assert (
        load_volume(_save(tmp_path / "u8.nii.gz", np.round(mag / mag.max() * 255).astype(np.uint8))).shape == mag.shape
    )


# ------------------------------------------------------------------ files shorter than their header


def test_header_announcing_more_than_the_file_holds_is_refused_before_reading(tmp_path: Path) -> None:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1024, 1024, 1024))
    hdr.set_data_dtype(np.float32)
    hdr.set_zooms((1.0, 1.0, 1.0))
    hdr["vox_offset"] = 352  # data right after the 348-byte header and 4 extension bytes
    raw = tmp_path / "liar.nii"
    raw.write_bytes(hdr.binaryblock + b"\0" * 4 + os.urandom(32 * 1024))
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"truncated: its header announces 4,294,967,296 bytes"):
        load_volume(raw)
    assert time.perf_counter() - t0 < 2.0  # refused from the sizes, not after allocating 4 GB
    # .nii.gz beyond what deflate can expand (4 GB from a few kB) ...
    gz = tmp_path / "liar.nii.gz"
    gz.write_bytes(gzip.compress(raw.read_bytes()))
    with pytest.raises(InputError, match="truncated"):
        load_volume(gz)
    # ... and within it: the gzip trailer says less, counting the stream confirms.
    hdr.set_data_shape((64, 64, 64))
    small = tmp_path / "short.nii.gz"
    small.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4 + os.urandom(32 * 1024)))
    with pytest.raises(InputError, match="the file holds 32,768 bytes"):
        load_volume(small)


def test_library_errors_stay_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert str(PLKDError("cannot read x:\n  first detail\n\n  second detail")) == (
        "cannot read x:; first detail; second detail"
    )
    img = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4))
    bad = tmp_path / "dtype.nii"
    nib.save(img, str(bad))
    block = bytearray(bad.read_bytes())
    block[70:72] = (7777).to_bytes(2, "little")  # datatype code nibabel does not know
    bad.write_bytes(bytes(block))
    assert main(["lowres", str(bad), "--factor", "2", "--out", str(tmp_path / "o.nii.gz")]) == 2
    assert "dtype.nii" in _one_error_line(capsys)


# ------------------------------------------------------------------ output locations


def _writers(tmp: Path) -> dict[str, tuple[list[str], str]]:
    a_file = tmp / "a_file"
    a_file.write_text("x")
    (tmp / "folder").mkdir()
    return {
        "predict-dir-is-file": (["predict", str(CASE), "-o", str(a_file), "--model", str(BUNDLE)], "is a file"),
        "evaluate-json-is-folder": (["evaluate", str(CASE), str(CASE), "--json", str(tmp / "folder")], "is a folder"),
        "evaluate-parent-is-file": (["evaluate", str(CASE), str(CASE), "--json", str(a_file / "r.json")], "is a file"),
        "lowres-parent-is-file": (
            ["lowres", str(CASE), "--factor", "2", "--out", str(a_file / "x" / "o.nii.gz")],
            "is a file",
        ),
        "train-out-is-file": (["train", "all", "--data", str(tmp), "--out", str(a_file)], "is a file"),
        "export-parent-is-file": (["export", str(tmp), "--out", str(a_file / "bundle")], "is a file"),
        "tune-out-is-file": (["tune", str(tmp), "--out", str(a_file), "--model", str(BUNDLE)], "is a file"),
        "benchmark-json-is-folder": (["benchmark", "--json", str(tmp / "folder")], "is a folder"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "predict-dir-is-file",
        "evaluate-json-is-folder",
        "evaluate-parent-is-file",
        "lowres-parent-is-file",
        "train-out-is-file",
        "export-parent-is-file",
        "tune-out-is-file",
        "benchmark-json-is-folder",
    ],
)
def test_unwritable_output_is_refused_before_any_work(tmp_path: Path, case: str, capsys) -> None:
    argv, expected = _writers(tmp_path)[case]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert expected in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder"]  # nothing written


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_folder_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="read-only"):
            check_output_location(ro / "sub" / "x.json", what="--json")
    finally:
        ro.chmod(0o755)


def test_writable_locations_pass(tmp_path: Path) -> None:
    check_output_location(tmp_path / "new" / "deeper" / "x.json", what="--json")
    check_output_location(tmp_path / "new" / "dir", kind="folder", what="--out")
    check_output_location(tmp_path, kind="folder", what="--out")
    assert list(tmp_path.iterdir()) == []  # the check creates nothing


# ------------------------------------------------------------------ temporaries of killed writes


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_write_is_cleaned_by_the_next_one(tmp_path: Path) -> None:
    final = tmp_path / "scan_cmb.nii.gz"
    host = HOST_TAG
    dead = tmp_path / f".scan_cmb.nii.gz.{host}-{_dead_pid()}-0123abcd.partial.nii.gz"
    alive = tmp_path / f".scan_cmb.nii.gz.{host}-1-0123abcd.partial.nii.gz"  # pid 1 always runs
    old_elsewhere = tmp_path / ".scan_cmb.nii.gz.00000000-42-0123abcd.partial.nii.gz"
    unrelated = tmp_path / ".other.nii.gz.00000000-42-0123abcd.partial.nii.gz"
    users = tmp_path / "notes.partial.nii.gz"
    for p in (dead, alive, old_elsewhere, unrelated, users):
        p.write_bytes(b"half")
    two_days = time.time() - 2 * 24 * 3600
    os.utime(old_elsewhere, (two_days, two_days))
    os.utime(unrelated, (two_days, two_days))
    write_text_atomic(final, "done")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([final.name, alive.name, unrelated.name, users.name])
    assert remove_stale_temporaries(final) == []


def test_rerun_of_a_killed_prediction_leaves_no_hidden_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    host = HOST_TAG
    for name in ("tiny_T2S_cmb.nii.gz", "tiny_T2S_cmb.json"):
        suffix = ".partial" + "".join(Path(name).suffixes[-2:])
        (out / f".{name}.{host}-{_dead_pid()}-deadbeef{suffix}").write_bytes(b"half")
    assert main(["predict", str(CASE), "-o", str(out), "--model", str(BUNDLE), "--progress", "none"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["plkd_summary.csv", "tiny_T2S_cmb.json", "tiny_T2S_cmb.nii.gz"]


def test_a_killed_bundle_export_is_cleaned_by_the_next_one(tmp_path: Path) -> None:
    import torch

    from plkd.bundle import save_bundle
    from plkd.models import E2UNet, ScreeningFCN

    leftover = tmp_path / f".b.{HOST_TAG}-{_dead_pid()}-0123abcd.partial"
    leftover.mkdir()
    (leftover / "teacher.pt").write_bytes(b"half")
    torch.manual_seed(0)
    nets = {
        "screening": {"module": ScreeningFCN(width=4), "role": "screening"},
        "teacher": {"module": E2UNet(base_channels=4), "role": "segmenter", "lr_factor": 1},
    }
    save_bundle(tmp_path / "b", nets, manifest={"name": "b"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
