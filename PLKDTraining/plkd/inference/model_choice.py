"""Which model bundle analyses each scan: the one the user gave, or the installed one for its contrast.

Without ``--model``, ``plkd predict`` has one installed bundle per modality (``cmb-t2s``,
``cmb-swi``) and takes, scan by scan, the one for the contrast stated with ``--modality`` or,
under ``auto``, the contrast the scan's metadata shows (:mod:`plkd.inference.modality`). With
``--model`` that bundle analyses every scan; the contrast is still decided (a scan without any evidence
is taken to be of the bundle's contrast) and a mismatch with the bundle's ``modality`` is a warning. A
model used for a contrast its manifest does not name (a given one, the other installed one, or an
installed bundle whose manifest says otherwise) and evidence that contradicts the decision are
warnings, so no choice is silent. The decision and its reason go into each scan's JSON (``modality``)
and its one-line report.

An installed bundle may hand thick slices of its contrast to the other installed bundle: its manifest's
``thick_slices`` (``{"from_lr_factor": 3.5, "below_lr_factor": 5.66, "model_modality": "T2S", "why": "..."}``)
says for which slice thicknesses, in model-grid voxels (:func:`plkd.inference.preprocess.effective_lr_factor`),
the other model reads such scans better, and the evidence. The shipped SWI bundle hands SWI slices from 3.5 up to
where both bundles take their ×8 students (4·√2) to the T2* model (chosen on SWI validation subjects: the T2*
model scored higher on 3.5 and 4 mm slabs, level at 3 mm, lower at 6 mm; docs/results.md section 1b). The
hand-over is the tool's choice of model, not a mismatch: it is no warning, and the JSON
(``modality.model_reason``) and the scan's line say it. A model given with ``--model`` is always the one used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import plkd.bundle
from plkd.bundle import resolve_bundle
from plkd.errors import BundleError, PLKDError
from plkd.inference.modality import ModalityDecision, decide_modality, detect_modality
from plkd.inference.modality import normalise_modality as modality_choice
from plkd.inference.preprocess import effective_lr_factor
from plkd.modalities import MODALITIES

log = logging.getLogger(__name__)

#: How to display a modality to people.
DISPLAY = {"T2S": "T2*", "SWI": "SWI"}


@dataclass
class ChosenModel:
    """A loaded bundle, how outputs name it, and the predictor that runs it."""

    bundle: Any
    name: str
    predictor: Any

    @property
    def modality(self) -> str | None:
        """The bundle's manifest ``modality`` as ``T2S`` or ``SWI`` ("T2*", any case; another name upper case),
        or None when it names none."""
        value = (getattr(self.bundle, "manifest", None) or {}).get("modality")
        if not value:
            return None
        try:
            return modality_choice(str(value)) if str(value).strip().lower() != "auto" else "AUTO"
        except ValueError:
            return str(value).upper()

    @property
    def thick_slices(self) -> ThickSlices | None:
        """The manifest's hand-over of thick slices to another installed model (:class:`ThickSlices`), or None."""
        return ThickSlices.from_manifest(getattr(self.bundle, "manifest", None) or {})


@dataclass(frozen=True)
class ThickSlices:
    """A bundle's ``thick_slices`` manifest entry: slices of ``from_lr_factor`` model-grid voxels or thicker
    (:func:`plkd.inference.preprocess.effective_lr_factor`; 4 for 1×1×4 mm), and thinner than ``below_lr_factor``
    when given, are analysed by the installed model of ``model_modality``; ``why`` is the evidence (figures)."""

    from_lr_factor: float
    model_modality: str
    below_lr_factor: float | None = None
    why: str = field(default="", compare=False)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> ThickSlices | None:
        """The entry of ``manifest`` (checked when the bundle loads: :func:`plkd.bundle.validate_manifest`)."""
        entry = manifest.get("thick_slices")
        if not isinstance(entry, dict):
            return None
        below = entry.get("below_lr_factor")
        return cls(
            float(entry["from_lr_factor"]),
            str(entry["model_modality"]),
            float(below) if below is not None else None,
            str(entry.get("why", "")),
        )

    def covers(self, lr_factor: float) -> bool:
        """Whether slices of ``lr_factor`` model-grid voxels are handed over."""
        below = self.below_lr_factor if self.below_lr_factor is not None else math.inf
        return self.from_lr_factor - 1e-6 <= lr_factor < below - 1e-6

    def describe(self) -> str:
        """``"from 3.5"`` or ``"from 3.5 to below 5.66"``."""
        text = f"from {self.from_lr_factor:g}"
        return text + (f" to below {self.below_lr_factor:.3g}" if self.below_lr_factor is not None else "")


class Choice(NamedTuple):
    """The model for one scan: ``model``, the ``decision`` on its contrast, ``warnings`` (one line each) and
    ``reason``, why this model reads the scan when it is not the decided contrast's own (a hand-over), else None."""

    model: ChosenModel
    decision: ModalityDecision
    warnings: list[str]
    reason: str | None = None


def normalise_modality(text: str | None) -> str:
    """``--modality`` as ``auto``, ``T2S`` or ``SWI`` (:func:`plkd.inference.modality.normalise_modality`).

    Raises PLKDError for anything else.
    """
    try:
        return modality_choice(text)
    except ValueError:
        raise PLKDError(f"--modality must be auto, T2S (T2*) or SWI, not {text!r}") from None


def manifest_digest(bundle: Any) -> str:
    """A short sha256 of a bundle's manifest (recorded so that a changed model is recomputed)."""
    manifest = getattr(bundle, "manifest", None) or {}
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ModelChooser:
    """The model for each scan of a run.

    ``model`` is a bundle path, a loaded bundle, or None for the installed ones;
    ``make_predictor(bundle)`` builds the predictor of a bundle (once per bundle). Raises
    BundleError when no bundle is given and none is installed.
    """

    def __init__(self, model: Any, modality: str | None, make_predictor: Callable[[Any], Any]) -> None:
        self.stated = normalise_modality(modality)
        self._make_predictor = make_predictor
        self._loaded: dict[str, ChosenModel] = {}
        self.fixed: ChosenModel | None = None
        self.installed: dict[str, Path] = {}
        if model is not None:
            self.fixed = self._load(model)
            return
        self.installed = {m: p for m in MODALITIES if (p := plkd.bundle.find_default_bundle(m)) is not None}
        if not self.installed:
            raise BundleError(
                "no model bundle found; give one with --model BUNDLE (train one with 'plkd train' + 'plkd export')"
            )
        if self.stated != "auto" and self.stated not in self.installed:
            other = next(iter(self.installed))
            log.warning(
                "no %s model is installed; the %s model analyses these scans", DISPLAY[self.stated], DISPLAY[other]
            )

    def _load(self, model: Any) -> ChosenModel:
        key = str(model) if not hasattr(model, "network") else f"id:{id(model)}"
        if key not in self._loaded:
            bundle, name = resolve_bundle(model)
            self._loaded[key] = ChosenModel(bundle, name, self._make_predictor(bundle))
        return self._loaded[key]

    def settings(self) -> dict[str, Any]:
        """What about the models changes a result (for the rerun check and each JSON's ``settings``)."""
        if self.fixed is not None:
            return {
                "model": str((self.fixed.bundle.manifest or {}).get("name", self.fixed.name)),
                "model_manifest_sha256": manifest_digest(self.fixed.bundle),
                "modality": self.stated,
            }
        digests = {m: manifest_digest(self._load(path).bundle) for m, path in sorted(self.installed.items())}
        return {"model": "installed, by modality", "model_manifest_sha256": digests, "modality": self.stated}

    def decide(self, path: str | Path, dicom: Mapping[str, Any] | None = None) -> ModalityDecision:
        """The contrast of the scan at ``path`` for this run: stated, found in its metadata, or, when
        nothing says and a bundle was given with ``--model``, that bundle's contrast (source ``model``)."""
        decision = decide_modality(self.stated, path, dicom)
        trained = self.fixed.modality if self.fixed is not None else None
        if decision.source == "default" and trained in MODALITIES:
            why = decision.reason.removesuffix("; T2* assumed")  # what the default rested on (a gradient echo?)
            return ModalityDecision(
                trained,
                "model",
                f"{why}; taken as {DISPLAY[trained]}, the contrast of the given model {self.fixed.name}",
            )
        return decision

    def choose(
        self,
        path: str | Path,
        dicom: Mapping[str, Any] | None = None,
        affine: Any = None,
        lr_factor: float | None = None,
    ) -> Choice:
        """The :class:`Choice` for the scan at ``path`` (``dicom``: its series record; ``affine``: its voxel-to-RAS
        4×4 matrix, or ``lr_factor`` as given with ``--lr-factor``, for a bundle's ``thick_slices`` hand-over; with
        neither, no hand-over).

        Warned: evidence that contradicts the decision, and a model whose manifest names another
        contrast than the decided one (given with ``--model``, the other installed one when the
        decided contrast has none, or an installed bundle whose manifest says otherwise).
        """
        decision = self.decide(path, dicom)
        name, shown = Path(path).name, DISPLAY[decision.modality]
        warnings = []
        if decision.conflict is not None:
            hint = "" if decision.source == "stated" else "; state its contrast with --modality if that is wrong"
            warnings.append(f"{name} is taken as {shown} ({decision.reason}), but {decision.conflict}{hint}")
        if self.fixed is not None:
            model = self.fixed
        elif decision.modality in self.installed:
            model = self._load(self.installed[decision.modality])
        else:
            fallback = next(iter(self.installed))
            model = self._load(self.installed[fallback])
            warnings.append(
                f"{name} is {shown} ({decision.reason}) but no {shown} model is installed; "
                f"the {DISPLAY[fallback]} model was used"
            )
            return Choice(model, decision, warnings)
        if model.modality and model.modality != decision.modality:
            warnings.append(
                f"{name} is {shown} ({decision.reason}) but the model {model.name} was trained on "
                f"{DISPLAY.get(model.modality, model.modality)} images; results may be poor"
            )
            return Choice(model, decision, warnings)
        if self.fixed is None and (handed := self._hand_over(model, decision, affine, lr_factor)) is not None:
            return Choice(handed[0], decision, warnings, handed[1])
        return Choice(model, decision, warnings)

    def _hand_over(
        self, model: ChosenModel, decision: ModalityDecision, affine: Any, lr_factor: float | None
    ) -> tuple[ChosenModel, str] | None:
        """The installed model ``model``'s ``thick_slices`` entry hands this scan to, and why; None to keep it."""
        rule = model.thick_slices
        if rule is None or rule.model_modality not in self.installed or rule.model_modality == model.modality:
            return None
        if lr_factor is not None:
            factor, given = float(lr_factor), " (--lr-factor)"
        elif affine is not None:
            factor, given = effective_lr_factor(affine, model.bundle.spacing_mm), ""
        else:
            return None
        if not rule.covers(factor):
            return None
        other = self._load(self.installed[rule.model_modality])
        shown, target = DISPLAY[decision.modality], DISPLAY.get(rule.model_modality, rule.model_modality)
        reason = (
            f"{shown} slices of LR factor {factor:.3g}{given}: {rule.describe()} the {shown} model hands "
            f"them to the {target} model" + (f", {rule.why}" if rule.why else "")
        )
        return other, reason


def modality_record(choice: Choice, stated: str) -> dict[str, Any]:
    """The JSON ``modality`` block: what was decided, from what, the model's own modality and ``model_reason``
    (why a model of another contrast reads the scan by a ``thick_slices`` hand-over; None otherwise)."""
    return {
        **choice.decision.as_dict(),
        "stated": stated,
        "model_modality": choice.model.modality,
        "model_reason": choice.reason,
    }


def model_line(choice: Choice) -> str:
    """The model and the decision for a scan's line on the terminal, as its JSON ``modality`` records them:
    ``"SWI model (sidecar SequenceName '*swi3d1r')"``, ``"T2* model for an SWI scan (file name suffix '_swi')"``,
    ``"T2* model for an SWI scan (file name suffix '_swi'; SWI slices of LR factor 4: ...)"``."""
    decision = choice.decision
    used = choice.model.modality or decision.modality
    text = f"{DISPLAY.get(used, used)} model"
    if used != decision.modality:
        text += f" for {'an' if decision.modality == 'SWI' else 'a'} {DISPLAY[decision.modality]} scan"
    return f"{text} ({decision.reason}" + (f"; {choice.reason}" if choice.reason else "") + ")"


def model_for_subjects(model: Any, subjects: Iterable[Any]) -> tuple[Any, str | None]:
    """The model to tune (or evaluate) on labelled ``subjects`` (:class:`plkd.data.datasets.Subject`), and a
    warning when it was not trained on their contrast.

    ``model`` None: the installed bundle of the subjects' contrast (their data set's ``modality``, else
    :func:`~plkd.inference.modality.detect_modality` of each image), the T2* one for subjects of both
    contrasts; before, the T2* model was taken whatever the subjects, and an SWI validation set tuned it
    without a word. Raises BundleError when no bundle is given and none is installed.
    """
    counts: dict[str, int] = {}
    for subject in subjects:
        contrast = subject.meta.get("modality") or detect_modality(subject.image).modality
        counts[contrast] = counts.get(contrast, 0) + 1
    if model is None and len(counts) == 1:
        model = plkd.bundle.find_default_bundle(next(iter(counts)))  # None: the T2* one, as resolve_bundle takes
    bundle, name = resolve_bundle(model)
    trained = ChosenModel(bundle, name, None).modality
    others = {c: n for c, n in counts.items() if trained and c != trained}
    if not others:
        return bundle, None
    said = " and ".join(f"{n} {DISPLAY.get(c, c)}" for c, n in sorted(others.items()))
    return bundle, (
        f"{said} subject(s), but the model {name} was trained on {DISPLAY.get(trained, trained)} images: its "
        "calibration and thresholds would be chosen on another contrast; give --model, or subjects of one contrast"
    )
