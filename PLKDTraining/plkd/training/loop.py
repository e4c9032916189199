"""The generic resumable training loop shared by every stage (screening, teacher, students).

A stage lives in its own folder::

    STAGE/checkpoint.pt   model + optimiser + scheduler + scaler + step + RNG + best metric + log
    STAGE/model.pt        final weights (state dict of the exported network)
    STAGE/best.pt         weights with the best validation loss (when validation is on)
    STAGE/log.csv         step, loss parts, lr, time (and val_loss)
    STAGE/curve.png       the training curve
    STAGE/done.json       written last: the stage is finished and will be skipped next time

Exact resume: the batch of step ``s`` is drawn from ``default_rng([seed, salt, s, rank])``, the
optimiser, scheduler and RNG states come back from the checkpoint, so stopping after step ``s``
and running the same command again gives the weights of an uninterrupted run. Ctrl-C (SIGINT)
finishes the current step, writes a checkpoint and raises :class:`KeyboardInterrupt` (the command
line exits with 130).

Throughput: with ``workers > 0`` the batches of the coming steps are drawn by that many forked
processes while the device trains on the current one. Each batch still comes from its own step's
random stream and they arrive in step order, so a run with workers gives the same weights as one
without (on a GPU, drawing patches on one core, not the network, was the limit).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from plkd.atomic import atomic_path, torch_save, write_json_atomic
from plkd.errors import PLKDError, TrainingError
from plkd.progress import Progress
from plkd.training.checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    DONE_NAME,
    FINAL_NAME,
    load_checkpoint,
    load_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from plkd.training.curves import plot_curves, write_log_csv
from plkd.training.distributed import DistInfo, any_rank, barrier, wrap_ddp

log = logging.getLogger(__name__)

#: The stage's training log (one row per ``log_every`` steps).
LOG_NAME = "log.csv"

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class TrainContext:
    """What every stage of one run shares: device, distribution, seed, progress, options."""

    device: torch.device
    seed: int = 0
    dist: DistInfo = field(default_factory=DistInfo)
    progress: Progress = field(default_factory=lambda: Progress("none"))
    amp: bool = False
    compile: bool = False
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    grad_clip: float = 0.0
    #: Testing hook: behave as if Ctrl-C arrived after this many steps of this process.
    stop_after: int | None = None
    #: Processes that draw the coming batches in the background (0: draw each in this process).
    workers: int = 0


@dataclass
class StageSpec:
    """One trainable stage: a network, how to draw a batch and how to score it."""

    name: str
    out_dir: Path
    model: nn.Module  # the trained module (what the loss function calls)
    steps: int
    lr: float
    batch_fn: Callable[[np.random.Generator], dict[str, np.ndarray]]
    loss_fn: LossFn
    salt: int  # distinguishes the random streams of stages
    export_module: nn.Module | None = None  # whose weights model.pt holds (default: model)
    val_batches: list[dict[str, np.ndarray]] = field(default_factory=list)
    checkpoint_every: int = 200
    log_every: int = 20
    val_every: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    #: What else the stage is trained with (batch size, loss weights...: JSON values), besides ``steps`` and ``lr``;
    #: kept in the checkpoint, so that a resume with other values says so and ``done.json`` records it.
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def exported(self) -> nn.Module:
        """The network whose weights a finished stage keeps."""
        return self.export_module if self.export_module is not None else self.model


def is_done(out_dir: Path) -> bool:
    """True when the stage in ``out_dir`` has finished: its ``done.json``, weights and log exist.

    A stage missing any of them is resumed (from its checkpoint), which rewrites them all.
    """
    out = Path(out_dir)
    return all((out / name).is_file() for name in (DONE_NAME, FINAL_NAME, LOG_NAME))


def validation_batches(make_batch: Callable[[np.random.Generator], Any], seed: int, salt: int, n: int) -> list[Any]:
    """``n`` fixed validation batches of a stage (the same for every run and resume with this seed)."""
    return [make_batch(batch_rng(seed, salt, -1 - i, 0)) for i in range(n)]


def batch_rng(seed: int, salt: int, step: int, rank: int) -> np.random.Generator:
    """The generator of one step's batch: a pure function of (seed, stage, step, rank).

    Negative steps name fixed validation batches; they get their own stream (flag 1) because
    numpy seed sequences take non-negative integers only.
    """
    validation = int(step) < 0
    return np.random.default_rng([int(seed), int(salt), abs(int(step)), int(rank), int(validation)])


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up, then cosine decay to 5 % of the peak."""

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return factor


@contextlib.contextmanager
def _sigint_flag() -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C into a flag the loop checks after each step (a second one aborts)."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True
        log.warning("interrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def to_device(batch: dict[str, np.ndarray], device: torch.device) -> Batch:
    """numpy batch → float tensors on ``device``."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True) for k, v in batch.items()}


#: The batch function of the stage being trained, for forked batch workers (a lambda cannot be pickled).
_WORKER_BATCH_FN: Callable[[np.random.Generator], dict[str, np.ndarray]] | None = None


def _worker_batch(key: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
    seed, salt, step, rank = key
    assert _WORKER_BATCH_FN is not None
    return _WORKER_BATCH_FN(batch_rng(seed, salt, step, rank))


@contextlib.contextmanager
def batch_stream(spec: StageSpec, ctx: TrainContext, start: int) -> Iterator[Iterator[dict[str, np.ndarray]]]:
    """The batches of steps ``start .. spec.steps - 1`` in order, drawn ahead by ``ctx.workers`` processes.

    Falls back to drawing in this process when there are no workers or the platform cannot fork
    (Windows, macOS' default): the batches are the same either way.
    """
    keys = ((ctx.seed, spec.salt, step, ctx.dist.rank) for step in range(start, spec.steps))
    if ctx.workers <= 0 or "fork" not in multiprocessing.get_all_start_methods():
        yield (spec.batch_fn(batch_rng(*k)) for k in keys)
        return
    global _WORKER_BATCH_FN
    _WORKER_BATCH_FN = spec.batch_fn
    pool = multiprocessing.get_context("fork").Pool(int(ctx.workers))
    try:
        yield _bounded(pool, keys, ahead=4 * int(ctx.workers))
    finally:
        pool.terminate()
        pool.join()
        _WORKER_BATCH_FN = None


def _bounded(pool: Any, keys: Iterator[tuple[int, int, int, int]], ahead: int) -> Iterator[dict[str, np.ndarray]]:
    """Results of ``_worker_batch`` over ``keys`` in order, at most ``ahead`` batches in flight
    (``Pool.imap`` would queue every step at once and pile up batches a slower device cannot take)."""
    pending: collections.deque = collections.deque()
    for key in keys:
        pending.append(pool.apply_async(_worker_batch, (key,)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def run_stage(spec: StageSpec, ctx: TrainContext) -> dict[str, Any]:
    """Train ``spec`` to completion (resuming from its checkpoint), or load it if already done.

    Returns the stage summary (also written to ``done.json``). On return ``spec.exported`` holds
    the final weights on ``ctx.device``.
    """
    out = Path(spec.out_dir)
    model = spec.model.to(ctx.device)
    if is_done(out):
        spec.exported.load_state_dict(load_weights(out / FINAL_NAME))
        summary = json.loads((out / DONE_NAME).read_text(encoding="utf-8"))
        log.info("%s: already finished, skipped", spec.name)
        return summary

    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=ctx.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(ctx.warmup_steps, spec.steps))
    use_amp = ctx.amp and ctx.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start, rows, best, elapsed = 0, [], math.inf, 0.0
    settings = {"steps": int(spec.steps), "lr": float(spec.lr), **spec.settings}
    resumes: list[dict[str, Any]] = []
    ckpt_path = out / CHECKPOINT_NAME
    if ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError:
            raise PLKDError(
                f"{out} was started with another network ({spec.summary.get('network')} now): resume it with the "
                "settings it was started with, or remove the folder to train the stage again"
            ) from None
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        start, rows, best, elapsed = (
            int(state["step"]),
            list(state["rows"]),
            float(state["best"]),
            float(state["time_s"]),
        )
        log.info("%s: resuming at step %d of %d", spec.name, start, spec.steps)
        resumes = list(state.get("resumes", []))
        if changed := _changed_settings(state.get("settings"), settings):
            # The checkpoint's optimiser and scheduler brought back the learning rate the stage started with, whatever
            # lr was given (config.yaml recorded the new one), and a step count below the step reached ended the
            # stage with done.json saying fewer steps than the network had trained: the new values now apply from
            # here, said, and recorded with the step they started at.
            log.warning(
                "%s: resumed at step %d with other settings: %s; the steps before it were trained with the earlier "
                "values (recorded in done.json)",
                spec.name,
                start,
                ", ".join(f"{k} {new} (was {old})" for k, (old, new) in changed.items()),
            )
            resumes.append({"at_step": start, "changed": changed})
            _apply_schedule(opt, sched, spec.lr, start)
    barrier(ctx.dist)  # no rank may start before rank 0's files are read by all

    wrapped = wrap_ddp(model, ctx.dist, ctx.device)
    if ctx.compile and ctx.device.type == "cuda":
        wrapped = torch.compile(wrapped)
    t0 = time.perf_counter() - elapsed

    def save(step: int) -> None:
        if not ctx.dist.is_main:
            return
        out.mkdir(parents=True, exist_ok=True)
        state = {
            "model": _state_dict(model),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_state(),
            "step": step,
            "rows": rows,
            "best": best,
            "time_s": time.perf_counter() - t0,
            "stage": spec.name,
            "settings": settings,
            "resumes": resumes,
        }
        save_checkpoint(ckpt_path, state)
        write_log_csv(out / LOG_NAME, rows)

    ctx.progress.start(spec.name, total=spec.steps)
    ctx.progress.advance(start)
    ran = 0
    with _sigint_flag() as flag, batch_stream(spec, ctx, start) as batches:
        for step, drawn in zip(range(start, spec.steps), batches, strict=False):
            model.train()
            batch = to_device(drawn, ctx.device)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                loss, parts = spec.loss_fn(wrapped, batch)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"{spec.name}: the loss became {loss.item()} at step {step}; "
                    "check the training images and labels, or lower the learning rate"
                )
            scaler.scale(loss).backward()
            if ctx.grad_clip > 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), ctx.grad_clip)
            scaler.step(opt)
            scaler.update()
            lr = opt.param_groups[0]["lr"]
            sched.step()
            done = step + 1
            ran += 1
            if done % max(1, spec.log_every) == 0 or done == spec.steps:
                row: dict[str, Any] = {"step": done, "loss": float(loss.item()), **parts, "lr": lr}
                if spec.val_every and spec.val_batches and (done % spec.val_every == 0 or done == spec.steps):
                    row["val_loss"] = _validate(spec, model, ctx)
                    if row["val_loss"] < best and ctx.dist.is_main:
                        best = row["val_loss"]
                        _save_weights(out / BEST_NAME, spec.exported)
                row["time_s"] = round(time.perf_counter() - t0, 3)
                rows.append(row)
            ctx.progress.advance(1, loss=round(float(loss.item()), 5))
            stop = flag["stop"] or (ctx.stop_after is not None and ran >= ctx.stop_after and done < spec.steps)
            stop = any_rank(stop, ctx.dist, ctx.device)
            if stop or done % max(1, spec.checkpoint_every) == 0 or done == spec.steps:
                save(done)
            if stop:
                barrier(ctx.dist)
                ctx.progress.finish()
                raise KeyboardInterrupt(f"{spec.name} interrupted at step {done}; run the same command to resume")
    ctx.progress.finish()
    summary = {
        "stage": spec.name,
        # A stage resumed with fewer steps than it had reached trained those it reached.
        "steps": max(start, spec.steps),
        "final_loss": rows[-1]["loss"] if rows else None,
        "best_val_loss": best if math.isfinite(best) else None,
        "time_s": round(time.perf_counter() - t0, 2),
        "world_size": ctx.dist.world_size,
        **spec.summary,
        **({"resumed_with_other_settings": resumes} if resumes else {}),
    }
    if ctx.dist.is_main:
        # Everything a finished stage holds, done.json last: a stage killed after its last
        # checkpoint (before its log was written) resumes here and completes them all.
        out.mkdir(parents=True, exist_ok=True)
        write_log_csv(out / LOG_NAME, rows)
        _save_weights(out / FINAL_NAME, spec.exported)
        plot_curves(out / "curve.png", rows, spec.name)
        write_json_atomic(out / DONE_NAME, summary)
    barrier(ctx.dist)
    return summary


def _changed_settings(before: Any, now: dict[str, Any]) -> dict[str, list[Any]]:
    """``{setting: [value the stage was started with, value now]}`` for the settings that differ; none when the
    checkpoint does not record them (written before plkd recorded them)."""
    if not isinstance(before, dict):
        return {}
    return {k: [before[k], v] for k, v in now.items() if k in before and before[k] != v}


def _apply_schedule(opt: torch.optim.Optimizer, sched: Any, lr: float, step: int) -> None:
    """Give the optimiser of a resumed stage the learning rate ``lr`` and the schedule of its (new) step count from
    ``step`` on: loading the checkpoint restored the base learning rate and the current rate of the old ones."""
    sched.base_lrs = [lr for _ in opt.param_groups]
    for group in opt.param_groups:
        group["initial_lr"] = lr
        group["lr"] = lr * sched.lr_lambdas[0](step)


def _save_weights(path: Path, module: nn.Module) -> None:
    with atomic_path(path) as tmp:
        torch_save(_state_dict(module), tmp)


@torch.no_grad()
def _validate(spec: StageSpec, model: nn.Module, ctx: TrainContext) -> float:
    """Mean loss over the fixed validation batches (the raw module: no DDP collective)."""
    model.eval()
    losses = [float(spec.loss_fn(model, to_device(b, ctx.device))[0].item()) for b in spec.val_batches]
    model.train()
    return float(np.mean(losses))
