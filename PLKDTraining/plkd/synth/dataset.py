"""Write a synthetic data set in the VALDO-like layout of ``docs/design.md`` with its manifest.

``OUT/sub-0001/sub-0001_space-T2S_desc-masked_T2S.nii.gz`` (image),
``..._space-T2S_CMB.nii.gz`` (binary label) and ``..._space-T2S_desc-brain_mask.nii.gz``;
``OUT/manifest.json`` is rewritten atomically after every subject, so an interrupted run leaves
a valid manifest of the subjects already written.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from plkd import __version__
from plkd.atomic import write_json_atomic
from plkd.errors import PLKDError, check_seed
from plkd.modalities import MODALITIES
from plkd.progress import Progress, ProgressMode
from plkd.synth.domain import DOMAINS
from plkd.synth.earlier import clear_earlier_data_set, data_set_settings
from plkd.synth.lesions import MODELS
from plkd.synth.subject import SynthSubject, generate_subject, parse_spacing, subject_seed
from plkd.volumes import save_volume

MANIFEST_FORMAT = "plkd-synth/1"

log = logging.getLogger(__name__)


def parse_count(count: int | str | None) -> tuple[int, int] | None:
    """A microbleed count ``"5"`` or range ``"0-10"`` as ``(min, max)``; ``None`` means random."""
    if count is None:
        return None
    text = str(count).strip()
    try:
        parts = [int(p) for p in text.split("-")] if "-" in text else [int(text)] * 2
    except ValueError:
        raise PLKDError(f"microbleed count must be N or MIN-MAX (e.g. 3 or 0-10), not {count!r}") from None
    if len(parts) != 2 or parts[0] < 0 or parts[1] < parts[0] or parts[1] > 200:
        raise PLKDError(f"microbleed count must be N or MIN-MAX with 0 <= MIN <= MAX <= 200, not {count!r}")
    return parts[0], parts[1]


def subject_files(out_dir: Path, sid: str, modality: str) -> dict[str, Path]:
    """Paths of a subject's image, label and mask in the data set layout."""
    d = out_dir / sid
    return {
        "image": d / f"{sid}_space-{modality}_desc-masked_{modality}.nii.gz",
        "label": d / f"{sid}_space-{modality}_CMB.nii.gz",
        "mask": d / f"{sid}_space-{modality}_desc-brain_mask.nii.gz",
    }


def save_subject(subject: SynthSubject, out_dir: Path, sid: str, modality: str) -> dict[str, Any]:
    """Write one subject's volumes; returns its manifest entry."""
    files = subject_files(out_dir, sid, modality)
    save_volume(files["image"], subject.image.data, subject.image.affine, dtype=np.float32)
    save_volume(files["label"], subject.label.data, subject.label.affine, dtype=np.uint8)
    save_volume(files["mask"], subject.mask.data, subject.mask.affine, dtype=np.uint8)
    return {
        "seed": subject.seed,
        "files": {k: str(p.relative_to(out_dir)) for k, p in files.items()},
        "shape": list(subject.image.shape),
        "microbleeds": subject.microbleeds,
        "hidden_microbleeds": subject.hidden_microbleeds,
        "mimics": subject.mimics,
        "params": subject.params,
    }


def _make_one(job: dict[str, Any]) -> tuple[str, dict[str, Any], float]:
    """Generate and write one subject (runs in a worker process with ``--jobs``)."""
    t0 = time.perf_counter()
    subject = generate_subject(job["seed"], **job["options"])
    entry = save_subject(subject, job["out_dir"], job["sid"], job["options"]["modality"])
    if job["preview"]:
        from plkd.synth.preview import write_preview

        write_preview(subject, job["out_dir"] / job["sid"] / f"{job['sid']}_preview.png")
    return job["sid"], entry, time.perf_counter() - t0


def phase_masked_subjects(seed: int, n_subjects: int, share: float) -> np.ndarray:
    """Which of ``n_subjects`` subjects (bool array) get SWI's phase-mask weighting.

    Each with probability ``share`` (0-1), from a random stream of its own, so that the other
    draws of :func:`write_dataset` (and so data sets made without it) stay as they were.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0x9A5E])).random(int(n_subjects)) < share


def write_dataset(
    out_dir: str | os.PathLike[str],
    n_subjects: int,
    *,
    seed: int = 0,
    modality: str = "T2S",
    count: int | str | None = None,
    spacing: float | str | Sequence[float] = 1.0,
    lesion_model: str = "dipole",
    fine_spacing: float = 1.0,
    domain: str = "standard",
    phase_mask: bool | float = False,
    preview: bool = False,
    jobs: int = 1,
    progress: Progress | ProgressMode = "tqdm",
    overwrite: bool = False,
) -> Path:
    """Generate ``n_subjects`` subjects into ``out_dir``; returns the manifest path.

    Subject ``i`` (``sub-0001`` ... ) uses the seed ``subject_seed(seed, i)``, recorded in the
    manifest, so any subject can be regenerated alone with :func:`generate_subject`.
    ``phase_mask`` (SWI only) adds SWI's phase-mask weighting (:mod:`plkd.synth.phase_mask`):
    ``True`` (or 1.0) to every subject, a share in (0, 1) to that share of the subjects, drawn per
    subject from its own random stream (scanners export SWI with and without it; the magnitude
    without it looks like a T2*-weighted GRE). ``False`` or 0 to none.

    ``out_dir`` ends up holding this data set alone (:mod:`plkd.synth.earlier`): an earlier one
    made there with other settings, or with subjects this run does not write, is refused unless
    ``overwrite``, which removes it first; files ``plkd synth`` does not write are refused.

    Raises:
        PLKDError: a bad count, spacing, modality, model, domain or share.
        InputError: ``out_dir`` holds another data set (without ``overwrite``) or other files.
    """
    check_seed(seed, "seed")
    if not 1 <= int(n_subjects) <= 100000:
        raise PLKDError(f"number of subjects must be 1-100000, not {n_subjects}")
    if int(jobs) < 1:
        raise PLKDError(f"jobs must be at least 1, not {jobs}")
    if modality not in MODALITIES:
        raise PLKDError(f"modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
    if lesion_model not in MODELS:
        raise PLKDError(f"microbleed model must be one of {', '.join(MODELS)}, not {lesion_model!r}")
    if not 0.3 <= float(fine_spacing) <= 4.0:
        raise PLKDError(f"fine spacing must be 0.3-4 mm, not {fine_spacing}")
    if domain not in DOMAINS:
        raise PLKDError(f"simulator domain must be one of {', '.join(DOMAINS)}, not {domain!r}")
    share = float(phase_mask)
    if not 0.0 <= share <= 1.0:
        raise PLKDError(f"phase-mask share must be 0-1, not {phase_mask}")
    if share > 0 and modality != "SWI":
        raise PLKDError("phase-mask weighting is part of SWI; use it with modality SWI")
    masked = phase_masked_subjects(seed, int(n_subjects), share)
    sp = parse_spacing(spacing)
    counts = parse_count(count)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PLKDError(f"output {out} exists and is not a folder")
    prog = progress if isinstance(progress, Progress) else Progress(progress)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E7]))
    job_list = []
    for i in range(int(n_subjects)):
        n = None if counts is None else int(rng.integers(counts[0], counts[1] + 1))
        options = {
            "modality": modality,
            "n_microbleeds": n,
            "spacing": sp.tolist(),
            "lesion_model": lesion_model,
            "fine_spacing": fine_spacing,
            "domain": domain,
        }
        if masked[i]:  # absent otherwise: jobs, and so manifests, of earlier data sets stay as they were
            options["phase_mask"] = True
        job_list.append(
            {
                "seed": subject_seed(seed, i),
                "sid": f"sub-{i + 1:04d}",
                "options": options,
                "out_dir": out,
                "preview": preview,
            }
        )

    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "modality": modality,
        "spacing_mm": [float(v) for v in sp],
        "base_seed": int(seed),
        "lesion_model": lesion_model,
        "domain": domain,
        "count": None if count is None else str(count),
        **({"phase_mask": True if share == 1.0 else share} if share > 0 else {}),
        "fine_spacing": float(fine_spacing),
        "plkd_version": __version__,
        "disclaimer": "Synthetic data on MNI ICBM152 2009a anatomy; not patient data.",
        "subjects": {},
    }
    path = out / "manifest.json"
    subject_ids = [job["sid"] for job in job_list]
    clear_earlier_data_set(out, subject_ids, data_set_settings(manifest), overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    prog.start("synth", total=len(job_list))
    if int(jobs) == 1:
        results = map(_make_one, job_list)
        _collect(results, manifest, path, prog)
    else:
        with ProcessPoolExecutor(max_workers=int(jobs)) as pool:
            _collect(pool.map(_make_one, job_list), manifest, path, prog)
    prog.finish()
    return path


def _collect(results, manifest: dict[str, Any], path: Path, prog: Progress) -> None:
    for sid, entry, seconds in results:
        manifest["subjects"][sid] = entry
        write_json_atomic(path, manifest)
        log.info("%s: %d microbleed(s), %.1f s", sid, len(entry["microbleeds"]), seconds)
        prog.advance(subject=sid, n_microbleeds=len(entry["microbleeds"]))
