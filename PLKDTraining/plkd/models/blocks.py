"""Building blocks shared by the segmentation networks: convolutions, normalisation, levels.

Tensors are laid out ``(N, C, X, Y, Z)`` with Z the slice (through-plane) axis. A "2D" block
convolves in-plane only (kernel ``(3, 3, 1)``) and normalises each slice on its own, so it
processes every slice exactly as a 2D network would: nothing crosses from one slice to the next.
A "3D" block uses ``(3, 3, 3)`` kernels and normalises over the whole patch.

Normalisation is instance normalisation (per sample, per channel, with a learned affine):
segmentation batches hold few patches, where batch statistics would be noisy. Activation is
LeakyReLU(0.01), which keeps a gradient for the many near-zero activations of a mostly-empty patch.
"""

from __future__ import annotations

import torch
from torch import nn

#: Negative slope of every LeakyReLU in the package.
LEAKY_SLOPE = 0.01

#: Convolution kinds a level can use.
CONV_KINDS = ("2d", "3d")


class SliceInstanceNorm(nn.Module):
    """Instance normalisation of each Z slice separately (a 2D InstanceNorm applied slice by slice).

    Statistics are taken over X and Y only, so changing one slice never changes another slice's
    output: the normalisation is as "2D" as the in-plane convolution before it.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Statistics in float32 even under autocast; then one fused multiply-add over the tensor.
        var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
        scale = self.weight.view(1, -1, 1, 1, 1) * torch.rsqrt(var + self.eps)
        shift = self.bias.view(1, -1, 1, 1, 1) - mean * scale
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))


def norm_layer(kind: str, channels: int) -> nn.Module:
    """Instance normalisation matching a convolution kind: per slice for ``"2d"``, per patch for ``"3d"``."""
    _check_kind(kind)
    if kind == "2d":
        return SliceInstanceNorm(channels)
    return nn.InstanceNorm3d(channels, affine=True)


def conv_layer(kind: str, in_channels: int, out_channels: int) -> nn.Conv3d:
    """A 'same'-padded 3×3 convolution: ``(3, 3, 1)`` in-plane for ``"2d"``, ``(3, 3, 3)`` for ``"3d"``."""
    _check_kind(kind)
    if kind == "2d":
        return nn.Conv3d(in_channels, out_channels, kernel_size=(3, 3, 1), padding=(1, 1, 0))
    return nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)


class ConvBlock(nn.Sequential):
    """Two (convolution → instance norm → LeakyReLU) units of one kind: one U-Net level."""

    def __init__(self, kind: str, in_channels: int, out_channels: int) -> None:
        super().__init__(
            conv_layer(kind, in_channels, out_channels),
            norm_layer(kind, out_channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            conv_layer(kind, out_channels, out_channels),
            norm_layer(kind, out_channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        )
        self.kind = kind


def _check_kind(kind: str) -> None:
    if kind not in CONV_KINDS:
        raise ValueError(f"convolution kind must be one of {CONV_KINDS}, not {kind!r}")
