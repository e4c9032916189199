"""Model size figures for the README and ``plkd benchmark``: parameters and multiply-accumulates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from plkd.models.registry import unwrap


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in unwrap(module).parameters() if p.requires_grad or not trainable_only)


def count_macs(module: nn.Module, patch_size: Sequence[int], in_channels: int = 1) -> int:
    """Multiply-accumulates of the convolutions for one forward pass on a ``patch_size`` input.

    Counted with forward hooks on every ``Conv3d`` / ``ConvTranspose3d``: the operations that
    dominate the cost. Normalisation, activation, pooling and interpolation are not counted.
    FLOPs are about twice this number.
    """
    net = unwrap(module)
    total = 0

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kernel_macs = mod.weight.shape[1] * mod.weight[0, 0].numel()  # in/groups × kernel volume
        if isinstance(mod, nn.ConvTranspose3d):
            # Every input voxel scatters into out_channels × kernel volume outputs.
            total += inputs[0].numel() * mod.weight.shape[1] * mod.weight[0, 0].numel()
        else:
            total += output.numel() * kernel_macs

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv3d | nn.ConvTranspose3d)]
    was_training = net.training
    try:
        net.eval()
        param = next(net.parameters())
        with torch.inference_mode():
            net(torch.zeros(1, in_channels, *patch_size, dtype=param.dtype, device=param.device))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return int(total)


def flops_per_patch(module: nn.Module, patch_size: Sequence[int], in_channels: int = 1) -> int:
    """Approximate FLOPs (2 × convolution MACs) for one patch."""
    return 2 * count_macs(module, patch_size, in_channels)
