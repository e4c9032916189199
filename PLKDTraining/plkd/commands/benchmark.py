"""``plkd benchmark``: time two-stage inference against a sliding-window 3D U-Net on this machine.

Two baselines: ``nnunet`` (default) is the U-Net nnU-Net v2's default planner picks for the
brain's shape, run as nnU-Net predicts (half-patch steps, Gaussian weighting, with and without
8-fold test-time mirroring; see :mod:`plkd.models.baseline_unet`); ``same-size`` is a plain
3D U-Net of the two-stage segmenter's width and depth slid with small windows.

Networks have random weights: speed and memory do not depend on the weights, and the number of
screening candidates is fixed (``--candidates``; the bundle's blob candidates, up to 20 for the
shipped model, come on top as in ``plkd predict``) so that runs are comparable. Each measurement runs in its
own process so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from plkd.errors import PLKDError

EPILOG = """\
example:
  plkd benchmark --sizes 1 --threads 1 --candidates 120 --json bench.json

Two-stage = screening FCN on the whole brain + E2U-Net on --candidates screening candidates plus
the bundle's blob candidates (up to 20 for the shipped model, as plkd predict segments them), one
48x48x24 patch each; the table's note gives the number segmented.
Baselines (--baseline):
  nnunet     the 3d_fullres U-Net nnU-Net v2's default planner picks for a --shape brain at 1 mm
             (for 160x192x160: 6 stages, 32-320 features, 128x128x128 patch), slid over the
             image's non-zero box with half-patch steps and Gaussian weighting; timed with
             nnU-Net's default test-time mirroring (8 passes per window) and without it.
  same-size  a plain 3D U-Net of the segmenter's width and depth slid over the brain box on the
             model grid with --window windows, 50% overlap.
  both       both of the above.
With --baseline-windows K only K windows are run and the time is extrapolated (reported).
"""

#: Windows run by default before extrapolating, per baseline (nnU-Net's are 128³ and mirrored).
DEFAULT_WINDOWS = {"nnunet": 2, "same-size": 24}
BASELINES = ("nnunet", "same-size", "both")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``benchmark`` sub-command."""
    p = sub.add_parser(
        "benchmark",
        help="time whole-brain inference per stage against a sliding-window baseline",
        description=(
            "Times the two-stage inference on a synthetic whole-brain volume at each slice thickness, "
            "and a sliding-window full-resolution 3D U-Net on the same brain (by default the one nnU-Net's "
            "default planner picks, run as nnU-Net predicts); prints a Markdown table (and writes JSON). "
            "Random weights: timings only."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sizes", default="1,3,5", help="slice thicknesses in mm, comma-separated (default 1,3,5)")
    p.add_argument("--shape", default="160,192,160", help="1-mm field of view X,Y,Z in voxels (default 160,192,160)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps (default cpu)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch (default 2)")
    p.add_argument(
        "--candidates",
        type=int,
        default=40,
        help="screening candidates segmented in stage 2 (default 40); blob candidates come on top",
    )
    p.add_argument(
        "--baseline",
        choices=BASELINES,
        default="nnunet",
        help="baseline to time: nnU-Net's default U-Net, one of the segmenter's size, or both (default nnunet)",
    )
    p.add_argument(
        "--window", default="48,48,24", help="same-size baseline window X,Y,Z (default 48,48,24; try 96,96,64)"
    )
    p.add_argument(
        "--baseline-windows",
        type=int,
        help="windows actually run, then extrapolated (0 = all; default 2 for nnunet, 24 for same-size)",
    )
    p.add_argument(
        "--model",
        metavar="BUNDLE",
        help="time networks of this bundle's architecture (default: the installed bundle, else the paper-sized one)",
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.set_defaults(func=run)


def _triple(text: str, what: str) -> tuple[int, int, int]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or min(vals) < 8:
        raise PLKDError(f"{what} must be three integers >= 8 separated by commas, not {text!r}")
    return vals  # type: ignore[return-value]


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def brain_phantom(shape: tuple[int, int, int], thickness: float, seed: int = 0) -> Any:
    """A skull-stripped ellipsoidal 'brain' with texture and noise on a (1, 1, thickness) mm grid."""
    from scipy import ndimage

    from plkd.volumes import Volume

    nz = max(4, int(round(shape[2] / thickness)))
    grid = np.ogrid[0 : shape[0], 0 : shape[1], 0:nz]
    centre = [(shape[0] - 1) / 2, (shape[1] - 1) / 2, (nz - 1) / 2]
    radii = [0.42 * shape[0], 0.44 * shape[1], 0.42 * nz]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.normal(size=inside.shape).astype(np.float32), 2.0)
    data = np.where(inside, 500 + 2000 * texture + rng.normal(0, 20, inside.shape), 0).astype(np.float32)
    affine = np.diag([1.0, 1.0, float(thickness), 1.0])
    return Volume(data=data, affine=affine)


def architecture(model: str | None) -> tuple[str, dict, dict]:
    """(name, screening config, segmenter config) of the networks to time.

    From ``model`` (a bundle), else from the installed bundle, else the paper-sized defaults.
    """
    from plkd.bundle import find_default_bundle, load_bundle

    path = model or find_default_bundle()
    if path is None:
        return "paper-sized defaults", {"kind": "screening_fcn", "hparams": {}}, {"kind": "e2unet", "hparams": {}}
    bundle = load_bundle(path)
    nets = bundle.manifest["networks"]
    segmenter = nets[next(iter(bundle.segmenter_names()))]
    screening = nets[bundle.screening_name]
    return (
        f"architecture of {bundle.manifest.get('name') or Path(path).name}",
        {"kind": screening["kind"], "hparams": screening["hparams"]},
        {"kind": segmenter["kind"], "hparams": segmenter["hparams"]},
    )


def _random_bundle(folder: Path, screening: dict, segmenter: dict) -> Path:
    import torch

    from plkd.bundle import save_bundle
    from plkd.models import build_network

    torch.manual_seed(0)
    nets = {
        "screening": {"module": build_network(**screening), "role": "screening", "lr_factor": None},
        "teacher": {"module": build_network(**segmenter), "role": "segmenter", "lr_factor": 1},
        "student_x4": {"module": build_network(**segmenter), "role": "segmenter", "lr_factor": 4},
    }
    # Screening threshold 0: every local maximum qualifies and the cap fixes the candidate count.
    thresholds = {"screening": 0.0, "segmentation": 0.5, "voxel": 0.5, "min_distance_mm": 4.0}
    return save_bundle(
        folder / "random-bundle",
        nets,
        manifest={"name": "random-weights", "modality": "T2S", "thresholds": thresholds},
        half=False,
    )


def _time_two_stage(
    bundle: str, shape: tuple[int, int, int], thickness: float, device: str, threads: int, n: int
) -> dict:
    import torch

    torch.set_num_threads(threads)
    from plkd.inference.predictor import Predictor

    vol = brain_phantom(shape, thickness)
    predictor = Predictor(bundle, device=device, max_candidates=n)
    predictor.predict(brain_phantom((48, 48, 48), thickness, seed=1))  # warm-up: allocator, kernels
    if predictor.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = predictor.predict(vol)
    total = time.perf_counter() - t0
    out = {
        "method": "two-stage",
        "input": f"{vol.shape[0]}x{vol.shape[1]}x{vol.shape[2]} @ 1x1x{thickness:g} mm",
        "candidates": len(result.candidates),
        "student": result.student,
        "seconds": round(total, 3),
        "stages": result.timings,
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "device": predictor.device.type,
    }
    if predictor.device.type == "cuda":
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def _spread(items: list, limit: int) -> list:
    """At most ``limit`` items spread evenly over ``items`` (all of them if ``limit <= 0``)."""
    return items if limit <= 0 else items[:: max(1, math.ceil(len(items) / limit))]


def _time_sliding_window(
    shape: tuple[int, int, int], window: tuple[int, int, int], device: str, threads: int, limit: int, capacity: dict
) -> dict:
    import torch

    torch.set_num_threads(threads)
    from plkd.inference.brainmask import compute_brain_mask
    from plkd.inference.device import autocast, resolve_device
    from plkd.inference.preprocess import prepare
    from plkd.models import UNet3D

    dev = resolve_device(device)
    vol = brain_phantom(shape, 1.0)
    mask, _ = compute_brain_mask(vol)
    t0 = time.perf_counter()
    prep = prepare(vol, mask, np.ones(3))
    t_pre = time.perf_counter() - t0
    # Comparable capacity: the same width and depth as the two-stage segmenter.
    net = UNet3D(**capacity).eval().to(dev)
    starts = [list(range(0, max(n - w, 0) + 1, w // 2)) for n, w in zip(prep.data.shape, window, strict=True)]
    for s, n, w in zip(starts, prep.data.shape, window, strict=True):
        if s[-1] + w < n:
            s.append(n - w)
    boxes = [(x, y, z) for x in starts[0] for y in starts[1] for z in starts[2]]
    run = _spread(boxes, limit)
    padded = np.pad(prep.data, [(0, max(0, w - n)) for n, w in zip(prep.data.shape, window, strict=True)])
    acc = np.zeros(padded.shape, dtype=np.float32)
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(padded[: window[0], : window[1], : window[2]]))[None, None].to(dev)
        net(x)  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for b in run:
            sl = tuple(slice(s, s + w) for s, w in zip(b, window, strict=True))
            x = torch.from_numpy(np.ascontiguousarray(padded[sl]))[None, None].to(dev)
            with autocast(dev):
                y = torch.sigmoid(net(x)["logits"].float())[0, 0]
            acc[sl] = np.maximum(acc[sl], y.cpu().numpy())
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t_run = time.perf_counter() - t0
    per_window = t_run / max(1, len(run))
    out = {
        "method": f"sliding-window 3D U-Net {window[0]}x{window[1]}x{window[2]}, 50% overlap",
        "baseline": "same-size",
        "input": f"{prep.data.shape[0]}x{prep.data.shape[1]}x{prep.data.shape[2]} model grid (brain box)",
        "windows": len(boxes),
        "windows_run": len(run),
        "extrapolated": len(run) < len(boxes),
        "seconds": round(t_pre + per_window * len(boxes), 3),
        "stages": {"preprocess": round(t_pre, 3), "per_window": round(per_window, 4)},
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "device": dev.type,
    }
    if dev.type == "cuda":
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def _time_nnunet(shape: tuple[int, int, int], device: str, threads: int, limit: int) -> list[dict]:
    """Time nnU-Net's default inference of its planned 3D U-Net on a ``shape`` brain at 1 mm.

    Like ``nnUNetPredictor``: crop to the non-zero box, z-score, pad to the patch, slide with
    half-patch steps, weight each window's logits by a Gaussian, average, take the argmax. Each of
    the windows run is predicted twice, once plain and once with 8-fold mirroring, so one process
    gives both rows (mirrored first: nnU-Net's default). Times of the windows not run are
    extrapolated from the mean time per window.
    """
    import torch

    torch.set_num_threads(threads)
    from scipy import ndimage

    from plkd.inference.device import autocast, resolve_device
    from plkd.models import count_parameters
    from plkd.models.baseline_unet import (
        PlainConvUNet3D,
        conv_macs,
        gaussian_importance,
        mirror_axes_sets,
        plan_3d_fullres,
        predict_window,
        windows,
    )

    dev = resolve_device(device)
    plan = plan_3d_fullres(shape, (1.0, 1.0, 1.0), n_classes=2)
    net = PlainConvUNet3D(plan, in_channels=1, n_classes=2).eval().to(dev)
    vol = brain_phantom(shape, 1.0)
    t0 = time.perf_counter()
    box = ndimage.find_objects((vol.data != 0).astype(np.uint8))
    data = vol.data[box[0]] if box else vol.data
    data = (data - data.mean()) / max(float(data.std()), 1e-8)
    pads = [(0, max(0, p - n)) for n, p in zip(data.shape, plan.patch_size, strict=True)]
    image = torch.from_numpy(np.ascontiguousarray(np.pad(data, pads), dtype=np.float32))[None, None].to(dev)
    t_pre = time.perf_counter() - t0
    boxes = list(windows(image.shape[2:], plan.patch_size))
    run = _spread(boxes, limit)
    weight = torch.from_numpy(gaussian_importance(plan.patch_size)).to(dev)
    logits = torch.zeros((2, *image.shape[2:]), device=dev)
    weights = torch.zeros(image.shape[2:], device=dev)
    per_window = {}
    with torch.inference_mode():
        # Warm-up on a small input (bottleneck 2 voxels a side) so the first timed pass is not slower.
        small = [min(p, 2 * d) for p, d in zip(plan.patch_size, plan.divisible_by, strict=True)]
        net(image[(..., *(slice(0, n) for n in small))])
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for mirror in (True, False):
            t0 = time.perf_counter()
            for sl in run:
                with autocast(dev):
                    out = predict_window(net, image[(..., *sl)], mirror)[0].float()
                logits[(slice(None), *sl)] += out * weight
                weights[sl] += weight
            if dev.type == "cuda":
                torch.cuda.synchronize()
            per_window[mirror] = (time.perf_counter() - t0) / max(1, len(run))
        t0 = time.perf_counter()
        (logits / weights.clamp_min(1e-8)).argmax(0).cpu().numpy()  # the label map nnU-Net would export
        t_post = time.perf_counter() - t0
    common = {
        "input": f"{shape[0]}x{shape[1]}x{shape[2]} @ 1 mm, non-zero box " + "x".join(str(int(n)) for n in data.shape),
        "windows": len(boxes),
        "windows_run": len(run),
        "extrapolated": len(run) < len(boxes),
        "plan": {**plan.as_dict(), "median_shape": list(shape), "spacing_mm": [1.0, 1.0, 1.0]},
        "parameters": count_parameters(net),
        "gmac_per_pass": round(conv_macs(plan, in_channels=1, n_classes=2) / 1e9, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "device": dev.type,
    }
    if dev.type == "cuda":
        common["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    patch = "x".join(str(p) for p in plan.patch_size)
    rows = []
    for mirror in (True, False):
        passes = len(mirror_axes_sets()) if mirror else 1
        rows.append(
            {
                "method": f"nnU-Net default 3D U-Net {patch}, step 0.5, Gaussian, "
                + ("8x mirroring" if mirror else "no mirroring"),
                **common,
                "baseline": "nnunet" if mirror else "nnunet-no-mirroring",
                "mirroring": mirror,
                "forward_passes_per_window": passes,
                "seconds": round(t_pre + per_window[mirror] * len(boxes) + t_post, 3),
                "stages": {
                    "preprocess": round(t_pre, 3),
                    "per_window": round(per_window[mirror], 4),
                    "postprocess": round(t_post, 3),
                },
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    """The results as a Markdown table (two-stage rows first, then the baselines)."""
    lines = [
        "| method | input | seconds | preprocess | screen | segment | peak RSS MiB | note |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        st = r.get("stages", {})
        note = f"{r['candidates']} candidates, {r['student']}" if "candidates" in r else ""
        if r.get("extrapolated"):
            note = f"extrapolated from {r['windows_run']} of {r['windows']} windows"
        elif "windows" in r:
            note = f"{r['windows']} windows"
        if "forward_passes_per_window" in r:
            note += f", {r['forward_passes_per_window']} pass(es) per window"
        for name, ratio in r.get("speedup", {}).items():
            note += f"; speed-up {ratio}x vs {name}"
        lines.append(
            f"| {r['method']} | {r['input']} | {r['seconds']:.2f} | {st.get('preprocess', 0):.2f} | "
            f"{st.get('screen', 0):.2f} | {st.get('segment', 0):.2f} | {r['peak_rss_mib']:.0f} | {note} |"
        )
    return "\n".join(lines)


def _baselines(args: argparse.Namespace, shape: tuple[int, int, int], capacity: dict, ctx: Any) -> list[dict]:
    """The baseline rows asked for by ``--baseline``, each measured in its own process."""
    out: list[dict] = []
    for name in ("nnunet", "same-size"):
        if args.baseline not in (name, "both"):
            continue
        limit = DEFAULT_WINDOWS[name] if args.baseline_windows is None else args.baseline_windows
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            if name == "nnunet":
                job = pool.submit(_time_nnunet, shape, args.device, args.threads, limit)
                out += job.result()
            else:
                window = _triple(args.window, "--window")
                job = pool.submit(_time_sliding_window, shape, window, args.device, args.threads, limit, capacity)
                out.append(job.result())
        print(f"baseline {name}: {out[-1]['seconds']:.2f} s", file=sys.stderr)
    return out


def run(args: argparse.Namespace) -> int:
    """Run the benchmark (each measurement in a fresh process) and print a Markdown table."""
    try:
        sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        raise PLKDError(f"--sizes must be slice thicknesses in mm separated by commas, not {args.sizes!r}") from None
    if not sizes or any(not 0.5 <= s <= 10 for s in sizes):
        raise PLKDError("--sizes must list slice thicknesses between 0.5 and 10 mm")
    shape = _triple(args.shape, "--shape")
    _triple(args.window, "--window")
    if args.threads < 1:
        raise PLKDError(f"--threads must be at least 1, not {args.threads}")
    if args.candidates < 0:
        # A negative count was timed without a word, as a row of the table that no setting of plkd predict gives.
        raise PLKDError(f"--candidates must be 0 or more, not {args.candidates}")
    if args.baseline_windows is not None and args.baseline_windows < 0:
        raise PLKDError(f"--baseline-windows must be 0 (all) or a positive count, not {args.baseline_windows}")
    from plkd.atomic import check_output_location
    from plkd.inference.device import resolve_device

    check_output_location(args.json, what="--json")

    resolve_device(args.device)  # fail early, with a clear message, for an unavailable device
    rows: list[dict] = []
    ctx = get_context("spawn")
    arch_name, screening, segmenter = architecture(args.model)
    capacity = {k: v for k, v in segmenter["hparams"].items() if k in ("base_channels", "depth")}
    with tempfile.TemporaryDirectory(prefix="plkd-bench-") as tmp:
        bundle = str(_random_bundle(Path(tmp), screening, segmenter))
        for thickness in sizes:
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                rows.append(
                    pool.submit(
                        _time_two_stage, bundle, shape, thickness, args.device, args.threads, args.candidates
                    ).result()
                )
            print(f"two-stage at {thickness:g} mm: {rows[-1]['seconds']:.2f} s", file=sys.stderr)
    bases = _baselines(args, shape, capacity, ctx)
    for r in rows:
        r["speedup"] = {b["baseline"]: round(b["seconds"] / max(r["seconds"], 1e-9), 1) for b in bases}
        r["ratio_vs_baseline"] = r["speedup"][bases[0]["baseline"]]  # the first (default) baseline
    rows += bases
    info = {
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "device": args.device},
        "weights": "random (timing only)",
        "networks": {"name": arch_name, "screening": screening, "segmenter": segmenter},
        "baseline": args.baseline,
        "results": rows,
    }
    print(markdown(rows))
    print(f"\nNetworks: {arch_name}, random weights (timing only); peak RSS is per measurement process.")
    if args.json:
        from plkd.atomic import write_json_atomic

        write_json_atomic(args.json, info)
    else:
        print(json.dumps(info))
    return 0
