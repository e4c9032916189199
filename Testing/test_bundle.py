"""Model bundles: export → load round trip, zip, and refusal of tampered, edited or incomplete bundles."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

import plkd.bundle as bundle_mod
from plkd.bundle import default_bundle_dir, find_default_bundle, load_bundle, save_bundle, zip_bundle
from plkd.errors import BundleError
from plkd.models import E2UNet, ScreeningFCN, UNet3D

PATCH = (16, 16, 8)


@pytest.fixture(scope="module")
def nets() -> dict[str, dict]:
    torch.manual_seed(0)
    return {
        "screening": {"module": ScreeningFCN(width=4), "role": "screening"},
        "teacher": {"module": E2UNet(base_channels=4), "role": "segmenter", "lr_factor": 1},
        "student_x2": {"module": UNet3D(base_channels=4, depth=3), "role": "segmenter", "lr_factor": 2},
        "student_x4": {"module": E2UNet(base_channels=4, fcm=False), "role": "segmenter", "lr_factor": 4, "stage": 3},
    }


MANIFEST = {"name": "test-bundle", "modality": "T2S", "thresholds": {"screening": 0.4}, "training": {"epochs": 1}}


@pytest.fixture
def bundle_dir(tmp_path: Path, nets: dict) -> Path:
    return save_bundle(tmp_path / "bundle", nets, manifest=MANIFEST)


def _edit_manifest(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    man = json.loads(path.read_text())
    edit(man)
    path.write_text(json.dumps(man))


def _logits(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = net.eval()(x)
    return out["logits"] if isinstance(out, dict) else out


def test_round_trip_fp16(bundle_dir: Path, nets: dict) -> None:
    b = load_bundle(bundle_dir)
    assert b.path == bundle_dir
    assert sorted(p.name for p in bundle_dir.iterdir()) == [
        "manifest.json",
        "screening.pt",
        "student_x2.pt",
        "student_x4.pt",
        "teacher.pt",
    ]
    assert not [p for p in bundle_dir.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    x = torch.randn(2, 1, *PATCH)
    for name, entry in nets.items():
        loaded = b.network(name)
        assert not loaded.training
        assert all(p.dtype == torch.float32 for p in loaded.parameters())
        # Exactly the original network with its weights rounded to float16 ...
        rounded = type(entry["module"])(**entry["module"].hparams)
        rounded.load_state_dict(
            {k: v.half() if v.is_floating_point() else v for k, v in entry["module"].state_dict().items()}
        )
        assert torch.equal(_logits(loaded, x), _logits(rounded, x))
        # ... and close to the original.
        assert torch.allclose(_logits(loaded, x), _logits(entry["module"], x), atol=0.05, rtol=0.01)
    assert b.network("teacher") is b.network("teacher")  # cached


def test_round_trip_fp32_is_exact(tmp_path: Path, nets: dict) -> None:
    b = load_bundle(save_bundle(tmp_path / "b32", nets, manifest=MANIFEST, half=False))
    x = torch.randn(1, 1, *PATCH)
    assert torch.equal(_logits(b.network("student_x4"), x), _logits(nets["student_x4"]["module"], x))


def test_manifest_contents(bundle_dir: Path, nets: dict) -> None:
    b = load_bundle(bundle_dir)
    m = b.manifest
    assert m["format"] == "plkd-bundle" and m["format_version"] == 1
    assert m["networks"]["teacher"]["kind"] == "e2unet"
    assert m["networks"]["teacher"]["hparams"] == nets["teacher"]["module"].hparams
    assert m["networks"]["student_x2"]["kind"] == "unet3d"
    assert m["networks"]["student_x4"]["stage"] == 3  # extra fields are kept
    assert m["training"] == {"epochs": 1}
    assert b.spacing_mm == (1.0, 1.0, 1.0)
    assert b.patch_size == {"screening": (20, 20, 16), "segmentation": (48, 48, 24)}
    assert b.thresholds["screening"] == 0.4 and b.thresholds["min_distance_mm"] == 4.0
    assert b.screening_name == "screening"
    assert b.segmenter_names() == {"teacher": 1.0, "student_x2": 2.0, "student_x4": 4.0}
    text = b.summary()
    assert "test-bundle" in text and "student_x4" in text and "LR x4" in text


@pytest.mark.parametrize(
    ("factor", "expected"),
    [
        (1, "teacher"),
        (1.3, "teacher"),
        (1.5, "student_x2"),
        (2.7, "student_x2"),
        (2.9, "student_x4"),
        (8, "student_x4"),
    ],
)
def test_choose_segmenter_nearest_factor(bundle_dir: Path, factor: float, expected: str) -> None:
    # Nearest on a log scale; sqrt(2·4) ≈ 2.83 is the midpoint between x2 and x4.
    assert load_bundle(bundle_dir).choose_segmenter(factor) == expected


def test_zip_bundles(bundle_dir: Path, tmp_path: Path, nets: dict) -> None:
    x = torch.randn(1, 1, *PATCH)
    ref = _logits(load_bundle(bundle_dir).network("teacher"), x)
    packed = zip_bundle(bundle_dir, tmp_path / "packed.zip")
    direct = save_bundle(tmp_path / "direct.zip", nets, manifest=MANIFEST)
    for archive in (packed, direct):
        b = load_bundle(archive)
        assert b.path == archive and b.root != archive
        assert torch.equal(_logits(b.network("teacher"), x), ref)
    # A flat archive (files at the top level) works too.
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(flat, "w") as zf:
        for p in bundle_dir.iterdir():
            zf.write(p, p.name)
    assert load_bundle(flat).segmenter_names()["student_x4"] == 4.0


def test_tampered_weights_are_refused(bundle_dir: Path) -> None:
    path = bundle_dir / "teacher.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"checksum mismatch for teacher\.pt: the bundle was modified or corrupted"):
        load_bundle(bundle_dir)


def test_weights_swapped_after_loading_are_refused(bundle_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    (bundle_dir / "student_x4.pt").write_bytes((bundle_dir / "teacher.pt").read_bytes())
    with pytest.raises(BundleError, match="checksum mismatch for student_x4.pt"):
        b.network("student_x4")


def test_missing_weight_file_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "student_x2.pt").unlink()
    with pytest.raises(BundleError, match=r"missing weight file student_x2\.pt"):
        load_bundle(bundle_dir)


def test_unsupported_format_version_is_refused(bundle_dir: Path) -> None:
    _edit_manifest(bundle_dir, lambda m: m.update(format_version=2))
    with pytest.raises(BundleError, match="unsupported bundle format_version 2"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("spacing_mm"), "spacing_mm"),
        (lambda m: m.update(spacing_mm=[1, 1]), "spacing_mm"),
        (lambda m: m.update(format="other"), "'format'"),
        (lambda m: m["patch_size"].update(segmentation=[48, 48, 0]), "patch_size.segmentation"),
        (lambda m: m["thresholds"].pop("voxel"), "thresholds.voxel"),
        (lambda m: m["networks"]["teacher"].update(kind="resnet"), "unknown kind"),
        (lambda m: m["networks"]["teacher"].update(role="helper"), "'role'"),
        (lambda m: m["networks"]["teacher"].pop("lr_factor"), "lr_factor"),
        (lambda m: m["networks"].update(other=dict(m["networks"].pop("student_x2"), lr_factor=4)), "share the same"),
        # A name that states another factor than the one the segmenter is chosen by (every JSON reports the name).
        (lambda m: m["networks"]["student_x2"].update(lr_factor=3), "'student_x2' is named for LR factor 2 but its"),
        (lambda m: m["networks"]["teacher"].update(lr_factor=1.5), "'teacher' is named for LR factor 1 but its"),
        # A calibration that would reverse the ranking (the strongest candidates least probable) or mean nothing.
        (lambda m: m["networks"]["teacher"].update(calibration={"a": -0.5, "b": 1.0}), "slope 'a' must be above 0"),
        (lambda m: m["networks"]["teacher"].update(calibration={"method": "platt", "a": 0}), "slope 'a' must be"),
        (lambda m: m["networks"]["teacher"].update(calibration={"a": 1.0, "b": "x"}), "calibration 'b' must be"),
        (lambda m: m["networks"]["teacher"].update(calibration={"temperature": 0}), "'temperature' must be above 0"),
        (lambda m: m["networks"]["teacher"].update(calibration=[1, 0]), "'calibration' must be an object"),
        (lambda m: m["networks"]["teacher"].update(file="../teacher.pt"), "plain '.pt' file name"),
        (lambda m: m["networks"]["teacher"].update(sha256="abc"), "sha256"),
        (lambda m: m["networks"]["teacher"]["hparams"].update(conv_mode="4d"), "conv_mode"),
        (lambda m: m["networks"].pop("screening"), "exactly one screening network"),
    ],
)
def test_edited_manifest_is_refused(bundle_dir: Path, edit, message: str) -> None:
    _edit_manifest(bundle_dir, edit)
    with pytest.raises(BundleError, match=message) as info:
        load_bundle(bundle_dir)
    assert "\n" not in str(info.value)


def test_hparams_not_matching_the_weights_are_refused(bundle_dir: Path) -> None:
    _edit_manifest(bundle_dir, lambda m: m["networks"]["teacher"]["hparams"].update(base_channels=2))
    b = load_bundle(bundle_dir)  # a valid schema ...
    with pytest.raises(BundleError, match="do not fit the e2unet"):  # ... but the weights cannot load
        b.network("teacher")
    # A network larger than its weight file could hold is refused before anything is built.
    _edit_manifest(bundle_dir, lambda m: m["networks"]["teacher"]["hparams"].update(base_channels=8))
    with pytest.raises(BundleError, match="cannot hold the .* parameters"):
        load_bundle(bundle_dir)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path / "empty")
    (tmp_path / "text.zip").write_text("hello")
    with pytest.raises(BundleError, match="cannot be read as a .zip archive \\(truncated or damaged"):
        load_bundle(tmp_path / "text.zip")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BundleError, match="neither a bundle folder nor a .zip"):
        load_bundle(tmp_path / "notes.txt")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="cannot read manifest.json"):
        load_bundle(tmp_path / "bad")


def test_unsafe_zip_entries_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        for p in bundle_dir.iterdir():
            zf.write(p, p.name)
        zf.writestr("../escaped.txt", "x")
    with pytest.raises(BundleError, match="unsafe entry"):
        load_bundle(evil)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_overwrite_rules(bundle_dir: Path, nets: dict) -> None:
    with pytest.raises(BundleError, match="already exists"):
        save_bundle(bundle_dir, nets, manifest=MANIFEST)
    save_bundle(bundle_dir, nets, manifest={**MANIFEST, "name": "second"}, overwrite=True)
    assert load_bundle(bundle_dir).name == "second"
    assert [p.name for p in bundle_dir.parent.iterdir()] == ["bundle"]  # the old copy is gone


def test_bad_save_arguments_leave_nothing_behind(tmp_path: Path, nets: dict) -> None:
    only_segmenters = {k: v for k, v in nets.items() if k != "screening"}
    with pytest.raises(BundleError, match="exactly one screening network"):
        save_bundle(tmp_path / "b", only_segmenters, manifest=MANIFEST)
    with pytest.raises(BundleError, match="network name"):
        save_bundle(tmp_path / "b", {"../x": nets["screening"]}, manifest=MANIFEST)
    with pytest.raises(BundleError, match="not a plkd network"):
        save_bundle(
            tmp_path / "b", {**nets, "other": {"module": torch.nn.Linear(2, 2), "role": "segmenter"}}, manifest=MANIFEST
        )
    assert list(tmp_path.iterdir()) == []


def test_default_bundle_lookup(tmp_path: Path, nets: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_bundle_dir().parts[-2:] == ("plkd", "bundled")
    monkeypatch.setattr(bundle_mod, "default_bundle_dir", lambda: tmp_path)
    assert find_default_bundle("T2S") is None
    save_bundle(tmp_path / "swi-model.zip", nets, manifest={**MANIFEST, "modality": "SWI"})
    save_bundle(tmp_path / "cmb-t2s", nets, manifest=MANIFEST)
    assert find_default_bundle("T2S") == tmp_path / "cmb-t2s"
    assert find_default_bundle("swi") == tmp_path / "swi-model.zip"


def _strings(value: object):
    """Every string anywhere in a parsed JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize("name", ["cmb-t2s", "cmb-swi"])
def test_shipped_bundles_name_no_local_path(name: str) -> None:
    """A shipped manifest says how its data were made, never where they lay on the machine that made them (the
    T2* bundle named /work/scratch/eval/val-wide for its calibration and tuning data)."""
    manifest = json.loads((default_bundle_dir() / name / "manifest.json").read_text(encoding="utf-8"))
    absolute = [s for s in _strings(manifest) if s.startswith(("/", "~")) or (len(s) > 2 and s[1:3] in (":\\", ":/"))]
    assert not absolute, absolute
