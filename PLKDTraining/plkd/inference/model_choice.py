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
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plkd.bundle
from plkd.bundle import resolve_bundle
from plkd.errors import BundleError, PLKDError
from plkd.inference.modality import ModalityDecision, decide_modality, detect_modality
from plkd.inference.modality import normalise_modality as modality_choice
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
        self, path: str | Path, dicom: Mapping[str, Any] | None = None
    ) -> tuple[ChosenModel, ModalityDecision, list[str]]:
        """``(model, decision, warnings)`` for the scan at ``path`` (``dicom``: its series record).

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
            return model, decision, warnings
        if model.modality and model.modality != decision.modality:
            warnings.append(
                f"{name} is {shown} ({decision.reason}) but the model {model.name} was trained on "
                f"{DISPLAY.get(model.modality, model.modality)} images; results may be poor"
            )
        return model, decision, warnings


def modality_record(decision: ModalityDecision, stated: str, model: ChosenModel) -> dict[str, Any]:
    """The JSON ``modality`` block: what was decided, from what, and the model's own modality."""
    return {**decision.as_dict(), "stated": stated, "model_modality": model.modality}


def model_line(model: ChosenModel, decision: ModalityDecision) -> str:
    """The model and the decision for a scan's line on the terminal, as its JSON ``modality`` records them:
    ``"SWI model (sidecar SequenceName '*swi3d1r')"``, ``"T2* model for an SWI scan (file name suffix '_swi')"``."""
    used = model.modality or decision.modality
    text = f"{DISPLAY.get(used, used)} model"
    if used != decision.modality:
        text += f" for {'an' if decision.modality == 'SWI' else 'a'} {DISPLAY[decision.modality]} scan"
    return f"{text} ({decision.reason})"


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
