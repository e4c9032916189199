"""Networks: the screening FCN (stage 1), E²U-Net and its ablation variants, a plain 3D U-Net.

Tensors are ``(N, C, X, Y, Z)`` with Z the slice axis (see ``docs/design.md``).
"""

from plkd.models.e2unet import CONV_MODES, E2UNet
from plkd.models.registry import NETWORKS, build_network, network_config, unwrap
from plkd.models.scoring import Calibration, candidate_logit, patch_probability
from plkd.models.screening import SCREENING_CENTRE_FRACTION, ScreeningFCN, central_box
from plkd.models.summary import count_macs, count_parameters, flops_per_patch
from plkd.models.unet3d import UNet3D

__all__ = [
    "CONV_MODES",
    "NETWORKS",
    "SCREENING_CENTRE_FRACTION",
    "E2UNet",
    "ScreeningFCN",
    "UNet3D",
    "build_network",
    "central_box",
    "count_macs",
    "count_parameters",
    "flops_per_patch",
    "network_config",
    "patch_probability",
    "Calibration",
    "candidate_logit",
    "unwrap",
]
