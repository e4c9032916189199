"""Screening FCN: score-map geometry (alignment with the input), patch logit, shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plkd.models import ScreeningFCN, central_box
from plkd.models.screening import HALF_RES_CONVS


def _blob_detector() -> ScreeningFCN:
    """An FCN whose weights make the score the max-pooled negated input (a dark voxel → a peak).

    Every 3×3×3 convolution has only its centre tap set, so any padding or off-by-one in the
    network would shift the peak away from where ``output_to_input_coords`` says it is.
    """
    net = ScreeningFCN(width=2)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
        assert len(convs) == HALF_RES_CONVS + 2  # the paper's six convolutional modules
        convs[0].weight[0, 0, 1, 1, 1] = -1.0
        for conv in convs[1:-1]:
            conv.weight[0, 0, 1, 1, 1] = 1.0
        convs[-1].weight[0, 0, 0, 0, 0] = 1.0
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)):
            # Identity at inference: (x - 0) / sqrt(var + eps) * 1 + 0 with var + eps = 1.
            bn.weight.fill_(1.0)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
    return net.eval()


def test_screening_shapes_and_stride() -> None:
    net = ScreeningFCN(width=4)
    for shape in [(20, 20, 16), (21, 17, 9), (30, 36, 30)]:
        out = net(torch.randn(2, 1, *shape))
        assert out.shape == (2, 1, *net.output_shape(shape))
        assert net.output_shape(shape) == tuple(-(-s // 2) for s in shape)
    assert net.output_stride == (2, 2, 2)


@pytest.mark.parametrize("voxel", [(13, 7, 5), (0, 0, 0), (20, 16, 8), (10, 11, 4)])
def test_score_peak_maps_back_onto_a_dark_voxel(voxel: tuple[int, int, int]) -> None:
    net = _blob_detector()
    x = torch.zeros(1, 1, 21, 17, 9)  # odd sizes: the last output voxel sees one input voxel only
    x[(0, 0, *voxel)] = -5.0
    with torch.no_grad():
        scores = net(x)[0, 0]
    peak = np.unravel_index(int(scores.argmax()), scores.shape)
    centre = net.output_to_input_coords(peak)
    # The output voxel covering input voxels 2j and 2j+1 is centred at 2j + 0.5.
    assert np.all(np.abs(centre - np.asarray(voxel)) <= 0.5)
    assert float(scores.max()) == pytest.approx(5.0)


def test_output_to_input_coords_values() -> None:
    net = ScreeningFCN(width=2)
    np.testing.assert_allclose(net.output_to_input_coords((0, 1, 2)), [0.5, 2.5, 4.5])
    np.testing.assert_allclose(net.output_to_input_coords([[0, 0, 0], [3, 4, 5]]), [[0.5] * 3, [6.5, 8.5, 10.5]])


def test_central_box_of_the_training_patch() -> None:
    np.testing.assert_allclose(central_box((20, 20, 16)), [[4.5, 14.5], [4.5, 14.5], [3.5, 11.5]])


def test_patch_logit_scores_the_centre_not_the_border() -> None:
    net = _blob_detector()
    x = torch.zeros(3, 1, 20, 20, 16)
    x[0, 0, 10, 9, 8] = -5.0  # at the centre
    x[1, 0, 1, 18, 14] = -5.0  # in a corner, outside the central box
    with torch.no_grad():
        logits = net.patch_logit(x)
    assert logits.shape == (3,)
    assert float(logits[0]) == pytest.approx(5.0)
    assert float(logits[1]) == pytest.approx(0.0)
    assert float(logits[2]) == pytest.approx(0.0)


def test_patch_logit_is_differentiable() -> None:
    net = ScreeningFCN(width=2)
    net.patch_logit(torch.randn(4, 1, 20, 20, 16)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
