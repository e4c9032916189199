"""The shipped T2* and SWI models: under --modality auto each contrast goes to its own model, which finds
the microbleeds planted in a small synthetic brain of that contrast; SWI on 4 mm slices goes to the T2* model,
as the SWI bundle's manifest says (``thick_slices``), which finds them there."""

from __future__ import annotations

import json

import numpy as np
import pytest
from planted_microbleeds import brain_with_microbleeds

from plkd.bundle import find_default_bundle
from plkd.cli import main
from plkd.lowres import thick_slab_volume
from plkd.volumes import Volume, save_volume

#: Per case: the contrast, the file name a user would have (its BIDS suffix tells the contrast), the seed, the
#: slice thickness (mm), the contrast of the model expected to read it and the false alarms allowed in the crop
#: (thick SWI: veins blur into dots; the T2* model gives 1.5 per whole brain on 4 mm SWI validation slabs, and the
#: SWI model on this case misses the 6 mm microbleed, p 0.015).
CASES = {
    "T2S": ("T2S", "sub-01_T2starw.nii.gz", 2024, 1.0, "T2S", 2),
    "SWI": ("SWI", "sub-02_swi.nii.gz", 2025, 1.0, "SWI", 2),
    "SWI 4 mm": ("SWI", "sub-03_swi.nii.gz", 2026, 4.0, "T2S", 3),
}


@pytest.fixture(scope="module", params=list(CASES))
def predicted(request, tmp_path_factory):
    """``(case, planted centres, output JSON)`` of ``plkd predict`` (no --model, --modality auto)."""
    modality, name, seed, slice_mm, _, _ = CASES[request.param]
    image, mask, planted = brain_with_microbleeds(seed, {"4 mm": 4.0, "6 mm": 6.0}, modality=modality)
    if slice_mm > 1.0:  # true thick slices across the axial axis, the brain mask on the same grid
        image = thick_slab_volume(image, slice_mm, axis=2)
        thick = thick_slab_volume(Volume(mask.data.astype("float32"), mask.affine), slice_mm, axis=2)
        mask = Volume((thick.data >= 0.5).astype("uint8"), thick.affine)
    folder = tmp_path_factory.mktemp(request.param.replace(" ", ""))
    scan = save_volume(folder / name, image.data, image.affine)
    brain = save_volume(folder / "brain_mask.nii.gz", mask.data, mask.affine, dtype=np.uint8)
    out = folder / "out"
    assert main(["predict", str(scan), "-o", str(out), "--mask", str(brain), "--progress", "none"]) == 0
    return request.param, planted, json.loads((out / name.replace(".nii.gz", "_cmb.json")).read_text())


def test_auto_gives_each_contrast_its_own_model(predicted):
    case, _, doc = predicted
    modality, _, _, _, model_modality, _ = CASES[case]
    installed = find_default_bundle(model_modality)
    assert installed is not None, f"no shipped {model_modality} model"
    manifest = json.loads((installed / "manifest.json").read_text())
    assert doc["model"].startswith(manifest["name"]) and manifest["modality"] == model_modality
    assert doc["modality"]["modality"] == modality and doc["modality"]["source"] == "file name"
    assert doc["modality"]["model_modality"] == model_modality and not any("trained on" in w for w in doc["warnings"])
    handed = doc["modality"]["model_reason"]
    assert (handed is not None) == (model_modality != modality), handed


def test_the_model_finds_the_planted_microbleeds(predicted):
    case, planted, doc = predicted
    kept = [c for c in doc["candidates"] if c["kept"]]
    for size, centre in planted.items():
        dist = [np.linalg.norm(np.asarray(c["center_ras"]) - centre) for c in kept]
        assert dist and min(dist) <= 3.0, (case, size, kept)
    assert len(kept) <= len(planted) + CASES[case][-1]  # the planted microbleeds and a few false alarms in this crop
