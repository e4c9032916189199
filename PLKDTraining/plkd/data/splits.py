"""Subject-level k-fold cross-validation splits that never leak a subject (or group).

Patches of one subject are strongly correlated, so folds are made of whole subjects — or of
whole groups (a patient scanned twice, a cohort) when ``groups`` is given. Splits are written
in nnU-Net's ``splits_final.json`` format: ``[{"train": [...], "val": [...]}, ...]``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from plkd.atomic import write_json_atomic
from plkd.errors import ConfigError, InputError

Fold = tuple[list[str], list[str]]

#: A case named for a BIDS subject and more (``sub-01_ses-2``, ``sub-01_run-1_T2S``): its subject is ``sub-01``.
_BIDS_SUBJECT = re.compile(r"^(sub-[A-Za-z0-9]+)_")


def session_groups(subject_ids: Iterable[str]) -> dict[str, str]:
    """``{case id: BIDS subject}`` for the cases that share a subject with another case.

    Plain-folder and nnU-Net data sets name a case by its file (``sub-01_ses-1``, ``sub-01_ses-2``): two
    scans of one patient, which a split by case put on both sides (the patient's other session in the
    training set of the fold that tests it). Pass the result as ``groups`` to keep them together;
    cases alone under their subject are left out, so data sets without sessions split as before.
    """
    by_subject: dict[str, list[str]] = {}
    for sid in subject_ids:
        m = _BIDS_SUBJECT.match(str(sid))
        if m:
            by_subject.setdefault(m[1], []).append(str(sid))
    return {sid: subject for subject, ids in by_subject.items() if len(set(ids)) > 1 for sid in ids}


def merge_groups(*groupings: dict[str, str]) -> dict[str, str]:
    """One ``groups`` mapping (subject id -> group) that keeps together whatever any of ``groupings`` keeps together
    (e.g. :func:`session_groups` and :func:`plkd.data.scans.same_scan_groups`); a group is named by its first id."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for grouping in groupings:
        first: dict[str, str] = {}
        for sid, group in grouping.items():
            a, b = find(sid), find(first.setdefault(group, sid))
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {sid: find(sid) for grouping in groupings for sid in grouping}


def kfold_split(
    subject_ids: Iterable[str],
    k: int = 5,
    seed: int = 0,
    groups: dict[str, str] | None = None,
    stratify: dict[str, int] | None = None,
) -> list[Fold]:
    """``k`` folds ``(train_ids, val_ids)``; every subject is in exactly one validation set.

    Subjects sharing a value in ``groups`` (subject id → group id; subjects not listed form
    their own group) always land in the same fold. ``stratify`` (subject id → class, e.g. 1 if
    the subject has microbleeds) spreads each class evenly over the folds; a group's class is
    the largest class of its members. Units are shuffled with ``seed`` (the order of
    ``subject_ids`` does not matter), then dealt largest first to the fold with the fewest
    units of that class, ties to the fold with the fewest subjects, so fold sizes differ by
    at most one subject when there are no groups. Lists are sorted.
    """
    given = [str(s) for s in subject_ids]
    ids = sorted(set(given))
    if len(ids) != len(given):
        dup = next(s for s in ids if given.count(s) > 1)
        raise InputError(f"subject ids must be unique; {dup!r} occurs more than once")
    if isinstance(k, bool) or int(k) != k or k < 2:
        raise ConfigError(f"number of folds must be a whole number ≥ 2, not {k}")
    k = int(k)
    groups = groups or {}
    stratify = stratify or {}
    units: dict[str, list[str]] = {}
    for sid in ids:
        units.setdefault(f"group:{groups[sid]}" if sid in groups else f"subject:{sid}", []).append(sid)
    if k > len(units):
        what = "groups" if groups else "subjects"
        raise ConfigError(f"cannot make {k} folds from {len(units)} {what}; use --folds ≤ {len(units)}")

    rng = np.random.default_rng(seed)
    names = sorted(units)
    order = [names[i] for i in rng.permutation(len(names))]
    # Stable sort after the shuffle: big groups first (hardest to balance), random among equals.
    order.sort(key=lambda u: -len(units[u]))
    unit_class = {u: max(int(stratify.get(s, 0)) for s in units[u]) for u in order}

    fold_size = [0] * k
    fold_class: dict[int, list[int]] = {c: [0] * k for c in set(unit_class.values())}
    fold_ids: list[list[str]] = [[] for _ in range(k)]
    for u in order:
        c = unit_class[u]
        f = min(range(k), key=lambda i: (fold_class[c][i], fold_size[i], i))
        fold_ids[f].extend(units[u])
        fold_size[f] += len(units[u])
        fold_class[c][f] += 1
    folds = []
    for f in range(k):
        val = sorted(fold_ids[f])
        val_set = set(val)
        folds.append(([s for s in ids if s not in val_set], val))
    return folds


def write_splits(path: str | os.PathLike[str], folds: Sequence[Fold]) -> Path:
    """Write folds as nnU-Net's ``splits_final.json`` (a list of ``{"train", "val"}``), atomically."""
    _check_folds(folds, str(path))
    write_json_atomic(path, [{"train": list(train), "val": list(val)} for train, val in folds])
    return Path(path)


def read_splits(path: str | os.PathLike[str]) -> list[Fold]:
    """Read a ``splits_final.json``; refuses a malformed file or a fold leaking a subject."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"splits file not found: {p}")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read splits file {p}: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise InputError(f"splits file {p} must hold a non-empty list of {{'train': [...], 'val': [...]}}")
    folds: list[Fold] = []
    for i, entry in enumerate(raw):
        ok = isinstance(entry, dict) and all(
            isinstance(entry.get(key), list) and all(isinstance(s, str) for s in entry[key]) for key in ("train", "val")
        )
        if not ok:
            raise InputError(f"splits file {p}: fold {i} is not {{'train': [ids], 'val': [ids]}}")
        folds.append((list(entry["train"]), list(entry["val"])))
    _check_folds(folds, str(p))
    return folds


def _check_folds(folds: Sequence[Fold], where: str) -> None:
    for i, (train, val) in enumerate(folds):
        leak = sorted(set(train) & set(val))
        if leak:
            raise InputError(f"{where}: fold {i} has {leak[0]!r} in both train and val")
        if not val:
            raise InputError(f"{where}: fold {i} has an empty validation set")
