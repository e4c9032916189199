"""Capacity against speed for the screening FCN: one width per row, trained alike, timed alike.

For each width it trains a screening FCN from scratch with the same data, seed, steps and learning
rate (``plkd train screening``; resumable: a finished width is not trained again), times a
whole-brain score map of a 160×192×160 volume on one CPU thread (the brain size of the speed
baseline, ``plkd benchmark``), and measures screening recall per size bin on labelled validation
subjects (:mod:`screening_recall`: a candidate within 3 mm among at most 50 per subject) at 1 mm
and on 3 mm slabs. The widths are compared at the same training budget, not at convergence.

    python scripts/screening_capacity.py TRAIN VAL WORK [--widths 8,16,32] [--steps 1500]
        [--bundle BUNDLE] [--subjects N] [--json OUT]

``--bundle`` gives the manifest (thresholds, blob source) the recall is measured with (default:
the installed T2* model); its segmenters are not used.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replace_networks import replace_networks  # noqa: E402
from screening_recall import recall  # noqa: E402

from plkd.bundle import find_default_bundle  # noqa: E402
from plkd.cli import exit_code_of  # noqa: E402
from plkd.data.datasets import find_subjects  # noqa: E402
from plkd.inference.device import DeviceState  # noqa: E402
from plkd.inference.predictor import Predictor  # noqa: E402
from plkd.inference.screening import score_map  # noqa: E402
from plkd.metrics.scored import scored_labelled_subjects  # noqa: E402
from plkd.metrics.sizes import SIZE_NAMES  # noqa: E402
from plkd.models import build_network, count_parameters  # noqa: E402

BRAIN_SHAPE = (160, 192, 160)
CONDITIONS = (("hr", 1, "1 mm"), ("slab", 3, "3 mm slabs"))


def train_width(train: str, run: Path, width: int, steps: int) -> dict:
    """Train (or find finished) a screening FCN of ``width``; returns its ``done.json``."""
    cmd = ["plkd", "train", "screening", "--data", train, "--out", str(run), "--progress", "none"]
    for key, value in (
        ("networks.screening.hparams.width", width),
        ("screening.steps", steps),
        ("screening.val_every", 0),
        ("num_threads", 1),
        ("workers", 1),
    ):
        cmd += ["--set", f"{key}={value}"]
    subprocess.run(cmd, check=True)
    return json.loads((run / "screening" / "done.json").read_text(encoding="utf-8"))


def batch_size(run: Path) -> int:
    """The screening batch size the run was trained with (its saved configuration)."""
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    return int(cfg["screening"]["batch_size"])


def seconds_per_brain(width: int, repeats: int = 2) -> float:
    """Best of ``repeats`` whole-brain score maps of a :data:`BRAIN_SHAPE` volume, one thread."""
    torch.set_num_threads(1)
    net = build_network("screening_fcn", {"width": width}).eval()
    data = np.random.default_rng(0).standard_normal(BRAIN_SHAPE).astype(np.float32)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        score_map(net, data, DeviceState(torch.device("cpu"), 1))
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train")
    parser.add_argument("val")
    parser.add_argument("work")
    parser.add_argument("--widths", default="8,16,32")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--bundle", default=None)
    parser.add_argument("--subjects", type=int, default=0, help="first N validation subjects (default: all)")
    parser.add_argument("--json")
    args = parser.parse_args()
    work = Path(args.work)
    base = args.bundle or str(find_default_bundle("T2S"))
    subjects, scored = scored_labelled_subjects(find_subjects(args.val), "screening_capacity", first=args.subjects)
    bins = list(SIZE_NAMES)
    head = " | ".join(f"{c[2]}: {b}" for c in CONDITIONS for b in bins)
    print(f"| width | parameters | s per brain (1 thread) | training patches/s | {head} |")
    print("|---:|---:|---:|---:|" + "---:|" * (len(bins) * len(CONDITIONS)))
    rows = []
    for width in (int(w) for w in args.widths.split(",")):
        run = work / f"width{width}"
        done = train_width(args.train, run, width, args.steps)
        bundle = work / f"bundle-width{width}"
        if not (bundle / "manifest.json").is_file():
            replace_networks(base, str(run), str(bundle), ["screening"], f"screening-width{width}")
        predictor = Predictor(bundle, device="cpu")
        found = {name: recall(predictor, subjects, mode, factor, 50, 3.0) for mode, factor, name in CONDITIONS}
        row = {
            "width": width,
            "parameters": count_parameters(build_network("screening_fcn", {"width": width})),
            "seconds_per_brain": round(seconds_per_brain(width), 2),
            "patches_per_s": round(done["steps"] * batch_size(run) / done["time_s"], 1),
            "recall": found,
        }
        rows.append(row)
        cells = [f"{found[c[2]]['found'][b]}/{found[c[2]]['total'][b]}" for c in CONDITIONS for b in bins]
        print(
            f"| {width} | {row['parameters']} | {row['seconds_per_brain']} | {row['patches_per_s']} "
            f"| {' | '.join(cells)} |",
            flush=True,
        )
    if args.json:
        doc = {"scored": scored.to_dict(), "notes": [n for n in [scored.sentence()] if n], "rows": rows}
        Path(args.json).write_text(json.dumps(doc, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
