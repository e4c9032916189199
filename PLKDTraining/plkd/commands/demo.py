"""``plkd demo``: one synthetic subject end to end — simulate, predict, evaluate, draw."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from plkd.errors import PLKDError

EPILOG = """\
example:
  plkd demo --out demo/ --factor 4

Writes into OUT: the simulated input (thick slices for --factor > 1), its truth label and brain
mask, the prediction (NAME_cmb.nii.gz + NAME_cmb.json), overview.png (slices through every finding
and a zoomed inset per finding, rings: green found, red missed, yellow false alarm; radiological
view, patient's right on the left), candidates.png (one tile per candidate: position, probability,
kept or not, true or not) and demo_summary.json.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    p = sub.add_parser(
        "demo",
        help="simulate a subject, find its microbleeds and show the result",
        description=(
            "Simulate one synthetic subject with known microbleeds (optionally as a thick-slice "
            "acquisition), run the two-stage prediction with the installed model, compare with the "
            "truth and draw an overview and a candidate gallery."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("plkd-demo"), help="output folder (default: ./plkd-demo)")
    p.add_argument("--model", metavar="BUNDLE", help="model bundle (default: the installed one)")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic subject (default 1)")
    p.add_argument(
        "--factor", type=int, default=4, help="slice thickness in mm of the input, 1 = isotropic (default 4)"
    )
    p.add_argument("--n-microbleeds", type=int, default=8, help="microbleeds to plant (default 8)")
    p.add_argument("--device", default="auto", help="compute device (default: auto)")
    p.add_argument("--progress", default="tqdm", choices=("tqdm", "jsonl", "none"), help="progress display")
    p.set_defaults(func=run)


def fallback_bundle() -> Path | None:
    """The repository's tiny test bundle, for a source checkout without a shipped model."""
    import plkd

    candidate = Path(plkd.__file__).resolve().parents[2] / "Testing" / "data" / "tiny-bundle"
    return candidate if (candidate / "manifest.json").is_file() else None


def _find_model(model: str | None) -> tuple[Path | None, str | None]:
    from plkd.bundle import find_default_bundle

    if model:
        return Path(model), None
    found = find_default_bundle()
    if found is not None:
        return found, None
    tiny = fallback_bundle()
    if tiny is not None:
        return tiny, "no trained model is installed; using the tiny TEST bundle (detects toy dark balls only)"
    return None, None


def run(args: argparse.Namespace) -> int:
    """Run the demo; exits 0 after writing the input even when no model is installed."""
    if not 1 <= args.factor <= 10:
        raise PLKDError(f"--factor must be a slice thickness of 1 to 10 mm, not {args.factor}")
    try:
        from plkd.synth import generate_subject
        from plkd.synth.subject import check_seed_and_count
    except ImportError as exc:
        raise PLKDError(f"the simulator needs the optional dependencies: pip install 'plkd[synth]' ({exc})") from None
    from plkd.atomic import check_output_location
    from plkd.volumes import save_volume

    out: Path = args.out
    check_seed_and_count(args.seed, args.n_microbleeds)  # before the folder is made (an empty one was left)
    check_output_location(out, kind="folder", what="--out")
    # The model and the device are checked before the simulation: a demo that cannot predict stops at once.
    model, warning = _find_model(args.model)
    loaded = _load_model(model, args.device, args.progress) if model is not None else None
    out.mkdir(parents=True, exist_ok=True)
    stem = f"demo-s{args.seed}_T2S" if args.factor == 1 else f"demo-s{args.seed}-{args.factor}mm_T2S"
    image_path = out / f"{stem}.nii.gz"
    _remove_earlier_results(out, image_path)
    t0 = time.perf_counter()
    subject = generate_subject(args.seed, n_microbleeds=args.n_microbleeds, spacing=f"1,1,{args.factor}")
    save_volume(image_path, subject.image.data, subject.image.affine)
    save_volume(out / f"{stem}_truth.nii.gz", subject.label.data, subject.label.affine, dtype=np.uint8)
    save_volume(out / f"{stem}_brainmask.nii.gz", subject.mask.data, subject.mask.affine, dtype=np.uint8)
    print(f"simulated {image_path} ({len(subject.microbleeds)} microbleeds, {time.perf_counter() - t0:.1f} s)")

    if loaded is None:
        print(
            "no model bundle is installed yet: train one ('plkd train' + 'plkd export') or pass --model BUNDLE; "
            f"the simulated input is in {out}"
        )
        return 0
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return _predict_and_report(args, subject, image_path, loaded, warning)


#: What a demo run writes besides its subject's files; they describe the last run only.
DEMO_PICTURES = ("overview.png", "candidates.png", "demo_summary.json")


def _remove_earlier_results(out: Path, image_path: Path) -> None:
    """Remove the prediction and pictures an earlier demo left for this subject's name, before it is simulated
    again: a rerun that failed (or was interrupted) after the simulation left them beside the new input and truth,
    and ``plkd evaluate`` scored the earlier subject's prediction against the new truth."""
    from plkd.inference.outputs import output_paths, remove_outputs

    remove_outputs(output_paths(image_path, out))
    for name in DEMO_PICTURES:
        (out / name).unlink(missing_ok=True)


def _load_model(model: Path, device: str, progress: str) -> tuple[Any, str]:
    """``(predictor, model name)``; refuses a bundle that cannot be used or a device name plkd does not know. A GPU
    the machine lacks (``--device cuda`` on a laptop) is replaced by the CPU, with one warning and a note."""
    from plkd.bundle import resolve_bundle
    from plkd.inference.device import usable_device
    from plkd.inference.predictor import Predictor

    bundle, model_name = resolve_bundle(model)
    run_device, device_note = usable_device(device)
    predictor = Predictor(bundle, device=run_device, progress=progress)
    if device_note is not None:
        logging.getLogger("plkd").warning(device_note)
        predictor.state.warnings.append(device_note)
    return predictor, model_name


def _predict_and_report(
    args: argparse.Namespace, subject: Any, image_path: Path, loaded: tuple[Any, str], warning: str | None
) -> int:
    from plkd.atomic import write_json_atomic
    from plkd.inference.outputs import output_paths, write_prediction
    from plkd.inference.overview import write_gallery, write_overview
    from plkd.metrics import evaluate_subject
    from plkd.volumes import load_volume

    predictor, model_name = loaded
    volume = load_volume(image_path)
    mask = subject.mask.with_data(subject.mask.data)
    t0 = time.perf_counter()
    result = predictor.predict(volume, mask=mask)
    seconds = time.perf_counter() - t0
    if warning:
        result.notes.append(warning)
    paths = output_paths(image_path, args.out)
    write_prediction(result, volume, paths, model_name)
    # The pictures show the candidates as written (ids as in the JSON the user will open).
    candidates = json.loads(paths.json.read_text(encoding="utf-8"))["candidates"]

    truth = subject.label.data
    spacing = volume.spacing
    scores = evaluate_subject(result.label_map, truth, spacing)
    findings, truth_ras = demo_findings(result.label_map, truth, volume.affine, spacing, candidates)
    title = f"found {scores['TP']} of {scores['n_reference']}, false alarms {scores['FP']} ({image_path.name})"
    write_overview(args.out / "overview.png", volume.data, volume.affine, findings, title=title)
    write_gallery(args.out / "candidates.png", volume.data, volume.affine, candidates, truth_ras=truth_ras)
    summary = {
        "input": str(image_path),
        "model": model_name,
        "student": result.student,
        "found": scores["TP"],
        "of": scores["n_reference"],
        "false_alarms": scores["FP"],
        "F1": scores["F1"],
        "Dice": scores["Dice"],
        "seconds": round(seconds, 2),
        "timings": result.timings,
    }
    write_json_atomic(args.out / "demo_summary.json", summary)
    if np.isfinite(scores["F1"]) and np.isfinite(scores["Dice"]):
        measured = f"F1 {scores['F1']:.2f}, Dice {scores['Dice']:.2f}"
    else:  # nothing to find and nothing found ("F1 nan, Dice nan" was printed)
        measured = "F1 and Dice undefined without a microbleed"
    print(
        f"found {scores['TP']} of {scores['n_reference']} microbleeds, {scores['FP']} false alarm(s), {measured}, "
        f"{seconds:.1f} s with {result.student} on {predictor.device.type}"
    )
    print(f"pictures: {args.out / 'overview.png'}, {args.out / 'candidates.png'}")
    return 0


def demo_findings(
    pred: np.ndarray, truth: np.ndarray, affine: np.ndarray, spacing: np.ndarray, candidates: list[dict[str, Any]]
) -> tuple[list[Any], np.ndarray]:
    """Found, missed and false-alarm findings by the VALDO matching rule, and the true centres (RAS mm).

    Found and missed findings sit on the true microbleeds, false alarms on the predicted
    components; details name the candidate (id, probability, region when present) whose
    label the predicted component carries.
    """
    from plkd.inference.overview import Finding, place
    from plkd.metrics import valdo_match
    from plkd.metrics.components import binarise_prediction, binarise_reference, find_components

    # Read as evaluate_subject reads them (the summary's counts), so the picture shows the same findings.
    p = find_components(binarise_prediction(pred))
    r = find_components(binarise_reference(truth))
    match = valdo_match(p.centres_mm(spacing), r.centres_mm(spacing))
    voxel_mm3 = float(np.prod(spacing))
    by_label = {int(c["label"]): c for c in candidates if int(c.get("label") or 0) > 0}

    def describe(component: int) -> str:
        labels = np.unique(pred[p.labels == component + 1]).astype(int)
        cands = [by_label[v] for v in labels if v in by_label]
        if not cands:
            return ""
        c = max(cands, key=lambda c: c["probability"])
        where = place(c)
        return f"#{c['id']} p={c['probability']:.2f}" + (f", {where}" if where else "")

    p_ras, r_ras = p.centres_world(affine), r.centres_world(affine)
    findings = []
    for ref in range(r.n):
        picked = np.flatnonzero(match.is_tp & (match.choice == ref))
        kind = "found" if match.detected[ref] else "missed"
        details = describe(int(picked[0])) if picked.size else ""
        findings.append(Finding(r_ras[ref].tolist(), r.sizes[ref] * voxel_mm3, kind, details))
    for comp in np.flatnonzero(match.is_fp):
        findings.append(Finding(p_ras[comp].tolist(), p.sizes[comp] * voxel_mm3, "false_alarm", describe(int(comp))))
    return findings, r_ras
