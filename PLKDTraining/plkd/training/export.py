"""Turn a finished training run into a model bundle (``plkd export``)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from plkd.bundle import save_bundle
from plkd.errors import PLKDError
from plkd.inference.blobs import blob_settings
from plkd.models import build_network
from plkd.training.checkpoint import DONE_NAME, FINAL_NAME, load_weights
from plkd.training.config import with_legacy_values
from plkd.training.init_from import init_bundle
from plkd.training.loop import is_done
from plkd.training.pipeline import other_bundle_settings
from plkd.training.places import candidates, find_recorded, portable_name
from plkd.training.students import plan_stages, students_dir

#: Student training modes, each in its own folder of a run.
MODES = ("plkd", "kd", "none")

SYNTHETIC_DISCLAIMER = "Trained on synthetic data; not a medical device."
REAL_DISCLAIMER = "For research use only; not a medical device."


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def load_stage(stage_dir: Path) -> tuple[Any, dict[str, Any]]:
    """A finished stage's network (eval mode) and its ``done.json`` summary; PLKDError if unfinished."""
    if not is_done(stage_dir):
        raise PLKDError(f"{stage_dir} has not finished training; run 'plkd train' first")
    summary = _read_json(stage_dir / DONE_NAME)
    net = build_network(summary["network"]["kind"], summary["network"]["hparams"])
    net.load_state_dict(load_weights(stage_dir / FINAL_NAME))
    return net.eval(), summary


def stage_record(summary: dict[str, Any], run: Path | None = None) -> dict[str, Any]:
    """A stage's entry in a bundle manifest's ``training.stages``, from its ``done.json`` summary (of ``run``): the
    folder it started from named without its place on this machine (:func:`plkd.training.places.portable_name`)."""
    record = {k: summary.get(k) for k in ("steps", "final_loss", "time_s")}
    record["init_from"] = portable_name(summary.get("init_from"), run)
    for key in ("mined_from_init", "resumed_with_other_settings"):
        if key in summary:
            record[key] = summary[key]
    return record


def default_students(run_dir: Path, mode: str) -> list[str]:
    """Every finished student stage, minus those a fine-tuned student replaces (same LR factor)."""
    root = students_dir(run_dir, mode)
    names = sorted((p.name for p in root.iterdir() if is_done(p)), key=_stage_order) if root.is_dir() else []
    if "finetune" in names:
        ft = _read_json(root / "finetune" / DONE_NAME)["lr_factor"]
        names = [n for n in names if n == "finetune" or _read_json(root / n / DONE_NAME)["lr_factor"] != ft]
    return names


def _complete_students(run_dir: Path, cfg: dict[str, Any], mode: str) -> list[str]:
    """:func:`default_students`, refused when they are not what the run trained: some of its planned ``mode``
    students unfinished (an interrupted run gave a bundle without its x8 student and fine-tune, its manifest
    still saying target factor 8), or none of this mode while another mode's finished (``--mode`` forgotten:
    a bundle without any student)."""
    root = students_dir(run_dir, mode)
    planned = [s.name for s in plan_stages({**cfg, "students": {**cfg["students"], "mode": mode}}, "T2S")]
    started = [n for n in planned if (root / n).is_dir()]
    unfinished = [n for n in planned if not is_done(root / n)]
    if started and unfinished:
        raise PLKDError(
            f"{run_dir}: the {mode} students {', '.join(unfinished)} have not finished; run the same plkd train "
            "command to finish them, or name the students to export with --students"
        )
    if not started:
        others = [m for m in MODES if m != mode and default_students(run_dir, m)]
        if others:
            other = others[0]
            raise PLKDError(f"{run_dir} has no {mode} students but {other} students: export with --mode {other}")
    return default_students(run_dir, mode)


def _stage_order(name: str) -> tuple[int, int]:
    return (1, 0) if name == "finetune" else (0, int(name.lstrip("x")) if name.lstrip("x").isdigit() else 0)


def export_run(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    students: Sequence[str] | None = None,
    mode: str = "plkd",
    name: str | None = None,
    half: bool | None = None,
    overwrite: bool = False,
    metrics: dict[str, Any] | None = None,
    include_teacher: bool = True,
    teacher: str | os.PathLike[str] | None = None,
    screening: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the bundle of ``run_dir``: screening, teacher (LR factor 1) and the chosen students.

    A student keeps the LR factor it was trained for (the fine-tuned one: the target factor); two
    students for the same factor are refused, because inference picks a student by factor.
    ``include_teacher=False`` leaves the teacher out (cross-validation folds of variants trained
    without one; such a bundle segments every input with its students). ``teacher`` and ``screening`` name finished
    stage folders to bundle instead of the run's own (or those its ``run.json`` records, :func:`stage_source`).
    """
    run = Path(run_dir)
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise PLKDError(f"{run} is not a training run (no config.yaml)")
    cfg = with_legacy_values(yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {})
    info = _read_json(run / "run.json") if (run / "run.json").is_file() else {}
    # The teacher first: a screening network taken from another run is the one beside that run's teacher.
    sources = {"teacher": stage_source(run, info, "teacher", teacher)} if include_teacher else {}
    sources["screening"] = stage_source(run, info, "screening", screening)
    screening, sc_sum = load_stage(sources["screening"])
    networks: dict[str, dict[str, Any]] = {"screening": {"module": screening, "role": "screening"}}
    stage_info = {"screening": sc_sum}
    if include_teacher:
        teacher, stage_info["teacher"] = load_stage(sources["teacher"])
        networks["teacher"] = {"module": teacher, "role": "segmenter", "lr_factor": 1}
    borrowed = _borrowed(run, info, sources)
    for other, entry in borrowed.items():
        if what := other_bundle_settings(other, cfg):
            raise PLKDError(
                f"{run}: the {' and '.join(entry['roles'])} of the run {other} (its students learnt from them) were "
                f"trained with other settings that the bundle records for all its networks: {what}"
            )
    chosen = list(students) if students is not None else _complete_students(run, cfg, mode)
    factors: dict[int, str] = {}
    root = students_dir(run, mode)
    for stage in chosen:
        if not (root / stage).is_dir():
            have = sorted((p.name for p in root.iterdir() if p.is_dir()), key=_stage_order) if root.is_dir() else []
            raise PLKDError(
                f"{run} has no {mode} student stage {stage} (its {mode} students: {', '.join(have) or 'none'}); "
                "--students takes their names"
            )
        net, summary = load_stage(root / stage)
        factor = int(summary["lr_factor"])
        if factor in factors:
            raise PLKDError(f"students {factors[factor]} and {stage} both have LR factor {factor}; export one of them")
        factors[factor] = stage
        networks[f"student_x{factor}"] = {
            "module": net,
            "role": "segmenter",
            "lr_factor": factor,
            "stage": stage,
            "mode": mode,
        }
        stage_info[f"student_x{factor}"] = summary
    if metrics is None and (run / "metrics.json").is_file():
        metrics = _read_json(run / "metrics.json")
    synthetic = info.get("layout") == "synth"
    manifest = {
        "name": name or cfg["export"]["name"] or run.resolve().name,  # "." has no name of its own
        "modality": info.get("modality", "T2S"),
        "spacing_mm": [float(v) for v in cfg["data"]["spacing_mm"]],
        "patch_size": {
            "screening": [int(v) for v in cfg["sampling"]["screening_patch"]],
            "segmentation": [int(v) for v in cfg["sampling"]["segmentation_patch"]],
        },
        "normalisation": {
            "method": "brain-zscore",
            "clip_percentiles": [float(v) for v in cfg["data"]["clip_percentiles"]],
        },
        "thresholds": {k: float(v) for k, v in cfg["export"]["thresholds"].items()},
        "candidates": {"blob": blob_settings()},
        "training": {
            # The folder's name: a bundle is shared, where the data lay on the trainer's machine is no one's business.
            "data": Path(str(info["data"])).name if info.get("data") else None,
            "layout": info.get("layout"),
            "n_train_subjects": info.get("n_train_subjects"),
            "n_val_subjects": info.get("n_val_subjects"),
            "n_microbleeds": info.get("n_microbleeds"),
            "seed": cfg["seed"],
            "student_mode": mode,
            "target_factor": cfg["students"]["target_factor"],
            # As the run recorded it when it started (the bundle at that path may have been replaced since).
            "init_from": info.get("init_from") or _init_source(cfg.get("init_from")),
            "stages": {
                k: stage_record(v, sources.get(k, run).parent if k in sources else run) for k, v in stage_info.items()
            },
            "data_sha256": info.get("data_sha256"),
            "image_sha256": _image_digests(info, borrowed),
            "notes": _training_notes(info) + _borrowed_notes(borrowed, info),
        },
        "metrics": metrics or {},
        "disclaimer": SYNTHETIC_DISCLAIMER if synthetic else REAL_DISCLAIMER,
    }
    use_half = bool(cfg["export"]["half"]) if half is None else half
    return save_bundle(out, networks, manifest=manifest, half=use_half, overwrite=overwrite)


def stage_source(run: Path, info: dict[str, Any], role: str, given: str | os.PathLike[str] | None = None) -> Path:
    """The finished ``screening`` or ``teacher`` folder a bundle of ``run`` takes: the run's own, else the one of
    another run its students were distilled from or mined (``run.json``'s ``sources``: ``--teacher``).
    PLKDError saying which is missing and what to do (it said "RUN/screening has not finished training" of a stage
    that was never started). ``given`` (``plkd export --teacher/--screening``) is taken instead, when finished."""
    if given is not None:
        if not is_done(Path(given)):
            raise PLKDError(f"--{role} {given} is not a finished {role} stage (no done.json, model.pt and log.csv)")
        return Path(given)
    own = run / role
    if is_done(own) or own.is_dir():
        return own  # unfinished: load_stage says so
    record = (info.get("sources") or {}).get(role)
    if record is not None:
        found = find_recorded(record, run)
        if found is not None:
            return found
        places = " or ".join(str(p) for p in candidates(record, run))
        what = (
            "distilled from the teacher"
            if role == "teacher"
            else "trained on the false positives of (and are bundled with) the screening network"
        )
        given = "--teacher" if role == "teacher" else "beside its --teacher, or --screening"
        raise PLKDError(
            f"{run}: its students were {what} {record.get('path')} (plkd train students {given}), not found at "
            f"{places}: put that run folder back (beside {run.name} as before, or where it was) to export them with "
            f"it, or train a {role} stage into the run (plkd train {role} --out {run})"
        )
    teacher = (info.get("sources") or {}).get("teacher")
    why = (
        f"its students were distilled from the teacher {teacher.get('path')}, which has no finished screening "
        "network beside it"
        if role == "screening" and isinstance(teacher, dict)
        else f"no {role} stage was trained in it"
    )
    raise PLKDError(
        f"{run} has no {role} network ({why}), and a bundle needs one: name the one its students were trained "
        f"with (plkd export --{role} OTHER_RUN/{role}), or train it into the run (plkd train {role} --out {run})"
    )


def _borrowed(run: Path, info: dict[str, Any], sources: dict[str, Path]) -> dict[Path, dict[str, Any]]:
    """``{another run's folder: {"roles": [...], "info": its run.json}}`` for the networks of ``sources`` that are not
    ``run``'s own (the teacher its students were distilled from, the screening network beside it)."""
    out: dict[Path, dict[str, Any]] = {}
    for role, folder in sources.items():
        other = folder.parent
        if other.resolve() == run.resolve():
            continue
        path = other / "run.json"
        entry = out.setdefault(other, {"roles": [], "info": _read_json(path) if path.is_file() else {}})
        entry["roles"].append(role)
    return out


def _borrowed_notes(borrowed: dict[Path, dict[str, Any]], info: dict[str, Any]) -> list[str]:
    """What a bundle says of networks taken from another run."""
    notes = []
    for other, entry in borrowed.items():
        theirs = entry["info"]
        names = " and ".join("screening network" if r == "screening" else r for r in sorted(entry["roles"], key=_role))
        same = theirs.get("data_sha256") is not None and theirs.get("data_sha256") == info.get("data_sha256")
        data = "the same data" if same else f"other data ({Path(str(theirs.get('data') or '?')).name})"
        notes.append(
            f"the {names} of the run {other.name}: the students were distilled from that teacher and mined that "
            f"screening network's false positives in their own run; trained on {data}"
        )
    return notes


def _role(role: str) -> int:
    return 0 if role == "teacher" else 1


def _image_digests(info: dict[str, Any], borrowed: dict[Path, dict[str, Any]]) -> dict[str, str] | None:
    """The training scans of every network of the bundle (plkd tune refuses them as validation subjects): the run's,
    and those of the runs it took networks from, under ``RUN:id`` where an id is taken by another scan."""
    digests = dict(info.get("image_sha256") or {})
    for other, entry in borrowed.items():
        for sid, digest in (entry["info"].get("image_sha256") or {}).items():
            if digests.get(sid, digest) != digest:
                sid = f"{other.name}:{sid}"
            digests[sid] = digest
    return digests or info.get("image_sha256")


def _training_notes(info: dict[str, Any]) -> list[str]:
    """The caveats ``run.json`` holds about the data (thick slices, labels) and about resumes with other settings:
    the configuration recorded is the last one, which the stages started before a change did not all train with."""
    notes = [str(n) for n in info.get("notes") or []]
    for change in info.get("settings_changed") or []:
        notes.append(
            f"resumed with other settings ({', '.join(change.get('settings', []))}) after "
            f"{', '.join(change.get('stages_started', []))} had started: those stages do not all match the "
            "recorded configuration"
        )
    return notes


def _init_source(path: str | None) -> dict[str, Any] | None:
    """What a fine-tuned run started from: the bundle's name and manifest sha256 (never a local path)."""
    if not path:
        return None
    try:
        bundle = init_bundle({"init_from": path})
    except PLKDError:  # moved or deleted since training: its folder name is all that is known
        return {"name": Path(path).name, "manifest_sha256": None}
    return {"name": bundle.name, "manifest_sha256": bundle.manifest_sha256}
