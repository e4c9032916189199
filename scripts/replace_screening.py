"""A copy of a model bundle whose screening FCN comes from a training run; everything else is kept.

Used after a screening-only fine-tune (``plkd train screening --init-from BUNDLE``): the segmenters,
their calibration and the blob source stay as they are. The bundle's screening thresholds act on
the old network's scores, so tune the copy again (``plkd tune``) before using it; the copy's
``metrics`` are dropped (they were measured with the old network) and ``training.stages.screening``
describes the new one, with ``training.screening_from`` naming the bundle it was put into.

    python scripts/replace_screening.py BUNDLE RUN OUT [--name NAME]

RUN is the run folder (``RUN/screening/done.json``). Writes OUT atomically; refuses an existing OUT.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from plkd.bundle import load_bundle, save_bundle
from plkd.errors import PLKDError
from plkd.pins import manifest_digest
from plkd.training.export import load_stage


def replace_screening(bundle_path: str, run: str, out: str, name: str | None) -> None:
    """Write OUT: ``bundle_path``'s networks and manifest with ``run``'s screening network."""
    bundle = load_bundle(bundle_path)
    fcn, summary = load_stage(Path(run) / "screening")
    manifest = {k: copy.deepcopy(v) for k, v in bundle.manifest.items() if k not in ("networks", "metrics")}
    manifest["name"] = name or f"{bundle.name}-screening-ft"
    training = manifest.setdefault("training", {})
    training.setdefault("stages", {})["screening"] = {
        k: summary.get(k) for k in ("steps", "final_loss", "time_s", "init_from", "mined_from_init")
    }
    raw = (bundle.root / "manifest.json").read_bytes()
    training["screening_from"] = {"name": bundle.name, "manifest_sha256": manifest_digest(raw)}
    networks = {}
    for net_name, entry in bundle.manifest["networks"].items():
        if entry["role"] == "screening":
            networks[net_name] = {"module": fcn, "role": "screening"}
            continue
        keep = {k: v for k, v in entry.items() if k not in ("kind", "hparams", "file", "sha256", "parameters", "dtype")}
        networks[net_name] = {"module": bundle.network(net_name).float(), **keep}
    save_bundle(out, networks, manifest=manifest, half=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("run")
    parser.add_argument("out")
    parser.add_argument("--name", help="the new bundle's name (default: the old name + '-screening-ft')")
    args = parser.parse_args()
    try:
        replace_screening(args.bundle, args.run, args.out, args.name)
    except PLKDError as exc:
        print(f"replace_screening: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}; tune it with: plkd tune VALDATA --model {args.out} --out TUNED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
