"""Stage 1 training: the screening FCN on 20×20×16 patches (positive when a microbleed is central)."""

from __future__ import annotations

import copy
import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from plkd.inference.candidates import local_maxima, mask_on_score_grid
from plkd.inference.device import DeviceState
from plkd.inference.screening import score_grid_to_input, score_map
from plkd.losses import screening_loss
from plkd.models import build_network
from plkd.training.data import TrainingData
from plkd.training.init_from import initial_weights
from plkd.training.loop import Batch, StageSpec, TrainContext, is_done, run_stage, validation_batches
from plkd.training.sampling import SubjectArrays

SALT = zlib.crc32(b"screening")
log = logging.getLogger(__name__)


class ScreeningPatchModel(nn.Module):
    """Wraps the FCN so that ``forward`` gives the patch logit (DDP only syncs through ``forward``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.patch_logit(x)


def _loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    logit = model(batch["image"])
    loss = screening_loss(logit.float(), batch["target"])
    with torch.no_grad():
        acc = ((logit > 0).float() == batch["target"]).float().mean()
    return loss, {"accuracy": float(acc)}


def screening_stage(run_dir: Path, cfg: dict[str, Any], data: TrainingData, seed: int) -> StageSpec:
    """The screening stage of a run (network freshly initialised from ``seed``)."""
    sc = cfg["screening"]
    torch.manual_seed(seed + SALT % 10_000)
    net = build_network(cfg["networks"]["screening"]["kind"], cfg["networks"]["screening"]["hparams"])
    summary: dict[str, Any] = {"network": cfg["networks"]["screening"]}
    init = initial_weights(cfg, "screening")
    if init is not None:
        net.load_state_dict(init[0])
        summary["init_from"] = init[1]
    val = []
    if data.val_sampler is not None and sc["val_every"]:
        sampler = data.val_sampler
        val = validation_batches(
            lambda rng: sampler.screening_batch(rng, sc["batch_size"]), seed, SALT, sc["val_batches"]
        )
    return StageSpec(
        name="screening",
        out_dir=Path(run_dir) / "screening",
        model=ScreeningPatchModel(net),
        export_module=net,
        steps=int(sc["steps"]),
        lr=float(sc["lr"]),
        batch_fn=lambda rng: data.sampler.screening_batch(rng, int(sc["batch_size"])),
        loss_fn=_loss,
        salt=SALT,
        val_batches=val,
        checkpoint_every=int(sc["checkpoint_every"]),
        log_every=int(sc["log_every"]),
        val_every=int(sc["val_every"]),
        summary=summary,
        settings={"batch_size": int(sc["batch_size"])},
    )


def train_screening(
    run_dir: Path, cfg: dict[str, Any], data: TrainingData, ctx: TrainContext
) -> tuple[nn.Module, dict]:
    """Train (or load, when finished) the screening FCN; returns ``(net, summary)``."""
    spec = screening_stage(run_dir, cfg, data, ctx.seed)
    limit = int(cfg["sampling"]["screening_candidates"])
    if not (cfg["screening"]["mine_init"] and "init_from" in spec.summary and limit > 0) or is_done(spec.out_dir):
        return spec.exported, run_stage(spec, ctx)
    # Fine-tuning: the starting network's own false positives (mostly veins) are the patches it
    # must learn to reject. They are mined again, identically, when the stage resumes, and taken
    # out of the pool afterwards, so later stages draw the same patches whether or not this stage
    # ran in the same process (a resumed run equals an uninterrupted one).
    sampler = data.sampler
    pools = [(s.mimics, s.mimic_kinds) for s in sampler.subjects]
    with_hard = list(sampler.with_hard)
    try:
        n = mine_hard_negatives(copy.deepcopy(spec.export_module).to(ctx.device), data, limit, ctx.device)
        log.info("added %d false positives of the starting screening network as hard negatives", n)
        spec.summary["mined_from_init"] = n
        summary = run_stage(spec, ctx)
    finally:
        for subject, (pool, kinds) in zip(sampler.subjects, pools, strict=True):
            subject.mimics, subject.mimic_kinds = pool, kinds
        sampler.with_hard = with_hard
    return spec.exported, summary


@torch.no_grad()
def screening_false_positives(net: nn.Module, subject: SubjectArrays, limit: int, device: torch.device) -> np.ndarray:
    """Input-voxel centres ``(M, 3)`` of the ``limit`` highest score peaks of ``net`` in the brain.

    Peaks are found inside the brain first, then ranked, as inference does (ranking first would
    spend the whole budget on the dark rim around the brain, where the FCN scores highest but no
    candidate is ever taken). Peaks near true microbleeds are removed by the sampler
    (:meth:`PatchSampler.add_hard_negatives`); what remains are the mimics this screening network
    confuses with microbleeds.
    """
    net.eval()
    scores = score_map(net, subject.image, DeviceState(device, 1))
    stride = np.asarray(getattr(net, "output_stride", (1, 1, 1)), dtype=int)
    idx = local_maxima(scores, 0.05, mask_on_score_grid(subject.mask, stride))
    coords = np.rint(score_grid_to_input(net, idx)).astype(np.int64).reshape(-1, 3)
    coords = np.clip(coords, 0, np.asarray(subject.image.shape) - 1)
    return coords[subject.mask[tuple(coords.T)]][:limit]


def mine_hard_negatives(net: nn.Module, data: TrainingData, limit: int, device: torch.device) -> int:
    """Add screening false positives of every training subject to the sampler; returns how many."""
    added = 0
    for i, s in enumerate(data.sampler.subjects):
        coords = screening_false_positives(net, s, limit, device)
        before = len(s.hard_negatives)
        data.sampler.add_hard_negatives(i, coords)
        added += len(s.hard_negatives) - before
    return added
