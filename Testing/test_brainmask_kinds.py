"""The automatic brain mask on the kinds of image people bring: a head in air, skull-stripped,
zero-filled air, defaced, and a field of view wholly inside the brain (no background at all).

Phantom heads (64×64×48 voxels) are built in the test: brain, CSF rim, dark skull, scalp, Rician
noise in the air; the crop test uses the tiny case and the tiny bundle.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import plkd.inference.brainmask as brainmask
from plkd.bundle import load_bundle
from plkd.errors import InputError
from plkd.inference import Predictor
from plkd.inference.brainmask import compute_brain_mask
from plkd.volumes import Volume

DATA = Path(__file__).resolve().parent / "data"


def _head(kind: str, seed: int = 0) -> tuple[Volume, np.ndarray]:
    shape = (64, 64, 48)
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij"), -1)
    r = np.sqrt(((g / np.array([26.0, 28.0, 20.0])) ** 2).sum(-1))
    brain = r < 0.78
    img = np.zeros(shape, np.float32)
    img[brain] = 100 + 10 * np.sin(g[brain][:, 0] / 3)
    img[(r >= 0.78) & (r < 0.82)] = 120  # CSF
    img[(r >= 0.82) & (r < 0.92)] = 3  # skull: no signal
    img[(r >= 0.92) & (r < 1.0)] = 90  # scalp
    img += np.abs(rng.normal(0, 3, shape) + 1j * rng.normal(0, 3, shape)).astype(np.float32)  # Rician noise
    if kind == "skull-stripped":
        img = np.where(brain, img, 0)
    elif kind == "zero-filled air":
        img = np.where(r < 1.0, img, 0)
    elif kind == "defaced":
        img[:, :12, :18] = 0  # the face region zeroed, the rest of the air left as it was
    return Volume(img.astype(np.float32), np.eye(4)), brain


@pytest.mark.parametrize(
    ("kind", "says", "min_precision"),
    [
        ("head in air", "threshold fallback (the image has air", 0.75),
        ("skull-stripped", "skull-stripped input", 0.99),
        ("zero-filled air", "zero-filled air around an unstripped head", 0.75),
        ("defaced", "defaced or zero-padded image, not skull-stripped", 0.75),
    ],
)
def test_mask_keeps_the_brain_and_names_the_image_kind(kind: str, says: str, min_precision: float) -> None:
    vol, brain = _head(kind)
    mask, note = compute_brain_mask(vol)
    assert says in note, note
    assert (mask & brain).sum() / brain.sum() > 0.99  # no brain lost
    assert (mask & brain).sum() / mask.sum() > min_precision  # and the skull and air mostly left out
    if kind != "skull-stripped":
        assert "skull-stripped input" not in note


@pytest.mark.parametrize("offset", [1e5, -40.0])
def test_a_background_filled_with_another_constant_is_taken_as_zero_fill(offset: float) -> None:
    vol, brain = _head("skull-stripped")
    expected, _ = compute_brain_mask(vol)
    shifted = Volume(vol.data + np.float32(offset), vol.affine)
    mask, note = compute_brain_mask(shifted)
    assert np.array_equal(mask, expected) and (mask & brain).sum() / brain.sum() > 0.99
    assert "skull-stripped input" in note and f"filled with {offset:g}" in note


def test_field_of_view_inside_the_brain_is_used_whole() -> None:
    vol, _brain = _head("head in air")
    crop = Volume(np.ascontiguousarray(vol.data[20:44, 20:44, 16:32]), np.eye(4))
    mask, note = compute_brain_mask(crop)
    assert mask.all() and "whole field of view" in note


def test_a_fallback_keeping_little_of_the_head_is_not_trusted(monkeypatch, caplog) -> None:
    vol, brain = _head("head in air")
    tiny = np.zeros(brain.shape, bool)
    tiny[30:34, 30:34, 22:26] = True
    monkeypatch.setattr(brainmask, "threshold_mask", lambda smooth, spacing: tiny)
    mask, note = compute_brain_mask(vol)
    assert mask[brain].all() and "kept only 0% of the head, so the whole head" in note
    assert any("kept only" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_microbleed_in_a_crop_inside_the_brain_is_found_without_a_mask() -> None:
    img = nib.load(str(DATA / "tiny-case" / "tiny_T2S.nii.gz"))
    data = np.asarray(img.dataobj, dtype=np.float32)
    truth = np.asarray(json.loads((DATA / "tiny-case" / "truth.json").read_text())["centres_ras"][0])
    inv = np.linalg.inv(img.affine)
    centre = inv[:3, :3] @ truth + inv[:3, 3]
    lo = np.round(centre).astype(int) - (6, 6, 4)
    crop = np.ascontiguousarray(data[lo[0] : lo[0] + 12, lo[1] : lo[1] + 12, lo[2] : lo[2] + 8])
    assert not (crop == 0).any()  # tissue only: no background to find
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ lo + img.affine[:3, 3]
    predictor = Predictor(load_bundle(DATA / "tiny-bundle"), device="cpu")
    result = predictor.predict(Volume(crop, affine))
    assert any("whole field of view" in n for n in result.notes)
    kept = [c for c in result.candidates if c["kept"]]
    assert any(np.linalg.norm(np.asarray(c["center_ras"]) - truth) < 2.0 for c in kept), result.candidates


def test_a_probability_map_given_as_mask_is_cut_at_half_with_a_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SPM/FAST-style maps have a faint tail into skull and scalp; "> 0" searched all of it.
    monkeypatch.setattr(brainmask, "MIN_WHOLE_BRAIN_ML", 0.0)  # a 64 mm test head: no small-brain warning here
    volume, brain = _head("head in air")
    r = np.sqrt(((np.indices(brain.shape) - 31.5) ** 2).sum(0)) / 20.0
    soft = np.clip(1.3 - r, 0.0, 1.0).astype(np.float32)  # 1 in the middle, 0.01..0.99 around it
    with caplog.at_level("WARNING", logger="plkd"):
        mask, note = brainmask.resolve_brain_mask(volume, Volume(soft, np.eye(4)))
    assert np.array_equal(mask, soft >= 0.5) and mask.sum() < (soft > 0).sum()
    assert "fractional values (a probability map?)" in note
    assert len([r for r in caplog.records if "probability map" in r.getMessage()]) == 1
    # Binary masks and label maps (whole numbers) keep every non-zero voxel, without a word.
    caplog.clear()
    labels = (brain * (1 + np.indices(brain.shape)[0] // 20)).astype(np.float32)
    for given in (brain.astype(np.float32), labels):
        with caplog.at_level("WARNING", logger="plkd"):
            mask, note = brainmask.resolve_brain_mask(volume, Volume(given, np.eye(4)))
        assert np.array_equal(mask, brain) and note == "brain mask: given by the user"
    assert not caplog.records


def test_an_image_given_as_mask_is_refused() -> None:
    # The scan itself (or a T1) given as --mask: every voxel above 0 was "brain", skull and scalp searched, unsaid.
    volume, brain = _head("head in air")
    image = np.round(volume.data * 4000 / volume.data.max()).astype(np.float32)  # a 16-bit magnitude image
    with pytest.raises(InputError, match="distinct whole-number values: it is an image"):
        brainmask.resolve_brain_mask(volume, Volume(image, np.eye(4)))
    # A label map of many structures (FreeSurfer's ~190) is still a mask.
    parcels = (brain * (1 + np.arange(brain.size).reshape(brain.shape) % 190)).astype(np.float32)
    mask, _ = brainmask.resolve_brain_mask(volume, Volume(parcels, np.eye(4)))
    assert np.array_equal(mask, brain)


def test_a_brain_region_smaller_than_a_brain_is_searched_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A crop or a tight mask: normalised as a whole brain, microbleeds were missed without a word (a 64 ml crop
    of the shipped model's test subject gave 0 of its 2 microbleeds)."""
    volume, brain = _head("head in air")
    with caplog.at_level("WARNING", logger="plkd"):
        mask, note = brainmask.resolve_brain_mask(volume, Volume(brain.astype(np.float32), np.eye(4)))
    said = [r.getMessage() for r in caplog.records if "whole adult brain" in r.getMessage()]
    assert len(said) == 1 and f"holds only {brain.sum() / 1000:.0f} ml" in said[0] and said[0] in note
    # The same voxels 3.5 mm wide make a whole brain's volume: nothing said.
    caplog.clear()
    big = Volume(volume.data, np.diag([3.5, 3.5, 3.5, 1.0]))
    with caplog.at_level("WARNING", logger="plkd"):
        brainmask.resolve_brain_mask(big, Volume(brain.astype(np.float32), big.affine))
    assert brain.sum() * 3.5**3 / 1000 > brainmask.MIN_WHOLE_BRAIN_ML and not caplog.records


def test_a_warning_said_in_a_note_is_not_noted_twice(tmp_path: Path) -> None:
    """The small-brain warning is part of the brain-mask note; the scan's JSON listed it a second time on its own."""
    from plkd.cli import main
    from plkd.volumes import save_volume

    volume, _ = _head("head in air")
    scan = save_volume(tmp_path / "head_T2S.nii.gz", volume.data, volume.affine)
    out = tmp_path / "out"
    argv = ["predict", str(scan), "-o", str(out), "--model", str(DATA / "tiny-bundle"), "--progress", "none"]
    assert main(argv) == 0
    doc = json.loads((out / "head_T2S_cmb.json").read_text())
    assert any("whole adult brain" in w for w in doc["warnings"])
    assert sum("whole adult brain" in n for n in doc["notes"]) == 1, doc["notes"]


def test_a_0_255_mask_stored_as_signed_8_bit_is_taken_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # 255 stored in a signed 8-bit file reads -1: the mask was refused as "empty (no non-zero voxel)", which it is not.
    volume, brain = _head("head in air")
    signed = np.where(brain, -1, 0).astype(np.int8)
    with caplog.at_level("WARNING", logger="plkd"):
        mask, note = brainmask.resolve_brain_mask(volume, Volume(signed, np.eye(4)))
    assert np.array_equal(mask, brain)
    said = [r.getMessage() for r in caplog.records if "negative" in r.getMessage()]
    assert len(said) == 1 and "-1" in said[0] and "signed 8-bit" in said[0] and said[0] in note
    # A mask that is really empty is still refused.
    with pytest.raises(InputError, match="brain mask is empty"):
        brainmask.resolve_brain_mask(volume, Volume(np.zeros(brain.shape, np.int8), np.eye(4)))
