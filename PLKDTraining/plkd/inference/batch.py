"""Many inputs: expanding files/folders/globs, sharding, skipping finished work, per-input errors.

One input failing with a user error (unreadable, wrong dimensions, bad mask, ...) is reported in
one line and the others continue; the caller turns the failures into a non-zero exit status.
"""

from __future__ import annotations

import glob
import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plkd.errors import BundleError, InputError, PLKDError
from plkd.inference.outputs import OutputPaths, output_paths, write_prediction
from plkd.inference.predictor import Predictor
from plkd.location.summary import describe as describe_location
from plkd.naming import is_nifti
from plkd.progress import Progress
from plkd.volumes import EchoChoice, load_label, load_volume

log = logging.getLogger(__name__)

_MODALITY_TOKENS = {"SWI": re.compile(r"swi", re.I), "T2S": re.compile(r"t2s|t2star|t2\*|gre", re.I)}


@dataclass
class BatchReport:
    """What :func:`predict_files` did: written, skipped and failed inputs."""

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    #: Inputs among ``failed`` that hit an unexpected error (a bug), not a user mistake.
    internal: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no input failed."""
        return not self.failed


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, folders (their NIfTI files) and glob patterns → a sorted, de-duplicated list.

    A name that matches nothing is kept as is, so that it fails later with "not found" and is
    reported like any other unreadable input.
    """
    found: set[Path] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found.update(c for c in p.iterdir() if c.is_file() and is_nifti(c.name) and not c.name.startswith("."))
        elif not p.exists() and glob.has_magic(str(item)):
            found.update(Path(m) for m in glob.glob(str(item)) if Path(m).is_file() and is_nifti(m))
        else:
            found.add(p)
    return sorted(found, key=lambda q: str(q))


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0 ≤ i < n) → ``(i, n)``; input number k is processed by shard ``k % n``."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise PLKDError(f"--shard must look like i/n with 0 <= i < n (e.g. 0/4), not {text!r}")
    return int(m.group(1)), int(m.group(2))


def select_shard(paths: list[Path], shard: tuple[int, int] | None) -> list[Path]:
    """Every n-th input starting at i, from the sorted list (deterministic across machines)."""
    if shard is None:
        return paths
    i, n = shard
    return paths[i::n]


def parse_ras(text: str | None) -> tuple[float, float, float] | None:
    """``"X,Y,Z"`` (RAS mm) → a float triple."""
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or any(v != v for v in vals):
        raise PLKDError(f"--at-ras must be three numbers X,Y,Z in RAS mm, not {text!r}")
    return vals  # type: ignore[return-value]


def modality_warning(path: Path, bundle_modality: str | None) -> str | None:
    """A warning when the file name suggests a modality other than the bundle's."""
    if not bundle_modality:
        return None
    for modality, pattern in _MODALITY_TOKENS.items():
        if pattern.search(path.name) and modality != bundle_modality.upper():
            others = [m for m, p in _MODALITY_TOKENS.items() if p.search(path.name)]
            if bundle_modality.upper() not in others:
                return (
                    f"{path.name} looks like {modality} but the model was trained on {bundle_modality}; "
                    "results may be poor"
                )
    return None


def predict_files(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    *,
    model: Any = None,
    device: str = "auto",
    mask: str | Path | None = None,
    progress: str | Progress = "tqdm",
    threshold: float | None = None,
    student: str | None = None,
    lr_factor: float | None = None,
    echo: EchoChoice = "rss",
    shard: str | tuple[int, int] | None = None,
    overwrite: bool = False,
    save_probability: bool = False,
    save_model_grid: bool = False,
    at_ras: tuple[float, float, float] | None = None,
    batch_size: int = 16,
    err: Any = None,
) -> BatchReport:
    """Predict every input and write ``NAME_cmb.nii.gz`` + ``NAME_cmb.json`` in ``output_dir``.

    ``model`` is a bundle path, a loaded bundle or ``None`` for the installed default. Finished
    inputs are skipped unless ``overwrite``; ``at_ras`` segments only the microbleed at that
    point (always recomputed). Failed inputs are printed to ``err`` (stderr) in one line each.
    """
    err = err or sys.stderr
    bundle, model_name = resolve_bundle(model)
    prog = progress if isinstance(progress, Progress) else Progress(progress)  # type: ignore[arg-type]
    shard_t = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    paths = select_shard(expand_inputs(inputs), shard_t)
    if not paths:
        raise InputError("no input NIfTI files found (give files, folders or glob patterns)")
    if mask is not None and len(paths) > 1:
        raise PLKDError("--mask can only be used with a single input")
    predictor = Predictor(bundle, device=device, batch_size=batch_size, threshold=threshold, progress=prog)
    opt = _Options(
        model_name=model_name,
        modality=(getattr(bundle, "manifest", None) or {}).get("modality"),
        mask=mask,
        echo=echo,
        student=student,
        lr_factor=lr_factor,
        at_ras=at_ras,
        save_probability=save_probability,
        save_model_grid=save_model_grid,
    )
    report = BatchReport()
    for path in paths:
        out = output_paths(path, output_dir)
        if out.finished() and not overwrite and at_ras is None:
            report.skipped.append(path)
            prog.message(f"skipped {path.name}: outputs exist (use --overwrite)", input=str(path))
            continue
        try:
            _predict_one(path, out, predictor, opt, prog)
            report.done.append(path)
        except PLKDError as exc:
            report.failed.append((path, str(exc)))
            print(f"plkd: error: {path.name}: {exc}", file=err)
        except Exception as exc:  # a bug or an unforeseen file: report it and go on with the others
            log.debug("unexpected error on %s", path, exc_info=True)
            report.failed.append((path, f"{type(exc).__name__}: {exc}"))
            report.internal.append(path)
            msg = f"unexpected {type(exc).__name__}: {exc} (run with -vv for details)"
            print(f"plkd: error: {path.name}: {msg}", file=err)
    return report


@dataclass
class _Options:
    """Per-input settings shared by every input of a :func:`predict_files` call."""

    model_name: str
    modality: str | None
    mask: str | Path | None
    echo: EchoChoice
    student: str | None
    lr_factor: float | None
    at_ras: tuple[float, float, float] | None
    save_probability: bool
    save_model_grid: bool


def _predict_one(path: Path, out: OutputPaths, predictor: Predictor, opt: _Options, prog: Progress) -> None:
    t0 = time.perf_counter()
    prog.start("load", 1, input=str(path))
    volume = load_volume(path, echo=opt.echo, what="image")
    mask_vol = load_label(opt.mask, what="brain mask", allow_empty=False) if opt.mask is not None else None
    prog.advance()
    t_load = time.perf_counter() - t0
    if opt.at_ras is not None:
        result = predictor.segment_at(volume, opt.at_ras, mask=mask_vol, lr_factor=opt.lr_factor, student=opt.student)
    else:
        result = predictor.predict(
            volume,
            mask=mask_vol,
            lr_factor=opt.lr_factor,
            student=opt.student,
            probability=opt.save_probability,
            model_grid=opt.save_model_grid,
        )
    warning = modality_warning(path, opt.modality)
    if warning:
        log.warning(warning)
        result.notes.append(warning)
    result.timings = {"load": round(t_load, 4), **result.timings}
    prog.start("write", 1, input=str(path))
    write_prediction(
        result, volume, out, opt.model_name, save_probability=opt.save_probability, save_model_grid=opt.save_model_grid
    )
    prog.advance()
    prog.finish()
    n = result.n_microbleeds
    text = f"{path.name}: {n} microbleed(s)"
    if result.location is not None:  # counts per MARS class (plkd.location)
        text += f"; {describe_location(result.location)}"
    prog.message(text, input=str(path), n_microbleeds=n)


def resolve_bundle(model: Any) -> tuple[Any, str]:
    """A loaded bundle and its display name; ``None`` means the installed default bundle."""
    from plkd.bundle import find_default_bundle, load_bundle

    if model is None:
        path = find_default_bundle()
        if path is None:
            raise BundleError(
                "no model bundle found; give one with --model BUNDLE (train one with 'plkd train' + 'plkd export')"
            )
        model = path
    if hasattr(model, "network"):
        return model, str(getattr(model, "manifest", {}).get("name", "model"))
    bundle = load_bundle(Path(model))
    return bundle, f"{bundle.manifest.get('name', Path(model).name)} ({Path(model)})"
