"""A copy of a model bundle with some networks taken from a training run; everything else is kept.

Used after a fine-tune of some stages (``plkd train screening|teacher|students --init-from BUNDLE``): the
other networks, their calibration and thresholds, and the blob source stay as they are. Thresholds
and calibration act on the old networks' outputs, so tune the copy again (``plkd tune``) before
using it. The copy's ``metrics`` are dropped (they were measured with the old networks),
``training.stages.<stage>`` describes each new network and ``training.replaced`` names the bundle
they were put into and the stages replaced (with that bundle's own ``replaced`` record under
``earlier``). When the run normalised its training patches with other clip percentiles than the
bundle's networks were trained with, ``normalisation.trained_with_clip_percentiles`` becomes a mapping
from each network to the percentiles it was trained with (inference uses ``normalisation.clip_percentiles``
for every network, unchanged).

    python scripts/replace_networks.py BUNDLE RUN OUT [--stages screening,teacher,students-kd/x4] [--name NAME]

RUN is the run folder (``RUN/screening/done.json``, ``RUN/teacher/done.json``); a student stage is named by its
folder (``students-kd/x4``, ``students/finetune``) and replaces the bundle's student of the same LR factor
(``student_x4``). Writes OUT atomically; refuses an existing OUT.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from plkd.bundle import load_bundle, save_bundle
from plkd.errors import PLKDError
from plkd.pins import manifest_digest
from plkd.training.config import with_legacy_values
from plkd.training.export import load_stage, stage_record

#: Run stages that can replace a network, and the bundle network each replaces (students: see network_for).
STAGES = {"screening": "screening", "teacher": "teacher"}
_FILLED_BY_SAVE = ("kind", "hparams", "file", "sha256", "parameters", "dtype")


def replace_networks(bundle_path: str, run: str, out: str, stages: Sequence[str], name: str | None) -> None:
    """Write OUT: ``bundle_path``'s networks and manifest with ``run``'s networks of ``stages``."""
    bundle = load_bundle(bundle_path)
    manifest = {k: copy.deepcopy(v) for k, v in bundle.manifest.items() if k not in ("networks", "metrics")}
    manifest["name"] = name or f"{bundle.name}-{'-'.join(stages)}-ft"
    training = manifest.setdefault("training", {})
    raw = (bundle.root / "manifest.json").read_bytes()
    replaced = {"name": bundle.name, "manifest_sha256": manifest_digest(raw), "stages": list(stages)}
    if "replaced" in training:  # the bundle was itself made so: keep that record too, nested
        replaced["earlier"] = training["replaced"]
    training["replaced"] = replaced
    new, summaries, run_stages = {}, {}, {}
    for stage in stages:
        net_name = network_for(stage, Path(run), bundle.manifest["networks"])
        new[net_name], summaries[net_name] = load_stage(Path(run) / stage)
        run_stages[net_name] = stage
        record = stage_record(summaries[net_name])
        training.setdefault("stages", {})[net_name if net_name.startswith("student_") else stage] = (
            {**record, "run_stage": stage} if stage != net_name else record
        )
    networks = {}
    for net_name, entry in bundle.manifest["networks"].items():
        keep = {k: v for k, v in entry.items() if k not in _FILLED_BY_SAVE}
        if net_name in summaries and "mode" in keep:
            # a student's entry says how it was trained (a PLKD stage, one-step KD, ...): now the run's way
            keep.update(stage=Path(run_stages[net_name]).name, mode=summaries[net_name].get("mode", keep["mode"]))
        module = new.get(net_name)
        networks[net_name] = {"module": module if module is not None else bundle.network(net_name).float(), **keep}
    _record_training_clip(manifest, list(networks), Path(run), list(new))
    save_bundle(out, networks, manifest=manifest, half=True)


def network_for(stage: str, run: Path, networks: dict) -> str:
    """The bundle network a run stage replaces: ``screening``, ``teacher``, or ``student_x<F>`` for a student stage
    folder (``students-kd/x4``, ``students/finetune``) trained for LR factor F. PLKDError when the bundle has none."""
    if stage in STAGES:
        return STAGES[stage]
    if not stage.startswith("students"):
        raise PLKDError(f"cannot replace {stage!r}; choose from {sorted(STAGES)} or a student stage (students-kd/x4)")
    _, summary = load_stage(run / stage)
    name = f"student_x{int(summary['lr_factor'])}"
    if name not in networks:
        raise PLKDError(f"{stage} was trained for LR factor {summary['lr_factor']}; the bundle has no {name}")
    return name


def _record_training_clip(manifest: dict, names: list[str], run: Path, replaced: list[str]) -> None:
    """Record per network the clip percentiles it was trained with, when the run's differ from the bundle's.

    A bundle's ``normalisation.trained_with_clip_percentiles`` (else ``clip_percentiles``) is what its
    networks were trained with; the run's ``data.clip_percentiles`` (RUN/config.yaml, legacy runs read
    with their legacy value) is what the replaced networks were trained with.
    """
    norm = manifest.setdefault("normalisation", {})
    before = norm.get("trained_with_clip_percentiles", norm.get("clip_percentiles"))
    config = run / "config.yaml"
    if not config.is_file():
        return
    run_clip = [
        float(v)
        for v in with_legacy_values(yaml.safe_load(config.read_text(encoding="utf-8")))["data"]["clip_percentiles"]
    ]
    per_network = dict(before) if isinstance(before, dict) else {name: before for name in names}
    per_network.update({name: run_clip for name in replaced})
    if len({tuple(v) if v is not None else None for v in per_network.values()}) > 1:
        norm["trained_with_clip_percentiles"] = per_network
    elif before is not None or run_clip != norm.get("clip_percentiles"):
        norm["trained_with_clip_percentiles"] = run_clip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("run")
    parser.add_argument("out")
    parser.add_argument(
        "--stages", default="screening", help="comma-separated: screening, teacher, student stages (students-kd/x4)"
    )
    parser.add_argument("--name", help="the new bundle's name (default: the old name + the stages + '-ft')")
    args = parser.parse_args()
    try:
        replace_networks(args.bundle, args.run, args.out, args.stages.split(","), args.name)
    except PLKDError as exc:
        print(f"replace_networks: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}; tune it with: plkd tune VALDATA --model {args.out} --out TUNED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
