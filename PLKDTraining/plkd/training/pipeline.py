"""A training run: screening → teacher → students in one folder, resumable as a whole.

``RUN/config.yaml`` holds the resolved configuration and ``RUN/run.json`` the data summary (data
set, modality, subject ids, seed) that ``plkd export`` records in the bundle.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from plkd.atomic import write_json_atomic
from plkd.errors import ConfigError, InputError, PLKDError
from plkd.inference.device import resolve_device
from plkd.progress import Progress
from plkd.training.checkpoint import CHECKPOINT_NAME, DONE_NAME, FINAL_NAME, load_weights
from plkd.training.config import (
    LEGACY_VALUES,
    default_config,
    lookup,
    merge,
    missing_legacy_keys,
    save_config,
    set_value,
    with_legacy_values,
)
from plkd.training.data import TrainingData, load_training_data
from plkd.training.distributed import DistInfo, init_distributed, rank_device
from plkd.training.init_from import adopt_architectures, init_bundle
from plkd.training.loop import TrainContext, is_done
from plkd.training.places import find_recorded, recorded_place
from plkd.training.screening import mine_hard_negatives, train_screening
from plkd.training.segmentation import train_teacher
from plkd.training.students import plan_stages, students_dir, train_students

log = logging.getLogger(__name__)

STAGES = ("screening", "teacher", "students", "all")
#: Settings that change how fast a run goes, not what it computes.
RUNTIME_KEYS = ("device", "amp", "compile", "num_threads", "workers")


def make_context(cfg: dict[str, Any], progress: str = "tqdm", stop_after: int | None = None) -> TrainContext:
    """Device, distribution and options of a run from its configuration."""
    if cfg["num_threads"]:
        torch.set_num_threads(int(cfg["num_threads"]))
    device = resolve_device(cfg["device"])
    dist = init_distributed(device)
    device = rank_device(device, dist)
    if (cfg["amp"] or cfg["compile"]) and device.type != "cuda":
        log.warning("--amp/--compile only apply on CUDA; ignored on %s", device.type)
    return TrainContext(
        device=device,
        seed=int(cfg["seed"]),
        dist=dist,
        progress=Progress(progress if dist.is_main else "none"),
        amp=bool(cfg["amp"]),
        compile=bool(cfg["compile"]),
        weight_decay=float(cfg["optim"]["weight_decay"]),
        warmup_steps=int(cfg["optim"]["warmup_steps"]),
        grad_clip=float(cfg["optim"]["grad_clip"]),
        stop_after=stop_after,
        workers=int(cfg.get("workers", 0)),
    )


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    """``RUN/config.yaml`` as saved (None for a new run); unreadable or not a mapping is an :class:`InputError`."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if not isinstance(saved, dict):
        raise InputError(f"{path} holds no settings (a {type(saved).__name__}, not a YAML mapping)")
    return saved


def _refuse_lost_config(run: Path, saved: dict[str, Any] | None) -> None:
    """Refuse to continue a run (one with ``run.json``) whose started stages have no ``config.yaml`` beside them:
    every check of the settings a resume makes compares with it, so without it the stages went on with whatever
    settings were given (another grid, normalisation, patch size, learning rate) and config.yaml was written anew as
    if the run had started so."""
    started = _started_stages(run)
    # run.json says plkd train started this run (written once its data was accepted, with config.yaml); stages in
    # a folder without either were put there finished (plkd cv's shared stages, trained with the same settings).
    if saved is None and started and (run / "run.json").is_file():
        raise InputError(
            f"{run / 'config.yaml'} is missing, but {', '.join(started)} started training in {run}: the settings "
            "they were trained with are unknown, so they cannot be continued; put the run's config.yaml back, or "
            "train into a new --out folder"
        )


def _keep_legacy_settings(run_dir: Path, saved: dict[str, Any] | None, cfg: dict[str, Any]) -> dict[str, Any]:
    """A run saved before a setting's default changed (``LEGACY_VALUES``, e.g. ``data.clip_percentiles``) resumes
    with the value it ran with: its checkpoints saw those images, and the new default would change them mid-run.
    A value the user asked for is kept (and refused by :func:`_refuse_other_bundle_settings` once a stage started)."""
    if saved is None:
        return cfg
    defaults = default_config()
    for dotted in missing_legacy_keys(saved):
        if lookup(cfg, dotted) == lookup(defaults, dotted):
            log.info("%s was started before %s existed: it keeps %s", run_dir, dotted, LEGACY_VALUES[dotted])
            cfg = set_value(cfg, dotted, LEGACY_VALUES[dotted])
    return cfg


#: Settings ``plkd export`` writes into the bundle once for all its networks (grid, normalisation, patch sizes), which
#: inference then applies to each: a run whose stages started with other values is refused, not continued.
BUNDLE_SETTINGS = (
    "data.spacing_mm",
    "data.clip_percentiles",
    "sampling.screening_patch",
    "sampling.segmentation_patch",
)


def _old_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """``saved`` (a run's config.yaml) as the run ran: settings added since read as their defaults, or as the values
    it ran with (LEGACY_VALUES)."""
    old = with_legacy_values(saved)
    with contextlib.suppress(ConfigError):
        old = merge(default_config(), old)
    return old


def _refuse_other_bundle_settings(run: Path, cfg: dict[str, Any], saved: dict[str, Any] | None) -> None:
    """Refuse to continue a run whose started stages were trained with other :data:`BUNDLE_SETTINGS`.

    Continued, the remaining stages trained with the new values and ``plkd export`` wrote them into the bundle, for the
    networks trained with the old ones too (a teacher trained on images clipped at 0-99.5 % run on images clipped at
    1-99 %), with only a note in ``training.notes``.
    """
    started = _started_stages(run)
    if saved is None or not started:
        return
    old = _old_settings(saved)
    changed = [k for k in BUNDLE_SETTINGS if lookup(old, k) != lookup(cfg, k)]
    if changed:
        what = "; ".join(f"{k} {lookup(cfg, k)} (the run's: {lookup(old, k)})" for k in changed)
        raise InputError(
            f"{run} was started with other settings that its bundle records for every network ({', '.join(started)} "
            f"started): {what}; use the run's values, or train into a new --out folder"
        )


def other_bundle_settings(other_run: Path, cfg: dict[str, Any]) -> str:
    """The :data:`BUNDLE_SETTINGS` in which ``other_run`` (the run of a teacher or screening network this run learns
    from and is bundled with) differs from ``cfg``, in words; ``""`` when none (or it has no config.yaml)."""
    saved = _saved_config(other_run)
    if saved is None:
        return ""
    theirs, ours = _old_settings(saved), _old_settings(cfg)
    return "; ".join(
        f"{k} {lookup(theirs, k)} (this run's: {lookup(ours, k)})"
        for k in BUNDLE_SETTINGS
        if lookup(theirs, k) != lookup(ours, k)
    )


def _refuse_other_runs_settings(run: Path, cfg: dict[str, Any], networks: dict[str, Path]) -> None:
    """Refuse networks of another run (``--teacher``, the screening network beside it) trained on another grid,
    normalisation or patch size: the teacher was fed images it never saw, and the bundle applied this run's settings
    to it, without a word."""
    for role, folder in networks.items():
        if folder.resolve().parent != run.resolve() and (what := other_bundle_settings(folder.parent, cfg)):
            raise InputError(
                f"the {role} {folder} was trained with other settings that a bundle records for all its networks: "
                f"{what}; give those settings, or a {role} trained with these"
            )


def _settings_changed(cfg: dict[str, Any], saved: dict[str, Any] | None) -> list[str]:
    """The sections of ``cfg`` that differ from ``saved`` (an existing run's config.yaml), runtime keys aside."""
    if saved is None:
        return []
    old = _old_settings(saved)
    # Students of another mode train in a folder of their own (RUN/students-kd), so their settings may
    # differ; those of the same mode continue the stages the old settings started.
    same_mode = (old.get("students") or {}).get("mode") == cfg["students"]["mode"]
    return sorted(
        k
        for k in set(old) | set(cfg)
        if k not in RUNTIME_KEYS and (k != "students" or same_mode) and old.get(k) != cfg.get(k)
    )


#: Sections of the configuration that only one kind of stage uses (``students``: the student stages of its mode);
#: ``export`` and ``cv`` no stage trains with; every other section (data, sampling, augment, optim, networks, seed...)
#: all stages use.
STAGE_SECTIONS = {"screening": "screening", "teacher": "teacher", "students": "students"}
NO_STAGE_SECTIONS = ("export", "cv")


def _concerned(started: list[str], changed: list[str]) -> list[str]:
    """The started stages (``screening``, ``teacher``, ``students/x2``...) that use a changed section."""
    out = []
    for stage in started:
        kind = stage.split("/")[0].split("-")[0]
        if any(STAGE_SECTIONS.get(k, kind) == kind and k not in NO_STAGE_SECTIONS for k in changed):
            out.append(stage)
    return out


def _check_config(run_dir: Path, cfg: dict[str, Any], dist: DistInfo, saved: dict[str, Any] | None) -> list[str]:
    """Save the configuration; warn when an existing run (``saved``: its config.yaml) is continued with
    different settings (returned), naming the started stages that used the earlier ones (it said "unfinished stages
    will not match an uninterrupted run" of settings no started stage uses, which the stages to come train with)."""
    path = run_dir / "config.yaml"
    changed = _settings_changed(cfg, saved)
    concerned = _concerned(_started_stages(run_dir), changed)
    if concerned:
        log.warning(
            "%s was started with other settings (%s): %s had started with the earlier ones, which they keep up to "
            "where they are; they will not match an uninterrupted run (recorded in run.json)",
            run_dir,
            ", ".join(changed),
            ", ".join(concerned),
        )
    elif changed:
        log.warning(
            "%s: other settings (%s) than the run was started with; no started stage uses them (the stages still "
            "to train do)",
            run_dir,
            ", ".join(changed),
        )
    if dist.is_main:
        save_config(cfg, path)
    return changed


def train(
    what: str,
    data_root: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    cfg: dict[str, Any],
    ctx: TrainContext,
    *,
    teacher_dir: str | os.PathLike[str] | None = None,
    screening_dir: str | os.PathLike[str] | None = None,
    subject_ids: Sequence[str] | None = None,
    with_teacher: bool = True,
) -> dict[str, Any]:
    """Run ``what`` (``screening``, ``teacher``, ``students`` or ``all``) in ``run_dir``; returns summaries.

    Teacher and students mine hard negatives from a screening network when one is available:
    ``screening_dir``, else ``RUN/screening`` if it has finished, else the ``init_from`` bundle's.
    ``with_teacher=False`` leaves the teacher out of ``all`` (students trained without distillation need none).
    """
    if what not in STAGES:
        raise PLKDError(f"unknown training stage {what!r}; choose one of {', '.join(STAGES)}")
    run = Path(run_dir)
    cfg = adopt_architectures(cfg)
    new_run = not run.exists()
    if ctx.dist.is_main:
        run.mkdir(parents=True, exist_ok=True)
    saved = _saved_config(run)
    _refuse_lost_config(run, saved)
    cfg = _keep_legacy_settings(run, saved, cfg)
    if saved is not None and _all_done(what, run, cfg, with_teacher):
        # Nothing trains, so config.yaml keeps the settings the stages were trained with: overwritten with the
        # settings of this call (and no record of the change, run.json is not rewritten), plkd export wrote them
        # into the bundle (patch size, grid, normalisation the networks never saw).
        if changed := _settings_changed(cfg, saved):
            log.warning(
                "%s: every requested stage had finished, so the other settings given (%s) were not used; "
                "config.yaml keeps the run's",
                run,
                ", ".join(changed),
            )
        log.info("%s: every requested stage has finished; nothing to do", run)
        return {"skipped": True}
    changed = _settings_changed(cfg, saved)
    _refuse_other_bundle_settings(run, cfg, saved)
    history = _settings_history(run, changed)
    teacher = Path(teacher_dir) if teacher_dir else None
    mining = _mining_screening(run, what, screening_dir, teacher)
    try:
        if screening_dir and not is_done(Path(screening_dir)):
            # It was used only when finished: a typo, or the run folder given, trained without mined negatives unsaid.
            raise InputError(
                f"--screening {screening_dir} is not a finished screening stage (no done.json, model.pt and log.csv "
                "there); give a run's screening folder (RUN/screening)"
            )
        learnt_from = {"screening network": mining} if what != "screening" and is_done(mining) else {}
        if teacher is not None and what in ("students", "all") and cfg["students"]["mode"] != "none":
            learnt_from["teacher"] = teacher
        _refuse_other_runs_settings(run, cfg, learnt_from)
        start_from = _init_record(run, cfg)
        data = load_training_data(data_root, cfg, subject_ids)
        _check_same_data(run, data)
    except PLKDError:
        if new_run and ctx.dist.is_main:
            # Data refused before any training: a new run leaves no folder behind.
            shutil.rmtree(run, ignore_errors=True)
        raise
    # Saved once the data is accepted: a refused call rewrote config.yaml with its own settings first.
    _check_config(run, cfg, ctx.dist, saved)
    if ctx.dist.is_main:
        record = {
            **data.summary(),
            # Absolute and relative to the run (the data as typed was relative to wherever plkd train was called):
            # plkd train finds it from any working directory, also when the run and its data moved together.
            **_data_place(data_root, run),
            "seed": int(cfg["seed"]),
            **history,
            **_sources(run, what, cfg, teacher, mining),
            **({"init_from": start_from} if start_from else {}),
        }
        write_json_atomic(run / "run.json", record)
    out: dict[str, Any] = {}
    if what in ("screening", "all"):
        _, out["screening"] = train_screening(run, cfg, data, ctx)
    if what in ("teacher", "students", "all"):
        _mine(data, cfg, ctx, mining)
    if what == "teacher" or (what == "all" and with_teacher):
        _, out["teacher"] = train_teacher(run, cfg, data, ctx)
    if what in ("students", "all"):
        out["students"] = train_students(run, cfg, data, ctx, Path(teacher_dir) if teacher_dir else None)
    return out


def _init_record(run: Path, cfg: dict[str, Any]) -> dict[str, Any] | None:
    """``run.json``'s ``init_from``: the name and manifest sha256 of the bundle the run starts from (``--init-from``).
    A run whose stages started from a bundle that has been replaced at its path since (re-exported, tuned in place)
    is refused: the stages still to train would start from other networks than the started ones, and plkd export
    recorded the new bundle's checksum as the run's."""
    bundle = init_bundle(cfg)
    if bundle is None:
        return None
    record = {"name": bundle.name, "manifest_sha256": bundle.manifest_sha256}
    path = run / "run.json"
    earlier = json.loads(path.read_text(encoding="utf-8")).get("init_from") if path.is_file() else None
    same_path = lookup(_old_settings(_saved_config(run) or {}), "init_from") == cfg.get("init_from")
    if isinstance(earlier, dict) and same_path and _started_stages(run) and earlier != record:
        raise InputError(
            f"the --init-from bundle {cfg.get('init_from')} changed since the run started ({earlier.get('name')}, "
            f"manifest sha256 {str(earlier.get('manifest_sha256'))[:12]}…; now {record['name']}, "
            f"{record['manifest_sha256'][:12]}…): its started stages began from the other one; put that bundle back, "
            "or train into a new --out folder"
        )
    return record


def _data_place(data_root: str | os.PathLike[str], run: Path) -> dict[str, str]:
    """``run.json``'s ``data`` (absolute) and ``data_relative`` (relative to the run folder)."""
    place = recorded_place(data_root, run)
    return {"data": place["path"], "data_relative": place["relative"]}


def recorded_data(run: Path) -> Path:
    """The data folder ``run``'s ``run.json`` records (relative to the run first, then absolute): a resume may leave
    out ``--data``. PLKDError when there is no record, or the folder is in neither place."""
    path = run / "run.json"
    if not path.is_file():
        raise PLKDError(f"--data is required: {run} is not a started run (no run.json) to take it from")
    info = json.loads(path.read_text(encoding="utf-8"))
    record = {"path": info.get("data"), "relative": info.get("data_relative")}
    found = find_recorded(record, run)
    if found is None:
        raise PLKDError(
            f"--data is required: the data {run} was trained on ({info.get('data')}) is not found there any more"
        )
    log.info("%s: training on the data it records, %s", run, found)
    return found


def _mining_screening(run: Path, what: str, screening_dir: Any, teacher: Path | None) -> Path:
    """The screening network the teacher and students mine their hard negatives from: ``--screening``, else the run's,
    else, for students distilled from another run's teacher (``--teacher``), the screening network beside that
    teacher (the one ``plkd export`` bundles them with: they mined nothing, and their bundle could not be made)."""
    if screening_dir:
        return Path(screening_dir)
    own = run / "screening"
    if what in ("screening", "all") or is_done(own) or teacher is None:
        return own
    beside = teacher.parent / "screening"
    return beside if is_done(beside) and beside.resolve() != own.resolve() else own


def _sources(run: Path, what: str, cfg: dict[str, Any], teacher: Path | None, mining: Path) -> dict[str, Any]:
    """``run.json``'s ``sources``: the networks of other folders this run learnt from (the teacher its students were
    distilled from, the screening network they mined), kept from earlier calls; ``plkd export`` bundles them."""
    path = run / "run.json"
    earlier = json.loads(path.read_text(encoding="utf-8")).get("sources", {}) if path.is_file() else {}
    sources = dict(earlier) if isinstance(earlier, dict) else {}
    distilled = what in ("students", "all") and cfg["students"]["mode"] != "none"
    if distilled and teacher is not None and teacher.resolve() != (run / "teacher").resolve():
        sources["teacher"] = recorded_place(teacher, run)
    if what != "screening" and is_done(mining) and mining.resolve() != (run / "screening").resolve():
        sources["screening"] = recorded_place(mining, run)
    return {"sources": sources} if sources else {}


def _settings_history(run: Path, changed: list[str]) -> dict[str, Any]:
    """``run.json``'s record of resumes with other settings: the earlier ones, plus this one when a stage had
    started (config.yaml holds the last settings only, and plkd export records them as the run's)."""
    path = run / "run.json"
    earlier = json.loads(path.read_text(encoding="utf-8")).get("settings_changed", []) if path.is_file() else []
    started = _concerned(_started_stages(run), changed)
    if changed and started:
        concerning = [k for k in changed if _concerned(started, [k])]
        earlier = [*earlier, {"settings": concerning, "stages_started": started}]
    return {"settings_changed": earlier} if earlier else {}


def _started_stages(run: Path) -> list[str]:
    """Stage folders of ``run`` that have trained at least one checkpoint or finished."""
    found = []
    for folder in sorted([run / "screening", run / "teacher", *run.glob("students*/*")]):
        if (folder / CHECKPOINT_NAME).is_file() or (folder / DONE_NAME).is_file():
            found.append(str(folder.relative_to(run)))
    return found


def _check_same_data(run: Path, data: TrainingData) -> None:
    """Refuse to continue a run on other training data than its started stages learnt from.

    ``run.json`` describes one data set for the whole run and ``plkd export`` records it in the bundle;
    continuing with another ``--data`` (or a data folder whose subjects, labels or images changed) trained the
    remaining stages on it and rewrote ``run.json``, so the bundle named data its first stages never saw.
    A data folder moved elsewhere with the same content is accepted.
    """
    path = run / "run.json"
    started = _started_stages(run)
    if not started or not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    new = data.summary()
    old_ids = {*old.get("train_ids", []), *old.get("val_ids", [])}
    new_ids = {*new["train_ids"], *new["val_ids"]}
    if old_ids != new_ids:
        gone, added = sorted(old_ids - new_ids), sorted(new_ids - old_ids)
        diff = ", ".join(
            part
            for part in (
                f"{len(gone)} subject(s) missing, e.g. {gone[0]}" if gone else "",
                f"{len(added)} new, e.g. {added[0]}" if added else "",
            )
            if part
        )
        what = f"other subjects ({diff})"
    elif old.get("train_ids") != new["train_ids"]:
        what = "another validation split (data.val_fraction or the seed changed)"
    elif old.get("data_sha256") not in (None, new["data_sha256"]):
        what = "the same subjects with other labels or images on another grid"
    elif old.get("image_sha256") not in (None, new["image_sha256"]):
        # Same grid and labels, other voxel values: re-processed (bias-corrected, re-masked) or swapped scans.
        changed = sorted(k for k, v in new["image_sha256"].items() if old["image_sha256"].get(k) != v)
        what = f"the same subjects and labels with other images ({len(changed)}, e.g. {changed[0]}: other voxel values)"
    elif changed := _changed_files(old, new, "label_sha256"):
        what = f"the same subjects and images with other label maps ({len(changed)}, e.g. {changed[0]}: other voxels)"
    elif changed := _changed_files(old, new, "mask_sha256"):
        what = (
            f"the same subjects, images and labels with other brain masks ({len(changed)}, e.g. {changed[0]}: "
            "a mask file changed, added or removed)"
        )
    elif old.get("modality") not in (None, new["modality"]):
        what = f"modality {new['modality']} (the run was started with {old['modality']})"
    else:
        return
    raise InputError(
        f"{run} was trained on {old.get('data')} ({', '.join(started)} started); --data {data.root} now gives {what}: "
        "the bundle would name data its first stages never saw; train into a new --out folder, "
        "or remove the run to start again"
    )


def _changed_files(old: dict[str, Any], new: dict[str, Any], key: str) -> list[str]:
    """Subjects whose ``key`` digest (``label_sha256``, ``mask_sha256``) differs between two ``run.json`` summaries;
    none when the earlier one did not record it (runs of plkd versions before it)."""
    before = old.get(key)
    if not isinstance(before, dict):
        return []
    return sorted(k for k, v in new[key].items() if before.get(k) != v)


def _all_done(what: str, run: Path, cfg: dict[str, Any], with_teacher: bool) -> bool:
    """True when every stage ``what`` asks for has finished (so no data needs loading)."""
    need = []
    if what in ("screening", "all"):
        need.append(run / "screening")
    if what == "teacher" or (what == "all" and with_teacher):
        need.append(run / "teacher")
    if what in ("students", "all"):
        root = students_dir(run, cfg["students"]["mode"])
        need += [root / s.name for s in plan_stages(cfg, "T2S")]
    return all(is_done(p) for p in need)


def _mine(data: TrainingData, cfg: dict[str, Any], ctx: TrainContext, screening_dir: Path) -> None:
    """Add a screening network's false positives to the hard negatives (once per data).

    The network is the finished one in ``screening_dir``, else the ``init_from`` bundle's (a teacher or students
    fine-tuned without a screening stage learn from the candidates of the screening network they will be run with),
    else there is none and nothing is mined.
    """
    limit = int(cfg["sampling"]["screening_candidates"])
    if getattr(data, "_mined", False) or limit <= 0:
        return
    if is_done(screening_dir):
        from plkd.models import build_network

        network = json.loads((screening_dir / "done.json").read_text(encoding="utf-8"))["network"]
        net = build_network(network["kind"], network["hparams"])
        net.load_state_dict(load_weights(screening_dir / FINAL_NAME))
        source = str(screening_dir)
    else:
        bundle = init_bundle(cfg)
        if bundle is None or bundle.screening_name is None:
            return
        net, source = bundle.network(bundle.screening_name, "cpu").float(), f"{bundle.name}:{bundle.screening_name}"
    n = mine_hard_negatives(net.to(ctx.device), data, limit, ctx.device)
    data._mined = True  # type: ignore[attr-defined]
    log.info("added %d screening false positives (of %s) as hard negatives", n, source)
