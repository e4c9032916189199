"""E²U-Net: the encoding-enhanced U-Net of Xia et al. (2D+3D hybrid convolution + FCM).

Our reading of the paper (Sec. 2.1, Fig. 4) for a 48×48×24 (X×Y×Z) patch, ``depth=4``,
``base_channels=16``:

=====  ===========  ===========  ========  ==============================================
level  grid         convolution  channels  note
=====  ===========  ===========  ========  ==============================================
1      48×48×24     2D (3,3,1)   16        in-plane only: the thin Z axis is not mixed
2      24×24×24     2D (3,3,1)   32        output = geometric features ``f_g``
3      12×12×12     3D (3,3,3)   64
4      6×6×6        3D (3,3,3)   128       bottleneck = semantic features ``f_s``
=====  ===========  ===========  ========  ==============================================

Pooling into level 2 is in-plane only, ``(2, 2, 1)``: the patch has half as many voxels along Z,
so this makes the grid cubic before the 3D levels, and the Z axis keeps its 24 slices through
the 2D levels. Pooling into a 3D level is ``(2, 2, 2)``; pooling into a 2D level is always
``(2, 2, 1)`` (so ``conv_mode="2d"`` is a true slice-by-slice 2D U-Net whose Z never shrinks).
The input's X and Y must be multiples of 8 and Z of 4 (hybrid and "3d", depth 4); see
:attr:`SegmentationUNet.size_multiple`.

2D levels use slice-wise instance normalisation (see :mod:`plkd.models.blocks`), so every slice
of ``f_g`` depends only on the same slice of the input.

Feature Compensation Module (our reading of Fig. 4: "supplementary down-sampling branches" and
"up-sampling branches" between adjacent encoder levels): between levels ``i`` and ``i+1`` a
strided convolution carries ``x_i`` down and is added to the max-pooled input of level ``i+1``,
and ``x_{i+1}`` is brought back up (1×1×1 conv + trilinear interpolation) and fused with ``x_i``
(concatenation + 1×1×1 conv) to form the skip connection of level ``i``. See
:mod:`plkd.models.unet_base` for the exact data flow.

Ablation (paper Table 4): ``conv_mode="2d"`` (all levels in-plane), ``"3d"`` (all levels 3D, same
pooling as hybrid), ``"hybrid"`` (default); ``fcm=False`` removes both FCM branches.
"""

from __future__ import annotations

from typing import Any

from plkd.models.unet_base import SegmentationUNet

#: ``conv_mode`` values (paper Table 4: 2D, 3D, 2D+3D).
CONV_MODES = ("2d", "3d", "hybrid")

#: Number of in-plane levels of the hybrid network (the paper's "first two layers").
HYBRID_2D_LEVELS = 2


def level_kinds_for(conv_mode: str, depth: int) -> list[str]:
    """Convolution kind of each level for an E²U-Net ``conv_mode``."""
    if conv_mode not in CONV_MODES:
        raise ValueError(f"conv_mode must be one of {CONV_MODES}, not {conv_mode!r}")
    if conv_mode == "hybrid":
        return ["2d" if i < HYBRID_2D_LEVELS else "3d" for i in range(depth)]
    return [conv_mode] * depth


def pools_for(level_kinds: list[str]) -> list[tuple[int, int, int]]:
    """Pooling factor into each level after the first (rule in the module docstring)."""
    pools = []
    for i in range(1, len(level_kinds)):
        in_plane_only = i == 1 or level_kinds[i] == "2d"
        pools.append((2, 2, 1) if in_plane_only else (2, 2, 2))
    return pools


class E2UNet(SegmentationUNet):
    """Encoding-enhanced U-Net for 48×48×24 candidate patches (see the module docstring).

    ``forward(x)`` returns ``{"logits": (N, 1, X, Y, Z), "f_g": (N, 2C, X/2, Y/2, Z),
    "f_s": (N, 2**(depth-1) C, ...)}`` with ``C = base_channels``.
    """

    kind = "e2unet"

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 16,
        depth: int = 4,
        conv_mode: str = "hybrid",
        fcm: bool = True,
    ) -> None:
        kinds = level_kinds_for(conv_mode, int(depth))
        super().__init__(
            in_channels=int(in_channels),
            base_channels=int(base_channels),
            level_kinds=kinds,
            pools=pools_for(kinds),
            fcm=bool(fcm),
        )
        self.hparams: dict[str, Any] = {
            "in_channels": int(in_channels),
            "base_channels": int(base_channels),
            "depth": int(depth),
            "conv_mode": conv_mode,
            "fcm": bool(fcm),
        }
