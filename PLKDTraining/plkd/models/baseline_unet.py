"""The 3D U-Net that nnU-Net v2 would plan for a brain, and its sliding-window inference pattern.

``plkd benchmark --baseline nnunet`` times this network to check the claim that the two-stage
inference is much faster than "a sliding-window U-Net of nnU-Net's default size". Only the
architecture and the inference pattern matter (timings, random weights), so this module
re-implements, in our own code, the *facts* of nnU-Net v2's default planning and prediction:

Sources (MIC-DKFZ/nnUNet, commit 0e49508; MIC-DKFZ/dynamic-network-architectures, commit d35f85c):

* ``nnunetv2/experiment_planning/experiment_planners/default_experiment_planner.py``
  (``ExperimentPlanner``, configuration ``3d_fullres``): 32 base features doubled per stage and
  capped at 320; two convolutions per encoder and per decoder stage; convolution bias, instance
  normalisation (affine, eps 1e-5), LeakyReLU (slope 0.01, torch's default); strided convolution
  (not pooling) opens each stage. The initial patch has the volume of 256³ with the aspect ratio
  of 1/spacing, clipped to the median image shape. While the estimated memory of the network at
  that patch (the summed sizes of all convolution outputs, ``compute_conv_feature_map_size``)
  exceeds 560e6 (for the default 8 GB target and a batch of 2), the axis largest relative to the
  median shape is shrunk by one divisibility step.
* ``network_topology.py`` (``get_pool_and_conv_props``): an axis is downsampled while its
  feature map is at least 2 × 4 voxels (and, if it is the only axis left, 3 × 4); kernels are 3
  on axes within a factor 2 of the finest spacing; the patch is padded to a multiple of
  2^(downsamplings per axis).
* ``nnunetv2/inference/sliding_window_prediction.py`` and ``predict_from_raw_data.py``: windows
  overlap by half a patch (``tile_step_size=0.5``), each is weighted by a Gaussian of σ = patch/8,
  and test-time mirroring over all three axes averages 8 forward passes per window (the default
  ``use_mirroring=True`` with ``inference_allowed_mirroring_axes=(0, 1, 2)`` for 3D).

For a 1-mm brain MRI of 160×192×160 voxels (spacing 1, 1, 1 mm) :func:`plan_3d_fullres` gives
6 stages with features (32, 64, 128, 256, 320, 320), stride 1 then 2 on every axis, 3×3×3
kernels and a 128×128×128 patch (31.2 M parameters, 477 GMAC per pass). Why: the initial patch
is the whole median shape (256³ clipped to it); every axis is halved five times before a feature
map would drop under 8 voxels (bottleneck 5×6×5), so 6 stages and steps of 32 voxels. Its memory proxy (1.06e9)
exceeds the budget (5.6e8), so the axis largest relative to the median shape is cut by 32, ties
to the last axis: Z (160 → 128), Y (192 → 160), X (160 → 128), Y again (128×160×128 still needs
5.63e8) → 128³ (4.5e8). Sliding it over the brain takes 2 × 2 × 2 = 8 windows whether the
non-zero box is the whole 160×192×160 field of view or a skull-stripped ~134×168×134 brain,
i.e. 64 forward passes with mirroring. The planner reproduces nnU-Net's documented Hippocampus
plan (median 36×50×35 → patch 40×56×40) and published plans (``Testing/test_baseline_unet.py``).

Tensors are ``(N, C, X, Y, Z)``; shapes are in voxels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from plkd.models.blocks import LEAKY_SLOPE

#: nnU-Net v2 default planner constants (``ExperimentPlanner.__init__``).
BASE_FEATURES = 32
MAX_FEATURES_3D = 320
CONVS_PER_STAGE = 2
MIN_FEATURE_MAP_EDGE = 4
#: Memory reference for an 8 GB GPU and a batch of 2 (``UNet_reference_val_3d``): the summed
#: convolution output sizes of one patch must not exceed it.
REFERENCE_FEATURE_MAP_VOXELS = 560_000_000
#: Volume of the initial patch before it is clipped and shrunk (256³ voxels).
INITIAL_PATCH_VOXELS = 256**3
#: Default inference settings of ``nnUNetPredictor``.
TILE_STEP = 0.5
GAUSSIAN_SIGMA_SCALE = 1.0 / 8


@dataclass(frozen=True)
class UNetPlan:
    """A planned 3D full-resolution U-Net.

    ``strides[s]`` is the stride of stage ``s``'s first convolution (``(1, 1, 1)`` for stage 0);
    ``kernels[s]`` the kernel of its convolutions; ``patch_size`` is divisible by
    ``divisible_by`` = 2^(downsamplings per axis). All sizes in voxels.
    """

    patch_size: tuple[int, int, int]
    strides: tuple[tuple[int, int, int], ...]
    kernels: tuple[tuple[int, int, int], ...]
    features: tuple[int, ...]
    divisible_by: tuple[int, int, int]

    @property
    def n_stages(self) -> int:
        """Resolution stages, the bottleneck included."""
        return len(self.strides)

    def as_dict(self) -> dict:
        """JSON-ready description (lists instead of tuples)."""
        return {
            "n_stages": self.n_stages,
            "patch_size": list(self.patch_size),
            "features_per_stage": list(self.features),
            "strides": [list(s) for s in self.strides],
            "kernel_sizes": [list(k) for k in self.kernels],
            "convs_per_stage": CONVS_PER_STAGE,
        }


def _features(n_stages: int) -> tuple[int, ...]:
    return tuple(min(MAX_FEATURES_3D, BASE_FEATURES * 2**s) for s in range(n_stages))


def topology(spacing: Sequence[float], patch_size: Sequence[int], min_edge: int = MIN_FEATURE_MAP_EDGE) -> UNetPlan:
    """Strides, kernels and the padded patch for ``patch_size`` (voxels) at ``spacing`` (mm).

    Each step halves every axis that is still at least ``2 * min_edge`` voxels long and whose
    spacing is within a factor 2 of the finest such axis; a lone remaining axis must be at least
    ``3 * min_edge`` long. The patch is then rounded up to a multiple of 2^(halvings per axis).
    """
    spacing_now = [float(s) for s in spacing]
    size_now = [float(p) for p in patch_size]
    halvings = [0, 0, 0]
    kernel = [1, 1, 1]
    strides: list[tuple[int, int, int]] = [(1, 1, 1)]
    kernels: list[tuple[int, int, int]] = []
    while True:
        axes = [a for a in range(3) if size_now[a] >= 2 * min_edge]
        if not axes:
            break
        finest = min(spacing_now[a] for a in axes)
        axes = [a for a in axes if spacing_now[a] / finest < 2]
        if len(axes) == 1 and size_now[axes[0]] < 3 * min_edge:
            break
        # Kernels become 3 (and stay 3) once an axis is within a factor 2 of the finest spacing.
        kernel = [3 if k == 3 or spacing_now[a] / min(spacing_now) < 2 else 1 for a, k in enumerate(kernel)]
        for a in axes:
            halvings[a] += 1
            spacing_now[a] *= 2
            size_now[a] = math.ceil(size_now[a] / 2)
        strides.append(tuple(2 if a in axes else 1 for a in range(3)))  # type: ignore[arg-type]
        kernels.append(tuple(kernel))  # type: ignore[arg-type]
    kernels.append((3, 3, 3))  # the bottleneck always uses 3×3×3
    divisible = tuple(2**h for h in halvings)
    padded = tuple(int(math.ceil(p / d) * d) for p, d in zip(patch_size, divisible, strict=True))
    return UNetPlan(padded, tuple(strides), tuple(kernels), _features(len(strides)), divisible)  # type: ignore[arg-type]


def feature_map_voxels(plan: UNetPlan, n_classes: int = 2, patch_size: Sequence[int] | None = None) -> int:
    """nnU-Net's memory proxy: the summed sizes (channels × voxels) of every convolution output.

    Encoder: ``CONVS_PER_STAGE`` outputs per stage at that stage's resolution. Decoder (no deep
    supervision): per stage its transposed convolution and ``CONVS_PER_STAGE`` convolutions at the
    skip's resolution, plus the ``n_classes`` segmentation output at full resolution.
    """
    size = list(patch_size or plan.patch_size)
    sizes = []
    for stride in plan.strides:
        size = [n // s for n, s in zip(size, stride, strict=True)]
        sizes.append(math.prod(size))
    total = sum(CONVS_PER_STAGE * f * v for f, v in zip(plan.features, sizes, strict=True))
    total += sum((CONVS_PER_STAGE + 1) * f * v for f, v in zip(plan.features[:-1], sizes[:-1], strict=True))
    return int(total + n_classes * sizes[0])


def conv_macs(plan: UNetPlan, in_channels: int = 1, n_classes: int = 2) -> int:
    """Multiply-accumulates of all convolutions of :class:`PlainConvUNet3D` for one patch.

    Counted from the plan (no forward pass): per convolution, output voxels × input channels ×
    output channels × kernel volume; a transposed convolution scatters each input voxel into
    output channels × kernel volume outputs. Same convention as :func:`plkd.models.count_macs`.
    """
    size = list(plan.patch_size)
    voxels = []
    for stride in plan.strides:
        size = [n // s for n, s in zip(size, stride, strict=True)]
        voxels.append(math.prod(size))
    feats, total, c_in = plan.features, 0, in_channels
    for s, (f, v) in enumerate(zip(feats, voxels, strict=True)):
        k = math.prod(plan.kernels[s])
        total += v * k * f * (c_in + (CONVS_PER_STAGE - 1) * f)
        c_in = f
    for s in range(1, plan.n_stages):
        f, v, k = feats[s - 1], voxels[s - 1], math.prod(plan.kernels[s - 1])
        total += voxels[s] * feats[s] * f * math.prod(plan.strides[s])  # transposed convolution
        total += v * k * f * (2 * f + (CONVS_PER_STAGE - 1) * f)
    return int(total + voxels[0] * feats[0] * n_classes)


def plan_3d_fullres(
    median_shape: Sequence[int],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    n_classes: int = 2,
    reference: int = REFERENCE_FEATURE_MAP_VOXELS,
) -> UNetPlan:
    """The ``3d_fullres`` U-Net nnU-Net v2's default planner picks for ``median_shape`` (voxels).

    ``spacing`` in mm, ``n_classes`` counts the background (a microbleed task has 2). A smaller
    ``reference`` (the memory budget, see :data:`REFERENCE_FEATURE_MAP_VOXELS`) gives a smaller
    patch; tests use it to plan tiny networks. Raises ``ValueError`` for a non-3D or non-positive
    shape or spacing.
    """
    if len(median_shape) != 3 or len(spacing) != 3 or min(median_shape) < 1 or min(spacing) <= 0:
        raise ValueError(f"need a positive 3D shape and spacing, not {median_shape} at {spacing}")
    aspect = 1.0 / np.asarray(spacing, dtype=float)
    scale = (INITIAL_PATCH_VOXELS / float(np.prod(aspect))) ** (1 / 3)
    initial = [min(round(a * scale), int(m)) for a, m in zip(aspect, median_shape, strict=True)]
    plan = topology(spacing, initial)
    while feature_map_voxels(plan, n_classes) > reference:
        # Shrink the axis largest relative to the median shape (ties: the last such axis), by the
        # divisibility step of the network that the shrunken patch would get.
        ratios = [p / m for p, m in zip(plan.patch_size, median_shape, strict=True)]
        axis = max(range(3), key=lambda a: (ratios[a], a))
        trial = list(plan.patch_size)
        trial[axis] -= plan.divisible_by[axis]
        step = topology(spacing, trial).divisible_by[axis]
        patch = list(plan.patch_size)
        patch[axis] -= step
        if patch[axis] < 1:
            raise ValueError(f"no patch fits the memory reference {reference} for shape {tuple(median_shape)}")
        plan = topology(spacing, patch)
    return plan


def _conv_norm_act(c_in: int, c_out: int, kernel: Sequence[int], stride: Sequence[int]) -> list[nn.Module]:
    return [
        nn.Conv3d(c_in, c_out, tuple(kernel), tuple(stride), padding=tuple((k - 1) // 2 for k in kernel), bias=True),
        nn.InstanceNorm3d(c_out, eps=1e-5, affine=True),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    ]


def _stage(c_in: int, c_out: int, kernel: Sequence[int], stride: Sequence[int]) -> nn.Sequential:
    layers = _conv_norm_act(c_in, c_out, kernel, stride)
    for _ in range(CONVS_PER_STAGE - 1):
        layers += _conv_norm_act(c_out, c_out, kernel, (1, 1, 1))
    return nn.Sequential(*layers)


class PlainConvUNet3D(nn.Module):
    """A plain 3D U-Net built from a :class:`UNetPlan` (nnU-Net's ``PlainConvUNet`` layout).

    Input ``(N, in_channels, *plan.patch_size)``; output logits ``(N, n_classes, *plan.patch_size)``.
    Encoder stage ``s``: ``CONVS_PER_STAGE`` × (conv → instance norm → LeakyReLU), the first
    with stride ``plan.strides[s]``. Decoder stage: transposed convolution (kernel = stride) up
    to the skip's resolution, concatenation with the skip, ``CONVS_PER_STAGE`` convolutions; a
    1×1×1 convolution gives the logits (no deep-supervision heads: inference only).
    """

    def __init__(self, plan: UNetPlan, in_channels: int = 1, n_classes: int = 2) -> None:
        super().__init__()
        self.plan = plan
        feats = plan.features
        self.encoder = nn.ModuleList(
            _stage(in_channels if s == 0 else feats[s - 1], feats[s], plan.kernels[s], plan.strides[s])
            for s in range(plan.n_stages)
        )
        ups, decoder = [], []
        for s in range(plan.n_stages - 1, 0, -1):  # from the bottleneck up
            ups.append(nn.ConvTranspose3d(feats[s], feats[s - 1], plan.strides[s], plan.strides[s], bias=True))
            decoder.append(_stage(2 * feats[s - 1], feats[s - 1], plan.kernels[s - 1], (1, 1, 1)))
        self.ups = nn.ModuleList(ups)
        self.decoder = nn.ModuleList(decoder)
        self.head = nn.Conv3d(feats[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up, stage in zip(self.ups, self.decoder, strict=True):
            x = stage(torch.cat((up(x), skips.pop()), dim=1))
        return self.head(x)


def window_starts(image_size: Sequence[int], patch_size: Sequence[int], step: float = TILE_STEP) -> list[list[int]]:
    """Start voxel of every window along each axis, as nnU-Net's sliding window places them.

    Per axis ``ceil((n - p) / (step * p)) + 1`` windows spread evenly from 0 to ``n - p``
    (rounded to whole voxels); an axis shorter than the patch (nnU-Net pads it) has one window
    at 0. Raises ``ValueError`` unless ``0 < step <= 1``.
    """
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], not {step}")
    starts = []
    for n, p in zip(image_size, patch_size, strict=True):
        last = max(int(n) - int(p), 0)
        count = math.ceil(last / (step * p)) + 1
        starts.append([int(round(last * i / (count - 1))) if count > 1 else 0 for i in range(count)])
    return starts


def window_count(image_size: Sequence[int], patch_size: Sequence[int], step: float = TILE_STEP) -> int:
    """Number of windows nnU-Net slides over ``image_size`` (product of the per-axis counts)."""
    return math.prod(len(s) for s in window_starts(image_size, patch_size, step))


def windows(
    image_size: Sequence[int], patch_size: Sequence[int], step: float = TILE_STEP
) -> Iterator[tuple[slice, ...]]:
    """The windows as tuples of slices, X slowest (the order nnU-Net visits them)."""
    starts = window_starts(image_size, patch_size, step)
    for corner in itertools.product(*starts):
        yield tuple(slice(c, c + p) for c, p in zip(corner, patch_size, strict=True))


def gaussian_importance(patch_size: Sequence[int], sigma_scale: float = GAUSSIAN_SIGMA_SCALE) -> np.ndarray:
    """Per-voxel weight of a window's prediction, shape ``patch_size``, maximum 1 at the centre.

    A unit impulse at the centre blurred by a Gaussian of σ = ``sigma_scale`` × patch size per
    axis; zeros (far corners) are raised to the smallest positive weight so no voxel is unweighted.
    """
    impulse = np.zeros(tuple(patch_size), dtype=np.float64)
    impulse[tuple(p // 2 for p in patch_size)] = 1.0
    weights = ndimage.gaussian_filter(impulse, [p * sigma_scale for p in patch_size], mode="constant", cval=0.0)
    weights /= weights.max()
    weights[weights == 0] = weights[weights > 0].min()
    return weights.astype(np.float32)


def mirror_axes_sets(axes: Sequence[int] = (2, 3, 4)) -> list[tuple[int, ...]]:
    """Axis sets flipped for test-time mirroring: the identity ``()`` and every non-empty subset.

    For the three spatial axes of an ``(N, C, X, Y, Z)`` tensor that is 8 forward passes.
    """
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def predict_window(net: nn.Module, x: torch.Tensor, mirror: bool) -> torch.Tensor:
    """Logits of one window ``(N, C, X, Y, Z)``, averaged over the mirrored passes if ``mirror``."""
    flips = mirror_axes_sets() if mirror else [()]
    out = net(x)
    for axes in flips[1:]:
        out += torch.flip(net(torch.flip(x, axes)), axes)
    return out / len(flips)
