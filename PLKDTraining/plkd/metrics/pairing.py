"""Finding prediction and reference files and pairing them by subject.

Every NIfTI file found is first given a *role* from its name, its folder and its neighbours:

- ``prediction``: written by ``plkd predict`` (``NAME_cmb.nii.gz`` with ``NAME_cmb.json``
  beside it); ``prediction-extra``: its optional ``_cmb_prob`` / ``_cmb_modelgrid`` maps;
- ``mask``: a brain mask (``…_mask``, ``…_brainmask``; a BIDS ``label-X_mask`` is a label, and so is a
  ``desc-X_mask`` whose ``X`` is a label word, ``desc-cmb_mask``, ``desc-lesion_mask``);
- ``label``: a name that says it is a label — a ``_``-separated word or BIDS entity value
  ``CMB``, ``label``, ``seg``, ``dseg``, ``truth``, ``gt``, ``reference``, ``manual``,
  ``lesion``…, any ``label-X`` entity, or a file directly inside ``labels/``, ``labelsTr/``
  or ``labelsTs/`` (VALDO ``sub-X_space-T2S_CMB``, ``plkd synth``, BIDS derivatives, nnU-Net,
  ``NAME_label`` side by side, the ``_truth`` of ``plkd demo``);
- ``image``: a file directly inside ``images/``, ``imagesTr/`` or ``imagesTs/`` (nnU-Net's
  ``imagesTs/CMB_001_0000`` holds the label word ``CMB``), and anything else.

A reference is a ``label`` (or, when a subject has no label file at all, its only unmarked
file, which :mod:`plkd.metrics.evaluation` then checks holds label values, unless its name ends as a scan's:
:data:`SCAN_SUFFIXES`). It is never a prediction, a prediction extra, a mask or one of several unmarked files.
A prediction is a ``prediction``, else a ``label``-named file, else a subject's only unmarked file. Two files of
the best role for one subject are ambiguous and refused with one line.

Subjects are keyed by :func:`plkd.naming.subject_id` (the name up to the first ``_``) plus a
BIDS ``ses-`` entity when there is one, so ``sub-001_cmb.nii.gz`` pairs with
``sub-001_space-T2S_CMB.nii.gz``. Case names that hold a ``_`` themselves (``case_001``, nnU-Net's
``CMB_001``, which ``plkd train`` reads as whole names) give one key for every case; when that key would
join several predictions or labels on a side, files are keyed by their case name instead
(:func:`case_key`: the name without its trailing label, mask or prediction words and nnU-Net channel).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from plkd.errors import InputError
from plkd.naming import is_nifti, is_pair_name, strip_nifti_suffix, subject_id
from plkd.naming import pair_files as nifti_pair_files

#: Words (``_``-separated, or values of BIDS ``key-value`` entities) that mark a label map.
LABEL_WORDS = frozenset(
    {"cmb", "cmbs", "label", "labels", "seg", "dseg", "truth", "gt", "groundtruth", "reference", "ref"}
    | {"manual", "annotation", "annotations", "lesion", "lesions", "microbleed", "microbleeds"}
)
#: Folder names whose files are labels (nnU-Net, images/labels layouts, hand-made folders).
LABEL_FOLDERS = frozenset({"labels", "labelstr", "labelsts"})
#: Folder names whose files are images (nnU-Net, images/labels layouts), whatever words their names hold.
IMAGE_FOLDERS = frozenset({"images", "imagestr", "imagests"})
MASK_WORDS = frozenset({"mask", "brainmask", "brain-mask"})
#: Last name tokens (BIDS and VALDO suffixes) that name a scan, never a label: such an unmarked file is not taken
#: as a subject's only reference file (a BIDS tree's ``derivatives/fmriprep/sub-01/anat/sub-01_desc-preproc_T1w``
#: was the "reference" of sub-01 and stopped ``plkd evaluate pred/ study/``).
SCAN_SUFFIXES = frozenset(
    {"t1w", "t2w", "flair", "pdw", "pd", "t2starw", "t2star", "t2s", "swi", "megre", "mese", "gre", "angio"}
    | {"inplanet1", "inplanet2", "t1map", "t2map", "t2starmap", "r2starmap", "qsm", "dwi", "bold", "sbref"}
)
PREDICTION_EXTRAS = ("_cmb_prob", "_cmb_modelgrid")

ROLES = ("prediction", "prediction-extra", "label", "mask", "image")


def _tokens(stem: str) -> tuple[list[str], set[str]]:
    """``_``-separated tokens (lower case) and the words they carry (token and entity values)."""
    tokens = [t.lower() for t in stem.split("_") if t]
    words = set(tokens)
    for t in tokens:
        if "-" in t:
            words.update(t.split("-", 1))
    return tokens, words


def written_by_predict(path: Path) -> bool:
    """True when ``NAME.json`` beside ``NAME.nii[.gz]`` is a ``plkd predict`` candidates record."""
    beside = path.with_name(strip_nifti_suffix(path.name) + ".json")
    if not beside.is_file():
        return False
    try:
        data = json.loads(beside.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "candidates" in data


def file_role(path: str | os.PathLike[str]) -> str:
    """The role of a NIfTI file (one of :data:`ROLES`), from its name, folder and neighbours."""
    p = Path(path)
    stem = strip_nifti_suffix(p.name)
    low = stem.lower()
    if low.endswith(PREDICTION_EXTRAS):
        return "prediction-extra"
    if written_by_predict(p):
        return "prediction"
    if p.parent.name.lower() in IMAGE_FOLDERS:
        return "image"  # nnU-Net's imagesTs/CMB_001_0000: "CMB" names the data set, not a label
    tokens, words = _tokens(stem)
    if any(t.startswith("label-") for t in tokens):
        return "label"  # BIDS derivative: sub-X_label-CMB_mask is a lesion label, not a brain mask
    if tokens and tokens[-1] == "mask" and any(t.startswith("desc-") and t[5:] in LABEL_WORDS for t in tokens):
        # sub-X_desc-cmb_mask, desc-lesion_mask: a mask of the microbleeds; plkd train took it for the brain mask
        # (its normalisation and negatives drawn from the few labelled voxels) and the subject had no label.
        return "label"
    if tokens and (tokens[-1] in MASK_WORDS or any(t in MASK_WORDS - {"mask"} for t in tokens)):
        return "mask"
    if words & LABEL_WORDS or p.parent.name.lower() in LABEL_FOLDERS:
        return "label"
    return "image"


def pairing_key(path: str | os.PathLike[str]) -> str:
    """Subject id (name up to the first ``_``), plus ``_ses-X`` for BIDS sessions."""
    sid = subject_id(path)
    tokens = strip_nifti_suffix(Path(path).name).split("_")
    ses = [t for t in tokens[1:] if t.lower().startswith("ses-")]
    return f"{sid}_{ses[0]}" if ses else sid


#: An nnU-Net channel suffix (``CASE_0000``).
_CHANNEL_TOKEN = re.compile(r"^\d{4}$")


def case_key(path: str | os.PathLike[str]) -> str:
    """The case name of a file: its name without the trailing ``_`` words that say what the file is (label,
    mask or prediction words such as ``cmb``, ``label``, ``seg``) and an nnU-Net channel (``_0000``).

    ``case_001_cmb`` (a prediction), ``case_001_label`` and ``case_001`` give ``case_001``; nnU-Net's
    ``CMB_001_0000_cmb`` and ``labelsTr/CMB_001`` give ``CMB_001``.
    """
    stem = strip_nifti_suffix(Path(path).name)
    tokens = (stem[: -len(".json")] if stem.lower().endswith(".json") else stem).split("_")  # a candidates JSON
    while len(tokens) > 1 and (
        tokens[-1].lower() in LABEL_WORDS | MASK_WORDS or _CHANNEL_TOKEN.match(tokens[-1]) or not tokens[-1]
    ):
        tokens.pop()
    return "_".join(tokens)


def _joins_several(files: Iterable[Path], side: str) -> bool:
    """Whether :func:`pairing_key` gives one subject several files of its best role on ``side`` (see
    :func:`choose_files`): case names with a ``_`` of their own (``case_001``, ``case_002``)."""
    rank = _RANK[side]
    groups: dict[str, list[int]] = {}
    for f in files:
        role = file_role(f)
        if role in rank:
            groups.setdefault(pairing_key(f), []).append(rank[role])
    return any(ranks.count(max(ranks)) > 1 and max(ranks) > rank["image"] for ranks in groups.values())


def _pair_header(path: Path) -> bool:
    """Whether ``path`` is the header (``.hdr``) of a NIfTI pair whose voxels (``.img``) lie beside it: read as
    ``plkd predict`` and ``plkd train`` read it (an Analyze 7.5 header is refused when loaded)."""
    if not is_pair_name(path):
        return False
    header, voxels = nifti_pair_files(path)
    return path == header and voxels.is_file()


def find_nifti_files(path: str | os.PathLike[str], what: str) -> list[Path]:
    """NIfTI files named by ``path``: the file itself, or every ``*.nii[.gz]`` (and NIfTI pair, by its ``.hdr``)
    under a folder."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if p.is_file():
        if is_pair_name(p) and nifti_pair_files(p)[0].is_file():
            return [nifti_pair_files(p)[0]]  # a pair named by its .img is read by its header
        if not is_nifti(p):
            raise InputError(f"{what} {p} is not a .nii, .nii.gz or NIfTI pair (.hdr + .img) file")
        return [p]
    files = sorted(
        f for f in p.rglob("*") if f.is_file() and (is_nifti(f) or _pair_header(f)) and not f.name.startswith(".")
    )
    if not files:
        raise InputError(f"{what} folder {p} holds no .nii/.nii.gz files or NIfTI pairs")
    return files


#: Preference among roles on each side; roles not listed are never used on that side.
_RANK = {
    "prediction": {"prediction": 3, "label": 2, "image": 1},
    "reference": {"label": 2, "image": 1},
}


@dataclass
class Side:
    """The files chosen on one side (prediction or reference) and the ones left aside, with why."""

    chosen: dict[str, Path]
    ignored: list[dict[str, str]] = field(default_factory=list)


def choose_files(files: Iterable[Path], side: str, key: Callable[[Path], str] = pairing_key) -> Side:
    """One file per subject (``key`` of its path) for ``side`` ("prediction" or "reference"); ambiguity is an error.

    A subject whose best files are unmarked (role ``image``) is used only when it has exactly
    one such file; otherwise those files are reported as ignored.
    """
    rank = _RANK[side]
    groups: dict[str, list[tuple[Path, str]]] = {}
    for f in files:
        groups.setdefault(key(f), []).append((f, file_role(f)))
    out = Side(chosen={})
    for sid, group in sorted(groups.items()):
        usable = [(f, r) for f, r in group if r in rank]
        best = max((rank[r] for _, r in usable), default=0)
        top = [f for f, r in usable if rank[r] == best]
        if best == rank["image"] and len(top) > 1:
            top = []  # several unmarked files (images?): none of them can be told to be the label
        elif best == rank["image"] and side == "reference" and _named_as_a_scan(top[0], "image"):
            top = []  # a subject's only file is a scan (another pipeline's T1w in derivatives/), not its label
        elif len(top) > 1:
            # Same-named files in two folders (a copied subject, two sites) need their folders to be told apart.
            same = len({f.name for f in top}) < len(top)
            names = ", ".join(str(f) if same else f.name for f in top[:4])
            raise InputError(
                f"{side}: subject {sid} has {len(top)} candidate files ({names}); give one file per subject"
            )
        if top:
            out.chosen[sid] = top[0]
        for f, r in group:
            if not top or f != top[0]:
                why = r if r not in rank or top else f"{r} (several unmarked files, none named as a label)"
                if not top and len(usable) == 1 and _named_as_a_scan(f, r) and side == "reference":
                    why = f"{r} (named as a scan: {strip_nifti_suffix(f.name).rsplit('_', 1)[-1]})"
                out.ignored.append({"file": str(f), "role": why})
    return out


def _named_as_a_scan(path: Path, role: str) -> bool:
    """An unmarked file whose last name token is a scan's suffix (:data:`SCAN_SUFFIXES`)."""
    return role == "image" and strip_nifti_suffix(path.name).rsplit("_", 1)[-1].lower() in SCAN_SUFFIXES


@dataclass
class Pairing:
    """Prediction/reference files by subject; ``pred`` is ``None`` for a missing prediction."""

    pairs: dict[str, tuple[Path | None, Path]]
    unmatched_predictions: list[str] = field(default_factory=list)
    unmatched_references: list[str] = field(default_factory=list)
    ignored: list[dict[str, str]] = field(default_factory=list)
    #: The subject key of a file name the pairs are keyed by (:func:`pairing_key` or :func:`case_key`).
    key: Callable[[Path], str] = pairing_key
    #: Why a subject's prediction and reference were not paired though their keys agree (:func:`other_acquisition`).
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON form: every pair, the unpaired files and the files left aside (with their role)."""
        return {
            "pairs": [
                {"subject": sid, "prediction": None if p is None else str(p), "reference": str(r)}
                for sid, (p, r) in self.pairs.items()
            ],
            "unpaired_predictions": list(self.unmatched_predictions),
            "unpaired_references": list(self.unmatched_references),
            "other_scans": [{"subject": sid, "reason": why} for sid, why in self.reasons.items()],
            "ignored": list(self.ignored),
        }


#: BIDS entities that tell two scans of one subject and session apart (as ``plkd train`` pairs a label with its image:
#: :data:`plkd.data.datasets.BIDS_MATCH_ENTITIES`).
ACQUISITION_ENTITIES = ("acq", "ce", "rec", "run")


def _acquisition(path: Path) -> dict[str, str]:
    parts = strip_nifti_suffix(path.name).split("_")
    found = dict(p.split("-", 1) for p in parts if "-" in p)
    return {k: found[k] for k in ACQUISITION_ENTITIES if k in found}


def _value(label: str) -> str:
    """An entity value as BIDS compares it: an index (``run-01``) by its number, a label in any case."""
    return str(int(label)) if label.isdigit() else label.lower()


def other_acquisition(pred: Path, truth: Path) -> str | None:
    """Why ``pred`` and ``truth`` (one subject and session) are not of one scan, or None: a BIDS ``acq-``, ``ce-``,
    ``rec-`` or ``run-`` entity both names carry with other values (``acq-swi`` and ``acq-gre``). An entity that only
    one of them carries says nothing (a label named ``sub-01_ses-1_label-CMB_mask`` for the session's one scan)."""
    mine, theirs = _acquisition(pred), _acquisition(truth)
    differ = [k for k in ACQUISITION_ENTITIES if k in mine and k in theirs and _value(mine[k]) != _value(theirs[k])]
    if not differ:
        return None
    said = ", ".join(f"{k}-{mine[k]} and {k}-{theirs[k]}" for k in differ)
    return f"prediction {pred.name} and reference {truth.name} are of different scans ({said})"


def _check_single(path: Path, side: str) -> None:
    role = file_role(path)
    if side == "reference" and role in ("prediction", "prediction-extra"):
        raise InputError(f"reference {path} is a prediction written by 'plkd predict', not a reference label")
    if role == "mask":
        raise InputError(f"{side} {path} is named as a brain mask, not a microbleed label")
    if side == "prediction" and role == "prediction-extra":
        raise InputError(f"prediction {path} is a probability/model-grid extra; give the NAME_cmb.nii.gz label map")


def pair_files(
    pred: str | os.PathLike[str], truth: str | os.PathLike[str], *, missing_as_empty: bool = False
) -> Pairing:
    """Pair prediction and reference files by subject (roles and preferences in the module doc).

    A single prediction file and a single reference file are paired whatever their subject
    names (after checking neither has the wrong role); a single prediction file against a
    folder is paired with its own subject's reference. Predictions without a reference are
    reported and skipped. References without a prediction are an error unless
    ``missing_as_empty`` (then they are scored as empty predictions: every microbleed missed).
    The same file on both sides is refused.
    """
    pred_files = find_nifti_files(pred, "prediction")
    truth_files = find_nifti_files(truth, "reference")
    if Path(pred).is_file() and Path(truth).is_file():
        _check_single(pred_files[0], "prediction")
        _check_single(truth_files[0], "reference")
        _refuse_same(pred_files[0], truth_files[0])
        return Pairing(pairs={pairing_key(truth_files[0]): (pred_files[0], truth_files[0])})
    if Path(pred).is_file():
        _check_single(pred_files[0], "prediction")
        preds = Side(chosen={pairing_key(pred_files[0]): pred_files[0]})
        # One prediction against a reference folder: only its own subject is expected.
        truth_files = [f for f in truth_files if pairing_key(f) in preds.chosen]
        key: Callable[[Path], str] = pairing_key
    else:
        # Case names with a "_" of their own (case_001, nnU-Net's CMB_001) all had the key "case", and were refused
        # as several files of one subject: they pair by case name.
        key = (
            case_key
            if _joins_several(pred_files, "prediction") or _joins_several(truth_files, "reference")
            else pairing_key
        )
        preds = choose_files(pred_files, "prediction", key)
    truths = choose_files(truth_files, "reference", key)
    # A subject's prediction and reference of two different scans (BIDS acq-swi and acq-gre of one session) were
    # paired by their subject key and scored against each other without a word.
    reasons = {
        sid: why
        for sid in set(preds.chosen) & set(truths.chosen)
        if (why := other_acquisition(preds.chosen[sid], truths.chosen[sid])) is not None
    }
    only_pred = sorted(set(preds.chosen) - set(truths.chosen) | set(reasons))
    only_truth = sorted(set(truths.chosen) - set(preds.chosen) | set(reasons))
    common = sorted(set(preds.chosen) & set(truths.chosen) - set(reasons))
    why = f"; {next(iter(reasons.values()))}" if reasons else ""
    if not common and not (missing_as_empty and truths.chosen):
        raise InputError(
            f"no prediction/reference pairs found: prediction subjects {_preview(preds.chosen)}, "
            f"reference subjects {_preview(truths.chosen)} (files pair by the name up to the first '_'; "
            f"references must be named as labels, e.g. _CMB, _label, _seg, _truth){why}"
        )
    if only_truth and not missing_as_empty:
        raise InputError(
            f"{len(only_truth)} reference subject(s) have no prediction: {_preview(only_truth)} "
            f"(use --missing-as-empty to score them as empty predictions){why}"
        )
    pairs: dict[str, tuple[Path | None, Path]] = {sid: (preds.chosen[sid], truths.chosen[sid]) for sid in common}
    for sid in common:
        _refuse_same(*pairs[sid])  # type: ignore[arg-type]
    for sid in only_truth:
        pairs[sid] = (None, truths.chosen[sid])
    return Pairing(
        key=key,
        reasons=dict(sorted(reasons.items())),
        pairs=dict(sorted(pairs.items())),
        unmatched_predictions=only_pred,
        unmatched_references=only_truth,
        ignored=[
            *({"side": "prediction", **i} for i in preds.ignored),
            *({"side": "reference", **i} for i in truths.ignored),
        ],
    )


def _refuse_same(pred: Path, truth: Path) -> None:
    if pred.resolve() == truth.resolve():
        raise InputError(f"{pred} is given as both the prediction and its reference")


def _preview(ids: Iterable[str], n: int = 5) -> str:
    ids = sorted(ids)
    if not ids:
        return "(none)"
    more = f" … (+{len(ids) - n})" if len(ids) > n else ""
    return ", ".join(ids[:n]) + more
