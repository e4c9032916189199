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


@pytest.mark.parametrize("modality", ["T2S", "SWI"])
def test_auto_gives_each_contrast_its_model_and_the_model_finds_the_microbleeds(tmp_path, modality):
    installed = find_default_bundle(modality)
    assert installed is not None, f"no shipped {modality} model"
    name, seed = CASES[modality]
    image, mask, planted = brain_with_microbleeds(seed, {"a": 4.0, "b": 6.0}, modality=modality)
    scan = save_volume(tmp_path / name, image.data, image.affine)
    brain = save_volume(tmp_path / "brain_mask.nii.gz", mask.data, mask.affine, dtype=np.uint8)
    out = tmp_path / "out"
    assert main(["predict", str(scan), "-o", str(out), "--mask", str(brain), "--progress", "none"]) == 0
    doc = json.loads((out / name.replace(".nii.gz", "_cmb.json")).read_text())
    manifest = json.loads((installed / "manifest.json").read_text())
    assert doc["model"].startswith(manifest["name"]) and manifest["modality"] == modality
    assert doc["modality"]["modality"] == modality and doc["modality"]["source"] == "file name"
    kept = [c for c in doc["candidates"] if c["kept"]]
    for centre in planted.values():
        assert min(np.linalg.norm(np.asarray(c["center_ras"]) - centre) for c in kept) <= 3.0, (modality, kept)
    assert len(kept) <= len(planted) + 2  # the planted microbleeds and at most two false alarms in this crop
