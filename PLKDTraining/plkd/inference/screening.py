"""Stage 1: the screening FCN over the whole brain, tiled so that memory stays bounded.

The FCN is fully convolutional with 'same' padding and an output stride ``s`` (2): output voxel
``j`` of a tile starting at input voxel ``t`` (a multiple of ``s``) is output voxel ``t/s + j``
of the whole volume. Tiles overlap by twice a margin wider than half the receptive field, and
only each tile's interior is kept, so the tiled score map equals the untiled one except for
zero-padding effects that never reach the kept region.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from plkd.inference.device import DeviceState, autocast

#: Default tile size (voxels, X×Y×Z). A 128×128×96 float tile through a width-16 FCN needs
#: about 0.4 GiB of activations, which bounds memory for any volume size.
DEFAULT_TILE = (128, 128, 96)
#: Input voxels discarded at each inner tile edge; ≥ half the FCN's 20-voxel receptive field.
TILE_MARGIN = 12


def _tile_ranges(n: int, tile: int, margin: int, stride: int) -> list[tuple[int, int]]:
    """``[(lo, hi), ...]`` input ranges covering ``0..n`` with overlapping interiors."""
    if n <= tile:
        return [(0, n)]
    step = tile - 2 * margin
    starts = list(range(0, n - tile, step)) + [n - tile]
    # Starts must be multiples of the stride so tile outputs land on the global output grid;
    # rounding down can only grow the overlap. The last tile always runs to the end.
    starts = sorted({(s // stride) * stride for s in starts})
    return [(s, n if i == len(starts) - 1 else min(s + tile, n)) for i, s in enumerate(starts)]


def score_map(
    net: torch.nn.Module,
    data: np.ndarray,
    state: DeviceState,
    tile: tuple[int, int, int] = DEFAULT_TILE,
    margin: int = TILE_MARGIN,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Sigmoid score map of ``data`` (X, Y, Z) on the FCN's output grid (``ceil(n / stride)``).

    ``on_tile(done, total)`` is called after each tile for progress reporting.
    """
    stride = np.asarray(getattr(net, "output_stride", (1, 1, 1)), dtype=int)
    shape = np.asarray(data.shape, dtype=int)
    out_shape = tuple(int(v) for v in -(-shape // stride))
    scores = np.zeros(out_shape, dtype=np.float32)
    tile = tuple(int(max(t, 2 * margin + s)) for t, s in zip(tile, stride, strict=True))  # type: ignore[assignment]
    ranges = [_tile_ranges(int(n), int(t), margin, int(s)) for n, t, s in zip(shape, tile, stride, strict=True)]
    boxes = [(x, y, z) for x in ranges[0] for y in ranges[1] for z in ranges[2]]

    for done, box in enumerate(boxes, start=1):
        lo = np.asarray([r[0] for r in box])
        hi = np.asarray([r[1] for r in box])
        block = np.ascontiguousarray(data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])

        def work(device: torch.device, _batch: int, block: np.ndarray = block) -> np.ndarray:
            net.to(device)
            x = torch.from_numpy(block)[None, None].to(device)
            with torch.inference_mode(), autocast(device):
                logits = net(x)
            return torch.sigmoid(logits.float())[0, 0].cpu().numpy()

        local = state.run(work)
        # Keep outputs whose centres lie in the tile interior (the whole tile at volume edges).
        out_lo = lo // stride
        keep_lo = np.where(lo == 0, 0, (lo + margin) // stride) - out_lo
        keep_hi = np.where(hi == shape, local.shape, (hi - margin) // stride - out_lo)
        sl_local = tuple(slice(int(a), int(b)) for a, b in zip(keep_lo, keep_hi, strict=True))
        sl_global = tuple(slice(int(o + a), int(o + b)) for o, a, b in zip(out_lo, keep_lo, keep_hi, strict=True))
        scores[sl_global] = np.maximum(scores[sl_global], local[sl_local])
        if on_tile is not None:
            on_tile(done, len(boxes))
    return scores


def score_grid_to_input(net: torch.nn.Module, idx: np.ndarray) -> np.ndarray:
    """Input (model-grid) voxel coordinates of score-map voxels ``idx`` (M, 3)."""
    mapper = getattr(net, "output_to_input_coords", None)
    if mapper is not None:
        return np.asarray(mapper(idx), dtype=np.float64).reshape(-1, 3)
    return np.asarray(idx, dtype=np.float64).reshape(-1, 3)
