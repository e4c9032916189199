"""Teacher training: the E²U-Net (or the configured segmenter) on HR 48×48×24 patches, soft Dice."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plkd.losses import soft_dice_loss
from plkd.models import build_network
from plkd.training.data import TrainingData
from plkd.training.init_from import initial_weights
from plkd.training.loop import Batch, StageSpec, TrainContext, run_stage, validation_batches

SALT = zlib.crc32(b"teacher")


def build_segmenter(cfg: dict[str, Any]) -> nn.Module:
    """A fresh segmenter as configured (teacher and students share the architecture)."""
    return build_network(cfg["networks"]["segmenter"]["kind"], cfg["networks"]["segmenter"]["hparams"])


def _loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    loss = soft_dice_loss(model(batch["image"])["logits"].float(), batch["label"])
    return loss, {"dice": float(loss.detach())}


def teacher_stage(run_dir: Path, cfg: dict[str, Any], data: TrainingData, seed: int) -> StageSpec:
    """The teacher stage of a run (network freshly initialised from ``seed``)."""
    tc = cfg["teacher"]
    torch.manual_seed(seed + SALT % 10_000)
    net = build_segmenter(cfg)
    summary: dict[str, Any] = {"network": cfg["networks"]["segmenter"], "lr_factor": 1}
    init = initial_weights(cfg, "segmenter", 1)
    if init is not None:
        net.load_state_dict(init[0])
        summary["init_from"] = init[1]
    val = []
    if data.val_sampler is not None and tc["val_every"]:
        sampler = data.val_sampler
        val = validation_batches(
            lambda rng: sampler.segmentation_batch(rng, tc["batch_size"]), seed, SALT, tc["val_batches"]
        )
    return StageSpec(
        name="teacher",
        out_dir=Path(run_dir) / "teacher",
        model=net,
        steps=int(tc["steps"]),
        lr=float(tc["lr"]),
        batch_fn=lambda rng: data.sampler.segmentation_batch(rng, int(tc["batch_size"])),
        loss_fn=_loss,
        salt=SALT,
        val_batches=val,
        checkpoint_every=int(tc["checkpoint_every"]),
        log_every=int(tc["log_every"]),
        val_every=int(tc["val_every"]),
        summary=summary,
        settings={"batch_size": int(tc["batch_size"])},
    )


def train_teacher(run_dir: Path, cfg: dict[str, Any], data: TrainingData, ctx: TrainContext) -> tuple[nn.Module, dict]:
    """Train (or load, when finished) the HR teacher; returns ``(net, summary)``."""
    spec = teacher_stage(run_dir, cfg, data, ctx.seed)
    summary = run_stage(spec, ctx)
    return spec.exported, summary
