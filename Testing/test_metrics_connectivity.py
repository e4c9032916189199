"""One microbleed is one connected component with the same connectivity at every stage.

Training sampled and checked 26-connected label components while ``plkd evaluate`` counted
6-connected ones: two microbleeds touching at a corner were one positive in training and two
references in the scores. These tests build one label with microbleeds touching by a corner, an
edge and a face and count it the way each stage does.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from plkd.inference.segmentation import select_component
from plkd.metrics import evaluate_paths, evaluate_subject, froc_subject
from plkd.metrics.components import find_components
from plkd.training.label_checks import microbleed_contrasts
from plkd.training.sampling import label_centres, label_on_grid
from plkd.tuning import truth_microbleeds
from plkd.volumes import Volume

SHAPE = (24, 24, 24)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])
#: Hand count under 26-connectivity: a corner pair, an edge pair, a face pair, an isolated voxel -> 4
#: microbleeds (under 6-connectivity the corner and edge pairs split: 6).
EXPECTED = 4


def touching_label() -> np.ndarray:
    label = np.zeros(SHAPE, dtype=np.uint8)
    for p in [(4, 4, 4), (5, 5, 5)]:  # corner
        label[p] = 1
    for p in [(12, 4, 4), (13, 5, 4)]:  # edge
        label[p] = 1
    for p in [(4, 12, 4), (4, 12, 5)]:  # face
        label[p] = 1
    label[18, 18, 18] = 1  # alone
    return label


def test_the_project_counts_microbleeds_with_26_connectivity() -> None:
    from plkd.metrics.components import CONNECTIVITY, label_components

    assert CONNECTIVITY == 26
    assert label_components(touching_label())[1] == EXPECTED
    assert find_components(touching_label() > 0).n == EXPECTED


def test_training_tuning_and_evaluation_count_the_same_microbleeds(tmp_path: Path) -> None:
    label = touching_label()
    vol = Volume(data=label.astype(np.float32), affine=AFFINE)
    # Training: one positive per microbleed, on the label's own grid and on another (finer) grid.
    assert len(label_centres(label)) == EXPECTED
    assert len(label_on_grid(vol, AFFINE, SHAPE)[1]) == EXPECTED
    fine = np.diag([0.5, 0.5, 0.5, 1.0])
    assert len(label_on_grid(vol, fine, tuple(2 * s for s in SHAPE))[1]) == EXPECTED
    # Training's label check: one contrast per microbleed.
    image = np.ones(SHAPE, dtype=np.float32)
    assert len(microbleed_contrasts(image, np.ones(SHAPE, dtype=bool), label)) == EXPECTED
    # Tuning: the reference microbleeds candidates are calibrated against.
    assert len(truth_microbleeds(vol)) == EXPECTED
    # Evaluation, in memory and through files.
    r = evaluate_subject(label, label, (1.0, 1.0, 1.0))
    assert (r["n_reference"], r["n_predicted"], r["TP"], r["FP"], r["FN"]) == (EXPECTED, EXPECTED, EXPECTED, 0, 0)
    nib.Nifti1Image(label, AFFINE).to_filename(str(tmp_path / "sub-01_label.nii.gz"))
    (tmp_path / "pred").mkdir()
    nib.Nifti1Image(label, AFFINE).to_filename(str(tmp_path / "pred" / "sub-01_seg.nii.gz"))
    out = evaluate_paths(tmp_path / "pred" / "sub-01_seg.nii.gz", tmp_path / "sub-01_label.nii.gz", froc=False)
    assert out["subjects"]["sub-01"]["n_reference"] == EXPECTED
    assert out["settings"]["connectivity"] == 26
    # FROC: the references of the curve.
    froc, _ = froc_subject(label, label, (1.0, 1.0, 1.0), AFFINE, [])
    assert len(froc.reference_centres) == EXPECTED


def test_a_candidate_outline_is_one_microbleed_as_evaluation_counts_it() -> None:
    # plkd predict outlines a candidate as the component of its centre: a voxel touching it at a corner
    # belongs to it, as evaluation would merge the two anyway.
    prob = np.zeros((9, 9, 9), dtype=np.float32)
    prob[4, 4, 4] = prob[5, 5, 5] = 0.9
    mask = select_component(prob, np.array([4.0, 4.0, 4.0]), 0.5, np.ones(3), 4.0)
    assert int(mask.sum()) == 2


def test_microbleeds_touching_on_a_thick_input_grid_are_one_in_the_json_too() -> None:
    # Two one-voxel microbleeds 4 mm apart along the slices are apart on the 1 mm model grid but fall in
    # neighbouring 4 mm slices of the input, touching: plkd evaluate counts one microbleed, and the JSON listed
    # two kept candidates. Now the weaker one is a duplicate merged into the stronger.
    from plkd.inference import Predictor
    from plkd.inference.candidates import Candidate
    from plkd.inference.preprocess import prepare
    from plkd.inference.segmentation import PatchResult, StitchedCandidate

    predictor = Predictor(Path(__file__).parent / "data" / "tiny-bundle", device="cpu", locate=False)
    affine = np.diag([1.0, 1.0, 4.0, 1.0])
    shape = (24, 24, 8)
    vol = Volume(data=np.ones(shape, np.float32), affine=affine)
    prep = prepare(vol, np.ones(shape, dtype=bool), np.ones(3))
    inv = np.linalg.inv(prep.affine)
    a, b = (np.round(inv[:3, :3] @ np.array([0.0, 0.0, z]) + inv[:3, 3]).astype(int) for z in (0.0, 4.0))
    labels_model = np.zeros(prep.data.shape, dtype=np.int32)
    labels_model[tuple(a)], labels_model[tuple(b)] = 1, 2
    assert find_components(labels_model > 0).n == 2  # apart on the model grid
    out = predictor._finish(
        vol,
        prep,
        "teacher",
        1.0,
        [Candidate(a.astype(float), 0.9), Candidate(b.astype(float), 0.8)],
        [a.astype(float), b.astype(float)],
        [PatchResult(0.9, a[None], 0.9, 2.0), PatchResult(0.8, b[None], 0.8, 1.0)],
        [StitchedCandidate(1, "kept"), StitchedCandidate(2, "kept")],
        labels_model,
        None,
        [],
    )
    kept = [c for c in out.candidates if c["kept"]]
    assert len(kept) == 1 == find_components(out.label_map > 0).n == int(out.label_map.max())
    weaker = out.candidates[1]
    assert (weaker["label"], weaker["reason"], weaker["merged_into"]) == (0, "duplicate", 1)
    assert any("touching a stronger one" in n for n in out.notes)
