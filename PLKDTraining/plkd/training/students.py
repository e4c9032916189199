"""Student training: PLKD (progressive), one-step KD, or no distillation.

``mode="plkd"`` (the paper, Sec. 2.2): the frozen HR teacher sees each HR patch while the
student sees its LR@2 version; the student then continues on LR@4, LR@8, … up to the target
factor, each stage starting from the previous stage's weights. The paper does not say how the
first student is initialised; we start it from the teacher's weights (``students.init:
teacher``), the usual choice, which also gives the feature distances a meaningful start. Loss
(eq. 3): ``α · SoftDice(student, label) + β · (λ_g d(f_T,g, f_S,g) + λ_s d(f_T,s, f_S,s))``.
A final **fine-tune** on the target LR domain follows (the paper: "further fine-tuning"; its
details are not given). Ours: soft Dice only (``finetune.distill: false``), a lower learning rate
(``finetune.lr_factor``) and a random LR simulation mode per patch (cubic ``interp`` or
thick-slice ``slab`` averaging, plus a little noise), so the student also fits real thick slices.

``mode="kd"``: one distillation stage HR → target factor (initialised like PLKD's first stage);
``mode="none"``: the student trained on the target LR alone, from random weights, no teacher.
Both default to the PLKD total step budget so the comparison is fair.

Stages are kept in ``RUN/students/x2``, ``x4``, …, ``finetune`` (``RUN/students-kd/x8``,
``RUN/students-none/x8`` for the baselines).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plkd.errors import PLKDError
from plkd.losses import plkd_loss
from plkd.models import build_network
from plkd.training.checkpoint import DONE_NAME, FINAL_NAME, load_weights
from plkd.training.config import loss_weights
from plkd.training.data import TrainingData
from plkd.training.init_from import initial_weights
from plkd.training.loop import Batch, StageSpec, TrainContext, run_stage, validation_batches
from plkd.training.segmentation import build_segmenter


@dataclass(frozen=True)
class StudentStage:
    """One student stage: which LR factor, with or without the teacher, for how long."""

    name: str
    factor: int
    distill: bool
    steps: int
    lr: float
    lr_modes: tuple[str, ...]
    lr_noise_std: float
    alpha: float
    beta: float


def factor_chain(target: int) -> list[int]:
    """PLKD's LR factors for a target: 2, 4, …, target (a power of two)."""
    if target < 2 or target & (target - 1):
        raise PLKDError(f"the target LR factor must be a power of two >= 2, not {target}")
    chain, f = [], 2
    while f <= target:
        chain.append(f)
        f *= 2
    return chain


def plan_stages(cfg: dict[str, Any], modality: str) -> list[StudentStage]:
    """The stages of ``students.mode`` for ``students.target_factor``, in training order."""
    st = cfg["students"]
    mode, target = st["mode"], int(st["target_factor"])
    alpha, beta = loss_weights(cfg, modality)
    modes, noise = tuple(st["lr_modes"]), float(st["lr_noise_std"])
    chain = factor_chain(target)
    ft = st["finetune"]
    if mode == "plkd":
        stages = [
            StudentStage(f"x{f}", f, True, int(st["stage_steps"]), float(st["lr"]), modes, noise, alpha, beta)
            for f in chain
        ]
        if ft["enabled"]:
            distill = bool(ft["distill"])
            stages.append(
                StudentStage(
                    "finetune",
                    target,
                    distill,
                    int(ft["steps"]),
                    float(st["lr"]) * float(ft["lr_factor"]),
                    tuple(ft["lr_modes"]),
                    float(ft["lr_noise_std"]),
                    alpha if distill else 1.0,
                    beta if distill else 0.0,
                )
            )
        return stages
    budget = int(st["single_stage_steps"]) or int(st["stage_steps"]) * len(chain) + (
        int(ft["steps"]) if ft["enabled"] else 0
    )
    if mode == "kd":
        return [StudentStage(f"x{target}", target, True, budget, float(st["lr"]), modes, noise, alpha, beta)]
    return [StudentStage(f"x{target}", target, False, budget, float(st["lr"]), modes, noise, 1.0, 0.0)]


def students_dir(run_dir: Path, mode: str) -> Path:
    """Where a mode's students live: ``RUN/students`` (PLKD) or ``RUN/students-<mode>``."""
    return Path(run_dir) / ("students" if mode == "plkd" else f"students-{mode}")


def state_checksum(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's tensors (to record which weights a stage started from)."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def freeze(module: nn.Module) -> nn.Module:
    """Evaluation mode and no gradients: a teacher is never updated."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def load_teacher(teacher_dir: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher of a finished ``RUN/teacher`` folder and its network config."""
    teacher_dir = Path(teacher_dir)
    done = teacher_dir / DONE_NAME
    if not done.is_file() or not (teacher_dir / FINAL_NAME).is_file():
        raise PLKDError(f"{teacher_dir} is not a finished teacher (no {DONE_NAME}); run 'plkd train teacher' first")
    network = json.loads(done.read_text(encoding="utf-8"))["network"]
    net = build_network(network["kind"], network["hparams"])
    net.load_state_dict(load_weights(teacher_dir / FINAL_NAME))
    return freeze(net.to(device)), network


def _make_loss(stage: StudentStage, teacher: nn.Module | None, cfg: dict[str, Any]):
    lg, ls = float(cfg["students"]["lambda_g"]), float(cfg["students"]["lambda_s"])

    def loss_fn(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        s = model(batch["lr"])
        t = None
        if stage.distill and teacher is not None:
            with torch.no_grad():
                t = teacher(batch["image"])
        total, parts = plkd_loss(s["logits"].float(), batch["label"], t, s, stage.alpha, stage.beta, lg, ls)
        parts.pop("total", None)
        return total, parts

    return loss_fn


def train_students(
    run_dir: Path,
    cfg: dict[str, Any],
    data: TrainingData,
    ctx: TrainContext,
    teacher_dir: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Train every stage of ``students.mode`` in order (finished stages are skipped).

    Returns ``{stage name: summary}``. ``teacher_dir`` defaults to ``RUN/teacher``.
    """
    st = cfg["students"]
    mode = st["mode"]
    stages = plan_stages(cfg, data.modality)
    teacher, network = None, cfg["networks"]["segmenter"]
    teacher_dir = Path(teacher_dir) if teacher_dir is not None else Path(run_dir) / "teacher"
    if mode != "none":
        teacher, network = load_teacher(teacher_dir, ctx.device)
    out_root = students_dir(run_dir, mode)
    prev_state: dict[str, torch.Tensor] | None = None
    prev_name = "random"
    if mode != "none" and st["init"] == "teacher":
        prev_state = {k: v.detach().cpu().clone() for k, v in teacher.state_dict().items()}  # type: ignore[union-attr]
        # The run's own teacher by its stage name; another run's by its absolute path (found from any directory).
        own = teacher_dir.resolve() == (Path(run_dir) / "teacher").resolve()
        prev_name = "teacher" if own else str(teacher_dir.resolve())
    summaries = {}
    for stage in stages:
        salt = zlib.crc32(f"{out_root.name}/{stage.name}".encode())
        torch.manual_seed(ctx.seed + salt % 10_000)
        student = build_network(network["kind"], network["hparams"]) if mode != "none" else build_segmenter(cfg)
        if prev_state is not None:
            student.load_state_dict(prev_state)
        pretrained = initial_weights(cfg, "segmenter", stage.factor) if stage.name != "finetune" else None
        if pretrained is not None:
            student.load_state_dict(pretrained[0])
            prev_name = pretrained[1]
        init_sum = state_checksum(student.state_dict())
        val = []
        if data.val_sampler is not None and st["val_every"]:
            val = validation_batches(
                lambda rng, s=stage, sampler=data.val_sampler: sampler.segmentation_batch(
                    rng, st["batch_size"], s.factor, s.lr_modes, s.lr_noise_std
                ),
                ctx.seed,
                salt,
                st["val_batches"],
            )
        spec = StageSpec(
            name=f"{out_root.name}/{stage.name}",
            out_dir=out_root / stage.name,
            model=student,
            steps=stage.steps,
            lr=stage.lr,
            batch_fn=lambda rng, s=stage: data.sampler.segmentation_batch(
                rng, int(st["batch_size"]), s.factor, s.lr_modes, s.lr_noise_std
            ),
            loss_fn=_make_loss(stage, teacher, cfg),
            salt=salt,
            val_batches=val,
            checkpoint_every=int(st["checkpoint_every"]),
            log_every=int(st["log_every"]),
            val_every=int(st["val_every"]),
            summary={
                "network": network,
                "mode": mode,
                "lr_factor": stage.factor,
                "distill": stage.distill,
                "alpha": stage.alpha,
                "beta": stage.beta,
                "lr_modes": list(stage.lr_modes),
                "init_from": prev_name,
                "init_sha256": init_sum,
            },
            settings={
                "batch_size": int(st["batch_size"]),
                "distill": stage.distill,
                "alpha": stage.alpha,
                "beta": stage.beta,
                "lr_modes": list(stage.lr_modes),
                "lr_noise_std": stage.lr_noise_std,
            },
        )
        summaries[stage.name] = run_stage(spec, ctx)
        prev_state = {k: v.detach().cpu().clone() for k, v in student.state_dict().items()}
        prev_name = f"{out_root.name}/{stage.name}"
    return summaries
