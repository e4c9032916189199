"""Plain 3D U-Net baseline (Ronneberger-style, 3D convolutions everywhere, no FCM).

Every level uses two (3,3,3) convolutions with instance normalisation and LeakyReLU, and every
pooling step is ``(2, 2, 2)``, so each input axis must be a multiple of ``2**(depth-1)`` (8 for
the default depth 4; 48×48×24 works). It has the same output dictionary as :class:`E2UNet`
(``f_g`` = level-2 encoder output, ``f_s`` = bottleneck), so PLKD applies to it unchanged
(paper Fig. 6).
"""

from __future__ import annotations

from typing import Any

from plkd.models.unet_base import SegmentationUNet


class UNet3D(SegmentationUNet):
    """Plain 3D U-Net with the ``{"logits", "f_g", "f_s"}`` forward API."""

    kind = "unet3d"

    def __init__(self, in_channels: int = 1, base_channels: int = 16, depth: int = 4) -> None:
        super().__init__(
            in_channels=int(in_channels),
            base_channels=int(base_channels),
            level_kinds=["3d"] * int(depth),
            pools=[(2, 2, 2)] * (int(depth) - 1),
            fcm=False,
        )
        self.hparams: dict[str, Any] = {
            "in_channels": int(in_channels),
            "base_channels": int(base_channels),
            "depth": int(depth),
        }
