"""``scripts/evaluate_location.py``: its crops and its figure name the patient's sides right.

On a RAS-stored grid the first voxel axis runs towards the patient's right (+x). The script took it for the left:
its ``right-50%`` crop was the left hemisphere (and ``left-50%`` the right one), and its figure, labelled
"radiological view" with R on the left, drew the patient's left there (a neurological view).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from plkd.volumes import Volume

ROOT = Path(__file__).resolve().parents[1]


def _script():  # noqa: ANN202 - a module of scripts/
    spec = importlib.util.spec_from_file_location("evaluate_location", ROOT / "scripts" / "evaluate_location.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ras_volume() -> Volume:
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-10.0, -10.0, -10.0]  # x = i - 10: i runs from the patient's left (x < 0) to the right
    data = np.zeros((21, 21, 21), dtype=np.float32)
    data[1:20, 1:20, 1:20] = 1.0  # the "brain"
    return Volume(data, affine)


def test_the_right_hemisphere_crop_holds_the_patients_right() -> None:
    crops = _script().crop_conditions(_ras_volume(), np.random.default_rng(0))
    for name, sign in (("right-50%", 1.0), ("left-50%", -1.0)):
        vol = crops[name]
        x = vol.affine[0, 0] * np.arange(vol.shape[0]) + vol.affine[0, 3]
        assert np.all(sign * x >= 0), (name, x.min(), x.max())


def test_the_figure_shows_the_patients_right_on_the_viewers_left() -> None:
    script = _script()
    vol = _ras_volume()
    shown = script.radiological(vol.data[:, :, 10] * np.arange(21)[:, None])  # brighter towards +x (right)
    row = shown[10]
    assert row[1] > row[-2]  # the patient's right (bright) on the viewer's left
    # A marker at the patient's right edge is drawn on the left, anterior up.
    col, line = script.display_xy(np.array([19.0, 19.0, 10.0]), vol.shape)
    assert col == 1.0 and line == 1.0
