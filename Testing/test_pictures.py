"""Pictures a radiologist reads: RAS orientation for any affine, radiological convention, rings on lesions."""

from __future__ import annotations

import numpy as np
import pytest

from plkd.display import VIEWS, Ring, draw_slice, ras_text, to_ras
from plkd.figures import pyplot

LESION_RAS = (30.0, 15.0, 0.0)  # the patient's right (R > 0), a little anterior


def centred_affine(linear: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Voxel-to-RAS affine with ``linear`` (3x3) whose volume centre is at RAS (0, 0, 0)."""
    aff = np.eye(4)
    aff[:3, :3] = linear
    aff[:3, 3] = -linear @ ((np.asarray(shape) - 1) / 2)
    return aff


def rot_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


AFFINES = {
    # LPS voxel order (DICOM-like): i runs to the patient's left, j posterior; 3 mm slices.
    "LPS": (np.diag([-1.0, -1.0, 3.0]), (80, 90, 21)),
    # Permuted axes: i -> superior (3 mm), j -> left, k -> anterior (1.5 mm).
    "permuted": (np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.5], [3.0, 0.0, 0.0]]), (20, 80, 60)),
    # Oblique: RAS rotated 12 degrees about S, thick slices.
    "oblique": (rot_z(12) @ np.diag([1.0, 1.0, 4.0]), (80, 90, 16)),
}


def volume_with_lesion(linear: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Grey background with one bright ball of 3.5 mm radius at LESION_RAS."""
    aff = centred_affine(linear, shape)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    ras = ijk @ aff[:3, :3].T + aff[:3, 3]
    data = np.full(len(ras), 0.2, dtype=np.float32)
    data[np.linalg.norm(ras - np.asarray(LESION_RAS), axis=1) <= 3.5] = 1.0
    return data.reshape(shape), aff


def render_panel(data: np.ndarray, affine: np.ndarray, view: str = "axial") -> dict:
    """Draw the slice through the lesion; returns pixels, the axes box and the ring centre in pixels."""
    plt = pyplot()
    vol = to_ras(data, affine)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    try:
        k = vol.slice_index(view, LESION_RAS)
        draw_slice(ax, vol, view, k, window=(0.0, 1.0), rings=[Ring(LESION_RAS, 6.0, "#ff0000")])
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255
        box = ax.get_window_extent()
        ring = ax.patches[0].center
        ring_px = ax.transData.transform(ring)
        height = rgb.shape[0]
    finally:
        plt.close(fig)
    white = np.all(rgb > 0.95, axis=-1)
    inside = np.zeros_like(white)  # only pixels of the panel (the figure around it is white too)
    inside[int(height - box.y1) + 2 : int(height - box.y0) - 2, int(box.x0) + 2 : int(box.x1) - 2] = True
    rows, cols = np.nonzero(white & inside)
    # Pixel rows count from the top; matplotlib's display y from the bottom.
    return {
        "blob_x": cols.mean(),
        "blob_y": height - rows.mean(),
        "box": box,
        "ring_px": ring_px,
        "n_white": (white & inside).sum(),
    }


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_patient_right_is_on_the_image_left_and_the_ring_sits_on_the_lesion(name: str) -> None:
    linear, shape = AFFINES[name]
    data, affine = volume_with_lesion(linear, shape)
    r = render_panel(data, affine)
    assert r["n_white"] > 4
    mid_x = (r["box"].x0 + r["box"].x1) / 2
    mid_y = (r["box"].y0 + r["box"].y1) / 2
    assert r["blob_x"] < mid_x - 10  # R > 0: on the LEFT half (radiological convention)
    assert r["blob_y"] > mid_y  # anterior up
    # The ring is centred on the lesion's pixels (a few pixels of rasterisation slack).
    assert abs(r["ring_px"][0] - r["blob_x"]) < 4 and abs(r["ring_px"][1] - r["blob_y"]) < 4


def test_coronal_view_keeps_right_on_the_left_and_head_up() -> None:
    linear, shape = AFFINES["LPS"]
    data, affine = volume_with_lesion(linear, shape)
    r = render_panel(data, affine, view="coronal")
    assert r["blob_x"] < (r["box"].x0 + r["box"].x1) / 2 - 10
    assert VIEWS["coronal"][4][:2] == ("R", "L")


def test_thick_slices_keep_their_aspect_in_mm() -> None:
    # 1 x 1 x 4 mm voxels seen coronally: the image is 4 times taller per voxel than wide.
    vol = to_ras(np.ones((30, 10, 10), np.float32), np.diag([1.0, 1.0, 4.0, 1.0]))
    plt = pyplot()
    fig, ax = plt.subplots()
    try:
        draw_slice(ax, vol, "coronal", 5, window=(0.0, 1.0))
        x0, x1, y0, y1 = ax.images[0].get_extent()
    finally:
        plt.close(fig)
    assert (abs(x1 - x0), abs(y1 - y0)) == (30.0, 40.0)


def test_slice_positions_and_ras_text_in_mm() -> None:
    vol = to_ras(np.zeros((10, 10, 5), np.float32), centred_affine(np.diag([-1.0, -1.0, 3.0]), (10, 10, 5)))
    assert vol.slice_label("axial", 4) == "S 6.0 mm (3.0 mm slice)"
    assert vol.slice_label("axial", 0) == "I 6.0 mm (3.0 mm slice)"
    assert ras_text((23.4, -10.0, 5.2)) == "R 23 P 10 S 5"


def test_overview_and_gallery_say_where_how_sure_and_whether_true(tmp_path) -> None:
    from plkd.inference.overview import Finding, gallery_figure, overview_figure, write_gallery, write_overview

    linear, shape = AFFINES["LPS"]
    data, affine = volume_with_lesion(linear, shape)
    cands = [
        {"id": 7, "label": 1, "center_ras": list(LESION_RAS), "probability": 0.93, "kept": True, "volume_mm3": 40.0,
         "region": "frontal"},
        {"id": 8, "label": 0, "center_ras": [-20.0, -10.0, 0.0], "probability": 0.21, "kept": False, "volume_mm3": 0.0},
    ]  # fmt: skip
    plt = pyplot()
    fig = gallery_figure(data, affine, cands, truth_ras=np.array([LESION_RAS]))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    plt.close(fig)
    assert titles[0] == "#7 p=0.93 kept\nR 30 A 15 S 0\nfrontal, true"
    assert titles[1] == "#8 p=0.21 rejected\nL 20 P 10 S 0\nfalse"
    fig = gallery_figure(data, affine, [{**cands[0], "region": "thalamus", "location": "deep"}])
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["#7 p=0.93 kept\nR 30 A 15 S 0\nthalamus (deep)"]
    plt.close(fig)
    # Without a region (older outputs) or a truth, the tile still works.
    fig = gallery_figure(data, affine, [{k: v for k, v in cands[0].items() if k != "region"}])
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["#7 p=0.93 kept\nR 30 A 15 S 0"]
    plt.close(fig)
    findings = [Finding(LESION_RAS, 40.0, "found", "#7 p=0.93, frontal"), Finding((-20.0, -10.0, 0.0), 5.0, "missed")]
    fig = overview_figure(data, affine, findings, title="t")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    rings = [p.center for ax in fig.axes for p in ax.patches]
    plt.close(fig)
    assert titles[0] == "axial S 0.0 mm (3.0 mm slice)"  # slice position in mm
    assert "1: found  R 30 A 15 S 0\n#7 p=0.93, frontal" in titles and "2: MISSED  L 20 P 10 S 0" in titles
    assert len(rings) == 4  # each finding ringed on the slice and in its inset
    assert write_overview(tmp_path / "o.png", data, affine, findings).stat().st_size > 5000
    assert write_gallery(tmp_path / "g.png", data, affine, []).stat().st_size > 1000


def test_demo_findings_ring_found_missed_and_false_alarms_at_their_ras_centres() -> None:
    from plkd.commands.demo import demo_findings

    affine = centred_affine(np.diag([-1.0, -1.0, 2.0]), (20, 20, 10))
    truth = np.zeros((20, 20, 10), np.uint8)
    truth[4, 4, 4] = truth[15, 15, 6] = 1
    pred = np.zeros((20, 20, 10), np.int16)
    pred[4, 4, 4] = 2  # finds the first (label 2 = candidate id 2)
    pred[10, 3, 2] = 1  # false alarm
    cands = [
        {"id": 1, "label": 1, "probability": 0.7, "region": "cerebellum"},
        {"id": 2, "label": 2, "probability": 0.9},
    ]
    findings, truth_ras = demo_findings(pred, truth, affine, np.array([1.0, 1.0, 2.0]), cands)
    to_ras = lambda v: (affine[:3, :3] @ np.asarray(v, float) + affine[:3, 3]).tolist()  # noqa: E731
    got = [(f.kind, [round(x, 3) for x in f.ras], f.details) for f in findings]
    assert got == [
        ("found", to_ras((4, 4, 4)), "#2 p=0.90"),
        ("missed", to_ras((15, 15, 6)), ""),
        ("false_alarm", to_ras((10, 3, 2)), "#1 p=0.70, cerebellum"),
    ]
    np.testing.assert_allclose(truth_ras, [to_ras((4, 4, 4)), to_ras((15, 15, 6))])
