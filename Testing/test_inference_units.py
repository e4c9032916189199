"""Unit tests of the inference building blocks: tiling, candidates, stitching, masks, geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plkd.errors import InputError
from plkd.inference.brainmask import compute_brain_mask, resolve_brain_mask
from plkd.inference.candidates import find_candidates, mask_on_score_grid, non_maximum_suppression
from plkd.inference.device import DeviceState, resolve_device
from plkd.inference.preprocess import effective_lr_factor, prepare
from plkd.inference.screening import score_map
from plkd.inference.segmentation import PatchResult, extract_patch, merge_touching_labels, select_component, stitch
from plkd.metrics.components import find_components
from plkd.models import ScreeningFCN
from plkd.volumes import Volume


def test_tiled_screening_equals_whole_volume(rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    net = ScreeningFCN(width=4).eval()
    data = rng.normal(size=(61, 50, 37)).astype(np.float32)
    state = DeviceState(torch.device("cpu"), 4)
    whole = score_map(net, data, state, tile=(256, 256, 256))
    tiled = score_map(net, data, state, tile=(40, 36, 30), margin=12)
    assert whole.shape == (31, 25, 19)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_candidates_are_local_maxima_with_suppression() -> None:
    scores = np.zeros((20, 20, 20), dtype=np.float32)
    scores[5, 5, 5] = 0.9
    scores[6, 5, 5] = 0.8  # neighbour of the first: not a local maximum
    scores[5, 7, 5] = 0.85  # a local maximum 2 voxels (4 mm at stride 2) away: suppressed within 5 mm
    scores[15, 15, 15] = 0.7
    scores[10, 10, 10] = 0.3  # below threshold
    cands, capped = find_candidates(scores, lambda idx: idx * 2.0, np.ones(3), 0.5, 5.0)
    assert [tuple(c.position) for c in cands] == [(10, 10, 10), (30, 30, 30)]
    assert [round(c.score, 2) for c in cands] == [0.9, 0.7]
    assert not capped
    cands, capped = find_candidates(scores, lambda idx: idx * 2.0, np.ones(3), 0.5, 5.0, max_candidates=1)
    assert len(cands) == 1 and capped


def test_nms_keeps_distant_points() -> None:
    pts = np.array([[0, 0, 0], [3, 0, 0], [5, 0, 0], [0, 9, 0]], dtype=float)
    assert non_maximum_suppression(pts, 4.0, 10) == [0, 2, 3]


def test_mask_on_score_grid_any_voxel() -> None:
    mask = np.zeros((5, 4, 4), dtype=bool)
    mask[4, 3, 0] = True
    m = mask_on_score_grid(mask, np.array([2, 2, 2]))
    assert m.shape == (3, 2, 2)
    assert m[2, 1, 0] and m.sum() == 1


def test_extract_patch_pads_outside() -> None:
    data = np.arange(4 * 4 * 4, dtype=np.float32).reshape(4, 4, 4) + 1
    patch = extract_patch(data, np.array([-2, -2, -2]), (4, 4, 4))
    assert patch[2, 2, 2] == data[0, 0, 0]
    assert patch[0, 0, 0] == 0 and patch[1, 3, 3] == 0
    assert np.count_nonzero(patch) == 8


def test_select_component_prefers_centre_then_nearest() -> None:
    prob = np.zeros((20, 20, 10), dtype=np.float32)
    prob[9:11, 9:11, 4:6] = 0.9  # at the centre
    prob[2:4, 2:4, 4:6] = 0.9  # far away
    comp = select_component(prob, np.array([10.0, 10.0, 5.0]), 0.5, np.ones(3), 4.0)
    assert comp.sum() == 8 and comp[9, 9, 4]
    comp = select_component(prob, np.array([13.0, 10.0, 5.0]), 0.5, np.ones(3), 4.0)  # 3 mm off: nearest
    assert comp.sum() == 8 and comp[10, 10, 5]
    comp = select_component(prob, np.array([17.0, 17.0, 5.0]), 0.5, np.ones(3), 4.0)  # nothing within 4 mm
    assert not comp.any()


def test_stitch_merges_duplicates_and_rejects_low_probability() -> None:
    a = np.array([[1, 1, 1], [1, 1, 2]])
    b = np.array([[1, 1, 2], [1, 1, 3]])  # overlaps a: same microbleed
    c = np.array([[5, 5, 5]])
    results = [
        PatchResult(0.7, b, 0.9),
        PatchResult(0.9, a, 0.9),
        PatchResult(0.2, c, 0.9),
        PatchResult(0.8, c[:0], 0.1),
    ]
    labels, fate = stitch(results, (8, 8, 8), 0.5)
    assert labels.max() == 1 and np.count_nonzero(labels) == 3  # a ∪ b
    assert fate[1].label == 1 and fate[1].reason == "kept"
    assert fate[0].label == 0 and fate[0].reason == "duplicate" and fate[0].merged_into == 1
    assert fate[2].reason == "below threshold"
    assert fate[3].label == 0 and "no voxel" in fate[3].reason


def test_stitch_merges_a_candidate_touching_a_kept_one_at_a_corner() -> None:
    # Two kept candidates whose outlines touch (no shared voxel) are one component for plkd evaluate; the
    # label map held them as labels 1 and 2 and the JSON said 2 microbleeds where evaluation counted 1.
    a = np.array([[2, 2, 2]])
    b = np.array([[3, 3, 3]])  # corner neighbour of a
    c = np.array([[6, 6, 6]])  # apart
    labels, fate = stitch(
        [PatchResult(0.9, a, 0.9), PatchResult(0.8, b, 0.9), PatchResult(0.7, c, 0.9)], (8, 8, 8), 0.5
    )
    kept = [f for f in fate if f.reason == "kept"]
    assert len(kept) == 2 == find_components(labels > 0).n
    assert fate[1].reason == "duplicate" and fate[1].merged_into == 0 and labels[3, 3, 3] == 1


def test_labels_touching_on_the_input_grid_merge_into_the_strongest() -> None:
    # On 4 mm slices two microbleeds 2 mm apart land in neighbouring slices: labels 2 and 3 touch at a
    # corner and would be one microbleed for plkd evaluate; label 1 stands apart, label 4 touches 2 by a face.
    labels = np.zeros((8, 8, 8), dtype=np.int16)
    labels[1, 1, 1] = 1
    labels[4, 4, 4], labels[5, 5, 5], labels[4, 4, 3] = 2, 3, 4
    merged, survivor, renumber = merge_touching_labels(labels)
    assert survivor == {1: 1, 2: 2, 3: 2, 4: 2} and renumber == {1: 1, 2: 2}
    assert merged[5, 5, 5] == merged[4, 4, 3] == merged[4, 4, 4] == 2 and merged[1, 1, 1] == 1
    assert find_components(merged > 0).n == int(merged.max()) == 2
    empty, survivor, renumber = merge_touching_labels(np.zeros((3, 3, 3), dtype=np.int16))
    assert not empty.any() and survivor == {} and renumber == {}


def test_brain_mask_nonzero_region_and_fallback(rng: np.random.Generator) -> None:
    grid = np.indices((40, 40, 30)).astype(float)
    inside = ((grid[0] - 20) / 14) ** 2 + ((grid[1] - 20) / 14) ** 2 + ((grid[2] - 15) / 10) ** 2 <= 1
    stripped = np.where(inside, 100 + rng.normal(0, 5, inside.shape), 0).astype(np.float32)
    mask, note = compute_brain_mask(Volume(stripped, np.eye(4)))
    assert "non-zero" in note and np.array_equal(mask, inside)
    raw = (stripped + 10 + rng.normal(0, 2, inside.shape)).astype(np.float32)  # no exact zeros
    mask, note = compute_brain_mask(Volume(raw, np.eye(4)))
    assert "fallback" in note
    dice = 2 * np.sum(mask & inside) / (mask.sum() + inside.sum())
    assert dice > 0.9


def test_given_mask_must_match_and_be_non_empty() -> None:
    vol = Volume(np.ones((8, 8, 8), dtype=np.float32), np.eye(4))
    with pytest.raises(InputError, match="empty"):
        resolve_brain_mask(vol, Volume(np.zeros((8, 8, 8), dtype=np.float32), np.eye(4)))
    with pytest.raises(InputError, match="does not lie on the image.s grid"):
        resolve_brain_mask(vol, Volume(np.ones((8, 8, 7), dtype=np.float32), np.eye(4)))


def test_prepare_moves_slice_axis_last_and_keeps_world_coordinates(rng: np.random.Generator) -> None:
    affine = np.array([[0.0, 0.0, -1.0, 10.0], [3.0, 0.0, 0.0, -5.0], [0.0, 1.0, 0.0, 2.0], [0, 0, 0, 1]])
    data = rng.normal(10, 1, size=(12, 30, 30)).astype(np.float32)
    prep = prepare(Volume(data, affine), np.ones(data.shape, dtype=bool), np.ones(3))
    # Input axes point to A (3 mm slices), S and L: the networks get R, S and the slice axis A last.
    assert prep.permutation == (2, 1, 0)
    np.testing.assert_array_equal(np.argmax(np.abs(prep.affine[:3, :3]), axis=0), [0, 2, 1])
    assert np.all(prep.affine[:3, :3][[0, 2, 1], [0, 1, 2]] > 0)
    assert round(prep.lr_factor, 6) == 3.0
    np.testing.assert_allclose(prep.spacing, 1.0)
    # The model grid covers the input's field of view: the same lowest corner in world coordinates.
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in (12, 30, 30)])).reshape(3, -1).T
    corners_in = corners @ affine[:3, :3].T + affine[:3, 3]
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in prep.data.shape])).reshape(3, -1).T
    corners_model = corners @ prep.affine[:3, :3].T + prep.affine[:3, 3]
    np.testing.assert_allclose(corners_model.min(axis=0), corners_in.min(axis=0), atol=1e-6)
    assert prep.data.shape == (30, 30, 36)


def test_the_networks_see_one_scan_alike_however_the_file_stores_it(rng: np.random.Generator) -> None:
    # Stored RAS, LPS (i and j reversed, as DICOM converters often write) or in sagittal order: the same
    # voxels in the world. The networks are not flip-invariant, so an unchanged storage order gave
    # different microbleeds for one scan.
    data = rng.normal(100, 10, size=(20, 22, 8)).astype(np.float32)
    data[5:8, 6:9, 3:5] = 20.0
    affine = np.array([[0.9, 0.0, 0.0, -9.0], [0.0, 0.9, 0.0, -10.0], [0.0, 0.0, 3.0, -12.0], [0, 0, 0, 1.0]])
    lps = affine @ np.array([[-1, 0, 0, 19], [0, -1, 0, 21], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    sagittal = affine @ np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    stored = {
        "RAS": Volume(data, affine),
        "LPS": Volume(data[::-1, ::-1].copy(), lps),
        "sagittal": Volume(np.transpose(data, (2, 1, 0)).copy(), sagittal),
    }
    preps = {k: prepare(v, np.ones(v.shape, dtype=bool), np.ones(3)) for k, v in stored.items()}
    for name, prep in preps.items():
        np.testing.assert_allclose(prep.affine, preps["RAS"].affine, atol=1e-9, err_msg=name)
        np.testing.assert_array_equal(prep.data, preps["RAS"].data, err_msg=name)


def test_unknown_or_missing_device_is_a_user_error() -> None:
    from plkd.errors import PLKDError

    with pytest.raises(PLKDError, match="unknown device"):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize(
    ("spacing", "factor"),
    [
        ((1.0, 1.0, 1.0), 1.0),
        ((0.47, 0.47, 1.0), 1.0),
        ((0.45, 0.45, 3.0), 3.0),
        ((1.0, 4.0, 1.0), 4.0),
        ((2, 2, 8), 4),
    ],
)
def test_student_factor_counts_model_grid_slices(spacing, factor):
    assert effective_lr_factor(np.diag([*spacing, 1.0]), np.ones(3)) == pytest.approx(factor)


def test_the_field_of_view_interior_measures_room_like_the_edge_rule():
    from plkd.inference.candidates import inside_field_of_view

    inside = inside_field_of_view((10, 8, 4), (1.0, 1.0, 3.0), 3.0)
    # Along x (1 mm): voxel i has min(i + 0.5, 9.5 - i) mm of image beyond it; 2.5 < 3 <= 3.5.
    assert inside[:, 4, 1].tolist() == [False, False, False, True, True, True, True, False, False, False]
    # Along z (3 mm slices): 1.5 mm and 4.5 mm of room.
    assert inside[5, 4, :].tolist() == [False, True, True, False]
    assert not inside_field_of_view((5, 5, 5), (1.0, 1.0, 1.0), 3.0).any()


def test_candidates_in_the_padding_band_come_after_all_others_and_the_cap_counts_them_last():
    from plkd.inference.candidates import Candidate, interior_first

    shape, spacing = (40, 40, 20), (1.0, 1.0, 1.0)
    edge = [Candidate(position=np.array([20.0, 20.0, 16.0 + k]), score=0.99) for k in range(3)]  # 3.5-1.5 mm room
    inside = [Candidate(position=np.array([10.0 + 5 * k, 20.0, 10.0]), score=0.6) for k in range(3)]
    ordered, capped = interior_first(edge + inside, shape, spacing, limit=4)
    assert [c.score for c in ordered] == [0.6, 0.6, 0.6, 0.99] and capped
    assert np.allclose(ordered[3].position, [20.0, 20.0, 16.0])  # the edge candidate with most room first
    assert interior_first(inside, shape, spacing, limit=4) == (inside, False)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 0.5), (1.0, 1.004, 0.5), (0.5, 1.0, 1.0), (1.0, 0.5, 1.0)])
def test_two_equally_coarse_axes_are_no_slice_axis_and_the_scan_is_not_turned(spacing) -> None:
    """A 1×1×0.5 mm scan has two equally coarse axes: the tie was broken by axis number, so x (left-right) was
    taken for the slice axis and the networks, which learnt axial brains, saw it turned on its side (a planted
    microbleed fell from p 0.88 to 0.16). Two axes whose voxel sizes agree within 1 % are no slice axis: the scan
    reaches the networks in RAS order, as an isotropic one does, however the file stores it; training turns its
    subjects by the same function."""
    from plkd.inference.preprocess import network_axes, network_slice_axis

    def smooth(points: np.ndarray) -> np.ndarray:
        x, y, z = points
        return 100.0 + 20.0 * np.sin(x / 7.0) * np.cos(y / 9.0) + 15.0 * np.sin(z / 5.0 + 1.0)

    def volume(sp, stored: str) -> Volume:
        shape = tuple(int(round(24.0 / s)) for s in sp)
        affine = np.diag([*sp, 1.0])
        affine[:3, 3] = -12.0 + 0.5 * np.asarray(sp)
        idx = np.indices(shape).reshape(3, -1).astype(np.float64)
        data = smooth(affine[:3, :3] @ idx + affine[:3, 3:4]).reshape(shape).astype(np.float32)
        if stored == "sagittal":  # array axes (A, S, R), as a sagittal acquisition is stored
            flip = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]])
            return Volume(np.ascontiguousarray(np.transpose(data, (1, 2, 0))), affine @ flip)
        return Volume(data, affine)

    for stored in ("RAS", "sagittal"):
        vol = volume(spacing, stored)
        ornt, perm, turned = network_axes(vol.affine, vol.shape)
        assert perm == [0, 1, 2], stored
        np.testing.assert_allclose(np.sign(turned[:3, :3]), np.eye(3))
        assert network_slice_axis(vol.affine) == (2 if stored == "RAS" else 1)  # the axis pointing S
        prep = prepare(vol, np.ones(vol.shape, dtype=bool), np.ones(3))
        # The untied case: the same field of view at 1 mm reaches the networks on the same grid, alike.
        iso = volume((1.0, 1.0, 1.0), stored)
        prep_iso = prepare(iso, np.ones(iso.shape, dtype=bool), np.ones(3))
        np.testing.assert_allclose(prep.affine, prep_iso.affine, atol=0.01 * max(spacing))
        assert prep.data.shape == prep_iso.data.shape
        inner = (slice(3, -3),) * 3
        assert np.corrcoef(prep.data[inner].ravel(), prep_iso.data[inner].ravel())[0, 1] > 0.99, stored
