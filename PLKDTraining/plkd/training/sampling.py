"""Training subjects in memory and the patches drawn from them.

Every batch is a pure function of a :class:`numpy.random.Generator` that the trainer seeds with
``(seed, stage, step, rank)``: resuming at step ``s`` draws exactly the batch an uninterrupted run
would have drawn, and each DDP rank draws different patches.

Patch centres come from three pools (fractions in the ``sampling`` section):

- **positives**: microbleed centres (connected components of the label; the manifest's voxel
  centres when no label map exists), shifted by a random jitter;
- **hard negatives**: things that look like microbleeds but are not, in two sub-pools. *Mimics*
  are the data set's named mimics (``plkd synth`` manifests list veins, calcifications, iron,
  air–tissue dropout) and, when a screening network is given, its highest-scoring false
  candidates; *dark spots* are local minima of the normalised image inside the brain below a
  z-score. Dark spots outnumber mimics ten to one, yet mimics cause the false positives, so a
  hard negative comes from the mimics with probability ``mimic_share``. With ``mimic_balance:
  kind`` a mimic patch first picks one of the kinds the subject has (vein, calcification, iron,
  air–tissue dropout, cavernoma, screening false positive) with equal probability, then one of
  its centres: a vein gives a centre per point of its path and a brain 100-200 of them, against
  0-5 calcifications, so drawing centres alone showed a calcification in about one mimic patch
  of a hundred, and calcifications were 13 of the shipped teacher's 15 false positives on
  test10 at 1 mm (docs/results.md, step 9). ``instance`` (the default) draws centres alone: a
  teacher fine-tuned with ``kind`` had fewer false positives but also lost small and large
  microbleeds (step 9), so it stays an option until a full training run decides.
  ``mimic_kind_weights`` sets each kind's relative chance under ``kind`` (a kind not listed: 1, 0:
  never), e.g. calcifications up and the cavernoma-like lesions down. Anything within
  ``exclusion_mm`` of a microbleed is dropped;
- **random** voxels of the brain mask.

Patches are cut around a centre voxel (``start = centre - size // 2``) and padded with zeros
(the background value after normalisation) where they leave the volume.

A share ``augment.geometry_p`` of the patches is shown as another scanner's grid would deliver it
after the predictor's resampling (:mod:`plkd.training.geometry_augment`): the anatomy turned by an
oblique stack's angle about the centre voxel, acquired with other pixels, slices and slice
profile, then interpolated back to 1 mm. Image, label, screening target and the teacher's input
of a distillation pair all follow the same rotation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from nibabel.orientations import apply_orientation
from scipy import ndimage

from plkd.data.datasets import Subject, load_subject
from plkd.data.scans import image_sha256
from plkd.errors import InputError
from plkd.inference.brainmask import resolve_brain_mask
from plkd.inference.preprocess import effective_lr_factor, network_axes
from plkd.label_grid import resample_label
from plkd.lowres import declared_lr_factor, simulate_lowres
from plkd.metrics.components import binarise_reference, label_components
from plkd.models.screening import central_box
from plkd.normalise import normalise_intensity
from plkd.resample import resample_to_spacing
from plkd.training.augment import AugmentParams, apply_geometric, apply_intensity, draw_params
from plkd.training.geometry_augment import GeometryParams, acquire, draw_geometry, rotate_patch, source_shape
from plkd.volumes import Volume

log = logging.getLogger(__name__)


@dataclass
class SubjectArrays:
    """One training subject on the model grid, ready for patch sampling."""

    id: str
    image: np.ndarray  # normalised, float32
    label: np.ndarray  # uint8, 0/1
    mask: np.ndarray  # bool
    affine: np.ndarray
    positives: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    mimics: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    #: Kind of each mimic centre (``vein``, ``calcification``, ..., ``screening``), same length.
    mimic_kinds: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<U32"))
    dark_spots: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    brain_voxels: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    #: Slice thickness of the image as given, in model-grid voxels (an LR@k image of ``plkd lowres``: at least k).
    lr_factor: float = 1.0
    #: :func:`plkd.data.scans.image_sha256` of the image as read, so that tuning can tell a training scan.
    image_sha256: str = ""
    #: :func:`plkd.data.scans.image_sha256` of the label map and of the brain-mask file as read (``None``: no
    #: file), so that a resumed run can tell a re-drawn label or another mask (:mod:`plkd.training.pipeline`).
    label_sha256: str | None = None
    mask_sha256: str | None = None
    #: What bringing the label onto its image's grid did (turned, resampled: :mod:`plkd.label_grid`), for run.json.
    label_grid_notes: tuple[str, ...] = ()

    @property
    def hard_negatives(self) -> np.ndarray:
        """Every hard-negative centre: mimics, then dark spots."""
        return np.concatenate([self.mimics, self.dark_spots], axis=0)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


def _network_frame(vol: Volume | None, affine: np.ndarray) -> Volume | None:
    """``vol`` (on the grid ``affine``) turned as :func:`plkd.inference.preprocess.network_axes` says: transposes
    and flips only, every voxel keeps its RAS position; unchanged (the same object) for RAS-stored axial data."""
    if vol is None:
        return None
    ornt, perm, new_affine = network_axes(affine, vol.shape)
    if perm == [0, 1, 2] and np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return vol
    data = np.ascontiguousarray(np.transpose(apply_orientation(vol.data, ornt), perm))
    return Volume(data=data, affine=new_affine, path=vol.path, header=None, notes=list(vol.notes))


def _to_grid(vol: Volume, spacing: Sequence[float], order: int) -> Volume:
    if np.allclose(vol.spacing, spacing, rtol=0.01):
        return vol
    return resample_to_spacing(vol, tuple(float(s) for s in spacing), order=order)


def _ras_to_voxel(affine: np.ndarray, ras: Sequence[float]) -> np.ndarray:
    return (np.linalg.inv(affine) @ np.append(np.asarray(ras, dtype=float), 1.0))[:3]


def _meta_centres(
    meta: dict[str, Any], key: str, affine: np.ndarray, source_affine: np.ndarray | None = None
) -> list[np.ndarray]:
    """Voxel centres of manifest entries (``center_ras`` preferred: it survives resampling).

    An entry with a ``path_ras`` (a vein) contributes every point of its path: a vein looks like a
    microbleed wherever a slice cuts it, not only at its middle.
    """
    return [centre for centre, _kind in _meta_entries(meta, key, affine, source_affine)]


def _meta_entries(
    meta: dict[str, Any], key: str, affine: np.ndarray, source_affine: np.ndarray | None = None
) -> list[tuple[np.ndarray, str]]:
    """``(voxel centre, kind)`` of manifest entries, as :func:`_meta_centres` (kind ``mimic`` when unnamed).

    A ``center_voxel`` counts on the file's own grid, ``source_affine`` (default: ``affine``)."""
    source = affine if source_affine is None else np.asarray(source_affine, dtype=np.float64)
    out = []
    for item in meta.get(key) or []:
        if not isinstance(item, dict):
            continue
        kind = str(item.get("kind") or "mimic")
        if isinstance(item.get("path_ras"), list) and item["path_ras"]:
            out.extend((_ras_to_voxel(affine, p), kind) for p in item["path_ras"])
        elif item.get("center_ras") is not None:
            out.append((_ras_to_voxel(affine, item["center_ras"]), kind))
        elif item.get("center_voxel") is not None:
            ras = source[:3, :3] @ np.asarray(item["center_voxel"], dtype=float) + source[:3, 3]
            out.append((_ras_to_voxel(affine, ras), kind))
    return out


def label_centres(label: np.ndarray) -> np.ndarray:
    """Rounded centres of mass ``(M, 3)`` of the microbleeds (connected components,
    :data:`plkd.metrics.components.CONNECTIVITY`) of a binary label."""
    comps, n = label_components(label > 0)
    if n == 0:
        return np.zeros((0, 3), dtype=np.int64)
    centres = ndimage.center_of_mass(np.ones_like(comps, dtype=np.float32), comps, index=range(1, n + 1))
    return np.rint(np.asarray(centres)).astype(np.int64).reshape(-1, 3)


def label_on_grid(label: Volume, affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(label, positives)`` on the grid ``affine``/``shape`` (the model grid): a uint8 0/1 map and the
    ``(M, 3)`` voxel centres of its microbleeds, one per connected component (the connectivity of the
    metrics) of the label as given.

    Values are rounded to the label values as plkd evaluate reads a reference: a float label's rounding
    noise (1e-6 on the background) read as > 0 made the whole field of view one microbleed. On another
    grid the map is brought over by :func:`plkd.label_grid.resample_label` (components found before
    resampling, their centres carried through world space, a linear resampling cut at 0.5 with each centre
    kept): nearest-neighbour resampling lost microbleeds smaller than a model voxel (a 0.5 mm label kept 6
    of 8), which then stayed in the image as dark spots taught as negatives.
    """
    if label.shape == tuple(shape) and np.allclose(label.affine, affine, atol=1e-4):
        arr = binarise_reference(label.data).astype(np.uint8)
        return arr, label_centres(arr)
    arr, positives = resample_label(label, affine, shape)
    return arr.astype(np.uint8), positives


def dark_spots(
    image: np.ndarray, mask: np.ndarray, threshold: float, limit: int, rng: np.random.Generator
) -> np.ndarray:
    """Up to ``limit`` local minima (3×3×3) of ``image`` below ``threshold`` inside the eroded ``mask``."""
    inner = ndimage.binary_erosion(mask, iterations=2)
    minima = (image == ndimage.minimum_filter(image, size=3)) & (image < threshold) & inner
    coords = np.argwhere(minima)
    if len(coords) > limit:
        coords = coords[np.sort(rng.choice(len(coords), size=limit, replace=False))]
    return coords.astype(np.int64)


def drop_near(coords: np.ndarray, centres: np.ndarray, spacing: np.ndarray, min_mm: float) -> np.ndarray:
    """``coords`` without those closer than ``min_mm`` to any of ``centres``."""
    return coords[far_from(coords, centres, spacing, min_mm)]


def far_from(coords: np.ndarray, centres: np.ndarray, spacing: np.ndarray, min_mm: float) -> np.ndarray:
    """Boolean ``(len(coords),)``: which ``coords`` lie at least ``min_mm`` from every one of ``centres``."""
    if len(coords) == 0 or len(centres) == 0:
        return np.ones(len(coords), dtype=bool)
    d = np.linalg.norm((coords[:, None, :] - centres[None, :, :]) * spacing, axis=2)
    return d.min(axis=1) >= min_mm


def prepare_subject(subject: Subject, cfg: dict[str, Any], seed: int) -> SubjectArrays:
    """Load, bring to the model grid, normalise and index one subject for sampling."""
    image, label, mask = load_subject(subject)
    digest = image_sha256(image.data)
    label_digest = None if label is None else image_sha256(label.data)
    mask_digest = None if mask is None else image_sha256(mask.data)
    # The brain the predictor normalises over and searches (plkd.inference.brainmask): the mask file read as it
    # reads one, else the mask it computes from the image. "Not 0 on the model grid" took a resampled image's
    # spline ringing for brain (95 % of the field of view of a skull-stripped 0.5 x 0.5 x 3 mm scan, against 38 %)
    # and an unstripped head's skull and air too, so intensities were z-scored over another region than at
    # prediction and dark spots and random patches were drawn from the background.
    try:
        brain, _ = resolve_brain_mask(image, mask, warn_small=False)
    except InputError as exc:  # said of a scan, without naming which of the data set's
        raise InputError(f"{subject.id}: {exc}") from None
    mask = Volume(brain.astype(np.float32), image.affine)
    spacing = cfg["data"]["spacing_mm"]
    lr_factor = max(
        effective_lr_factor(image.affine, np.asarray(spacing, dtype=np.float64)),
        declared_lr_factor(image.header) or 1.0,
    )
    source_affine = image.affine
    # The frame the predictor gives the networks (RAS axis order, an anisotropic grid's slice axis last):
    # a data set stored sagittally was learnt with its brains turned, and its students thinned across X.
    image, label, mask = (_network_frame(v, source_affine) for v in (image, label, mask))
    image = _to_grid(image, spacing, order=3)
    mask_arr = _to_grid(mask, spacing, order=1).data >= 0.5  # as plkd.inference.preprocess.prepare carries it
    if not mask_arr.any():
        mask_arr = np.ones(image.shape, dtype=bool)
    if label is not None:
        label_arr, positives = label_on_grid(label, image.affine, image.shape)
    else:
        label_arr, positives = np.zeros(image.shape, dtype=np.uint8), np.zeros((0, 3), dtype=np.int64)
    data = normalise_intensity(image.data, mask_arr, cfg["data"]["clip_percentiles"])
    if label is None:
        meta = _meta_centres(subject.meta, "microbleeds", image.affine, source_affine)
        positives = np.rint(np.asarray(meta)).astype(np.int64).reshape(-1, 3)
    smp = cfg["sampling"]
    rng = np.random.default_rng([seed, 7919, sum(map(ord, subject.id))])
    entries = _meta_entries(subject.meta, "mimics", image.affine, source_affine)
    mimics = np.asarray([c for c, _ in entries], dtype=np.float64).reshape(-1, 3)
    kinds = np.asarray([k for _, k in entries], dtype="<U32")
    spots = dark_spots(data, mask_arr, smp["minima_threshold"], smp["max_minima"], rng)
    sp = np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0))
    mimics = np.rint(mimics).astype(np.int64)
    keep = np.all((mimics >= 0) & (mimics <= np.asarray(image.shape) - 1), axis=1)
    keep &= far_from(mimics, positives, sp, smp["exclusion_mm"])
    return SubjectArrays(
        id=subject.id,
        image=data,
        label=label_arr,
        mask=mask_arr,
        affine=image.affine,
        positives=positives,
        mimics=mimics[keep],
        mimic_kinds=kinds[keep],
        dark_spots=drop_near(spots, positives, sp, smp["exclusion_mm"]),
        brain_voxels=np.argwhere(mask_arr)[:: max(1, int(mask_arr.sum()) // 200_000)].astype(np.int64),
        lr_factor=float(lr_factor),
        image_sha256=digest,
        label_sha256=label_digest,
        mask_sha256=mask_digest,
        label_grid_notes=tuple(label.notes) if label is not None else (),
    )


def extract_patch(arr: np.ndarray, centre: Sequence[int], size: Sequence[int], fill: float = 0.0) -> np.ndarray:
    """The ``size`` box of ``arr`` starting at ``centre - size // 2``, padded with ``fill`` outside."""
    out = np.full(tuple(int(s) for s in size), fill, dtype=arr.dtype)
    start = [int(c) - int(s) // 2 for c, s in zip(centre, size, strict=True)]
    src, dst = [], []
    for a in range(3):
        lo, hi = max(start[a], 0), min(start[a] + int(size[a]), arr.shape[a])
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start[a], hi - start[a]))
    out[tuple(dst)] = arr[tuple(src)]
    return out


class PatchSampler:
    """Draws screening and segmentation batches from prepared subjects."""

    def __init__(self, subjects: Sequence[SubjectArrays], cfg: dict[str, Any]) -> None:
        if not subjects:
            raise InputError("no training subjects to sample patches from")
        self.subjects = list(subjects)
        self.smp = cfg["sampling"]
        self.aug = cfg["augment"]
        self.screening_lr = {k: v for k, v in cfg["screening"].items() if k.startswith("lr_")}
        # A configuration saved before the geometry augmentation existed has no key: off, as then.
        self.geometry_p = float(self.aug.get("geometry_p", 0.0))
        self.with_positives = [i for i, s in enumerate(self.subjects) if len(s.positives)]
        self.with_hard = [i for i, s in enumerate(self.subjects) if len(s.hard_negatives)]
        # Per subject: (the mimic_kinds array they were made from, centre indices of each kind in sorted order).
        self._kind_groups: dict[int, tuple[np.ndarray, tuple[list[np.ndarray], np.ndarray | None]]] = {}
        if not self.with_positives:
            raise InputError("none of the training subjects has a microbleed label; nothing to learn from")

    def add_hard_negatives(self, index: int, coords: np.ndarray, kind: str = "screening") -> None:
        """Append centres of one ``kind`` to subject ``index``'s mimic pool (e.g. screening false positives)."""
        s = self.subjects[index]
        coords = drop_near(
            np.asarray(coords, dtype=np.int64).reshape(-1, 3), s.positives, s.spacing, self.smp["exclusion_mm"]
        )
        s.mimics = np.concatenate([s.mimics, coords], axis=0)
        s.mimic_kinds = np.concatenate([s.mimic_kinds, np.full(len(coords), kind, dtype="<U32")])
        if len(s.hard_negatives) and index not in self.with_hard:
            self.with_hard.append(index)
            self.with_hard.sort()

    def draw_centre(self, rng: np.random.Generator) -> tuple[int, np.ndarray, str]:
        """``(subject index, centre voxel, kind)`` with kind ``positive``, ``hard`` or ``random``."""
        u = rng.random()
        pf, hf = self.smp["positive_fraction"], self.smp["hard_negative_fraction"]
        if u < pf:
            i = int(rng.choice(self.with_positives))
            s = self.subjects[i]
            jitter = np.asarray(self.smp["positive_jitter"])
            centre = s.positives[rng.integers(len(s.positives))] + rng.integers(-jitter, jitter + 1)
            return i, centre, "positive"
        if u < pf + hf and self.with_hard:
            i = int(rng.choice(self.with_hard))
            s = self.subjects[i]
            use_mimic = len(s.mimics) and (not len(s.dark_spots) or rng.random() < self.smp["mimic_share"])
            mimic = self._mimic_index(s, rng) if use_mimic else None
            if mimic is not None:
                return i, s.mimics[mimic], "hard"
            if len(s.dark_spots):
                return i, s.dark_spots[rng.integers(len(s.dark_spots))], "hard"
        i = int(rng.integers(len(self.subjects)))
        s = self.subjects[i]
        return i, s.brain_voxels[rng.integers(len(s.brain_voxels))], "random"

    def _mimic_index(self, s: SubjectArrays, rng: np.random.Generator) -> int | None:
        """Index of a mimic centre: a kind first, with the chances of ``mimic_kind_weights`` (equal when
        they are all equal), then one of its centres (``mimic_balance: kind``); or any centre
        (``instance``, and configurations saved before the setting existed). ``None`` when every kind
        the subject has weighs 0."""
        if self.smp.get("mimic_balance", "instance") != "kind" or len(s.mimic_kinds) != len(s.mimics):
            return int(rng.integers(len(s.mimics)))
        groups, chances = self._groups_of(s)
        if chances is None:  # equal weights: the draw of runs made before the weights existed
            members = groups[rng.integers(len(groups))]
        elif not len(groups):
            return None
        else:
            members = groups[rng.choice(len(groups), p=chances)]
        return int(members[rng.integers(len(members))])

    def _groups_of(self, s: SubjectArrays) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Centre indices of each mimic kind of ``s`` with a weight above 0 (kinds sorted), and the chance
        of each (``None``: all equal); computed again only when its pool was replaced (the pools are never
        changed in place)."""
        cached = self._kind_groups.get(id(s))
        if cached is None or cached[0] is not s.mimic_kinds:
            kinds, inverse = np.unique(s.mimic_kinds, return_inverse=True)
            table = self.smp.get("mimic_kind_weights", {})
            weights = np.array([float(table.get(str(k), 1.0)) for k in kinds])
            keep = np.flatnonzero(weights > 0)
            groups = [np.flatnonzero(inverse == k) for k in keep]
            equal = len(keep) == len(kinds) and np.all(weights == weights[:1])
            chances = None if equal else weights[keep] / max(weights[keep].sum(), 1e-300)
            cached = (s.mimic_kinds, (groups, chances))
            self._kind_groups[id(s)] = cached
        return cached[1]

    def draw_acquisition(
        self, rng: np.random.Generator, factor: int | None, noise_std: float | None
    ) -> GeometryParams | None:
        """A simulated acquisition for one patch with probability ``augment.geometry_p``, else ``None``.

        At ``geometry_p`` 0 no random number is drawn, so runs made before this option resume and
        reproduce exactly. ``factor``/``noise_std``: see
        :func:`plkd.training.geometry_augment.draw_geometry`.
        """
        if self.geometry_p <= 0 or rng.random() >= self.geometry_p:
            return None
        return draw_geometry(rng, self.aug, factor=factor, noise_std=noise_std)

    def acquired_patch(
        self, s: SubjectArrays, centre: np.ndarray, size: tuple[int, int, int], g: GeometryParams
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(anatomy, acquired, label)`` of the ``size`` patch at ``centre`` under acquisition ``g``.

        ``anatomy`` is the rotated HR patch, ``label`` the rotated truth (nearest neighbour, so the
        centre voxel keeps its value), ``acquired`` the simulated scan on the same 1-mm grid.
        """
        src = source_shape(size, g)
        anatomy, acquired = acquire(extract_patch(s.image, centre, src), size, g)
        label = rotate_patch(extract_patch(s.label, centre, src), size, g.rotation, order=0)
        return anatomy, acquired, label

    def screening_batch(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """``{"image": (n,1,X,Y,Z), "target": (n,)}``: target 1 when a microbleed centre lies in the central box.

        A share ``screening.lr_share`` of the patches is shown as LR@k (``screening.lr_factors``,
        ``lr_modes``) so that one screening network serves every resolution the students do; the
        target stays the HR truth, as for the students. At share 0 no extra random number is drawn,
        so runs made before this option existed resume and reproduce exactly. A patch under the
        geometry augmentation (LR@k ones with slices k pixels thick) judges its target on the
        microbleed centres turned with it.
        """
        size = tuple(self.smp["screening_patch"])
        box = central_box(size)
        lr = self.screening_lr
        images, targets = [], []
        for _ in range(n):
            i, centre, _kind = self.draw_centre(rng)
            s = self.subjects[i]
            p = draw_params(rng, self.aug, size)
            factor = 0
            if lr["lr_share"] > 0 and rng.random() < lr["lr_share"]:
                factor = int(lr["lr_factors"][int(rng.integers(len(lr["lr_factors"])))])
            lr_k = factor > 1
            g = self.draw_acquisition(rng, factor if lr_k else None, float(lr["lr_noise_std"]) if lr_k else None)
            offsets = s.positives - np.asarray(centre)
            if g is not None:
                offsets = offsets @ g.rotation  # HR offsets → the patch's turned axes (R is orthogonal)
            rel = offsets + np.asarray(size) // 2
            inside = (
                np.all((rel >= box[:, 0] - 1e-6) & (rel <= box[:, 1] + 1e-6), axis=1) if len(rel) else np.zeros(0, bool)
            )
            if g is not None:
                img = apply_geometric(self.acquired_patch(s, centre, size, g)[1], p)
            elif lr_k:
                margin = 2 * factor
                big = apply_geometric(extract_patch(s.image, centre, (size[0], size[1], size[2] + 2 * margin)), p)
                img = lowres_patch(big, factor, lr["lr_modes"], float(lr["lr_noise_std"]), rng)[..., margin:-margin]
            else:
                img = apply_geometric(extract_patch(s.image, centre, size), p)
            images.append(apply_intensity(img, p)[None])
            targets.append(float(inside.any()))
        return {"image": np.stack(images), "target": np.asarray(targets, dtype=np.float32)}

    def segmentation_batch(
        self,
        rng: np.random.Generator,
        n: int,
        factor: int | None = None,
        lr_modes: Sequence[str] = ("interp",),
        lr_noise_std: float = 0.0,
    ) -> dict[str, np.ndarray]:
        """``{"image", "label"}`` (and ``"lr"`` when ``factor``): arrays ``(n, 1, X, Y, Z)``.

        With ``factor`` the HR patch is cut with ``2 * factor`` extra slices on each Z side,
        augmented, turned into its LR@factor version (random mode among ``lr_modes``, random
        slice phase) and both are cropped back, so the LR patch has the context a whole volume
        would give it. Under the geometry augmentation the ``image`` (no ``factor``) or the ``lr``
        patch is the simulated acquisition, and the HR ``image`` of a pair and the ``label`` are
        turned with it.
        """
        size = tuple(self.smp["segmentation_patch"])
        margin = 2 * int(factor) if factor and factor > 1 else 0
        big = (size[0], size[1], size[2] + 2 * margin)
        out: dict[str, list[np.ndarray]] = {"image": [], "label": [], "lr": []}
        for _ in range(n):
            i, centre, _kind = self.draw_centre(rng)
            s = self.subjects[i]
            p: AugmentParams = draw_params(rng, self.aug, size)
            g = self.draw_acquisition(rng, factor or None, lr_noise_std if factor else None)
            if g is not None:
                anatomy, acquired, lab = (apply_geometric(a, p) for a in self.acquired_patch(s, centre, size, g))
                if factor:
                    out["lr"].append(apply_intensity(acquired, p)[None])
                out["image"].append(apply_intensity(anatomy if factor else acquired, p)[None])
                out["label"].append(lab[None].astype(np.float32))
                continue
            hr = apply_geometric(extract_patch(s.image, centre, big), p)
            lab = apply_geometric(extract_patch(s.label, centre, size), p)
            crop = (slice(None), slice(None), slice(margin, margin + size[2]))
            if factor:
                lr = lowres_patch(hr, int(factor), lr_modes, lr_noise_std, rng)
                out["lr"].append(apply_intensity(lr[crop], p)[None])
            out["image"].append(apply_intensity(hr[crop], p)[None])
            out["label"].append(lab[None].astype(np.float32))
        batch = {k: np.stack(v) for k, v in out.items() if v}
        return batch


def lowres_patch(
    hr: np.ndarray, factor: int, modes: Sequence[str], noise_std: float, rng: np.random.Generator
) -> np.ndarray:
    """The LR@factor version of an (augmented) HR patch: random mode among ``modes``, random phase."""
    mode = str(modes[int(rng.integers(len(modes)))])
    offset = int(rng.integers(factor)) if mode == "interp" else None
    noise_seed = int(rng.integers(0, 2**31 - 1))
    # Gaussian, not Rician: the patch is already normalised (signed z-scores), and the magnitude of
    # Rician noise would turn every dark microbleed into a bright spot.
    return simulate_lowres(
        hr, factor, axis=2, mode=mode, offset=offset, noise_std=noise_std, noise="gaussian", rng=noise_seed
    )


def load_subjects(subjects: Sequence[Subject], cfg: dict[str, Any], seed: int, workers: int = 0) -> list[SubjectArrays]:
    """:func:`prepare_subject` for each subject, in order (logged, since this reads every volume).

    With ``workers > 0`` (and a platform that can fork) that many processes prepare subjects at
    once: reading, resampling and indexing are per subject, so the result is the same.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    subjects = list(subjects)
    if workers > 0 and len(subjects) > 1 and "fork" in multiprocessing.get_all_start_methods():
        log.info("loading %d subjects with %d processes", len(subjects), workers)
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(int(workers), len(subjects)), mp_context=ctx) as pool:
            return list(pool.map(prepare_subject, subjects, [cfg] * len(subjects), [seed] * len(subjects)))
    out = []
    for s in subjects:
        log.info("loading %s", s.id)
        out.append(prepare_subject(s, cfg, seed))
    return out
