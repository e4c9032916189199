"""Stage 1: the screening fully convolutional network (FCN).

Paper Sec. 2 / Fig. 3: "an FCN with six convolutional modules and one pooling layer" that turns
a whole brain into a 3D score volume. Our layout (``width`` = W, default 16)::

    conv 3×3×3 (1→W) + BatchNorm + LeakyReLU              full resolution
    max-pool 2×2×2, stride 2 (ceil mode)                  → output stride 2 along every axis
    4 × [conv 3×3×3 (W→W) + BatchNorm + LeakyReLU]        half resolution
    conv 1×1×1 (W→1)                                      score map (logits)

Pooling right after the first convolution keeps whole-brain screening fast on a CPU (most of the
work happens on 1/8 of the voxels). The receptive field is 20 input voxels wide, the in-plane
size of a 20×20×16 training patch. Batch normalisation is what makes this small network learn
(without it, training on hard negatives stalled near chance level); at inference it uses its
running statistics, so a whole brain is scored exactly like the training patches were (instance
normalisation, by contrast, would compute different statistics for a patch and a whole brain).
Inputs are intensity-normalised beforehand (:mod:`plkd.normalise`).

Geometry: every convolution is 'same'-padded, so output voxel ``j`` along an axis summarises
input voxels ``2j`` and ``2j+1`` and its receptive field is centred on input coordinate
``2j + 0.5`` (:meth:`ScreeningFCN.output_to_input_coords`). An axis of ``n`` input voxels gives
``ceil(n / 2)`` output voxels; for odd ``n`` the last output voxel sees only the last input voxel
(its nominal centre lies half a voxel outside the input; clip if needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from plkd.models.blocks import LEAKY_SLOPE

#: Fraction of the training patch (per axis, around its centre) whose scores form the patch score.
SCREENING_CENTRE_FRACTION = 0.5

#: Number of 3×3×3 convolutions after the pooling layer (with the first and the 1×1×1 head: six).
HALF_RES_CONVS = 4


def central_box(patch_size: Sequence[int], fraction: float = SCREENING_CENTRE_FRACTION) -> np.ndarray:
    """Inclusive bounds ``[[lo, hi], ...]`` (input voxel coordinates) of a patch's central region.

    The region is centred on the patch centre ``(size - 1) / 2`` and spans ``fraction * size``
    voxels per axis. For 20×20×16 and 0.5: X, Y in [4.5, 14.5], Z in [3.5, 11.5]. The trainer
    labels a patch positive when a microbleed centre falls inside this box, and
    :meth:`ScreeningFCN.patch_logit` scores the patch from the output voxels centred inside it.
    """
    size = np.asarray(patch_size, dtype=float)
    centre = (size - 1) / 2
    half = fraction * size / 2
    return np.stack([centre - half, centre + half], axis=1)


def _conv_bn_act(cin: int, cout: int) -> list[nn.Module]:
    # No conv bias: the batch norm's shift replaces it.
    return [
        nn.Conv3d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm3d(cout),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    ]


class ScreeningFCN(nn.Module):
    """Whole-brain screening network; ``forward(x)`` returns a logit score map (N, 1, X', Y', Z').

    ``sigmoid(score)`` is the probability that a microbleed is centred near the corresponding
    input location (see the module docstring for the exact mapping).
    """

    kind = "screening_fcn"
    #: Input voxels per output voxel along (X, Y, Z).
    output_stride: tuple[int, int, int] = (2, 2, 2)

    def __init__(self, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ValueError("in_channels and width must be positive")
        self.hparams: dict[str, Any] = {"in_channels": int(in_channels), "width": int(width)}
        layers: list[nn.Module] = [
            *_conv_bn_act(in_channels, width),
            nn.MaxPool3d(kernel_size=2, stride=2, ceil_mode=True),
        ]
        for _ in range(HALF_RES_CONVS):
            layers += _conv_bn_act(width, width)
        layers.append(nn.Conv3d(width, 1, kernel_size=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected a (N, C, X, Y, Z) tensor, got shape {tuple(x.shape)}")
        return self.body(x)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Score-map size for an input of spatial size ``input_shape`` (X, Y, Z)."""
        return tuple(math.ceil(int(n) / s) for n, s in zip(input_shape, self.output_stride, strict=True))  # type: ignore[return-value]

    def output_to_input_coords(self, idx: Any) -> np.ndarray:
        """Input voxel coordinates (float) of the centre of output voxel(s) ``idx``.

        ``idx`` is one index triple or an ``(M, 3)`` array; the result has the same shape:
        ``idx * stride + (stride - 1) / 2`` (``2j + 0.5`` for stride 2).
        """
        stride = np.asarray(self.output_stride, dtype=float)
        return np.asarray(idx, dtype=float) * stride + (stride - 1) / 2

    def patch_logit(self, x: torch.Tensor, fraction: float = SCREENING_CENTRE_FRACTION) -> torch.Tensor:
        """Patch-level logit ``(N,)``: the maximum score over the central region of the score map.

        The maximum (not the mean) matches inference, where candidates are local maxima of the
        score map above a threshold: a positive patch needs one confident location near its
        centre, a negative patch needs none. Only output voxels centred in :func:`central_box`
        count, because the trainer labels a patch by what lies in that region.
        """
        scores = self(x)
        box = central_box(x.shape[2:], fraction)
        region = []
        for axis in range(3):
            centres = self.output_to_input_coords(np.arange(scores.shape[2 + axis])[:, None].repeat(3, 1))[:, axis]
            keep = np.nonzero((centres >= box[axis, 0] - 1e-6) & (centres <= box[axis, 1] + 1e-6))[0]
            if keep.size == 0:  # tiny patch: fall back to the output voxel nearest the centre
                keep = np.array([int(np.argmin(np.abs(centres - box[axis].mean())))])
            region.append(slice(int(keep[0]), int(keep[-1]) + 1))
        return scores[:, 0, region[0], region[1], region[2]].flatten(1).amax(dim=1)
