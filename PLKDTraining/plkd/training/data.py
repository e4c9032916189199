"""Loading a data set for training: subject split into train/validation, patch samplers."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plkd.data.datasets import Subject, find_subjects
from plkd.data.splits import session_groups
from plkd.errors import InputError
from plkd.inference.predictor import STUDENT_REACH
from plkd.training.label_checks import label_notes
from plkd.training.sampling import PatchSampler, SubjectArrays, load_subjects

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Prepared training (and validation) subjects with their samplers."""

    root: Path
    modality: str
    train: list[SubjectArrays]
    val: list[SubjectArrays]
    sampler: PatchSampler
    val_sampler: PatchSampler | None
    #: Layout of the data set folder (``synth``, ``valdo``, ``folder`` or ``mixed``).
    layout: str = "other"
    #: Caveats about the data, also in ``run.json``.
    notes: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """What a bundle records about its training data."""
        return {
            "data": str(self.root),
            "modality": self.modality,
            "n_train_subjects": len(self.train),
            "n_val_subjects": len(self.val),
            "n_microbleeds": int(sum(len(s.positives) for s in self.train)),
            "train_ids": [s.id for s in self.train],
            "val_ids": [s.id for s in self.val],
            "layout": self.layout,
            "notes": list(self.notes),
            "data_sha256": self.digest(),
            # Which scans the networks learnt from, by voxel content: plkd tune refuses them as validation subjects.
            "image_sha256": {s.id: s.image_sha256 for s in self.train},
            # What else a started stage learnt from, for the resume check: the label maps' voxels (an outline
            # re-drawn around the same centre leaves data_sha256 as it was) and the brain-mask files (the brain
            # intensities are normalised over and patches drawn from); None where a subject has no such file.
            "label_sha256": {s.id: s.label_sha256 for s in self.train + self.val},
            "mask_sha256": {s.id: s.mask_sha256 for s in self.train + self.val},
        }

    def digest(self) -> str:
        """sha256 of what the networks learn from: each subject's id, split, model-grid shape and microbleed
        centres (a relabelled subject or one on another grid changes it; a moved data folder does not)."""
        h = hashlib.sha256()
        for split, subjects in (("train", self.train), ("val", self.val)):
            for s in subjects:
                h.update(json.dumps([split, s.id, list(s.image.shape), s.positives.tolist()]).encode())
        return h.hexdigest()


def resolve_modality(cfg: dict[str, Any], subjects: Sequence[Subject]) -> str:
    """The configured modality, or the data set's (``plkd synth`` manifests say), else T2S."""
    if cfg["modality"] != "auto":
        return str(cfg["modality"])
    found = {s.meta.get("modality") for s in subjects} - {None}
    return str(found.pop()) if len(found) == 1 else "T2S"


def split_validation(ids: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Subject-level split: ``(train_ids, val_ids)``; no validation for fewer than 5 subjects.

    Cases of one BIDS subject (``sub-01_ses-1``, ``sub-01_ses-2``: :func:`plkd.data.splits.session_groups`)
    go to the same side, so the validation loss never scores a patient the networks trained on.
    """
    ids = sorted(ids)
    groups = session_groups(ids)
    units = sorted({groups.get(i, i) for i in ids})  # the ids themselves when no subject has two cases
    n_val = int(round(len(units) * fraction)) if len(ids) >= 5 and len(units) >= 2 else 0
    if fraction > 0 and len(ids) >= 5 and len(units) >= 2:
        n_val = max(1, n_val)
    order = np.random.default_rng([int(seed), 4242]).permutation(len(units))
    held = {units[i] for i in order[:n_val]}
    val = sorted(i for i in ids if groups.get(i, i) in held)
    return [i for i in ids if i not in val], val


def load_training_data(
    root: str | os.PathLike[str], cfg: dict[str, Any], subject_ids: Sequence[str] | None = None
) -> TrainingData:
    """Find, split, load and index the subjects of ``root`` (only ``subject_ids`` when given)."""
    subjects = find_subjects(root)
    if subject_ids is not None:
        wanted = set(subject_ids)
        subjects = [s for s in subjects if s.id in wanted]
    if cfg["data"]["max_subjects"]:
        subjects = subjects[: int(cfg["data"]["max_subjects"])]
    labelled = [s for s in subjects if s.label is not None or s.meta.get("microbleeds")]
    if not labelled:
        raise InputError(f"no labelled subjects in {root}: training needs microbleed label maps")
    seed = int(cfg["seed"])
    train_ids, val_ids = split_validation([s.id for s in labelled], float(cfg["data"]["val_fraction"]), seed)
    by_id = {s.id: s for s in labelled}
    workers = int(cfg.get("workers", 0))
    train = load_subjects([by_id[i] for i in train_ids], cfg, seed, workers)
    val = load_subjects([by_id[i] for i in val_ids], cfg, seed, workers)
    train, val, same_scan = _same_scans_in_training(train, val)
    val_sampler = None
    if val and any(len(s.positives) for s in val):
        val_sampler = PatchSampler(val, cfg)
    log.info("training on %d subject(s), validating on %d", len(train), len(val))
    notes = (
        same_scan
        + _split_notes(subjects, labelled, val, val_sampler, cfg)
        + _thick_slice_notes(train)
        + label_notes(train + val)
    )
    for note in notes:
        log.warning("%s", note)
    # Said when read (plkd.label_grid warns of a resampled label, once per file); recorded here for run.json.
    notes += tuple(note for s in train + val for note in s.label_grid_notes)
    return TrainingData(
        root=Path(root),
        modality=resolve_modality(cfg, labelled),
        train=train,
        val=val,
        sampler=PatchSampler(train, cfg),
        val_sampler=val_sampler,
        layout=_layout(labelled),
        notes=notes,
    )


def _same_scans_in_training(
    train: list[SubjectArrays], val: list[SubjectArrays]
) -> tuple[list[SubjectArrays], list[SubjectArrays], tuple[str, ...]]:
    """``(train, val, notes)`` with the validation subjects whose image is a training subject's (two raters' labels
    of one scan as two cases, a copy under another name: :mod:`plkd.data.scans`) moved to training, where they are
    no validation of anything; the note names them."""
    trained = {s.image_sha256: s.id for s in train}
    moved = [s for s in val if s.image_sha256 in trained]
    if not moved:
        return train, val, ()
    pairs = ", ".join(f"{s.id} = {trained[s.image_sha256]}" for s in moved[:3]) + (", ..." if len(moved) > 3 else "")
    note = (
        f"{len(moved)} validation subject(s) have the image of a training subject ({pairs}: two raters' labels, or a "
        "copy under another name); they are trained on instead, since a validation loss on them scores a trained scan"
    )
    moved_ids = {s.id for s in moved}
    return sorted(train + moved, key=lambda s: s.id), [s for s in val if s.id not in moved_ids], (note,)


def _split_notes(
    subjects: Sequence[Subject],
    labelled: Sequence[Subject],
    val: Sequence[SubjectArrays],
    val_sampler: PatchSampler | None,
    cfg: dict[str, Any],
) -> tuple[str, ...]:
    """Caveats about what the run leaves out: subjects without a label (a label file named otherwise than
    the layout reads is one), and the validation loss asked for but impossible."""
    notes = []
    unlabelled = [s.id for s in subjects if s not in labelled]
    if unlabelled:
        examples = ", ".join(unlabelled[:3]) + (", ..." if len(unlabelled) > 3 else "")
        notes.append(
            f"{len(unlabelled)} of {len(subjects)} subjects have no label and are left out ({examples}); "
            "name their labels as the data set's layout reads them (README, Data) to train on them"
        )
    fraction = float(cfg["data"]["val_fraction"])
    wants_loss = any(int(cfg[stage]["val_every"]) > 0 for stage in ("screening", "teacher", "students"))
    if fraction > 0 and wants_loss and not val:
        notes.append(
            f"no validation subjects: data.val_fraction {fraction:g} needs at least 5 labelled subjects "
            f"({len(labelled)} here), so the stages train without a validation loss"
        )
    elif val and val_sampler is None and wants_loss:
        notes.append(
            f"the {len(val)} validation subject(s) ({', '.join(s.id for s in val[:3])}) hold no microbleed, so no "
            "validation loss is computed; they are left out of training all the same"
        )
    return tuple(notes)


def _thick_slice_notes(subjects: Sequence[SubjectArrays]) -> tuple[str, ...]:
    """A caveat when training subjects are not high-resolution: every stage takes them as HR images interpolated to
    the model grid, and the students' low-resolution inputs are made from them again (4 mm slices train the x4
    student on 16 mm). Accepted, since VALDO-like sets mix HR and thick-slice subjects."""
    thick = [s for s in subjects if s.lr_factor > STUDENT_REACH]
    if not thick:
        return ()
    examples = ", ".join(f"{s.id} ({s.lr_factor:.2g})" for s in thick[:3]) + (", ..." if len(thick) > 3 else "")
    return (
        f"{len(thick)} of {len(subjects)} training subjects have slices more than {STUDENT_REACH:.2g} times the model "
        f"grid's ({examples}): the teacher learns them as high-resolution images, and the students' low-resolution "
        "inputs are made from them again; train on high-resolution data where you can",
    )


def _layout(subjects: Sequence[Subject]) -> str:
    layouts = {s.meta.get("layout", "other") for s in subjects}
    return layouts.pop() if len(layouts) == 1 else "mixed"
