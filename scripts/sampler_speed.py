"""Patches per second of the training patch sampler, per batch kind, on this CPU.

Loads a few subjects of a training data set (``plkd synth`` output or any folder ``plkd train``
reads), then times screening batches (64 patches, the configuration's ``screening.lr_share``),
teacher batches (8 patches) and LR@4 student batches (8 patches, interp/slab, noise 0.02) for
each ``augment.geometry_p`` asked for. Each batch comes from its own seeded generator, as in
training. Run it with one thread to get the figure of one background worker:

    OMP_NUM_THREADS=1 python scripts/sampler_speed.py DATA [--config gpu] [--geometry-p 0 0.5 1]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np

from plkd.data.datasets import find_subjects
from plkd.training.config import load_config, set_value
from plkd.training.sampling import PatchSampler, prepare_subject


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="training data folder")
    ap.add_argument("--config", default=None, help="packaged configuration name or YAML file (default: default)")
    ap.add_argument("--subjects", type=int, default=2, help="subjects to load (default 2)")
    ap.add_argument("--geometry-p", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="geometry_p values to time")
    ap.add_argument("--seconds", type=float, default=5.0, help="time per measurement (default 5 s)")
    args = ap.parse_args()

    base = load_config(args.config)
    subjects = [prepare_subject(s, base, 0) for s in find_subjects(args.data)[: args.subjects]]
    for p in args.geometry_p:
        # A checkout from before the option has no key: its p = 0 is the plain sampler.
        cfg = set_value(base, "augment.geometry_p", str(p)) if p or "geometry_p" in base["augment"] else base
        smp = PatchSampler(subjects, cfg)
        kinds = (
            ("screening", 64, partial(smp.screening_batch, n=64)),
            ("teacher", 8, partial(smp.segmentation_batch, n=8)),
            (
                "student x4",
                8,
                partial(smp.segmentation_batch, n=8, factor=4, lr_modes=("interp", "slab"), lr_noise_std=0.02),
            ),
        )
        for name, size, draw in kinds:
            draw(np.random.default_rng(12345))  # warm the caches
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                draw(np.random.default_rng([7, n]))
                n += 1
            rate = n * size / (time.perf_counter() - start)
            print(f"geometry_p={p:g}  {name:11s} {rate:8.1f} patches/s", flush=True)


if __name__ == "__main__":
    main()
