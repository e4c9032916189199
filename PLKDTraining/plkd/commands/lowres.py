"""``plkd lowres``: make low-resolution versions of a volume or of a whole data set.

``--factor K`` writes the paper's LR@K image on the HR grid (training/evaluation input of a
student); ``--thickness-mm T`` writes a true thick-slice volume on its own coarser grid (what a
scanner would write), with its label map resampled to that grid.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from plkd.atomic import check_output_location, write_json_atomic, write_text_atomic
from plkd.data.datasets import SYNTH_FORMAT, Subject, find_subjects, load_subject
from plkd.errors import InputError, PLKDError, check_seed
from plkd.label_grid import label_onto_image
from plkd.lowres import (
    MODES,
    NOISE_KINDS,
    default_slice_axis,
    mark_lr_factor,
    round_label_values,
    simulate_lowres,
    thick_slab_labels,
    thick_slab_volume,
)
from plkd.lowres_sidecar import remove_lowres_sidecar, sidecar_of, write_lowres_sidecar
from plkd.metrics.components import check_label_values
from plkd.naming import is_nifti, pair_files
from plkd.progress import Progress
from plkd.volumes import Volume, load_label, load_volume, nifti_image, save_image

log = logging.getLogger(__name__)

_EPILOG = """examples:
  plkd lowres sub-01_T2S.nii.gz --factor 4 --out sub-01_LR4.nii.gz
  plkd lowres sub-01_T2S.nii.gz --thickness-mm 3 --label sub-01_CMB.nii.gz \\
      --out sub-01_3mm.nii.gz --label-out sub-01_3mm_CMB.nii.gz
  plkd lowres --dataset synth_data --thickness-mm 4 --out synth_4mm
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``lowres`` sub-command."""
    p = sub.add_parser(
        "lowres",
        help="make LR@k or true thick-slice versions of a volume or a data set",
        description=(
            "Make low-resolution data along the slice axis. --factor K: keep every K-th slice (--mode interp, "
            "the paper's LR@K) or average K slices (--mode slab), then cubic-interpolate back to the input grid. "
            "--thickness-mm T: average the slices into T mm thick slices on a new, coarser grid with the right "
            "affine; labels keep a thick voxel when they cover at least --min-label-fraction of it, and every "
            "lesion keeps at least one voxel. --dataset converts images, labels and brain masks of a whole data "
            "set (plkd synth, VALDO or plain folder) into OUT with the same file layout."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", nargs="?", type=Path, metavar="INPUT", help="HR image (NIfTI); or use --dataset")
    p.add_argument("--dataset", type=Path, metavar="DIR", help="convert every subject of this data set folder")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--factor", type=int, metavar="K", help="LR@K on the input grid (K = 2, 4, 8, ...)")
    how.add_argument("--thickness-mm", type=float, metavar="T", help="true thick slices of T mm on a coarser grid")
    p.add_argument("--out", type=Path, required=True, help="output NIfTI file (or folder with --dataset)")
    p.add_argument("--mode", choices=MODES, default=None, help="with --factor: interp (default) or slab")
    p.add_argument("--offset", type=int, default=None, help="interp mode: which slice of each K to keep (0..K-1)")
    p.add_argument("--label", type=Path, help="label map of INPUT to bring along")
    p.add_argument("--label-out", type=Path, help="output file of the label map (required with --label)")
    p.add_argument(
        "--axis",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="array axis to thin (default: the coarsest; for isotropic input the one closest to superior-inferior)",
    )
    p.add_argument(
        "--noise-std", type=float, default=0.0, help="noise SD as a fraction of the 99th-percentile intensity"
    )
    p.add_argument("--noise", choices=NOISE_KINDS, default="rician", help="noise model (default rician)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the noise (default 0)")
    p.add_argument(
        "--min-label-fraction", type=float, default=0.5, help="thick voxel is labelled at this coverage (default 0.5)"
    )
    p.add_argument("--progress", choices=("tqdm", "jsonl", "none"), default="tqdm", help="progress display")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="with --dataset: remove the NIfTI files and manifest of an earlier conversion in OUT first",
    )
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------------------------


def _check_args(args: argparse.Namespace) -> None:
    if (args.input is None) == (args.dataset is None):
        raise InputError("give either one INPUT image or --dataset DIR")
    if args.thickness_mm is not None and (args.mode is not None or args.offset is not None):
        raise InputError("--mode and --offset apply to --factor; --thickness-mm always averages whole slabs")
    if args.dataset is not None and (args.label is not None or args.label_out is not None):
        raise InputError("--label/--label-out are for one INPUT; --dataset converts the labels it finds")
    if args.label is not None and args.label_out is None:
        raise InputError("--label needs --label-out (where to write the converted label map)")
    if args.label is None and args.label_out is not None:
        raise InputError("--label-out needs --label")
    check_seed(args.seed)
    if not (args.noise_std >= 0 and math.isfinite(args.noise_std)):
        # NaN passed a `< 0` test, and NaN or inf noise wrote an image of NaN voxels with exit status 0.
        raise InputError(f"--noise-std must be a number ≥ 0, not {args.noise_std}")


def _axis(vol: Volume, args: argparse.Namespace) -> int:
    """The array axis thinned: ``--axis``, else the coarsest (the one closest to superior-inferior if isotropic)."""
    return default_slice_axis(vol.affine) if args.axis is None else args.axis


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The conversion's settings, as every record of it names them (a sidecar's ``PLKDLowres``, ``--dataset``'s
    :data:`CONVERSION_RECORD` and synth manifest)."""
    return {
        "mode": "thick-slab" if args.thickness_mm is not None else (args.mode or "interp"),
        "factor": args.factor,
        "thickness_mm": args.thickness_mm,
        "noise_std": args.noise_std,
        "noise": args.noise if args.noise_std else None,
        "seed": args.seed,
        "offset": args.offset,
        "min_label_fraction": args.min_label_fraction,
    }


def _write_sidecar(
    source: Path, output: Path, image: Volume, args: argparse.Namespace, header_changed: list[str], *, always: bool
) -> None:
    """``output``'s JSON sidecar from ``source``'s, without the fields about changed slices (plkd.lowres_sidecar),
    recording the settings and ``header_changed`` (the NIfTI header fields the output changed from its input's);
    ``always``: also when ``source`` has none (one file converted, which has no other record)."""
    write_lowres_sidecar(
        source,
        output,
        _settings(args),
        thickness_mm=args.thickness_mm,
        axis=_axis(image, args),
        header_changed=header_changed,
        always=always,
    )


def _write_output(
    source: Path,
    output: Path,
    img: nib.Nifti1Image,
    before: Any,
    image: Volume,
    args: argparse.Namespace,
    *,
    always_sidecar: bool = False,
) -> list[str]:
    """Write the converted ``img`` and its sidecar (first: an image without its sidecar would be read as another
    modality, a T2* scan); returns the header fields it changed from ``before`` (its input's header), which the
    sidecar records (they were only printed). ``always_sidecar``: see :func:`_write_sidecar`."""
    changed = header_changes(before, img.header)
    _write_sidecar(source, output, image, args, changed, always=always_sidecar)
    save_image(output, img)
    return changed


def _convert_image(vol: Volume, args: argparse.Namespace, rng: np.random.Generator) -> Volume:
    axis = _axis(vol, args)
    if args.factor is not None:
        data = simulate_lowres(
            vol.data,
            args.factor,
            axis=axis,
            mode=args.mode or "interp",
            offset=args.offset,
            noise_std=args.noise_std,
            noise=args.noise,
            rng=rng,
        )
        return vol.with_data(data)
    return thick_slab_volume(vol, args.thickness_mm, axis=axis, noise_std=args.noise_std, noise=args.noise, rng=rng)


def _convert_label(label: Volume, image: Volume, args: argparse.Namespace, *, is_mask: bool = False) -> Volume:
    """On the output grid: unchanged for --factor (LR@K stays on the HR grid), thick otherwise."""
    if float(label.data.min(initial=0.0)) < 0:
        # Written as uint8, -1 became 255 (a microbleed numbered 255) without a word.
        name = label.path.name if label.path is not None else "label map"
        raise InputError(f"{name} has negative values; labels must be 0 (background) or positive integers")
    if args.factor is not None:
        return label
    axis = _axis(image, args)
    return thick_slab_labels(
        label,
        args.thickness_mm,
        axis=axis,
        min_fraction=args.min_label_fraction,
        keep_every_lesion=not is_mask,
        halves=not is_mask,
    )


def _image_header(image: Volume, args: argparse.Namespace) -> object:
    """The header of a converted image: LR@k on the HR grid says so in ``descrip`` (its voxels do not show it, and
    ``plkd predict`` would give it the HR teacher); true thick slices show it in their grid."""
    return mark_lr_factor(image.header, args.factor) if args.factor is not None else image.header


def _label_image(vol: Volume, *, is_mask: bool = False) -> nib.Nifti1Image:
    """The converted label map (or brain mask) ``vol`` as written."""
    # Rounded to the label values, 0.5 (rater agreement) included: np.rint made every 0.5 microbleed background.
    data = np.rint(np.asarray(vol.data, dtype=np.float64)) if is_mask else round_label_values(vol.data)
    top = float(data.max()) if data.size else 0.0
    halves = bool(np.any(data != np.floor(data)))  # 0.5 has no integer type
    dtype = np.float32 if halves else (np.uint8 if top <= 255 else np.int32)
    return nifti_image(data, vol.affine, dtype=dtype, header=vol.header)


def _check_output_file(path: Path, *inputs: Path | None, what: str = "--out") -> None:
    check_output_location(path, what=what)
    if not is_nifti(path):
        raise InputError(f"output {path} must end in .nii or .nii.gz")
    for src in inputs:
        if src is not None and src.exists() and path.resolve() == src.resolve():
            raise InputError(f"output {path} would overwrite its input")
        # s1.nii beside s1.nii.gz: another file, but one sidecar (s1.json) for both.
        if src is not None and sidecar_of(src).is_file() and sidecar_of(path).resolve() == sidecar_of(src).resolve():
            raise InputError(f"output {path} would overwrite its input's sidecar {sidecar_of(src).name}")


def _run_single(args: argparse.Namespace) -> int:
    _check_output_file(args.out, args.input, args.label)
    if args.label_out is not None:
        _check_output_file(args.label_out, args.input, args.label, what="--label-out")
        if args.label_out.resolve() == args.out.resolve():
            raise InputError("--out and --label-out name the same file")
    image = load_volume(args.input)
    label = None
    if args.label is not None:
        label = load_label(args.label)
        # The label rule of --dataset (load_subject), training and plkd evaluate: a probability map or an
        # interpolated label was rounded to whatever label values its voxels came nearest.
        check_label_values(label.data, f"--label {args.label}")
        # The rule of the data-set conversion (load_subject) and of training: a 0.5 mm label of a 1 mm scan is
        # resampled onto it keeping every microbleed, anything but the same voxels otherwise refused.
        label = label_onto_image(image, label, what=f"label {args.label.name}")
    out = _convert_image(image, args, np.random.default_rng(args.seed))
    # Both converted before either is written: a label that cannot be converted left the image written alone.
    lab = _convert_label(label, image, args) if label is not None else None
    written = nifti_image(out.data, out.affine, dtype=np.float32, header=_image_header(image, args))
    # One file has no folder record (--dataset's .plkd-lowres.json): its sidecar records the conversion, also when
    # the input had none (it wrote nothing then, so the output's settings and changed header were recorded nowhere).
    _write_output(args.input, args.out, written, image.header, image, args, always_sidecar=True)
    _say(args, f"wrote {args.out} ({_describe(out)}{_changed_text(image.header, args.out)})")
    if lab is not None:
        _write_output(args.label, args.label_out, _label_image(lab), label.header, image, args, always_sidecar=True)
        changed = _changed_text(label.header, args.label_out)
        _say(args, f"wrote {args.label_out} ({int(np.count_nonzero(lab.data))} labelled voxels{changed})")
    return 0


def _say(args: argparse.Namespace, text: str) -> None:
    # In jsonl mode stdout carries only JSON lines (the Slicer module parses it).
    if args.progress == "jsonl":
        print(json.dumps({"stage": "lowres", "message": text}), flush=True)
    else:
        print(text)


#: Header fields a conversion always rewrites (data type and scaling of the values written), not named as changed.
_STORAGE_FIELDS = frozenset({"datatype", "bitpix", "scl_slope", "scl_inter", "cal_min", "cal_max", "vox_offset"})


def header_changes(before: Any, after: Any) -> list[str]:
    """The NIfTI header fields whose values differ between ``before`` (the input's) and ``after`` (the output's),
    in header order, leaving out the storage fields (:data:`_STORAGE_FIELDS`); ``[]`` when either is missing."""
    if before is None or after is None:
        return []
    changed = []
    known = set(list(before.keys()))
    for key in list(after.keys()):
        if key in _STORAGE_FIELDS or key not in known:
            continue
        if not np.array_equal(np.asarray(before[key]), np.asarray(after[key])):
            changed.append(key)
    return changed


def _changed_text(before: Any, written: Path) -> str:
    """``; header changed: …`` naming what the written file's header changed from its input's."""
    changed = header_changes(before, nib.load(str(written)).header)
    return f"; header changed: {', '.join(changed)}" if changed else "; header as the input's"


def _describe(vol: Volume) -> str:
    sp = "×".join(f"{s:.3g}" for s in vol.spacing)
    return f"{'×'.join(str(s) for s in vol.shape)} voxels of {sp} mm"


# ----------------------------------------------------------------------------------------------
# data sets


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        raise InputError(f"{path} lies outside the data set folder {root}") from None


def _rewrite_manifest(
    manifest: dict[str, Any],
    grids: dict[str, tuple[np.ndarray, tuple[int, ...]]],
    args: argparse.Namespace,
    record: dict[str, Any],
) -> dict[str, Any]:
    """The synth manifest for the converted data: new spacing, voxel centres on the new grids, ``record`` (the
    conversion's settings and the header fields each file changed)."""
    out = copy.deepcopy(manifest)
    if grids:
        first = next(iter(grids.values()))[0]
        out["spacing_mm"] = [round(float(s), 6) for s in np.sqrt((first[:3, :3] ** 2).sum(axis=0))]
    out["lowres"] = record
    if args.thickness_mm is None:
        return out
    for sid, info in out.get("subjects", {}).items():
        if sid not in grids or not isinstance(info, dict):
            continue
        affine, shape = grids[sid]
        if "shape" in info:
            info["shape"] = list(shape)
        inv = np.linalg.inv(affine)
        # Every record with a world centre (microbleeds, hidden microbleeds, mimics) gets its
        # voxel centre on the new grid; everything else describes the HR truth and stays.
        for records in info.values():
            for rec in records if isinstance(records, list) else []:
                if isinstance(rec, dict) and "center_ras" in rec and "center_voxel" in rec:
                    vox = inv @ np.append(np.asarray(rec["center_ras"], dtype=np.float64), 1.0)
                    as_int = all(isinstance(v, int) for v in rec["center_voxel"])
                    rec["center_voxel"] = [int(round(v)) if as_int else round(float(v), 3) for v in vox[:3]]
    return out


def _lowres_record(args: argparse.Namespace) -> dict[str, Any]:
    """The conversion's source and settings, as the output manifest records them."""
    return {"source": str(args.dataset.resolve()), **_settings(args), "axis": args.axis}


#: The conversion an ``--out`` folder holds, written before its first image: the synth manifest (with the same
#: ``lowres`` record) comes only at the end and other layouts have none, so a rerun of the same conversion, after an
#: interruption or not, was refused as "images of another conversion".
CONVERSION_RECORD = ".plkd-lowres.json"


def _recorded_conversion(path: Path) -> dict[str, Any] | None:
    """The ``lowres`` record of ``path`` (:data:`CONVERSION_RECORD` or a converted synth manifest), else None."""
    try:
        record = json.loads(path.read_text(encoding="utf-8")).get("lowres")
    except (OSError, ValueError, AttributeError):
        return None
    return record if isinstance(record, dict) else None


def _clear_earlier_conversion(out: Path, planned: set[Path], record: dict[str, Any], *, overwrite: bool) -> None:
    """Refuse (or with ``overwrite`` remove) an earlier conversion in ``out`` that this one would leave mixed in.

    Its subjects that this conversion does not write again (a data set with fewer subjects now, another data set)
    stayed beside the new ones, and images converted with other settings stayed until this run replaced them all:
    ``plkd predict``/``plkd evaluate`` of the folder scored both. Reusing ``out`` without ``overwrite`` needs the
    manifest of the same conversion (same source and settings) and no file this one does not write.
    """
    if not out.is_dir():
        return
    # NIfTI pairs by their header (the converted pairs of a data set of pairs), as planned.
    found = sorted(
        p
        for p in out.rglob("*")
        if p.is_file() and not p.name.startswith(".") and (is_nifti(p) or pair_files(p)[0] == p != pair_files(p)[-1])
    )
    manifest_path = out / "manifest.json"
    extra = [p for p in found if p not in planned]
    recorded = [_recorded_conversion(path) for path in (out / CONVERSION_RECORD, manifest_path)]
    same = any(r is not None and all(r.get(k) == v for k, v in record.items()) for r in recorded)
    if not extra and (same or not found):
        return
    if not overwrite:
        why = (
            f"{len(extra)} image(s) this conversion does not write (e.g. {extra[0].relative_to(out)})"
            if extra
            else "images of another conversion (other source or settings, or no manifest saying which)"
        )
        raise InputError(
            f"--out {out} holds {why}: they would stay mixed with this conversion; give another folder, or "
            "--overwrite to remove the earlier conversion first"
        )
    if extra and not any(r is not None for r in recorded):
        # Not an earlier conversion: a folder of the user's own scans given as --out lost every NIfTI file under it.
        raise InputError(
            f"--out {out} holds {len(extra)} NIfTI file(s) no plkd lowres conversion recorded there (e.g. "
            f"{extra[0].relative_to(out).as_posix()}): --overwrite removes only an earlier conversion's images; "
            "give another folder"
        )
    for path in (manifest_path, out / CONVERSION_RECORD):
        if path.is_file():
            path.unlink()  # first: an interruption never leaves a record describing other images
    for p in found:
        remove_lowres_sidecar(p)
        for member in pair_files(p):  # a pair's .img too
            member.unlink(missing_ok=True)
    # Folders the removed images leave empty (a subject of the earlier conversion) go too.
    for folder in sorted({p.parent for p in found}, key=lambda f: len(f.parts), reverse=True):
        while folder != out and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


def _run_dataset(args: argparse.Namespace) -> int:
    root: Path = args.dataset
    check_output_location(args.out, kind="folder", what="--out")
    if args.out.resolve() == root.resolve() or root.resolve() in args.out.resolve().parents:
        raise InputError(f"--out {args.out} must be a folder outside the data set {root}")
    subjects: list[Subject] = find_subjects(root)
    planned = {
        args.out / _relative(path, root)
        for subject in subjects
        for path in (subject.image, subject.label, subject.mask)
        if path is not None
    }
    record = _lowres_record(args)
    _clear_earlier_conversion(args.out, planned, record, overwrite=args.overwrite)
    write_json_atomic(args.out / CONVERSION_RECORD, {"lowres": record})
    progress = Progress(args.progress)
    progress.start("lowres", total=len(subjects))
    grids: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {}
    header_changed: set[str] = set()
    #: Per written file (relative to --out), the header fields it changed from its input's: kept in the records.
    file_changes: dict[str, list[str]] = {}
    for index, subject in enumerate(subjects):
        image, label, mask = load_subject(subject, all_classes=True)  # the data set converted as it is
        rng = np.random.default_rng([args.seed, index])  # per subject: same output whatever the order
        out = _convert_image(image, args, rng)
        # A subject's label and mask are converted before any of its files is written (no image without them).
        maps = [
            (
                path,
                _relative(path, root),
                _label_image(_convert_label(vol, image, args, is_mask=is_mask), is_mask=is_mask),
                vol.header,
            )
            for vol, path, is_mask in ((label, subject.label, False), (mask, subject.mask, True))
            if vol is not None and path is not None
        ]
        rel = _relative(subject.image, root)
        written = nifti_image(out.data, out.affine, dtype=np.float32, header=_image_header(image, args))
        changes = _write_output(subject.image, args.out / rel, written, image.header, image, args)
        header_changed.update(header_changes(image.header, nib.load(str(args.out / rel)).header))
        file_changes[rel.as_posix()] = changes
        for source, path, converted, before in maps:
            file_changes[path.as_posix()] = _write_output(source, args.out / path, converted, before, image, args)
        grids[subject.id] = (out.affine, out.shape)
        progress.advance()
    progress.finish()

    # The record again, now with the header fields each file changed (only printed, summed over the images, before).
    record = {**record, "header_changed": {k: v for k, v in sorted(file_changes.items()) if v}}
    write_json_atomic(args.out / CONVERSION_RECORD, {"lowres": record})
    if any("microbleed_values" in s.meta for s in subjects):
        # The label classes (and so which one the microbleeds are) come along: without them every class of the
        # converted labels was read as microbleeds.
        write_text_atomic(args.out / "dataset.json", (root / "dataset.json").read_text(encoding="utf-8"))
    manifest_path = root / "manifest.json"
    if subjects and subjects[0].meta.get("layout") == "synth":
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != SYNTH_FORMAT:
            raise PLKDError(f"{manifest_path} changed while converting")
        write_json_atomic(args.out / "manifest.json", _rewrite_manifest(manifest, grids, args, record))
    what = f"{args.thickness_mm:g} mm slices" if args.thickness_mm is not None else f"LR@{args.factor}"
    changed = f"; image headers changed: {', '.join(sorted(header_changed))}" if header_changed else ""
    _say(args, f"wrote {len(subjects)} subject(s) as {what} to {args.out}{changed}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Convert one image (and its label) or a whole data set."""
    _check_args(args)
    if args.dataset is not None:
        return _run_dataset(args)
    return _run_single(args)
