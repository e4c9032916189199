"""The nnU-Net-default baseline of ``plkd benchmark``: planned architecture, windows, timing report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from plkd.cli import main
from plkd.models import count_macs
from plkd.models.baseline_unet import (
    MAX_FEATURES_3D,
    PlainConvUNet3D,
    conv_macs,
    feature_map_voxels,
    gaussian_importance,
    mirror_axes_sets,
    plan_3d_fullres,
    predict_window,
    topology,
    window_count,
    window_starts,
    windows,
)

BUNDLE = Path(__file__).resolve().parents[1] / "Testing" / "data" / "tiny-bundle"


def test_brain_plan_is_six_stages_capped_at_320_with_a_128_cube_patch() -> None:
    plan = plan_3d_fullres((160, 192, 160), (1.0, 1.0, 1.0), n_classes=2)
    assert plan.n_stages == 6
    assert plan.features == (32, 64, 128, 256, 320, 320)
    assert plan.patch_size == (128, 128, 128)
    assert plan.strides == ((1, 1, 1),) + ((2, 2, 2),) * 5
    assert plan.kernels == ((3, 3, 3),) * 6


@pytest.mark.parametrize(
    ("shape", "spacing", "n_classes", "patch", "halvings"),
    [
        # nnU-Net's documentation/explanation_plans_files.md: Hippocampus 3d_fullres.
        ((36, 50, 35), (1.0, 1.0, 1.0), 3, (40, 56, 40), (3, 3, 3)),
        # A user's nnU-Net v2 plans file (MIC-DKFZ/nnUNet issue 2227), CT at ~2 mm.
        ((177, 217, 217), (2.3565655, 1.8410668, 1.8410668), 2, (128, 128, 128), (5, 5, 5)),
    ],
)
def test_planner_reproduces_published_nnunet_plans(shape, spacing, n_classes, patch, halvings) -> None:
    plan = plan_3d_fullres(shape, spacing, n_classes=n_classes)
    assert plan.patch_size == patch
    assert plan.divisible_by == tuple(2**h for h in halvings)


def test_shrinking_cuts_the_last_of_the_axes_largest_relative_to_the_median_shape() -> None:
    # 96x160x192 starts as its own patch; Z and Y tie (ratio 1) and Z, the last, is cut first.
    # Checked against nnU-Net's own planning functions; cutting Y or X first gives 80x160x192.
    assert plan_3d_fullres((96, 160, 192)).patch_size == (96, 160, 160)


def test_a_lone_axis_is_halved_only_while_at_least_12_voxels_long() -> None:
    plan = topology((1.0, 1.0, 1.0), (8, 8, 64))
    # X and Y stop after one halving (4 voxels); Z alone goes 32 -> 16 -> 8 and stops (8 < 3 x 4).
    assert plan.divisible_by == (2, 2, 8)
    assert plan.strides == ((1, 1, 1), (2, 2, 2), (1, 1, 2), (1, 1, 2))


def test_thick_slices_are_not_downsampled_until_in_plane_catches_up() -> None:
    plan = topology((1.0, 1.0, 3.0), (160, 160, 48))
    # Z (3 mm) is not halved, and its kernel stays 1, until X and Y (now 2 mm) are within a factor 2.
    assert plan.strides[1] == (2, 2, 1) and plan.kernels[0] == (3, 3, 1)
    assert plan.strides[2] == (2, 2, 2) and plan.kernels[1] == (3, 3, 3)


@pytest.mark.parametrize("shape", [(96, 80, 64), (200, 240, 200), (64, 200, 30)])
@pytest.mark.parametrize("reference", [2_000_000, 50_000_000])
def test_shrunken_plans_fit_the_memory_reference_and_stay_divisible(shape, reference) -> None:
    plan = plan_3d_fullres(shape, (1.0, 1.0, 1.0), reference=reference)
    assert feature_map_voxels(plan) <= reference
    assert all(p % d == 0 for p, d in zip(plan.patch_size, plan.divisible_by, strict=True))
    assert all(d == 2 ** sum(s[a] == 2 for s in plan.strides) for a, d in enumerate(plan.divisible_by))
    assert max(plan.features) <= MAX_FEATURES_3D
    assert plan.features == tuple(min(320, 32 * 2**s) for s in range(plan.n_stages))
    assert math.prod(plan.patch_size) < math.prod(shape)  # it had to shrink


def test_large_images_cap_features_at_320() -> None:
    plan = plan_3d_fullres((400, 400, 400))
    assert plan.n_stages >= 6 and plan.features[-2:] == (320, 320)


def test_window_placement_follows_half_patch_steps() -> None:
    # nnU-Net's own example: 110 voxels, a 64-voxel patch, step 0.5 -> starts 0, 23, 46.
    assert window_starts((110,), (64,)) == [[0, 23, 46]]
    assert window_starts((160, 192, 160), (128, 128, 128)) == [[0, 32], [0, 64], [0, 32]]
    assert window_count((160, 192, 160), (128, 128, 128)) == 8
    assert window_count((256, 256, 256), (128, 128, 128)) == 27
    assert window_count((100, 20, 50), (128, 128, 128)) == 1  # padded to the patch: one window
    assert window_count((110, 110, 110), (64, 64, 64), step=1.0) == 8
    with pytest.raises(ValueError):
        window_count((10, 10, 10), (8, 8, 8), step=0)


def test_windows_cover_every_voxel() -> None:
    shape, patch = (37, 30, 21), (16, 16, 8)
    seen = np.zeros(shape, dtype=int)
    for sl in windows(shape, patch):
        assert all(s.stop - s.start == p and s.stop <= n for s, p, n in zip(sl, patch, shape, strict=True))
        seen[sl] += 1
    assert seen.min() >= 1
    assert len(list(windows(shape, patch))) == window_count(shape, patch)


def test_gaussian_weight_peaks_at_the_centre_and_is_never_zero() -> None:
    w = gaussian_importance((16, 12, 8))
    assert w.shape == (16, 12, 8) and w.max() == pytest.approx(1.0)
    assert np.unravel_index(w.argmax(), w.shape) == (8, 6, 4)
    assert w.min() > 0 and w[0, 0, 0] < 0.05


def test_mirroring_is_eight_passes_and_averages_flipped_predictions() -> None:
    sets = mirror_axes_sets()
    assert len(sets) == 8 and len(set(sets)) == 8 and () in sets
    plan = plan_3d_fullres((16, 16, 16), reference=10**9)
    torch.manual_seed(0)
    net = PlainConvUNet3D(plan, in_channels=1, n_classes=2).eval()
    x = torch.randn(1, 1, *plan.patch_size)
    with torch.inference_mode():
        plain, mirrored = predict_window(net, x, False), predict_window(net, x, True)
        expected = sum(torch.flip(net(torch.flip(x, a)), a) for a in sets) / 8
    assert plain.shape == (1, 2, *plan.patch_size)
    torch.testing.assert_close(mirrored, expected)
    assert not torch.allclose(mirrored, plain)  # random weights: the flips do change the result


def test_counted_macs_match_the_network() -> None:
    plan = plan_3d_fullres((40, 48, 40), reference=2_000_000)
    net = PlainConvUNet3D(plan, in_channels=1, n_classes=2)
    assert conv_macs(plan, 1, 2) == count_macs(net, plan.patch_size)
    brain = plan_3d_fullres((160, 192, 160))
    assert 400e9 < conv_macs(brain) < 550e9  # ~477 GMAC per 128³ pass


def test_benchmark_reports_nnunet_with_and_without_mirroring(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["benchmark", "--sizes", "1", "--shape", "24,24,16", "--candidates", "2", "--threads", "1"]
    assert main(args + ["--baseline-windows", "1", "--model", str(BUNDLE), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["baseline"] == "nnunet"
    two_stage, mirrored, plain = doc["results"]
    assert [mirrored["baseline"], plain["baseline"]] == ["nnunet", "nnunet-no-mirroring"]
    assert (mirrored["mirroring"], mirrored["forward_passes_per_window"]) == (True, 8)
    assert (plain["mirroring"], plain["forward_passes_per_window"]) == (False, 1)
    plan = plan_3d_fullres((24, 24, 16))
    assert mirrored["plan"]["patch_size"] == list(plan.patch_size)
    assert mirrored["plan"]["features_per_stage"] == list(plan.features)
    assert mirrored["windows"] == 1 and mirrored["windows_run"] == 1 and not mirrored["extrapolated"]
    assert mirrored["gmac_per_pass"] == round(conv_macs(plan) / 1e9, 1)
    assert mirrored["stages"]["per_window"] > plain["stages"]["per_window"] > 0
    assert set(two_stage["speedup"]) == {"nnunet", "nnunet-no-mirroring"}
    assert two_stage["ratio_vs_baseline"] == two_stage["speedup"]["nnunet"]
    assert two_stage["speedup"]["nnunet"] == round(mirrored["seconds"] / two_stage["seconds"], 1)


def test_benchmark_refuses_a_negative_window_count(capsys) -> None:
    assert main(["benchmark", "--baseline-windows", "-1"]) == 2
    assert "--baseline-windows" in capsys.readouterr().err
