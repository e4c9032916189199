"""The two-stage predictor shared by ``plkd predict``, ``plkd demo`` and the Slicer module.

``Predictor.predict`` runs: brain mask → pre-processing onto the model grid → stage 1 (screening
FCN over the whole brain → candidate centres) → stage 2 (segmenter on a patch per candidate →
probability + voxel mask) → stitching → label map back on the input grid, one integer label per
microbleed → MARS location of every candidate (:mod:`plkd.location`, registration to MNI).
``Predictor.segment_at`` segments the microbleed at a clicked point, skipping stage 1.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import ndimage

from plkd.bundle import DEFAULT_THRESHOLDS, load_bundle, resolve_bundle
from plkd.errors import BundleError, InputError, PLKDError
from plkd.inference.blobs import blob_candidates, blob_settings
from plkd.inference.brainmask import resolve_brain_mask
from plkd.inference.candidates import (
    MAX_CANDIDATES,
    Candidate,
    add_blob_candidates,
    find_candidates,
    inside_field_of_view,
    interior_first,
    mask_on_score_grid,
)
from plkd.inference.click import ExistingPrediction, covers, dark_blob, match_existing, outlines, region_share
from plkd.inference.device import DeviceState, resolve_device
from plkd.inference.preprocess import PreparedVolume, prepare
from plkd.inference.screening import DEFAULT_TILE, score_grid_to_input, score_map
from plkd.inference.segmentation import (
    MAX_OFFSET_MM,
    PatchResult,
    StitchedCandidate,
    keep_largest_pieces,
    merge_touching_labels,
    segment_patches,
    select_component,
    stitch,
)
from plkd.location import locate_candidates
from plkd.location.register import Registration
from plkd.metrics.components import structure
from plkd.normalise import LEGACY_CLIP_PERCENTILES
from plkd.progress import Progress
from plkd.resample import resample_array
from plkd.volumes import Volume

log = logging.getLogger(__name__)

DEFAULT_PATCH = (48, 48, 24)
#: A segmenter serves LR factors within this ratio of its own (the sqrt(2) half-step of the 1-2-4-8
#: ladder); an input further from every segmenter of the bundle is analysed with a warning.
STUDENT_REACH = math.sqrt(2.0)


@dataclass
class PredictionResult:
    """What one prediction produced; every map is on the input grid unless named ``model_*``.

    ``candidates`` holds one record per candidate (see ``docs/design.md``): ``id``, ``label``
    (0 when not kept), ``center_ras``, ``voxels``, ``volume_mm3``, ``probability``, ``kept``,
    plus ``screening_score`` and ``reason``.
    """

    label_map: np.ndarray
    affine: np.ndarray
    candidates: list[dict[str, Any]]
    student: str
    lr_factor: float
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)
    #: The thresholds applied (the bundle's, the student's tuned ones, or the caller's override).
    thresholds: dict[str, float] = field(default_factory=dict)
    probability_map: np.ndarray | None = None
    #: The label map on the model grid, each microbleed holding its value in :attr:`label_map` (its JSON id).
    model_label_map: np.ndarray | None = None
    model_affine: np.ndarray | None = None
    #: Each stitched model-grid label's value in :attr:`label_map` (index: model label; 0 for one that is not there).
    model_to_label: np.ndarray | None = None
    #: Per-scan MARS location block (``docs/design.md``, "Location"); ``None`` when not run.
    location: dict[str, Any] | None = None

    @property
    def n_microbleeds(self) -> int:
        """Number of microbleeds (distinct labels) in :attr:`label_map`."""
        return sum(1 for c in self.candidates if c["kept"])


class ScreeningResult(NamedTuple):
    """What :meth:`Predictor.screen` returns: RAS centres (M, 3) mm, FCN scores (M,), sources (M)."""

    centres_ras: np.ndarray
    scores: np.ndarray
    sources: list[str]


def _load_bundle(bundle: Any) -> Any:
    if bundle is None:  # the installed model, as ``plkd predict`` without --model
        return resolve_bundle(None)[0]
    if isinstance(bundle, str | os.PathLike):
        return load_bundle(Path(bundle))
    return bundle


class Predictor:
    """Two-stage microbleed detection and segmentation with one model bundle.

    ``bundle`` is a loaded bundle, a bundle folder or ``.zip``, or ``None`` (the default) for the
    installed model (:func:`plkd.bundle.find_default_bundle`; :class:`BundleError` when none is).

    Thresholds come from the bundle: its global ones, replaced by a segmenter's own where
    ``plkd tune`` chose them on validation subjects. ``threshold`` overrides the segmentation
    (patch probability) threshold of every segmenter; ``thresholds`` overrides any by name.
    ``progress`` is a :class:`plkd.progress.Progress` (or a mode name); networks are loaded once
    and reused for every volume. ``locate`` (default on) registers each scan to MNI and gives every
    candidate its MARS location (:func:`plkd.location.locate_candidates`); tuning and
    cross-validation turn it off, as they score detection only. ``max_candidates`` caps the
    screening FCN's candidates per scan, strongest first (default: the bundle's
    ``candidates.max_screening``, which ``plkd tune`` records as the number its thresholds were
    chosen with, else :data:`MAX_CANDIDATES`); blob candidates come on top.
    """

    def __init__(
        self,
        bundle: Any = None,
        device: str | torch.device = "auto",
        batch_size: int = 16,
        threshold: float | None = None,
        progress: Progress | str | None = None,
        *,
        thresholds: dict[str, float] | None = None,
        max_candidates: int | None = None,
        tile: tuple[int, int, int] = DEFAULT_TILE,
        locate: bool = True,
    ) -> None:
        self.bundle = _load_bundle(bundle)
        #: Register each scan to MNI and give candidates their MARS location (``plkd.location``).
        self.locate = bool(locate)
        self.state = DeviceState(resolve_device(device), batch_size)
        if isinstance(progress, str):
            progress = Progress(progress)  # type: ignore[arg-type]
        self.progress = progress or Progress("none")
        #: The bundle's global thresholds (a segmenter's tuned ones take precedence, see thresholds_for).
        self.thresholds = {**DEFAULT_THRESHOLDS, **(getattr(self.bundle, "thresholds", None) or {})}
        self._override = {k: float(v) for k, v in (thresholds or {}).items()}
        if threshold is not None:
            if not 0.0 <= float(threshold) <= 1.0:
                raise PLKDError(f"--threshold must be a probability between 0 and 1, not {threshold}")
            self._override["segmentation"] = float(threshold)
        #: The cap is the model's (or the default), not one the caller chose: a scan that fills it is told.
        self._cap_is_models = max_candidates is None
        if max_candidates is None:
            # A tuned bundle records how many screening candidates its thresholds were chosen with.
            own = (self.bundle.manifest.get("candidates") or {}).get("max_screening")
            max_candidates = int(own) if own else MAX_CANDIDATES
        self.max_candidates = int(max_candidates)
        self.tile = tile
        sizes = (self.bundle.manifest.get("patch_size") or {}).get("segmentation") or DEFAULT_PATCH
        self.patch_size = tuple(int(v) for v in sizes)
        self._nets: dict[str, torch.nn.Module] = {}

    @property
    def device(self) -> torch.device:
        """The device in use (may change to the CPU after an out-of-memory error)."""
        return self.state.device

    def network(self, name: str) -> torch.nn.Module:
        """The bundle's network ``name`` in evaluation mode (loaded once)."""
        if name not in self._nets:
            net = self.bundle.network(name, self.state.device)
            net.eval()
            self._nets[name] = net
        return self._nets[name]

    def thresholds_for(self, segmenter: str, *, overrides: bool = True) -> dict[str, float]:
        """The thresholds used with ``segmenter``: global, then its tuned ones, then the caller's overrides."""
        entry = self.bundle.manifest.get("networks", {}).get(segmenter, {})
        own = {k: float(v) for k, v in (entry.get("thresholds") or {}).items()}
        return {**self.thresholds, **own, **(self._override if overrides else {})}

    def choose_student(self, lr_factor: float, student: str | None = None) -> str:
        """The segmenter for an input of this anisotropy ratio (or the one named)."""
        names = self.bundle.segmenter_names()
        if student is not None:
            if student not in names:
                raise PLKDError(f"the model has no segmenter {student!r}; it has {', '.join(sorted(names))}")
            if abs(math.log(float(lr_factor) / names[student])) > math.log(STUDENT_REACH) + 1e-9:
                # Chosen by name: the JSON's student and lr_factor alone do not say that they disagree.
                log.warning(
                    "%s (trained for an LR factor of %g) was chosen with --student for slices of LR factor %.3g; "
                    "the bundle's choice would be %s",
                    student,
                    names[student],
                    float(lr_factor),
                    self.bundle.choose_segmenter(float(lr_factor)),
                )
            return student
        name = self.bundle.choose_segmenter(float(lr_factor))
        trained = names[name]
        # The shipped ladder (1, 2, 4, 8) covers every factor within sqrt(2) of a student's; beyond that
        # the bundle has no student for such slices, and the nearest one was trained on other data.
        if abs(math.log(float(lr_factor) / trained)) > math.log(STUDENT_REACH) + 1e-9:
            log.warning(
                "the model has no segmenter for an LR factor of %.3g (slices that thick in model-grid voxels); "
                "the nearest, %s (trained for %g), is used and may miss or misjudge microbleeds",
                float(lr_factor),
                name,
                trained,
            )
        return name

    # ------------------------------------------------------------------ whole-volume prediction
    def predict(
        self,
        volume: Volume,
        mask: Volume | None = None,
        lr_factor: float | None = None,
        *,
        student: str | None = None,
        probability: bool = False,
        model_grid: bool = False,
    ) -> PredictionResult:
        """Detect and segment every microbleed in ``volume`` (see the module docstring).

        ``lr_factor`` overrides the measured slice thickness in model-grid voxels
        (:func:`plkd.inference.preprocess.effective_lr_factor`) when choosing the student;
        ``probability`` also returns the stitched voxel probability map; ``model_grid`` also
        returns the label map on the (cropped) model grid.
        """
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        self.progress.start("preprocess", 1)
        prep, notes = self._prepare(volume, mask)
        factor = prep.lr_factor if lr_factor is None else float(lr_factor)
        name = self.choose_student(factor, student)
        thr = self.thresholds_for(name)
        self.progress.advance()
        timings["preprocess"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        cands, capped = self._screen(prep, float(thr["screening"]), float(thr["min_distance_mm"]))
        if capped and (self._cap_is_models or self.max_candidates >= MAX_CANDIDATES):
            # The shipped models keep the cap they were tuned with (100): weaker candidates, microbleeds among them,
            # were dropped without a word when only the default cap of 300 was noted.
            capped_note = (
                f"candidate count capped at {self.max_candidates}: weaker screening candidates were not examined, so "
                "microbleeds may be missed (the scan may be very noisy or hold many dark spots)"
            )
            log.warning(capped_note)
            notes.append(capped_note)
        timings["screen"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        positions = [np.clip(c.position, 0, np.asarray(prep.data.shape) - 1) for c in cands]
        prob_model = np.zeros(prep.data.shape, dtype=np.float32) if probability else None
        self.progress.start("segment", len(positions))
        network = self._segment(name, prep, positions, prob_model, thr)
        outlined, methods = outline_undersegmented(prep, positions, network, float(thr["segmentation"]))
        timings["segment"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        labels_model, fate, results, methods = stitch_outlines(
            volume, prep, positions, network, outlined, methods, float(thr["segmentation"])
        )
        out = self._finish(volume, prep, name, factor, cands, positions, results, fate, labels_model, prob_model, notes)
        timings["postprocess"] = time.perf_counter() - t3
        for rec, method in zip(out.candidates, methods, strict=True):
            rec["segmentation"] = method if rec["label"] else None
        lowered, lowered_centres = lowered_endings(volume, prep, positions, network)
        for rec, ending, centre in zip(out.candidates, lowered, lowered_centres, strict=True):
            if rec["reason"] == "below threshold":
                rec["if_threshold_lowered"] = ending
                if centre is not None:  # where its microbleed would lie: its outline's centre, as a kept one's
                    rec["center_ras_if_kept"] = [round(float(v), 3) for v in centre]
        self._locate(prep, out, timings)
        timings["total"] = time.perf_counter() - t0
        out.timings = {k: round(v, 4) for k, v in timings.items()}
        out.thresholds = thr
        if model_grid:
            # Stitching numbers microbleeds on the model grid; the input grid's map (merged where they touch there,
            # renumbered 1..N) and the JSON's ids are what a reader goes by: label 3 here was the JSON's 4.
            out.model_label_map, out.model_affine = out.model_to_label[labels_model], prep.affine
        self.progress.finish()
        return out

    def screen(
        self,
        volume: Volume,
        mask: Volume | None = None,
        threshold: float | None = None,
        budget: int | None = None,
    ) -> ScreeningResult:
        """Stage 1 only: ``(centres_ras (M, 3), scores (M,), sources (M,))`` of the candidates, FCN
        candidates strongest first, then blob candidates (their score is the FCN score where they
        lie; ``sources`` says ``screening``, ``blob`` or ``screening+blob`` for each).

        ``threshold`` defaults to the bundle's screening threshold; at most ``max_candidates``
        FCN candidates. ``budget`` caps the total: every blob candidate is kept and the
        strongest FCN candidates fill the rest, as a candidates-per-subject limit would.
        """
        prep, _notes = self._prepare(volume, mask)
        thr = self.thresholds
        cut = float(thr["screening"] if threshold is None else threshold)
        cands, _capped = self._screen(prep, cut, float(thr["min_distance_mm"]))
        if budget is not None:
            blobs = [c for c in cands if "blob" in c.source][: int(budget)]
            fcn = [c for c in cands if "blob" not in c.source][: max(int(budget) - len(blobs), 0)]
            cands = fcn + blobs
        vox = np.array([c.position for c in cands], dtype=np.float64).reshape(-1, 3)
        ras = prep.voxel_to_ras(vox) if len(vox) else np.zeros((0, 3))
        scores = np.array([c.score for c in cands], dtype=np.float64)
        return ScreeningResult(ras, scores, [c.source for c in cands])

    def _screen(self, prep: PreparedVolume, threshold: float, min_distance_mm: float) -> tuple[list[Candidate], bool]:
        """Candidates of both sources: FCN peaks above ``threshold``, then large dark blobs
        (:mod:`plkd.inference.blobs`) that no FCN candidate is near."""
        fcn = self.network(self.bundle.screening_name)
        scores = score_map(fcn, prep.data, self.state, tile=self.tile, on_tile=self._ticker("screen"))
        stride = np.asarray(getattr(fcn, "output_stride", (1, 1, 1)), dtype=int)
        # Nothing the field-of-view rule would reject takes a place in the caps, and candidates in the
        # FCN's padding band come after all others (see SCREENING_EDGE_MM).
        brain = np.asarray(prep.mask) > 0
        judged = brain & inside_field_of_view(brain.shape, prep.spacing, FOV_MARGIN_MM)
        cands, _ = find_candidates(
            scores,
            lambda idx: score_grid_to_input(fcn, idx),
            prep.spacing,
            threshold,
            min_distance_mm,
            mask=mask_on_score_grid(judged, stride),
            max_candidates=EDGE_POOL_FACTOR * self.max_candidates,
        )
        cands, capped = interior_first(cands, brain.shape, prep.spacing, self.max_candidates)
        blob = self.blob_settings
        if blob["limit"] > 0:
            pos, _resp = blob_candidates(
                prep.data,
                judged,
                prep.spacing,
                scales_mm=blob["scales_mm"],
                limit=blob["limit"],
                min_response=blob["min_response"],
            )
            at = np.clip(np.floor(pos / stride).astype(int), 0, np.asarray(scores.shape) - 1)
            fcn_at = scores[tuple(at.T)] if len(pos) else np.zeros(0)
            add_blob_candidates(cands, pos, fcn_at, prep.spacing, min_distance_mm)
        return cands, capped

    @property
    def blob_settings(self) -> dict[str, Any]:
        """The blob source's settings: the bundle's ``candidates.blob`` over the defaults."""
        return blob_settings((self.bundle.manifest.get("candidates") or {}).get("blob"))

    # --------------------------------------------------------------------- single click
    def segment_at(
        self,
        volume: Volume,
        ras: Sequence[float],
        mask: Volume | None = None,
        lr_factor: float | None = None,
        *,
        student: str | None = None,
        existing: ExistingPrediction | None = None,
    ) -> PredictionResult:
        """Segment the microbleed at a clicked RAS point (mm), skipping the screening stage.

        The darkest spot within :data:`~plkd.inference.click.SEARCH_RADIUS_MM` of the click is
        the microbleed meant (:func:`~plkd.inference.click.dark_blob`); the segmenter runs
        centred on it and its mask is used when it covers the spot and at least half of the spot's
        intensity region (:func:`~plkd.inference.click.outlines`), else the spot's intensity
        region (the record's ``segmentation`` says ``"network"`` or ``"intensity"``). The result
        has one candidate, returned whatever its probability (``kept`` is the model's view).
        With ``existing`` (an earlier prediction), a click on a microbleed it already holds
        returns that microbleed (label 1 = its voxels) with ``existing_label``/``existing_id``.
        With ``locate`` the candidate gets its MARS ``location``, ``region`` and ``center_mni`` and the
        result the scan's ``location`` block, as a whole-scan prediction (registration: a few seconds).
        Raises :class:`InputError` when the point lies outside the image.
        """
        t0 = time.perf_counter()
        point = np.asarray(ras, dtype=np.float64).reshape(3)
        inv = np.linalg.inv(volume.affine)
        vox = inv[:3, :3] @ point + inv[:3, 3]
        if np.any(vox < -0.5) or np.any(vox > np.asarray(volume.shape) - 0.5):
            raise InputError(f"the point {tuple(round(float(v), 2) for v in point)} (RAS mm) lies outside the image")
        prep, notes = self._prepare(volume, mask, extra_points_ras=point[None])
        factor = prep.lr_factor if lr_factor is None else float(lr_factor)
        name = self.choose_student(factor, student)
        position = np.clip(prep.ras_to_voxel(point)[0], 0, np.asarray(prep.data.shape) - 1)
        blob = dark_blob(prep.data, position, prep.spacing)
        if blob is not None:
            position = blob.seed.astype(np.float64)
        prob_model = np.zeros(prep.data.shape, dtype=np.float32)
        self.progress.start("segment", 1)
        thr = self.thresholds_for(name)
        result = self._segment(name, prep, [position], prob_model, thr)[0]
        method = "network"
        if blob is None and result.voxels.shape[0] == 0:
            result = self._relative_component(prob_model, position, prep, result, notes)
        elif blob is not None and not outlines(result.voxels, blob, prep.spacing):
            share = region_share(result.voxels, blob) if covers(result.voxels, blob.seed, prep.spacing) else 0.0
            result = PatchResult(result.probability, blob.voxels, result.max_voxel_probability, result.logit)
            method = "intensity"
            notes.append(
                "segmented by intensity: the model's mask does not cover the dark spot at the click"
                if share == 0.0
                else f"segmented by intensity: the model's mask holds {share:.0%} of the dark spot at the click"
            )
        placed = PatchResult(1.0, result.voxels, result.max_voxel_probability, result.logit)
        labels_model, _ = stitch([placed], prep.data.shape, 0.0)
        kept = result.probability >= float(thr["segmentation"])
        reason = "clicked" if kept else "clicked (below threshold)"
        fate = [StitchedCandidate(1 if result.voxels.shape[0] else 0, reason)]
        cands = [Candidate(position=position, score=float("nan"))]
        out = self._finish(volume, prep, name, factor, cands, [position], [result], fate, labels_model, None, notes)
        # A clicked microbleed is returned even below the threshold; ``kept`` records the model's view.
        for rec in out.candidates:
            rec["kept"] = bool(kept and rec["label"] > 0)
            rec["segmented"] = rec["label"] > 0
            rec["segmentation"] = method if rec["label"] > 0 else None
            rec["click_ras"] = [round(float(v), 3) for v in point]
        if existing is not None:
            _report_existing(out, existing, point, volume)
        timings: dict[str, float] = {}
        # At the final centre (an earlier microbleed's when it was one), with the earlier prediction's registration
        # of this same file when it has one.
        self._locate(prep, out, timings, existing.registration if existing is not None else None)
        out.timings = {**{k: round(v, 4) for k, v in timings.items()}, "total": round(time.perf_counter() - t0, 4)}
        out.thresholds = thr
        self.progress.finish()
        return out

    # --------------------------------------------------------------------------- helpers
    def _locate(
        self, prep: PreparedVolume, out: PredictionResult, timings: dict[str, float], reuse: Registration | None = None
    ) -> None:
        """With ``locate``: each candidate's MARS ``location``, ``region`` and ``center_mni`` and the scan's
        ``location`` block (:func:`plkd.location.locate_candidates`, on the prepared model-grid scan), the one
        step for whole-scan predictions and clicks alike; its seconds go to ``timings["location"]``. ``reuse``:
        a registration of this scan made before (see :func:`plkd.location.locate_candidates`)."""
        if not self.locate:
            return
        t0 = time.perf_counter()
        out.location = locate_candidates(
            prep.data, prep.affine, out.candidates, prep.mask, notes=out.notes, reuse=reuse
        )
        timings["location"] = time.perf_counter() - t0

    def _prepare(
        self, volume: Volume, mask: Volume | None, extra_points_ras: np.ndarray | None = None
    ) -> tuple[PreparedVolume, list[str]]:
        notes = [*getattr(self.bundle, "notes", []), *volume.notes]  # e.g. "unverified bundle: ..."
        brain, mask_note = resolve_brain_mask(volume, mask)
        notes.append(mask_note)
        spacing = np.asarray(getattr(self.bundle, "spacing_mm", (1.0, 1.0, 1.0)), dtype=np.float64)
        # The percentiles the bundle's networks are used with (bundle manifest), not a fixed constant.
        norm = (getattr(self.bundle, "manifest", None) or {}).get("normalisation") or {}
        clip = norm.get("clip_percentiles", LEGACY_CLIP_PERCENTILES)
        prep = prepare(volume, brain, spacing, extra_points_ras=extra_points_ras, clip_percentiles=clip)
        notes.extend(prep.notes)
        return prep, notes

    def _ticker(self, stage: str):  # noqa: ANN202 - a small closure for progress callbacks
        def tick(done: int, total: int) -> None:
            if done == 1:
                self.progress.start(stage, total)
            self.progress.advance()

        return tick

    def _segment(
        self,
        name: str,
        prep: PreparedVolume,
        positions: list[np.ndarray],
        prob_model: np.ndarray | None,
        thr: dict[str, float],
    ) -> list[PatchResult]:
        from plkd.models import Calibration

        if not positions:
            return []
        done = [0]

        def on_batch(i: int, _n: int) -> None:
            self.progress.advance(i - done[0])
            done[0] = i

        return segment_patches(
            self.network(name),
            prep.data,
            positions,
            self.patch_size,
            self.state,
            voxel_threshold=float(thr["voxel"]),
            spacing=prep.spacing,
            probability_map=prob_model,
            on_batch=on_batch,
            calibration=Calibration.from_manifest(self.bundle.manifest["networks"][name].get("calibration")),
        )

    def _relative_component(
        self, prob: np.ndarray, position: np.ndarray, prep: PreparedVolume, result: PatchResult, notes: list[str]
    ) -> PatchResult:
        radius = np.ceil(MAX_OFFSET_MM / prep.spacing).astype(int)
        c = np.round(position).astype(int)
        lo, hi = np.maximum(c - radius, 0), np.minimum(c + radius + 1, prob.shape)
        local = prob[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))]
        peak = float(local.max()) if local.size else 0.0
        if peak < 0.05:
            notes.append("nothing to segment at the clicked point (the model sees no microbleed there)")
            return result
        comp = select_component(local, position - lo, 0.5 * peak, prep.spacing, MAX_OFFSET_MM)
        if not comp.any():
            # The box's peak can lie in a corner, beyond MAX_OFFSET_MM: the note said it was used, and nothing was.
            notes.append(
                f"nothing to segment at the clicked point (the model sees no microbleed within {MAX_OFFSET_MM:g} mm)"
            )
            return result
        notes.append(f"no voxel reached the voxel threshold; used half the local peak probability ({0.5 * peak:.2f})")
        return PatchResult(result.probability, np.argwhere(comp) + lo, result.max_voxel_probability, result.logit)

    def _finish(
        self,
        volume: Volume,
        prep: PreparedVolume,
        student: str,
        factor: float,
        cands: list[Any],
        positions: list[np.ndarray],
        results: list[PatchResult],
        fate: list[Any],
        labels_model: np.ndarray,
        prob_model: np.ndarray | None,
        notes: list[str],
    ) -> PredictionResult:
        labels, kept_labels = labels_to_input(labels_model, prep, volume, notes)
        # Microbleeds apart on the model grid may touch on a coarser input grid: one component, one microbleed.
        labels, survivor, renumber = merge_touching_labels(labels)
        owner = {kept_labels[f.label]: i for i, f in enumerate(fate) if f.label and f.label in kept_labels}
        touching = sum(1 for old, top in survivor.items() if old != top)
        if touching:
            notes.append(f"{touching} microbleed(s) touching a stronger one on the input grid merged into it")
        stats = label_statistics(labels, volume.affine)
        model_to_label = np.zeros(int(labels_model.max(initial=0)) + 1, dtype=np.int32)
        for model_label, input_label in kept_labels.items():
            model_to_label[model_label] = renumber.get(survivor.get(input_label, input_label), 0)
        records: list[dict[str, Any]] = []
        centres = prep.voxel_to_ras(np.asarray(positions).reshape(-1, 3)) if positions else np.zeros((0, 3))
        for i, (cand, res, f) in enumerate(zip(cands, results, fate, strict=True)):
            old = kept_labels.get(f.label, 0) if f.label else 0
            top = survivor.get(old, old)
            merged_into = f.merged_into
            if top != old:  # touches a stronger microbleed on the input grid
                label, merged_into, reason = 0, owner[top], "duplicate"
            else:
                label = renumber.get(old, 0)
                reason = f.reason if f.label == 0 or old else "vanished on the input grid"
            rec: dict[str, Any] = {
                "id": i + 1,
                "label": label,
                "center_ras": [round(float(v), 3) for v in (stats[label]["center_ras"] if label else centres[i])],
                "voxels": int(stats[label]["voxels"]) if label else 0,
                "volume_mm3": round(float(stats[label]["volume_mm3"]), 3) if label else 0.0,
                "probability": round(float(res.probability), 4),
                "logit": None if not np.isfinite(res.logit) else round(float(res.logit), 3),
                "screening_score": None if cand.score != cand.score else round(float(cand.score), 4),
                "source": getattr(cand, "source", "screening"),
                "kept": bool(label),
                "reason": reason,
            }
            if merged_into is not None:
                rec["merged_into"] = int(merged_into) + 1
            records.append(rec)
        prob_input = None
        if prob_model is not None:
            prob_input = np.zeros(volume.shape, dtype=np.float32)
            prob_input[prep.input_box] = resample_array(
                prob_model, prep.affine, _box_affine(volume.affine, prep.input_box), _box_shape(prep.input_box), order=1
            )
        for w in self.state.warnings:
            if w not in notes:
                notes.append(w)
        return PredictionResult(
            label_map=labels,
            affine=np.asarray(volume.affine, dtype=np.float64).copy(),
            candidates=records,
            student=student,
            lr_factor=round(float(factor), 4),
            timings={},
            notes=notes,
            probability_map=prob_input,
            model_to_label=model_to_label,
        )


#: A dark spot is outlined by intensity in a whole-scan prediction only from this volume (mm³, a 5 mm sphere) up.
MIN_OUTLINED_SPOT_MM3 = math.pi / 6.0 * 5.0**3


def outline_undersegmented(
    prep: PreparedVolume, positions: list[np.ndarray], results: list[PatchResult], threshold: float
) -> tuple[list[PatchResult], list[str]]:
    """Each kept candidate's outline: the network's mask, or the dark spot's intensity region where the mask holds
    less than half of a larger spot (:func:`plkd.inference.click.outlines`), and which one (``"network"`` or
    ``"intensity"``) per candidate.

    On microbleeds over 5 mm the shipped segmenters outline a rim beside the centre (28 of a 6.5 mm microbleed's
    147 voxels, 89 of a 9 mm one's 389: ``../shared/cases/large-cmb``), so the volume and Dice they report are a
    third of the truth; up to 5 mm their mask holds the whole spot. Only spots of at least
    :data:`MIN_OUTLINED_SPOT_MM3` are looked at: on smaller ones, mostly veins and dark grey matter kept as false
    positives, the intensity region was larger than the network's mask and not the better outline (test10: Dice
    86.1 → 85.6 at 1 mm, 65.6 → 62.1 at LR@4 with every spot looked at). A region that leaves the brain mask, or
    comes within :data:`FOV_MARGIN_MM` of the end of the image (on thick slabs the top slice, where a small dark
    spot smeared over a slab moved a false positive onto a reference's neighbour), is not used. Only
    candidates at or above
    ``threshold`` (calibrated probability) are looked at: the outline never decides whether one is kept.
    """
    out: list[PatchResult] = []
    methods: list[str] = []
    voxel_mm3 = float(np.prod(prep.spacing))
    brain = np.asarray(prep.mask) > 0
    judged = brain & inside_field_of_view(brain.shape, prep.spacing, FOV_MARGIN_MM)
    for position, result in zip(positions, results, strict=True):
        method = "network"
        if result.probability >= threshold:
            blob = dark_blob(prep.data, position, prep.spacing)
            if (
                blob is not None
                and bool(judged[tuple(blob.voxels.T)].all())
                and blob.voxels.shape[0] * voxel_mm3 >= MIN_OUTLINED_SPOT_MM3
                and blob.voxels.shape[0] > result.voxels.shape[0]
                and not outlines(result.voxels, blob, prep.spacing)
            ):
                result = PatchResult(result.probability, blob.voxels, result.max_voxel_probability, result.logit)
                method = "intensity"
        out.append(result)
        methods.append(method)
    return out, methods


def _edge_vetoes(volume: Volume, prep: PreparedVolume, positions: list[np.ndarray], results: list[PatchResult]):
    """:func:`fov_edge_veto` of each candidate, judged at the centre of what would be labelled (its segment), else
    at the candidate."""
    centres = [r.voxels.mean(axis=0) if r.voxels.shape[0] else p for r, p in zip(results, positions, strict=True)]
    return [fov_edge_veto(volume, prep.voxel_to_ras(np.asarray(c).reshape(1, 3))[0]) for c in centres]


def stitch_outlines(
    volume: Volume,
    prep: PreparedVolume,
    positions: list[np.ndarray],
    network: list[PatchResult],
    outlined: list[PatchResult],
    methods: list[str],
    threshold: float,
) -> tuple[np.ndarray, list[StitchedCandidate], list[PatchResult], list[str]]:
    """:func:`stitch` of the candidates' outlines (:func:`outline_undersegmented`), with every candidate ending as it
    ends with the network's masks: kept, or merged into the same candidate, or rejected for the same reason, and in
    one microbleed with the same others.

    An intensity region reaches up to :data:`~plkd.inference.click.MAX_RADIUS_MM` from the spot's minimum, and the
    spot found near a small microbleed can be a larger one beside it: such a region took in (or touched) another
    kept candidate's voxels and stitching merged the two, so a microbleed the network had kept apart vanished from
    the label map and the count (and a duplicate's region, added to its microbleed, could bridge it to another; a
    larger outline could touch a neighbour once on a thick input grid, where touching microbleeds are merged).
    Candidates whose ending the outline changes, and those they end with, keep their network masks instead: the
    outline never decides whether, or as what, a candidate is kept. Returns the model-grid labels, each candidate's
    fate, and the results and methods used.
    """
    results, methods = list(outlined), list(methods)
    if "intensity" not in methods:
        labels, fate = stitch(results, prep.data.shape, threshold, _edge_vetoes(volume, prep, positions, results))
        return labels, fate, results, methods
    net_labels, net_fate = stitch(network, prep.data.shape, threshold, _edge_vetoes(volume, prep, positions, network))
    expected = _endings(net_labels, net_fate, prep, volume)
    while True:
        labels, fate = stitch(results, prep.data.shape, threshold, _edge_vetoes(volume, prep, positions, results))
        endings = _endings(labels, fate, prep, volume)
        changed = [
            i
            for i in range(len(results))
            if fate[i] != net_fate[i] or endings[i] != expected[i]  # fate, or the microbleed it ends in
        ]
        if not changed:
            return labels, fate, results, methods
        involved: set[int] = set()
        for i in changed:
            involved |= {i} | endings[i] | expected[i]
        revert = [i for i in sorted(involved) if methods[i] == "intensity"]
        if not revert:  # cannot happen (the network's masks give ``expected``); never loop
            revert = [i for i, m in enumerate(methods) if m == "intensity"]
            if not revert:
                return labels, fate, results, methods
        for i in revert:
            results[i], methods[i] = network[i], "network"


def lowered_endings(
    volume: Volume, prep: PreparedVolume, positions: list[np.ndarray], network: list[PatchResult]
) -> tuple[list[str], list[np.ndarray | None]]:
    """How each candidate would end were the segmentation threshold lowered to its own probability: ``"kept"``, or
    the reason it would still not be kept (``"duplicate"``: its outline overlaps or touches a stronger candidate's,
    on the model grid or on the input grid; no voxel; a veto); and, for one kept, the centre (RAS mm) of its outline
    on the input grid, where ``plkd evaluate`` would place it (None otherwise).

    Stitching takes candidates by decreasing probability, so a candidate's fate at a threshold equal to its
    probability is its fate when every candidate is stitched (threshold 0), with the network's masks
    (:func:`stitch_outlines` never lets an outline change a fate); on the input grid it is a duplicate when it
    touches a stronger label there (:func:`merge_touching_labels` keeps the strongest of touching labels, and at
    that threshold no weaker one can bridge it to another). ``plkd evaluate``'s FROC curve adds a candidate
    rejected for its probability only where this says ``"kept"``, so the curve below the applied threshold
    follows the rule of its operating point.
    """
    labels, fate = stitch(network, prep.data.shape, 0.0, _edge_vetoes(volume, prep, positions, network))
    on_input, kept = labels_to_input(labels, prep, volume, [])
    weaker = _labels_touching_a_stronger(on_input)
    out: list[str] = []
    for f in fate:
        if not f.label:
            out.append(f.reason)
        elif f.label not in kept:
            out.append("vanished on the input grid")
        else:
            out.append("duplicate" if kept[f.label] in weaker else "kept")
    alone = [kept[f.label] for f, ending in zip(fate, out, strict=True) if ending == "kept"]
    coms = ndimage.center_of_mass(on_input > 0, on_input, alone) if alone else []
    centre_of = {
        label: np.asarray(volume.affine, dtype=np.float64)[:3, :3] @ np.asarray(com) + volume.affine[:3, 3]
        for label, com in zip(alone, coms, strict=True)
    }
    centres = [centre_of[kept[f.label]] if ending == "kept" else None for f, ending in zip(fate, out, strict=True)]
    return out, centres


def _labels_touching_a_stronger(labels: np.ndarray) -> set[int]:
    """The labels that touch (:data:`plkd.metrics.components.CONNECTIVITY`) a lower label (a stronger microbleed)."""
    found: set[int] = set()
    fg = np.argwhere(labels > 0)
    if not fg.size:
        return found
    lo, hi = np.maximum(fg.min(axis=0) - 1, 0), fg.max(axis=0) + 2
    box = labels[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))]
    padded = np.pad(box, 1)
    core = padded[1:-1, 1:-1, 1:-1]
    for off in np.argwhere(structure()) - 1:
        if not off.any():
            continue
        other = padded[tuple(slice(1 + int(o), padded.shape[k] - 1 + int(o)) for k, o in enumerate(off))]
        touch = (core > 0) & (other > 0) & (other < core)
        found.update(np.unique(core[touch]).tolist())
    return found


def _endings(
    labels: np.ndarray, fate: list[StitchedCandidate], prep: PreparedVolume, volume: Volume
) -> list[frozenset[int]]:
    """For each candidate, the candidates that end in the same microbleed of the input grid's label map (itself
    included; empty when not kept or gone): its label, or the label of the one it merged into, with the labels
    touching it there (:func:`labels_to_input`, :func:`merge_touching_labels`, as :meth:`Predictor._finish`)."""
    on_input, kept = labels_to_input(labels, prep, volume, [])
    _, survivor, _ = merge_touching_labels(on_input)
    group: list[int] = []
    for f in fate:
        label = kept.get(f.label or (fate[f.merged_into].label if f.merged_into is not None else 0), 0)
        group.append(survivor.get(label, label) if label else 0)
    members: dict[int, set[int]] = {}
    for i, g in enumerate(group):
        if g:
            members.setdefault(g, set()).add(i)
    return [frozenset(members[g]) if g else frozenset() for g in group]


def _report_existing(out: PredictionResult, existing: ExistingPrediction, point: np.ndarray, volume: Volume) -> None:
    """Replace a clicked microbleed that an earlier prediction already holds by that one."""
    match = match_existing(existing, point, out.label_map > 0, volume.affine)
    if match is None:
        return
    label, earlier = match
    rec = out.candidates[0]
    rec["existing_label"] = label
    rec["existing_id"] = None if earlier is None else earlier.get("id")
    rec["reason"] = "already found" + ("" if earlier is None else f" (candidate {earlier.get('id')})")
    if existing.labels is not None:
        out.label_map = (existing.labels == label).astype(out.label_map.dtype)
        stats = label_statistics(out.label_map, volume.affine)[1]
        rec.update(
            label=1,
            voxels=int(stats["voxels"]),
            volume_mm3=round(float(stats["volume_mm3"]), 3),
            center_ras=[round(float(v), 3) for v in stats["center_ras"]],
        )
    if earlier is not None and "kept" in earlier:
        rec["kept"] = bool(earlier["kept"])
    if existing.labels is not None and earlier is not None and "segmentation" in earlier:
        # The voxels returned are the earlier outline: say how that one was made, not how the click's would have been.
        rec["segmentation"] = earlier["segmentation"]
    source = Path(existing.source).name
    out.notes.append(f"the click falls on a microbleed of {source} (label {label}); not added twice")


#: A candidate whose centre lies closer than this (mm) to the end of the image is not kept.
FOV_MARGIN_MM = 3.0
#: FCN candidates gathered before the edge band is moved last and the cap applied (times the cap).
EDGE_POOL_FACTOR = 10


def fov_edge_veto(volume: Volume, centre_ras: np.ndarray, margin_mm: float = FOV_MARGIN_MM) -> str | None:
    """Why a candidate at ``centre_ras`` (RAS mm) cannot be judged, or None.

    A microbleed is at least half surrounded by parenchyma; at the end of the field of view (a
    crop, a partial-coverage scan, the first or last slice) the image shows too little around a
    dark spot to tell it from a vessel cut by the border, and on real GRE crops every false alarm
    sat there. For a whole-head scan the border lies in air and this never applies.
    """
    inv = np.linalg.inv(np.asarray(volume.affine, dtype=np.float64))
    vox = inv[:3, :3] @ np.asarray(centre_ras, dtype=np.float64) + inv[:3, 3]
    zooms = np.sqrt((np.asarray(volume.affine)[:3, :3] ** 2).sum(axis=0))
    shape = np.asarray(volume.shape[:3], dtype=np.float64)
    room = np.minimum(vox + 0.5, shape - 0.5 - vox) * zooms  # mm of image between centre and border
    if float(room.min()) < margin_mm:
        return f"at the edge of the field of view ({max(float(room.min()), 0.0):.1f} mm of image beyond it)"
    return None


def _box_affine(affine: np.ndarray, box: tuple[slice, slice, slice]) -> np.ndarray:
    out = np.asarray(affine, dtype=np.float64).copy()
    start = np.array([s.start for s in box], dtype=np.float64)
    out[:3, 3] = out[:3, :3] @ start + out[:3, 3]
    return out


def _box_shape(box: tuple[slice, slice, slice]) -> tuple[int, int, int]:
    return tuple(int(s.stop - s.start) for s in box)  # type: ignore[return-value]


def labels_to_input(
    labels_model: np.ndarray, prep: PreparedVolume, volume: Volume, notes: list[str]
) -> tuple[np.ndarray, dict[int, int]]:
    """Model-grid labels → input grid (nearest neighbour through RAS), relabelled 1..N.

    A microbleed smaller than the input's voxels can miss every input voxel centre; it then
    keeps the one input voxel containing its centre of mass, so a detection is never lost by
    resampling alone. A microbleed that falls apart into pieces on the input grid (thick slices sample one model
    slice per slab) keeps its largest piece (:func:`plkd.inference.segmentation.keep_largest_pieces`), so each
    label is one microbleed for ``plkd evaluate``. Returns the map and ``{model label: input label}`` for labels
    that remain.
    """
    n_model = int(labels_model.max()) if labels_model.size else 0
    dtype = np.int16 if n_model < np.iinfo(np.int16).max else np.int32
    out = np.zeros(volume.shape, dtype=dtype)
    if n_model == 0:
        return out, {}
    box_affine = _box_affine(volume.affine, prep.input_box)
    sub = resample_array(labels_model.astype(np.int32), prep.affine, box_affine, _box_shape(prep.input_box), order=0)
    # One slice per thick slab is sampled: an outline joined between them falls apart into pieces, each of which
    # plkd evaluate would count as a microbleed.
    sub = keep_largest_pieces(sub)
    present = set(np.unique(sub).tolist()) - {0}
    lost = [k for k in range(1, n_model + 1) if k not in present]
    if lost:
        coms = ndimage.center_of_mass(labels_model > 0, labels_model, lost)
        inv = np.linalg.inv(box_affine) @ prep.affine
        rescued = 0
        for k, com in zip(lost, coms, strict=True):
            v = np.round(inv[:3, :3] @ np.asarray(com) + inv[:3, 3]).astype(int)
            if np.all(v >= 0) and np.all(v < sub.shape) and sub[tuple(v)] == 0:
                sub[tuple(v)] = k
                rescued += 1
        if rescued:
            notes.append(f"{rescued} microbleed(s) smaller than an input voxel kept as the voxel holding their centre")
    remaining = sorted(set(np.unique(sub).tolist()) - {0})
    mapping = {old: new for new, old in enumerate(remaining, start=1)}
    lut = np.zeros(n_model + 1, dtype=dtype)
    for old, new in mapping.items():
        lut[old] = new
    out[prep.input_box] = lut[sub]
    return out, mapping


def label_statistics(labels: np.ndarray, affine: np.ndarray) -> dict[int, dict[str, Any]]:
    """Voxel count, volume (mm³) and centre of mass (RAS mm) of every label 1..N."""
    idx = np.nonzero(labels)
    if not idx[0].size:
        return {}
    values = labels[idx].astype(np.int64)
    n = int(values.max())
    counts = np.bincount(values, minlength=n + 1)
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))
    out: dict[int, dict[str, Any]] = {}
    sums = np.stack([np.bincount(values, weights=ax, minlength=n + 1) for ax in idx], axis=1)
    for k in range(1, n + 1):
        if counts[k] == 0:
            continue
        centre_vox = sums[k] / counts[k]
        centre = np.asarray(affine)[:3, :3] @ centre_vox + np.asarray(affine)[:3, 3]
        out[k] = {"voxels": int(counts[k]), "volume_mm3": counts[k] * voxel_mm3, "center_ras": centre.tolist()}
    return out


def bundle_error_if_missing(bundle: Any) -> None:
    """Raise :class:`BundleError` when a bundle lacks a screening network or a segmenter."""
    if not getattr(bundle, "screening_name", None):
        raise BundleError("the model bundle has no screening network")
    if not bundle.segmenter_names():
        raise BundleError("the model bundle has no segmentation network")
