"""The shipped T2* and SWI models: under --modality auto each contrast goes to its own model, which finds
the microbleeds planted in a small synthetic brain of that contrast."""

from __future__ import annotations

import json

import numpy as np
import pytest
from planted_microbleeds import brain_with_microbleeds

from plkd.bundle import find_default_bundle
from plkd.cli import main
from plkd.volumes import save_volume

#: Per contrast: the file name a user would have (its BIDS suffix tells the contrast), and the seed.
CASES = {"T2S": ("sub-01_T2starw.nii.gz", 2024), "SWI": ("sub-02_swi.nii.gz", 2025)}


@pytest.fixture(scope="module", params=["T2S", "SWI"])
def predicted(request, tmp_path_factory):
    """``(modality, planted centres, output JSON)`` of ``plkd predict`` (no --model, --modality auto)."""
    modality = request.param
    name, seed = CASES[modality]
    image, mask, planted = brain_with_microbleeds(seed, {"4 mm": 4.0, "6 mm": 6.0}, modality=modality)
    folder = tmp_path_factory.mktemp(modality)
    scan = save_volume(folder / name, image.data, image.affine)
    brain = save_volume(folder / "brain_mask.nii.gz", mask.data, mask.affine, dtype=np.uint8)
    out = folder / "out"
    assert main(["predict", str(scan), "-o", str(out), "--mask", str(brain), "--progress", "none"]) == 0
    return modality, planted, json.loads((out / name.replace(".nii.gz", "_cmb.json")).read_text())


def test_auto_gives_each_contrast_its_own_model(predicted):
    modality, _, doc = predicted
    installed = find_default_bundle(modality)
    assert installed is not None, f"no shipped {modality} model"
    manifest = json.loads((installed / "manifest.json").read_text())
    assert doc["model"].startswith(manifest["name"]) and manifest["modality"] == modality
    assert doc["modality"]["modality"] == modality and doc["modality"]["source"] == "file name"
    assert doc["modality"]["model_modality"] == modality and not any("trained on" in w for w in doc["warnings"])


def test_the_model_finds_the_planted_microbleeds(predicted):
    modality, planted, doc = predicted
    kept = [c for c in doc["candidates"] if c["kept"]]
    for size, centre in planted.items():
        dist = [np.linalg.norm(np.asarray(c["center_ras"]) - centre) for c in kept]
        assert dist and min(dist) <= 3.0, (modality, size, kept)
    assert len(kept) <= len(planted) + 2  # the planted microbleeds and at most two false alarms in this crop
