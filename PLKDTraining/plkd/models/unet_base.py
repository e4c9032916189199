"""The encoder-decoder shared by E²U-Net and the plain 3D U-Net.

A network is described by one convolution kind per level (``"2d"`` or ``"3d"``), the pooling
factor between each pair of levels and whether the Feature Compensation Module (FCM) links them.
Level ``i`` (1-based) has ``base_channels * 2**(i-1)`` channels; the last level is the bottleneck.

Forward pass (``D`` levels, ``x_i`` the output of encoder level ``i``)::

    x_1 = level_1(input)
    x_{i+1} = level_{i+1}(maxpool_i(x_i) [+ down_i(x_i)])         # FCM down branch
    s_i = x_i                     or  fuse_i(x_i, up_i(x_{i+1}))     # FCM up branch → skip
    y_D = x_D;  y_i = decoder_i(concat(transposed_conv_i(y_{i+1}), s_i))
    logits = 1×1×1 conv(y_1)

The feature taps used for distillation are ``f_g = x_2`` (geometric: the output of the second
level, the last in-plane level of E²U-Net) and ``f_s = x_D`` (semantic: the bottleneck), both
taken before any FCM fusion so that they are exactly "the output of that encoder level".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 (the usual alias)
from torch import nn

from plkd.models.blocks import LEAKY_SLOPE, ConvBlock, norm_layer

Pool = tuple[int, int, int]

#: Initial foreground probability of every output voxel (sets the bias of the last convolution).
FOREGROUND_PRIOR = 0.01


class FCMDown(nn.Module):
    """FCM down-sampling branch: a learned strided convolution beside the max-pooling.

    Max-pooling keeps only the strongest response of each window; for a 2-3 voxel microbleed the
    edge and gradient information around it is lost. The strided convolution (kernel = stride =
    pooling factor) learns what else to carry down, and is added to the pooled features.
    """

    def __init__(self, channels: int, pool: Pool, norm_kind: str) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, kernel_size=pool, stride=pool)
        self.norm = norm_layer(norm_kind, channels)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class FCMUp(nn.Module):
    """FCM up-sampling branch: brings level ``i+1`` back to level ``i`` and fuses it with ``x_i``.

    A 1×1×1 convolution maps the deeper features to level ``i``'s channels (done before the
    interpolation, which is linear, so it costs less), trilinear interpolation restores level
    ``i``'s grid, and concatenation + 1×1×1 convolution + norm + LeakyReLU fuses both. The result
    replaces ``x_i`` as the skip connection, giving the decoder multi-scale context.
    """

    def __init__(self, channels: int, deeper_channels: int, norm_kind: str) -> None:
        super().__init__()
        self.project = nn.Conv3d(deeper_channels, channels, kernel_size=1)
        self.fuse = nn.Conv3d(2 * channels, channels, kernel_size=1)
        self.norm = norm_layer(norm_kind, channels)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor, deeper: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.project(deeper), size=x.shape[2:], mode="trilinear", align_corners=False)
        return self.act(self.norm(self.fuse(torch.cat([x, up], dim=1))))


class SegmentationUNet(nn.Module):
    """U-Net with a convolution kind per level and optional Feature Compensation Module.

    ``forward(x)`` returns ``{"logits": (N, 1, X, Y, Z), "f_g": x_2, "f_s": x_D}``. The input's
    X and Y must be multiples of :attr:`size_multiple` ``[0:2]`` and Z of ``size_multiple[2]``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        base_channels: int,
        level_kinds: Sequence[str],
        pools: Sequence[Pool],
        fcm: bool,
    ) -> None:
        super().__init__()
        depth = len(level_kinds)
        if depth < 3:
            raise ValueError(f"depth must be at least 3 (f_g is level 2, f_s the bottleneck), not {depth}")
        if len(pools) != depth - 1:
            raise ValueError(f"need {depth - 1} pooling factors for {depth} levels, got {len(pools)}")
        if in_channels < 1 or base_channels < 1:
            raise ValueError("in_channels and base_channels must be positive")
        self.level_kinds = tuple(level_kinds)
        self.pools: tuple[Pool, ...] = tuple(tuple(int(v) for v in p) for p in pools)  # type: ignore[misc]
        self.fcm = bool(fcm)
        channels = [base_channels * 2**i for i in range(depth)]
        self.channels = tuple(channels)

        self.encoder = nn.ModuleList()
        for i, kind in enumerate(self.level_kinds):
            self.encoder.append(ConvBlock(kind, in_channels if i == 0 else channels[i - 1], channels[i]))
        self.maxpools = nn.ModuleList(nn.MaxPool3d(kernel_size=p, stride=p) for p in self.pools)
        if self.fcm:
            # Each branch is normalised like the level whose grid it lives on, so a 2D level stays
            # slice-independent even with the FCM switched on.
            self.fcm_down = nn.ModuleList(
                FCMDown(channels[i], self.pools[i], self.level_kinds[i + 1]) for i in range(depth - 1)
            )
            self.fcm_up = nn.ModuleList(
                FCMUp(channels[i], channels[i + 1], self.level_kinds[i]) for i in range(depth - 1)
            )
        self.upconvs = nn.ModuleList(
            nn.ConvTranspose3d(channels[i + 1], channels[i], kernel_size=self.pools[i], stride=self.pools[i])
            for i in range(depth - 1)
        )
        self.decoder = nn.ModuleList(
            ConvBlock(self.level_kinds[i], 2 * channels[i], channels[i]) for i in range(depth - 1)
        )
        self.head = nn.Conv3d(channels[0], 1, kernel_size=1)
        # Microbleeds fill ~1% of a patch: start from that prior instead of p = 0.5 everywhere, so
        # the first steps of soft-Dice training are not spent switching off the background.
        nn.init.constant_(self.head.bias, -math.log((1 - FOREGROUND_PRIOR) / FOREGROUND_PRIOR))

    @property
    def size_multiple(self) -> tuple[int, int, int]:
        """Each input axis must be a multiple of this (product of the pooling factors)."""
        return tuple(math.prod(p[a] for p in self.pools) for a in range(3))  # type: ignore[return-value]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the problem if ``x`` cannot pass through the network."""
        if x.dim() != 5:
            raise ValueError(f"expected a (N, C, X, Y, Z) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.encoder[0][0].in_channels:
            raise ValueError(f"expected {self.encoder[0][0].in_channels} input channel(s), got {x.shape[1]}")
        bad = [s for s, m in zip(x.shape[2:], self.size_multiple, strict=True) if s % m]
        if bad:
            raise ValueError(
                f"patch size {tuple(x.shape[2:])} is not a multiple of {self.size_multiple} (the pooling factors)"
            )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_input(x)
        feats = [self.encoder[0](x)]
        for i in range(len(self.pools)):
            pooled = self.maxpools[i](feats[i])
            if self.fcm:
                pooled = pooled + self.fcm_down[i](feats[i])
            feats.append(self.encoder[i + 1](pooled))
        skips = [self.fcm_up[i](feats[i], feats[i + 1]) for i in range(len(self.pools))] if self.fcm else feats[:-1]
        y = feats[-1]
        for i in reversed(range(len(self.pools))):
            y = self.decoder[i](torch.cat([self.upconvs[i](y), skips[i]], dim=1))
        return {"logits": self.head(y), "f_g": feats[1], "f_s": feats[-1]}
