"""DistributedDataParallel smoke test: two CPU processes on gloo via torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from training_toydata import write_toy_dataset

from plkd.training.checkpoint import load_weights
from plkd.training.config import load_config
from plkd.training.pipeline import make_context, train


def test_torchrun_two_gloo_processes(tmp_path):
    data = write_toy_dataset(tmp_path / "data", n_subjects=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    common = ["train", "teacher", "--data", str(data), "--config", "tiny", "--device", "cpu", "--progress", "none"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "plkd"]
    proc = subprocess.run(
        [*cmd, *common, "--out", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads((tmp_path / "ddp" / "teacher" / "done.json").read_text())
    assert done["world_size"] == 2 and done["steps"] == 4
    # Only rank 0 writes: one checkpoint, one log with one row per step.
    assert len((tmp_path / "ddp" / "teacher" / "log.csv").read_text().splitlines()) == 5
    assert not list((tmp_path / "ddp").rglob("*.partial*"))
    # Two ranks average the gradients of different patches: the result differs from one process.
    cfg = load_config("tiny", ["device=cpu"])
    threads = torch.get_num_threads()
    try:
        train("teacher", data, tmp_path / "one", cfg, make_context(cfg, progress="none"))
    finally:
        torch.set_num_threads(threads)
    a, b = (
        load_weights(tmp_path / "ddp" / "teacher" / "model.pt"),
        load_weights(tmp_path / "one" / "teacher" / "model.pt"),
    )
    assert any(not torch.equal(a[k], b[k]) for k in a)
