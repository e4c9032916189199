"""Subject-level k-fold cross-validation (``plkd cv``), as the paper's 5-fold protocol.

For each fold: train screening, teacher and students on the training subjects
(``CVDIR/[VARIANT/]fold-K/run``), export a bundle (``fold-K/bundle``), convert every held-out
subject to LR@factor with :func:`plkd.lowres.simulate_lowres` (on the HR grid, as in training),
predict it with :class:`plkd.inference.Predictor` using the student for that factor, and score it
with :mod:`plkd.metrics`. ``fold-K/result.json`` marks a finished fold (resumable per fold).
``CVDIR/summary.{md,json}`` hold the per-fold table with mean ± sd of the pooled TPR, PPV,
FPavg, F1 and Dice, and ``CVDIR/froc.png`` one FROC curve per fold. With variants (the ablation
of paper Table 4, ``cv.variants`` in the configuration) each variant runs on the same folds.

Thresholds: by default every fold predicts at the bundle's thresholds (0.5 / 0.5 from training).
With ``tune_data`` (``plkd cv --tune-data``), a labelled validation set that shares no subject with
the cross-validated one, each fold's target student first has its screening and segmentation
thresholds chosen there (:func:`plkd.tuning.tune_thresholds` on cubic LR@factor, the condition the
folds are scored on), so that variants are compared at their own best operating point rather than
at one that favours whichever happens to be calibrated. Test folds are never looked at. Folds that
finished untuned are tuned and re-scored from their stored bundle without training again.

Variants share what they have in common: a finished screening or teacher stage is kept in a stage
cache (``CVDIR/shared-stages`` or ``--stage-cache``) under a digest of everything that decides its
weights (seed, data, sampling, augmentation, optimiser, network, stage settings, training subjects),
and a fold whose stage has the same digest copies it instead of training it again. Variants without
distillation (``students.mode: none``) train no teacher at all; their fold bundles hold the
screening network and the student only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plkd.atomic import temporary_folder, write_json_atomic, write_text_atomic
from plkd.bundle import MANIFEST, move_into_place
from plkd.data.datasets import Subject, find_subjects, load_subject
from plkd.data.scans import image_sha256, same_scan_groups, scan_digests, shared_scans, shared_sentence
from plkd.data.splits import kfold_split, merge_groups, session_groups
from plkd.errors import PLKDError
from plkd.lowres import simulate_lowres
from plkd.metrics.scored import NO_LABEL, ScoredSubjects, scored_labelled_subjects
from plkd.naming import pair_files
from plkd.training.config import Config, set_value
from plkd.training.export import export_run
from plkd.training.loop import TrainContext, is_done
from plkd.training.pipeline import train
from plkd.volumes import load_volume

log = logging.getLogger(__name__)

#: Pooled figures of each fold at the bundle's thresholds, plus the FROC sensitivity at one false
#: positive per subject (``S@1FP``), which does not depend on the segmentation threshold.
METRICS = ("TPR", "PPV", "FPavg", "F1", "Dice", "S@1FP")


def apply_variant(cfg: Config, overrides: dict[str, Any]) -> Config:
    """``cfg`` with a variant's ``{dotted.key: value}`` overrides (typed like ``--set``)."""
    for key, value in overrides.items():
        cfg = set_value(cfg, key, value if isinstance(value, str) else json.dumps(value))
    return cfg


def evaluate_fold(bundle: Path, data_root: Path, test_ids: Sequence[str], factor: int, device: Any) -> dict:
    """Predict the held-out subjects at LR@factor and score them; returns the fold's result."""
    from plkd.inference.predictor import Predictor
    from plkd.inference.preprocess import network_slice_axis
    from plkd.metrics import evaluate_subject, froc_curve, froc_subject, pool_results

    predictor = Predictor(bundle, device=device, locate=False)  # detection metrics only
    subjects = {s.id: s for s in find_subjects(data_root)}
    per_subject, froc_subjects = {}, {}
    label_notes: list[str] = []  # what bringing a label onto its image's grid did (plkd.label_grid), said when read
    scored = ScoredSubjects("plkd cv fold")
    for sid in test_ids:
        if sid not in subjects or subjects[sid].label is None:  # gone or unlabelled since the split was made
            scored.skip(sid, NO_LABEL if sid in subjects else "no longer in the data set")
            continue
        image, label, mask = load_subject(subjects[sid])
        label_notes.extend(n for n in label.notes if n not in label_notes)
        axis = network_slice_axis(image.affine)  # the networks' Z, as the students were trained
        lr = simulate_lowres(image.data, factor, axis=axis, mode="interp") if factor > 1 else image.data
        result = predictor.predict(image.with_data(lr.astype(np.float32)), mask, lr_factor=float(factor))
        per_subject[sid] = evaluate_subject(result.label_map, label.data, image.spacing)
        # Same detections and matching as the pooled table, so the curve passes through it; the probabilities are
        # rounded to 4 decimals (as in the JSON), so they are kept on their side of the threshold applied.
        froc_subjects[sid], _ = froc_subject(
            result.label_map,
            label.data,
            image.spacing,
            image.affine,
            result.candidates,
            applied=float(result.thresholds["segmentation"]),
        )
        scored.add(sid)
    scored.require_any()
    notes: list[str] = []
    scored.warn(notes)
    notes.extend(label_notes)
    pooled = pool_results(per_subject)
    return {
        "test_ids": list(test_ids),
        "scored": scored.to_dict(),
        "notes": notes,
        "factor": factor,
        "student": result.student,
        "thresholds": {k: result.thresholds[k] for k in ("screening", "segmentation")},
        "pooled": pooled["pooled"],
        "valdo": pooled["valdo"],
        "subjects": per_subject,
        "froc": froc_curve(
            froc_subjects,
            operating_point={
                "sensitivity": pooled["pooled"]["TPR"],
                "fp_per_subject": pooled["pooled"]["FPavg"],
                "thresholds": [result.thresholds["segmentation"]],
            },
        ).to_dict(),
    }


def run_cv(
    data_root: str | os.PathLike[str],
    cv_dir: str | os.PathLike[str],
    cfg: Config,
    ctx: TrainContext,
    *,
    folds: int | None = None,
    factor: int | None = None,
    variants: Sequence[str] | None = None,
    stage_cache: str | os.PathLike[str] | None = None,
    tune_data: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run the cross-validation (or each named variant of ``cv.variants``); returns the summary.

    ``stage_cache`` (default ``CVDIR/shared-stages``) holds the screening and teacher stages that
    folds with identical settings share; point runs at several LR factors at the same folder.
    ``tune_data`` is a labelled validation set on which each fold's thresholds are chosen.
    """
    root, out = Path(data_root), Path(cv_dir)
    cache = Path(stage_cache) if stage_cache is not None else out / "shared-stages"
    k = int(folds or cfg["cv"]["folds"])
    f = int(factor or cfg["cv"]["factor"])
    if f < 2 or f & (f - 1):
        raise PLKDError(f"--factor must be a power of two >= 2, not {f}")
    cfg = set_value(set_value(cfg, "students.target_factor", str(f)), "cv.factor", str(f))
    labelled, scored = scored_labelled_subjects(find_subjects(root), "plkd cv", require=False)
    digests = _high_resolution_scans(labelled, cfg["data"]["spacing_mm"], f)
    tuning = _tuning_key(root, tune_data, digests) if tune_data is not None else None
    ids = [s.id for s in labelled]
    if len(ids) < k:
        raise PLKDError(f"{k} folds need at least {k} labelled subjects; {root} has {len(ids)}")
    # Sessions of one patient (sub-01_ses-1, sub-01_ses-2 in a plain folder) stay in one fold, and so do cases of one
    # scan (two raters' labels, a copy under another name), which trained the fold that tested them.
    same_scan = same_scan_groups(digests)
    contents = file_contents(labelled)  # what each fold learns and is scored on, for resumes and the stage cache
    splits = kfold_split(ids, k=k, seed=int(cfg["seed"]), groups=merge_groups(session_groups(ids), same_scan))
    table = cfg["cv"]["variants"]
    unknown = [v for v in variants or [] if v not in table]
    if unknown:
        raise PLKDError(f"unknown variant(s) {unknown}; cv.variants defines {sorted(table)}")
    runs = {v: (out / v, apply_variant(cfg, table[v])) for v in variants} if variants else {"": (out, cfg)}
    summary: dict[str, Any] = {
        "folds": k,
        "factor": f,
        "tuned_on": tuning and tuning["data"],
        "scored": scored.to_dict(),
        "notes": [n for n in [scored.sentence(), _same_scan_note(same_scan)] if n],
        "variants": {},
    }
    for name, (vdir, vcfg) in runs.items():
        results = []
        for i, (train_ids, test_ids) in enumerate(splits):
            fold = _Fold(vdir / f"fold-{i + 1}", train_ids, test_ids)
            results.append(_run_fold(root, fold, vcfg, ctx, f, cache, tuning, contents))
        if ctx.dist.is_main:
            summary["variants"][name or vcfg["students"]["mode"]] = _write_summary(vdir, results, vcfg, name, scored)
    if variants and ctx.dist.is_main:
        write_text_atomic(out / "summary.md", _variants_markdown(summary))
        write_json_atomic(out / "summary.json", summary)
        plot_variants(summary, out / "variants.png")
    return summary


def _high_resolution_scans(subjects: Sequence[Subject], model_spacing: Sequence[float], factor: int) -> dict[str, str]:
    """``{id: image_sha256}`` of the subjects (:mod:`plkd.data.scans`), refusing those that are not high-resolution:
    every one is a test subject of some fold, scored as LR@factor made from it, so 3 mm slices were scored as
    "LR@4" on 12 mm without a word."""
    from plkd.tuning import not_high_resolution

    thick, digests = [], {}
    for s in subjects:
        image = load_volume(s.image, what=f"image of {s.id}")
        digests[s.id] = image_sha256(image.data)
        if why := not_high_resolution(image.affine, image.header, model_spacing):
            thick.append(f"{s.id}: {why}")
    if thick:
        more = f" (and {len(thick) - 1} more)" if len(thick) > 1 else ""
        raise PLKDError(
            f"{len(thick)} of {len(subjects)} subjects are not high-resolution ({thick[0]}{more}); plkd cv scores "
            f"each test subject as LR@{factor} made from it: cross-validate on high-resolution subjects"
        )
    return digests


def _same_scan_note(groups: dict[str, str]) -> str | None:
    """The warning (and summary note) for cases that share one scan, kept in one fold; None when there are none."""
    if not groups:
        return None
    by_group: dict[str, list[str]] = {}
    for sid, group in sorted(groups.items()):
        by_group.setdefault(group, []).append(sid)
    examples = "; ".join(" = ".join(ids) for ids in list(by_group.values())[:3])
    note = (
        f"{len(groups)} subjects share their image with another ({examples}{' ...' if len(by_group) > 3 else ''}: "
        "two raters' labels, or a copy under another name): each scan's cases are kept in one fold"
    )
    log.warning(note)
    return note


def stage_keys(cfg: Config, train_ids: Sequence[str], data_key: str = "") -> dict[str, str]:
    """Digests of the settings that decide the screening and teacher weights of a fold.

    Two folds with the same digest for a stage train the same network on the same patches, so one
    may copy the other's finished stage. Run-time settings (device, threads) are left out.
    ``data_key`` (:func:`data_fingerprint`) tells data sets apart whose subject ids are the same.
    """
    common = {k: cfg[k] for k in ("seed", "modality", "data", "sampling", "augment", "optim")}
    common["train_ids"] = sorted(train_ids)
    if data_key:
        common["data_files"] = data_key
    stage = dict(cfg["screening"])
    if not stage["lr_share"]:  # LR settings cannot change a network that sees no LR patch
        stage = {k: v for k, v in stage.items() if not k.startswith("lr_")}
    screening = _digest({**common, "network": cfg["networks"]["screening"], "stage": stage})
    teacher = _digest(
        {**common, "screening": screening, "network": cfg["networks"]["segmenter"], "stage": cfg["teacher"]}
    )
    return {"screening": screening, "teacher": teacher}


def data_fingerprint(root: Path, ids: Sequence[str]) -> str:
    """sha256 of the names and sizes of the image, label and mask files of subjects ``ids`` in ``root``.

    Subject ids repeat across data sets (``sub-0001`` …), so a stage cache shared between runs on two
    data sets (``--stage-cache``) gave the second the first one's networks; the files tell them apart
    (a data folder moved elsewhere keeps its fingerprint).
    """
    wanted = set(ids)
    files = []
    for s in find_subjects(root):
        if s.id in wanted:
            for p in (s.image, s.label, s.mask):
                # A NIfTI pair by both its files: its voxels (.img) are what the header names.
                files += (
                    [[s.id, f.name, f.stat().st_size] for f in pair_files(p)] if p is not None else [[s.id, None, None]]
                )
    return _digest(files)


def file_contents(subjects: Sequence[Subject]) -> dict[str, str]:
    """``{subject id: sha256}`` of the bytes of each subject's image, label and mask files (read once per run)."""
    out = {}
    for s in subjects:
        h = hashlib.sha256()
        for p in (s.image, s.label, s.mask):
            h.update(f"{p.name if p is not None else None}:".encode())
            for member in pair_files(p) if p is not None else []:  # a NIfTI pair: header and voxels
                with open(member, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
        out[s.id] = h.hexdigest()
    return out


def data_contents(contents: dict[str, str], ids: Sequence[str]) -> str:
    """One digest of the file contents (:func:`file_contents`) of subjects ``ids``.

    :func:`data_fingerprint` (names and sizes, the cache key since the cache existed) is the same for a label
    re-drawn in an uncompressed ``.nii`` or a brain mask replaced by one of the same size, so a cached stage
    trained on the old files was copied into a fold that should learn the new ones, and a finished fold scored on
    the old labels stood in the summary beside folds scored on the new. Each cache entry records this digest beside
    it (``STAGE-KEY.contents``) and is reused only while it holds; each fold's ``result.json`` records its own.
    """
    return _digest_full([[i, contents.get(i)] for i in sorted(ids)])


def _digest_full(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _contents_record(cache: Path, stage: str, key: str) -> Path:
    return cache / f"{stage}-{key}.contents"


def _stale(cache: Path, stage: str, key: str, contents: str | None) -> bool:
    """Whether the cache entry was stored from other file contents (:func:`data_contents`) than ``contents``; an
    entry stored before the contents were recorded is taken as it always was."""
    record = _contents_record(cache, stage, key)
    return contents is not None and record.is_file() and record.read_text(encoding="utf-8").strip() != contents


def _reuse_stages(run: Path, cache: Path, keys: dict[str, str], contents: str | None = None) -> list[str]:
    """Copy finished stages with matching digests (and file contents, ``contents``) from the cache into ``run``;
    returns their names."""
    reused = []
    for stage, key in keys.items():
        src, dst = cache / f"{stage}-{key}", run / stage
        if is_done(src) and _stale(cache, stage, key, contents):
            log.warning(
                "%s: the cached %s (%s) was trained on other contents of the same files (a label or mask changed "
                "since); trained again",
                run,
                stage,
                src.name,
            )
            continue
        if is_done(src) and not is_done(dst):
            _copy_folder(src, dst)
            reused.append(stage)
            log.info("%s: %s copied from the stage cache (%s)", run, stage, src.name)
    return reused


def _store_stages(run: Path, cache: Path, keys: dict[str, str], contents: str | None = None) -> None:
    """Put the finished stages of ``run`` into the cache (copied to a temporary name, then renamed), with the file
    contents they were trained on (``contents``) beside them; an entry of other contents is replaced."""
    for stage, key in keys.items():
        src, dst = run / stage, cache / f"{stage}-{key}"
        if is_done(src) and (not is_done(dst) or _stale(cache, stage, key, contents)):
            _copy_folder(src, dst)
            if contents is not None:
                write_text_atomic(_contents_record(cache, stage, key), contents + "\n")


def _copy_folder(src: Path, dst: Path) -> None:
    """Copy the stage folder ``src`` to ``dst`` under a temporary name, then rename it (an earlier ``dst`` moved aside
    and removed): a copy stopped halfway (Ctrl-C, a kill) left a ``dst`` with done.json and a truncated model.pt,
    taken as finished; and a killed copy's temporary is removed by the next one (it was named after the process)."""
    tmp = temporary_folder(dst)
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        move_into_place(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class _Fold:
    dir: Path
    train_ids: list
    test_ids: list


def _tuning_key(root: Path, tune_data: str | os.PathLike[str], cv_digests: dict[str, str]) -> dict[str, Any]:
    """What a fold's thresholds are tuned on; refuses the cross-validated data set itself, and validation
    subjects whose images are scans of it (``cv_digests``: its labelled subjects' :func:`image_sha256`; every one
    is a test subject of some fold).

    Subject ids (``sub-0001`` …) repeat across data sets, so scans are told by their voxel values
    (:mod:`plkd.data.scans`): a copied or renamed scan is found, a resampled or re-converted one is not."""
    tune_root = Path(tune_data)
    tune_subjects = [s for s in find_subjects(tune_root) if s.label is not None]
    tune_ids = {s.id for s in tune_subjects}
    if not tune_ids:
        raise PLKDError(f"--tune-data {tune_root} has no labelled subject")
    if tune_root.resolve() == root.resolve():
        raise PLKDError("--tune-data must be a validation set of its own, not the cross-validated data")
    shared = shared_scans(scan_digests(tune_subjects), cv_digests)
    if shared:
        # Thresholds chosen on a fold's test subjects (or its training ones) make its scores look better than they are.
        named = shared_sentence(shared, len(tune_subjects), "subjects", "cross-validated subject")
        raise PLKDError(
            f"--tune-data: {named} are scans of --data {root}, which every fold trains or tests on; "
            "give validation subjects of their own"
        )
    return {"data": str(tune_root.resolve()), "conditions": ["interp"], "subjects": sorted(tune_ids)}


def _run_fold(
    root: Path,
    fold: _Fold,
    cfg: Config,
    ctx: TrainContext,
    f: int,
    cache: Path,
    tuning: dict | None,
    contents: dict[str, str],
) -> dict:
    done = fold.dir / "result.json"
    previous = json.loads(done.read_text(encoding="utf-8")) if done.is_file() else None
    fold_contents = data_contents(contents, [*fold.train_ids, *fold.test_ids])
    _check_same_fold(fold, previous, fold_contents)
    if previous is not None and (tuning is None or previous.get("tuning", {}).get("data") == tuning["data"]):
        log.info("%s: finished, skipped", fold.dir)
        return previous
    mode = cfg["students"]["mode"]
    bundle = fold.dir / "bundle"
    reused: list[str] = []
    if previous is None or not (bundle / MANIFEST).is_file():
        reused = _train_fold(root, fold, cfg, ctx, cache, data_contents(contents, fold.train_ids))
        if ctx.dist.is_main:
            export_run(fold.dir / "run", bundle, mode=mode, overwrite=True, include_teacher=mode != "none")
    else:
        reused = previous.get("reused_stages", [])
        log.info("%s: finished untuned; tuning its thresholds and scoring it again", fold.dir)
    result: dict[str, Any] = {}
    if ctx.dist.is_main:
        scored, record = bundle, None
        if tuning:
            scored, record = fold.dir / "bundle-tuned", _tune_fold(bundle, fold.dir / "bundle-tuned", f, tuning, ctx)
        result = evaluate_fold(scored, root, fold.test_ids, f, ctx.device)
        result["train_ids"] = list(fold.train_ids)
        result["reused_stages"] = reused
        result["data_contents"] = fold_contents
        if record is not None:
            result["tuning"] = {**tuning, **record}
        write_json_atomic(done, result)
    return result


def _check_same_fold(fold: _Fold, previous: dict[str, Any] | None, contents: str | None = None) -> None:
    """Refuse a finished fold made on another split: changed data, --folds or seed gave other folds, and
    its stored result (scored on other test subjects, trained on some of this fold's) was reused as this
    fold's, so the summary counted subjects twice or never; or on other file contents (``contents``,
    :func:`data_contents`; folds finished before it was recorded are not checked for it)."""
    if previous is None:
        return
    same_test = sorted(previous.get("test_ids", [])) == sorted(fold.test_ids)
    same_train = "train_ids" not in previous or sorted(previous["train_ids"]) == sorted(fold.train_ids)
    if not (same_test and same_train):
        raise PLKDError(
            f"{fold.dir} was made on other folds (test subjects {', '.join(sorted(previous.get('test_ids', []))[:3])}"
            f"... instead of {', '.join(sorted(fold.test_ids)[:3])}...): the data, --folds or the seed changed "
            "since; cross-validate into a new folder"
        )
    if contents is not None and previous.get("data_contents") not in (None, contents):
        # Same subjects, other files: a label re-drawn, an image or mask replaced. The fold's score (and network)
        # stood in the summary beside folds of the new files.
        raise PLKDError(
            f"{fold.dir} was trained and scored on other contents of its subjects' image, label or mask files (one "
            "changed since): cross-validate into a new folder, or remove the fold folders to redo them"
        )


def _train_fold(root: Path, fold: _Fold, cfg: Config, ctx: TrainContext, cache: Path, contents: str) -> list[str]:
    """Train the fold's stages (copying identical finished ones from the cache); returns those copied."""
    run = fold.dir / "run"
    mode = cfg["students"]["mode"]
    keys = stage_keys(cfg, fold.train_ids, data_fingerprint(root, fold.train_ids))
    if mode == "none":  # no distillation: a teacher would be trained for nothing
        keys.pop("teacher")
    reused = _reuse_stages(run, cache, keys, contents) if ctx.dist.is_main else []
    train("all", root, run, cfg, ctx, subject_ids=fold.train_ids, with_teacher=mode != "none")
    if ctx.dist.is_main:
        cache.mkdir(parents=True, exist_ok=True)
        _store_stages(run, cache, keys, contents)
    return reused


def _tune_fold(bundle: Path, out: Path, f: int, tuning: dict, ctx: TrainContext) -> dict[str, Any]:
    """Write ``out``, a copy of the fold's bundle whose LR@f student carries thresholds tuned on the
    validation set; returns that student's tuning record (as stored in ``out``'s manifest)."""
    from plkd.inference.predictor import Predictor
    from plkd.tuning import objective, tune_thresholds

    predictor = Predictor(bundle, device=ctx.device, locate=False)
    student = predictor.choose_student(float(f))
    report = tune_thresholds(
        predictor.bundle,
        tuning["data"],
        out,
        segmenters=[student],
        conditions=tuning["conditions"],
        device=ctx.device,
        progress="none",
        overwrite=True,
    )
    return {"objective": objective(None), **report[student]}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _write_summary(vdir: Path, results: list[dict], cfg: Config, name: str, scored: ScoredSubjects) -> dict:
    from plkd.metrics import FrocCurve, plot_froc

    rows = [_fold_row(r) for r in results]
    stats = {m: _mean_sd([row[m] for row in rows]) for m in METRICS}
    lines = [
        f"# Cross-validation{f' — {name}' if name else ''}: {len(results)} folds, LR@{cfg['cv']['factor']}, "
        f"students {cfg['students']['mode']}",
        "",
        "Pooled over each fold's test subjects (paper Table 2; TPR, PPV, F1, Dice in %), at the student's "
        + (f"thresholds tuned on {results[0]['tuning']['data']}" if "tuning" in results[0] else "thresholds")
        + " (screening / segmentation).",
        "",
        "| fold | subjects | thresholds | " + " | ".join(METRICS) + " |",
        "|---|---|---|" + "---|" * len(METRICS),
    ]
    for i, (r, row) in enumerate(zip(results, rows, strict=True)):
        cut = r.get("thresholds") or {}
        pair = f"{cut['screening']:.2f} / {cut['segmentation']:.3g}" if cut else "n/a"
        if (r.get("tuning") or {}).get("thresholds_kept"):
            # plkd tune found no microbleed at any pair and kept the bundle's: the heading says "tuned on".
            pair += " (kept: no pair found a microbleed)"
        cells = " | ".join(_fmt(m, row[m]) for m in METRICS)
        lines.append(f"| {i + 1} | {len(r['test_ids'])} | {pair} | {cells} |")
    lines.append(
        "| mean ± sd | | | " + " | ".join(f"{_fmt(m, stats[m][0])} ± {_fmt(m, stats[m][1])}" for m in METRICS) + " |"
    )
    # Which subjects the table covers: the data set's unlabelled ones are in no fold.
    lines += ["", scored.sentence() or f"All {len(scored.scored)} subjects of the data set were scored (labelled)."]
    write_text_atomic(vdir / "summary.md", "\n".join(lines) + "\n")
    out = {
        "folds": rows,
        "mean": {m: s[0] for m, s in stats.items()},
        "sd": {m: s[1] for m, s in stats.items()},
        "scored": scored.to_dict(),
    }
    write_json_atomic(vdir / "summary.json", out)
    curves = {f"fold {i + 1}": FrocCurve.from_dict(r["froc"]) for i, r in enumerate(results)}
    plot_froc(curves, vdir / "froc.png", title=f"FROC, LR@{cfg['cv']['factor']}")
    return out


def _fold_row(result: dict) -> dict[str, float | None]:
    from plkd.metrics import FrocCurve

    row = {m: result["pooled"].get(m) for m in METRICS if m != "S@1FP"}
    row["S@1FP"] = FrocCurve.from_dict(result["froc"]).sensitivity_at(1.0) if result.get("froc") else None
    return row


def plot_variants(summary: dict, path: Path) -> Path:
    """Bar chart of each variant's F1, TPR and PPV (mean ± sd over folds) and its FP per subject."""
    from plkd.figures import pyplot, save_figure

    plt = pyplot()
    names = list(summary["variants"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(3 + 1.1 * len(names), 3.6), width_ratios=[3, 1.4])
    x = np.arange(len(names))
    for i, metric in enumerate(("F1", "TPR", "PPV")):
        mean = [100 * summary["variants"][n]["mean"][metric] for n in names]
        sd = [100 * summary["variants"][n]["sd"][metric] for n in names]
        left.bar(x + (i - 1) * 0.27, mean, 0.27, yerr=sd, capsize=2, label=metric)
    left.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    left.set_ylabel("% (mean ± sd over folds)")
    left.set_ylim(0, 100)
    left.legend(fontsize=8, ncol=3, loc="upper left")
    fp = [summary["variants"][n]["mean"]["FPavg"] for n in names]
    fp_sd = [summary["variants"][n]["sd"]["FPavg"] for n in names]
    right.bar(x, fp, 0.6, yerr=fp_sd, capsize=2, color="tab:gray")
    right.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    right.set_ylabel("false positives per subject")
    fig.suptitle(f"{summary['folds']}-fold CV at LR@{summary['factor']}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def _fmt(metric: str, value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.2f}" if metric == "FPavg" else f"{100 * value:.1f}"


def _variants_markdown(summary: dict) -> str:
    lines = [
        f"# Ablation: {summary['folds']}-fold CV at LR@{summary['factor']} (mean ± sd over folds)",
        "",
        f"Thresholds tuned per fold on {summary['tuned_on']}."
        if summary.get("tuned_on")
        else "Thresholds: each bundle's own (not tuned).",
        "",
        "| variant | " + " | ".join(METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for name, v in summary["variants"].items():
        cells = [f"{_fmt(m, v['mean'][m])} ± {_fmt(m, v['sd'][m])}" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
