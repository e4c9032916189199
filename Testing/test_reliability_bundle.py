"""Bundle security: nothing in a manifest is acted on before it is checked, weight links leaving
the bundle are refused, and a bundle that is not a shipped one, byte for byte, is "unverified"."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from plkd.bundle import load_bundle, save_bundle
from plkd.cli import main
from plkd.errors import BundleError
from plkd.models import E2UNet, ScreeningFCN
from plkd.pins import PINS_FILE, manifest_digest, pin_bundle, read_pins

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "PLKDTraining" / "plkd" / "bundled" / "cmb-t2s"
TINY = ROOT / "Testing" / "data" / "tiny-bundle"
CASE = ROOT / "Testing" / "data" / "tiny-case" / "tiny_T2S.nii.gz"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    nets = {
        "screening": {"module": ScreeningFCN(width=4), "role": "screening"},
        "teacher": {"module": E2UNet(base_channels=4), "role": "segmenter", "lr_factor": 1},
    }
    return save_bundle(tmp_path / "b", nets, manifest={"name": "mine", "modality": "T2S"})


def _edit(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    man = json.loads(path.read_text())
    edit(man)
    path.write_text(json.dumps(man))


def test_weight_link_leaving_the_bundle_is_refused_before_reading(bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.pt"
    shutil.move(bundle / "teacher.pt", outside)
    (bundle / "teacher.pt").symlink_to(outside)
    with pytest.raises(BundleError, match="symbolic link leaving the bundle"):
        load_bundle(bundle)
    # A link that stays inside the bundle is an ordinary file of it.
    (bundle / "teacher.pt").unlink()
    shutil.move(outside, bundle / "weights-teacher.bin")
    (bundle / "teacher.pt").symlink_to("weights-teacher.bin")
    assert load_bundle(bundle).network("teacher") is not None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["networks"]["teacher"]["hparams"].update(base_channels=4096), "parameters"),
        (lambda m: m["thresholds"].update(segmentation=-0.5), "probability in \\[0, 1\\]"),
        (lambda m: m["thresholds"].update(min_distance_mm=-4), "min_distance_mm"),
        (lambda m: m["networks"]["teacher"].update(thresholds={"voxel": 7}), "probability"),
        (lambda m: m["patch_size"].update(segmentation=[4096, 4096, 4096]), "patch_size.segmentation"),
        (lambda m: m.update(spacing_mm=[1e-6, 1, 1]), "spacing_mm"),
        (lambda m: m["networks"]["teacher"].update(lr_factor=1e9), "lr_factor"),
        (lambda m: m["normalisation"].update(clip_percentiles=[99, 1]), "clip_percentiles"),
    ],
    ids=["huge-network", "negative-threshold", "negative-distance", "own-threshold", "patch", "spacing", "lr", "clip"],
)
def test_manifest_ranges_are_checked_before_anything_is_built(bundle: Path, edit, message: str) -> None:
    _edit(bundle, edit)
    t0 = time.perf_counter()
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)
    assert time.perf_counter() - t0 < 5.0  # refused, not allocated (base_channels 4096 needs 14 GB)


def test_deeply_nested_or_huge_manifest_is_refused(bundle: Path) -> None:
    text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").write_text(text[:-2] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(BundleError, match="nested"):
        load_bundle(bundle)
    _edit_nested = json.loads(text)
    _edit_nested["x"] = json.loads("[" * 40 + "]" * 40)
    (bundle / "manifest.json").write_text(json.dumps(_edit_nested))
    with pytest.raises(BundleError, match="nested deeper"):
        load_bundle(bundle)
    (bundle / "manifest.json").write_text(text[:-2] + ', "pad": "' + "x" * 2_000_000 + '"}')
    with pytest.raises(BundleError, match="a few kB"):
        load_bundle(bundle)


def test_unknown_manifest_keys_are_allowed(bundle: Path) -> None:
    def edit(m: dict) -> None:
        m["candidates"] = {"max": 300}
        m["networks"]["teacher"]["calibration"] = {"temperature": 1.5}

    _edit(bundle, edit)
    assert load_bundle(bundle).manifest["candidates"] == {"max": 300}


def test_shipped_bundle_matches_its_pin() -> None:
    b = load_bundle(SHIPPED)
    assert b.verified and b.notes == []
    assert read_pins()[b.name] == manifest_digest((SHIPPED / "manifest.json").read_bytes())


def test_altered_shipped_bundle_is_unverified(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    copy = Path(shutil.copytree(SHIPPED, tmp_path / "cmb-t2s"))
    weights = bytearray((copy / "teacher.pt").read_bytes())
    weights[-200] ^= 0x01  # one bit of one weight
    (copy / "teacher.pt").write_bytes(bytes(weights))
    _edit(copy, lambda m: m["networks"]["teacher"].update(sha256=hashlib.sha256(weights).hexdigest()))
    with caplog.at_level("WARNING"):
        b = load_bundle(copy)  # checksums consistent: accepted, but noticed
    assert not b.verified
    assert any("unverified bundle" in n and "differs from the bundle shipped" in n for n in b.notes)
    assert sum("unverified bundle" in r.getMessage() for r in caplog.records) == 1


def test_own_bundle_is_unverified_in_the_outputs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        assert main(["predict", str(CASE), "-o", str(out), "--model", str(TINY), "--progress", "none"]) == 0
    doc = json.loads((out / "tiny_T2S_cmb.json").read_text())
    assert any(n.startswith("unverified bundle:") for n in doc["notes"])
    assert sum("unverified bundle" in r.getMessage() for r in caplog.records) == 1  # one warning line


def test_pins_are_regenerated_by_one_command(tmp_path: Path, bundle: Path) -> None:
    pins = tmp_path / "pins.json"
    name, digest = pin_bundle(bundle, pins)
    assert name == "mine" and read_pins(pins) == {"mine": digest}
    assert digest == manifest_digest((bundle / "manifest.json").read_bytes())
    assert PINS_FILE.is_file() and np.all([len(v) == 64 for v in read_pins().values()])
