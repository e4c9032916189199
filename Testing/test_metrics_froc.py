"""FROC curves: the VALDO rule at every threshold, the operating point, the picture."""

from __future__ import annotations

import numpy as np
import pytest

from plkd.metrics import FrocCurve, FrocSubject, evaluate_subject, froc_curve, froc_subject, plot_froc

REFS = np.array([[0.0, 0.0, 0.0], [30.0, 0.0, 0.0]])


def one_subject() -> FrocSubject:
    centres = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 50.0], [30.0, 0, 3.0]])
    probs = np.array([0.9, 0.8, 0.7, 0.3])  # TP, second pick of reference 1 (FP), far (FP), reference 2 (TP)
    return FrocSubject(centres, probs, REFS)


def test_curve_points_and_operating_points() -> None:
    curve = froc_curve({"s1": one_subject()})
    assert curve.n_references == 2 and curve.n_subjects == 1
    assert curve.sensitivity.tolist() == [0.0, 0.5, 0.5, 0.5, 1.0]
    assert curve.fp_per_subject.tolist() == [0.0, 0.0, 1.0, 2.0, 2.0]
    assert curve.thresholds[1:].tolist() == [0.9, 0.8, 0.7, 0.3]
    assert curve.sensitivity_at(0.5) == 0.5
    assert curve.sensitivity_at(2) == 1.0
    d = curve.to_dict()
    assert d["sensitivity_at_fp"] == {"1": 0.5, "2": 1.0, "4": 1.0}
    assert d["probability_range"] == [0.3, 0.9]  # the curve spans every candidate
    back = FrocCurve.from_dict(d)
    np.testing.assert_array_equal(back.sensitivity, curve.sensitivity)


def test_matching_is_the_valdo_rule_not_greedy_by_probability() -> None:
    # A less probable detection nearer the reference takes it over (VALDO); a greedy matcher
    # by probability would have kept the first and called the second a FP: same counts here,
    # but the TP moves, and a reference is never counted twice.
    s = FrocSubject(np.array([[2.0, 0, 0], [1.0, 0, 0]]), np.array([0.9, 0.5]), np.zeros((1, 3)))
    curve = froc_curve({"s": s})
    assert curve.sensitivity.tolist() == [0.0, 1.0, 1.0]
    assert curve.fp_per_subject.tolist() == [0.0, 0.0, 1.0]
    # A detection between two references picks the nearer one only (not an optimal assignment).
    s = FrocSubject(np.array([[3.0, 0, 0], [3.5, 0, 0]]), np.array([0.9, 0.8]), np.array([[0.0, 0, 0], [4.0, 0, 0]]))
    assert froc_curve({"s": s}).sensitivity.tolist() == [0.0, 0.5, 0.5]


def test_fp_per_subject_divides_by_subjects_and_ties_share_a_point() -> None:
    empty = FrocSubject(np.array([[5.0, 5, 5], [9.0, 9, 9]]), np.array([0.6, 0.6]), np.zeros((0, 3)))
    curve = froc_curve({"s1": one_subject(), "s2": empty})
    assert curve.n_subjects == 2 and curve.n_references == 2
    assert curve.thresholds[1:].tolist() == [0.9, 0.8, 0.7, 0.6, 0.3]
    assert curve.fp_per_subject.tolist() == [0.0, 0.0, 0.5, 1.0, 2.0, 2.0]
    assert curve.sensitivity.tolist() == [0.0, 0.5, 0.5, 0.5, 0.5, 1.0]


def test_froc_subject_passes_through_the_pooled_operating_point() -> None:
    """Issue 15: FROC at the applied threshold = the pooled table (same detections, same rule)."""
    shape, zooms = (24, 24, 12), (1.0, 1.0, 3.0)
    affine = np.diag([-1.0, -1.0, 3.0, 1.0])  # LPS-like voxel axes: RAS centres must be converted
    ref = np.zeros(shape, np.uint8)
    ref[5, 5, 5] = ref[18, 18, 5] = ref[5, 18, 2] = 1
    pred = np.zeros(shape, np.int16)
    pred[5, 5, 5] = 3  # kept, label 3 (id 1: ids and labels differ on purpose)
    pred[12, 12, 9] = 1  # kept false positive, label 1
    pred[18, 18, 5] = 2  # kept, label 2
    to_ras = lambda v: (affine[:3, :3] @ np.asarray(v, float) + affine[:3, 3]).tolist()  # noqa: E731
    cands = [
        {"id": 1, "label": 3, "center_ras": to_ras((5, 5, 5)), "probability": 0.95, "kept": True},
        {"id": 2, "label": 1, "center_ras": to_ras((12, 12, 9)), "probability": 0.7, "kept": True},
        {"id": 3, "label": 2, "center_ras": to_ras((18, 18, 5)), "probability": 0.6, "kept": True},
        {"id": 4, "label": 0, "center_ras": to_ras((5, 18, 2)), "probability": 0.3, "kept": False,
         "reason": "below threshold"},
        {"id": 5, "label": 0, "center_ras": to_ras((5, 5, 6)), "probability": 0.9, "kept": False,
         "reason": "duplicate", "merged_into": 1},
    ]  # fmt: skip
    subject, unexplained = froc_subject(pred, ref, zooms, affine, cands)
    assert unexplained == 0
    assert sorted(subject.probabilities.tolist()) == [0.3, 0.6, 0.7, 0.95]  # the duplicate is not a detection
    table = evaluate_subject(pred, ref, zooms)
    op = {"sensitivity": table["TPR"], "fp_per_subject": table["FP"], "thresholds": [0.5]}
    curve = froc_curve({"s": subject}, operating_point=op)
    at_applied = curve.thresholds == 0.6  # the lowest kept probability: every kept candidate in
    assert curve.sensitivity[at_applied][0] == pytest.approx(table["TPR"]) == pytest.approx(2 / 3)
    assert curve.fp_per_subject[at_applied][0] == table["FP"] == 1
    assert curve.sensitivity_at(1.0) >= table["TPR"]  # never contradicts the pooled point
    assert curve.sensitivity.tolist() == pytest.approx([0.0, 1 / 3, 1 / 3, 2 / 3, 1.0])  # down to p = 0.3
    assert curve.to_dict()["operating_point"] == op


def test_plot_with_few_points_draws_markers_and_the_operating_point(tmp_path) -> None:
    import matplotlib.image as mpimg

    curve = froc_curve(
        {"s1": FrocSubject(np.array([[0.0, 0, 0]]), np.array([0.9]), REFS)},
        operating_point={"sensitivity": 0.5, "fp_per_subject": 0.0, "thresholds": [0.5]},
    )
    out = plot_froc({"x4": curve}, tmp_path / "f" / "froc.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rgb = mpimg.imread(out)[..., :3]
    # Not an empty plot: coloured (non-grey) pixels from the markers, the line and the star.
    colourful = np.ptp(rgb, axis=-1) > 0.25
    assert colourful.sum() > 150
    b = froc_curve({"s1": one_subject()})
    plot_froc({"x1": b, "x4": curve}, tmp_path / "two.png")


def test_no_subject_is_an_error() -> None:
    from plkd.errors import InputError

    with pytest.raises(InputError):
        froc_curve({})


def test_every_point_equals_the_valdo_rule_applied_at_that_threshold() -> None:
    from plkd.metrics import valdo_match

    rng = np.random.default_rng(0)
    subjects = {}
    for s in range(8):
        n = int(rng.integers(0, 15))
        subjects[str(s)] = FrocSubject(
            rng.uniform(0, 40, (n, 3)), np.round(rng.random(n), 1), rng.uniform(0, 40, (int(rng.integers(0, 5)), 3))
        )
    curve = froc_curve(subjects)
    for t, sens, fp in zip(curve.thresholds, curve.sensitivity, curve.fp_per_subject, strict=True):
        matches = [
            valdo_match(x.candidate_centres[x.probabilities >= t], x.reference_centres) for x in subjects.values()
        ]
        assert fp == pytest.approx(sum(m.is_fp.sum() for m in matches) / 8)
        assert sens * curve.n_references == pytest.approx(sum(m.detected.sum() for m in matches))
    assert np.all(np.diff(curve.sensitivity) >= 0) and np.all(np.diff(curve.fp_per_subject) >= 0)


def test_a_binary_mask_takes_each_microbleeds_probability_from_the_candidate_centred_in_it() -> None:
    # Both microbleeds hold 1 (a binary mask, not plkd's instance labels): value 1 named candidate 1, so both
    # appeared at its 0.9 and the curve showed 100 % sensitivity at 0.7 where only one was present.
    shape, affine = (30, 30, 30), np.eye(4)
    ref = np.zeros(shape, np.uint8)
    ref[5, 5, 5] = ref[20, 20, 20] = 1
    cands = [
        {"id": 1, "label": 1, "center_ras": [5.0, 5.0, 5.0], "probability": 0.9, "kept": True},
        {"id": 2, "label": 2, "center_ras": [20.0, 20.0, 20.0], "probability": 0.6, "kept": True},
    ]
    subject, unexplained = froc_subject(ref.copy(), ref, (1, 1, 1), affine, cands)
    assert subject.probabilities.tolist() == [0.9, 0.6] and unexplained == 0
    assert froc_curve({"s": subject}).sensitivity.tolist() == [0.0, 0.5, 1.0]
    # plkd's instance map of the same microbleeds gives the same probabilities.
    labels = ref.astype(np.int16)
    labels[20, 20, 20] = 2
    assert froc_subject(labels, ref, (1, 1, 1), affine, cands)[0].probabilities.tolist() == [0.9, 0.6]


def test_a_cv_folds_froc_keeps_rounded_probabilities_on_their_side_of_the_applied_threshold(tmp_path, monkeypatch):
    """plkd cv's FROC passes through its fold's pooled point, as plkd evaluate's does: candidates are written with 4
    decimals, so one rejected at 0.49996 reads 0.5, and at the 0.5 point the curve counted it as kept (1 false
    positive where the table says 0)."""
    from training_toydata import write_toy_dataset

    from plkd.data.datasets import find_subjects, load_subject
    from plkd.inference import predictor as predictor_module
    from plkd.inference.predictor import PredictionResult
    from plkd.metrics.components import binarise_reference, find_components
    from plkd.training import crossval

    data = write_toy_dataset(tmp_path / "toy", n_subjects=1)
    label = load_subject(find_subjects(data)[0])[1]
    first = find_components(binarise_reference(label.data)).labels == 1  # one of its three microbleeds

    class FakePredictor:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def predict(self, volume, mask, lr_factor=None) -> PredictionResult:
            centre = (label.affine[:3, :3] @ np.argwhere(first).mean(axis=0) + label.affine[:3, 3]).tolist()
            far = (label.affine[:3, :3] @ np.array([2.0, 2.0, 2.0]) + label.affine[:3, 3]).tolist()
            cands = [
                {"id": 1, "label": 1, "center_ras": centre, "probability": 0.5, "kept": True, "reason": "kept"},
                {"id": 2, "label": 0, "center_ras": far, "probability": 0.5, "kept": False,
                 "reason": "below threshold"},  # 0.49996, written 0.5
            ]  # fmt: skip
            return PredictionResult(
                label_map=first.astype(np.int16),
                affine=label.affine,
                candidates=cands,
                student="teacher",
                lr_factor=1.0,
                timings={},
                thresholds={"screening": 0.5, "segmentation": 0.5},
            )

    monkeypatch.setattr(predictor_module, "Predictor", FakePredictor)
    fold = crossval.evaluate_fold(tmp_path / "bundle", data, ["sub-0001"], 1, "cpu")
    assert fold["pooled"]["TPR"] == pytest.approx(1 / 3) and fold["pooled"]["FP"] == 0
    curve = FrocCurve.from_dict(fold["froc"])
    points = list(zip(curve.sensitivity.tolist(), curve.fp_per_subject.tolist(), strict=True))
    assert (pytest.approx(1 / 3), 0.0) in points  # the operating point is on the curve
    assert curve.sensitivity_at(0.0) == pytest.approx(1 / 3)


SHAPE = (48, 48, 40)


def _ball(centre: tuple[int, int, int], radius: float) -> np.ndarray:
    grid = np.indices(SHAPE).reshape(3, -1).T
    return grid[np.linalg.norm(grid - np.asarray(centre), axis=1) <= radius]


def _predict(monkeypatch: pytest.MonkeyPatch, masks: dict, threshold: float):  # noqa: ANN202
    """``plkd predict`` at a segmentation ``threshold`` on a 1 mm noise image whose candidates (positions) and the
    segmenter's outcome for each (:class:`PatchResult`) are ``masks``: the stitching, the JSON and the label map are
    predict's own."""
    from pathlib import Path

    from plkd.bundle import load_bundle
    from plkd.inference import Predictor
    from plkd.inference.candidates import Candidate
    from plkd.volumes import Volume

    image = 1000.0 * (1.0 + 0.03 * np.random.default_rng(0).standard_normal(SHAPE))
    predictor = Predictor(
        load_bundle(Path(__file__).resolve().parents[1] / "PLKDTraining" / "plkd" / "bundled" / "cmb-t2s"),
        device="cpu",
        thresholds={"segmentation": threshold},
        locate=False,
        progress="none",
    )

    def screen(prep, *_args):  # noqa: ANN001, ANN202
        return [Candidate(np.asarray(p, dtype=np.float64), 0.9) for p in masks], False

    def segment(name, prep, positions, prob_model, thr):  # noqa: ANN001, ANN202
        return [masks[tuple(int(v) for v in np.round(p))] for p in positions]

    monkeypatch.setattr(predictor, "_screen", screen)
    monkeypatch.setattr(predictor, "_segment", segment)
    volume = Volume(image.astype(np.float32), np.eye(4))
    return predictor.predict(volume, Volume(np.ones(SHAPE, dtype=np.uint8), np.eye(4)))


def test_below_the_threshold_the_curve_merges_duplicates_as_predict_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """The curve's points below the applied threshold follow the operating point's rule: a rejected candidate whose
    outline overlaps a stronger one is the same microbleed seen twice (a duplicate), not a second detection, and one
    without any voxel above the voxel threshold is kept at no probability threshold. Before, every candidate
    rejected for its probability was added as a detection, so the curve said 1 FP/subject and every microbleed found
    at a threshold where ``plkd predict`` itself keeps no false positive and misses one."""
    from plkd.inference.segmentation import PatchResult

    r1, r2, r3 = (14, 24, 20), (34, 24, 20), (24, 38, 20)
    truth = np.zeros(SHAPE, np.uint8)
    for r in (r1, r2, r3):
        truth[tuple(_ball(r, 1.5).T)] = 1
    masks = {
        r1: PatchResult(0.9, _ball(r1, 1.5), 0.9),  # kept at 0.5
        (16, 24, 20): PatchResult(0.3, _ball((16, 24, 20), 1.5), 0.9),  # overlaps it: a duplicate at 0.3
        r2: PatchResult(0.25, _ball(r2, 1.5), 0.9),  # the second microbleed, found from 0.25 down
        r3: PatchResult(0.2, np.zeros((0, 3), dtype=int), 0.1),  # the third: the segmenter outlines nothing there
    }

    at_half, at_low = _predict(monkeypatch, masks, 0.5), _predict(monkeypatch, masks, 0.2)
    low = evaluate_subject(at_low.label_map, truth, (1.0, 1.0, 1.0))
    assert (low["TP"], low["FP"], low["FN"]) == (2, 0, 1)  # predict at 0.2 keeps two microbleeds, no false positive
    subject, _ = froc_subject(at_half.label_map, truth, (1.0, 1.0, 1.0), np.eye(4), at_half.candidates, applied=0.5)
    curve = froc_curve({"s": subject})
    point = curve.thresholds == curve.thresholds[np.isfinite(curve.thresholds)].min()  # the lowest: 0.25 now
    assert curve.sensitivity[point][0] == pytest.approx(low["TPR"]) == pytest.approx(2 / 3)  # (was 3 of 3)
    assert curve.fp_per_subject[point][0] == low["FP"] == 0  # the duplicate is no false positive (was 1)
    assert curve.fp_per_subject.max() == 0  # at no threshold
    lowered = {c["probability"]: c.get("if_threshold_lowered") for c in at_half.candidates}
    empty = "no voxel above the voxel threshold near the centre"
    assert lowered == {0.9: None, 0.3: "duplicate", 0.25: "kept", 0.2: empty}  # in the JSON of the run at 0.5
    # A JSON of an older predict does not say it: each is counted, and evaluate says so in a note.
    older = [{k: v for k, v in c.items() if k != "if_threshold_lowered"} for c in at_half.candidates]
    subject, _ = froc_subject(at_half.label_map, truth, (1.0, 1.0, 1.0), np.eye(4), older, applied=0.5)
    assert subject.unmerged == 3 and froc_curve({"s": subject}).fp_per_subject.max() == 1


def test_below_the_threshold_a_candidate_stands_where_its_outline_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """A candidate below the threshold is placed where ``plkd predict`` would put its microbleed, the centre of its
    outline (the label map's component at the operating point), not the screening position it was found at, which
    can lie 4 mm and more beside it: placed there, a microbleed predict finds at that threshold was a miss and a
    false positive on the curve."""
    from plkd.inference.segmentation import PatchResult

    r1, r2 = (14, 24, 20), (30, 24, 20)
    truth = np.zeros(SHAPE, np.uint8)
    for r in (r1, r2):
        truth[tuple(_ball(r, 1.5).T)] = 1
    beside = (30, 19, 20)  # screening found it 5 mm from r2; the segmenter outlines r2 itself (within 4 mm of it)
    masks = {r1: PatchResult(0.9, _ball(r1, 1.5), 0.9), beside: PatchResult(0.3, _ball(r2, 1.5), 0.9)}
    at_half, at_low = _predict(monkeypatch, masks, 0.5), _predict(monkeypatch, masks, 0.3)
    low = evaluate_subject(at_low.label_map, truth, (1.0, 1.0, 1.0))
    assert (low["TP"], low["FP"]) == (2, 0)  # predict at 0.3 finds both
    subject, _ = froc_subject(at_half.label_map, truth, (1.0, 1.0, 1.0), np.eye(4), at_half.candidates, applied=0.5)
    curve = froc_curve({"s": subject})
    assert curve.sensitivity[-1] == pytest.approx(low["TPR"]) == 1.0  # was 0.5
    assert curve.fp_per_subject[-1] == low["FP"] == 0  # was 1
