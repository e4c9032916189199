"""Model bundles: write, verify and load the networks a prediction needs (format in docs/design.md).

A bundle is a folder (or a ``.zip`` of it) holding ``manifest.json`` and one ``<name>.pt`` state
dict per network. The manifest records each network's kind and hyper-parameters (so it can be
rebuilt without code), its role (``screening`` or ``segmenter``), the LR factor a segmenter was
trained for, and the sha256 of its weight file.

Loading acts on nothing before it is checked: the manifest's size, nesting, schema and value
ranges first (network sizes are counted on PyTorch's "meta" device, which allocates nothing),
then every weight file (a plain file inside the bundle, never a link leaving it) against its
checksum, and only then are weights deserialised, with ``torch.load(weights_only=True)``.
A bundle whose manifest is not one of the shipped, pinned ones (:mod:`plkd.pins`) is loaded
with an "unverified bundle" warning (``Bundle.notes``). Unknown manifest keys are allowed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import weakref
import zipfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch
from torch import nn

import plkd
from plkd.atomic import atomic_path, temporary_folder, torch_save, write_json_atomic
from plkd.errors import BundleError, ConfigError
from plkd.modalities import MODALITIES
from plkd.models import NETWORKS, build_network, count_parameters, network_config, unwrap
from plkd.normalise import LEGACY_CLIP_PERCENTILES
from plkd.pins import manifest_digest, verification_note

log = logging.getLogger(__name__)

FORMAT = "plkd-bundle"
FORMAT_VERSION = 1
#: Manifest ``format_version`` values this release can read.
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"
ROLES = ("screening", "segmenter")

DEFAULT_SPACING_MM = [1.0, 1.0, 1.0]
DEFAULT_PATCH_SIZE = {"screening": [20, 20, 16], "segmentation": [48, 48, 24]}
#: Bundles without a record of their normalisation were trained with the legacy percentiles.
DEFAULT_NORMALISATION = {"method": "brain-zscore", "clip_percentiles": list(LEGACY_CLIP_PERCENTILES)}
DEFAULT_THRESHOLDS = {"screening": 0.5, "segmentation": 0.5, "voxel": 0.5, "min_distance_mm": 4.0}
DEFAULT_DISCLAIMER = "For research use only; not a medical device."

#: Keys of a manifest network entry that :func:`save_bundle` fills itself.
_RESERVED_ENTRY_KEYS = ("kind", "hparams", "file", "sha256")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
#: Segmenter names that state their LR factor: ``teacher`` (1) and ``student_xK`` (K).
_NAMED_FACTOR = re.compile(r"(teacher|student_x(\d+(?:\.\d+)?))")
_FP16_MAX = 65504.0
#: Limits on a bundle .zip (a few networks of a few MB each): refuse archive bombs.
_ZIP_MAX_MEMBERS = 256
_ZIP_MAX_BYTES = 2 * 1024**3
#: Limits on what a manifest may ask for, checked before anything is built or read.
_MANIFEST_MAX_BYTES = 1024**2
_MANIFEST_MAX_DEPTH = 32
MAX_PARAMETERS = 100_000_000  # the shipped networks have about 1.4 million
SPACING_RANGE_MM = (0.05, 20.0)
PATCH_RANGE = (2, 512)
LR_FACTOR_RANGE = (1.0, 64.0)
#: Thresholds that are probabilities; ``min_distance_mm`` must lie in (0, MAX_MIN_DISTANCE_MM].
PROBABILITY_THRESHOLDS = ("screening", "segmentation", "voxel")
MAX_MIN_DISTANCE_MM = 100.0


# --------------------------------------------------------------------------------------------
# Writing


def save_bundle(
    out: str | os.PathLike[str],
    networks: Mapping[str, Mapping[str, Any]],
    *,
    manifest: Mapping[str, Any],
    half: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a bundle folder (or a ``.zip`` when ``out`` ends in ``.zip``) and return its path.

    ``networks`` maps a name (``screening``, ``teacher``, ``student_x4``…; it becomes the file
    name ``<name>.pt``) to ``{"module": nn.Module, "role": "screening" | "segmenter",
    "lr_factor": float | None, **extra}``; extra JSON values are copied into the manifest entry.
    ``manifest`` holds the other top-level fields (``name``, ``modality``, ``spacing_mm``,
    ``patch_size``, ``normalisation``, ``thresholds``, ``training``, ``metrics``,
    ``disclaimer``…); documented defaults fill the missing ones. Floating-point weights are
    stored as float16 when ``half`` (a tensor that would overflow float16 stays float32).

    Everything is written into a temporary folder beside ``out``, ``manifest.json`` last, then
    the folder is renamed into place, so ``out`` is either absent, the old bundle or the complete
    new one. An existing ``out`` is refused unless ``overwrite``.
    """
    out = Path(out)
    as_zip = out.suffix.lower() == ".zip"
    if out.exists() and not overwrite:
        raise BundleError(f"{out} already exists; choose another path or allow overwriting")
    check_replaceable(out)
    man = _complete_manifest(manifest, default_name=out.stem if as_zip else out.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_folder(out)  # a killed export's leftover is removed by the next one
    try:
        man["networks"] = {name: _write_network(tmp, name, entry, half) for name, entry in networks.items()}
        validate_manifest(man, tmp)
        write_json_atomic(tmp / MANIFEST, man)
        if as_zip:
            _zip_folder(tmp, out, arcroot=out.stem)
        else:
            move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_replaceable(out: str | os.PathLike[str]) -> None:
    """Refuse to replace ``out`` unless it is absent, a file (a ``.zip`` bundle), or a bundle folder: a
    ``manifest.json`` of this format and no sub-folder (a bundle has none).

    ``--overwrite`` replaced whatever folder ``--out`` named: the training run itself (``plkd export RUN --out RUN``),
    a folder of the user's with everything in it, the validation data (``plkd tune DATA --out DATA``).
    """
    out = Path(out)
    if not out.is_dir():
        return
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        is_bundle = isinstance(manifest, dict) and manifest.get("format") == FORMAT
    except (OSError, ValueError):
        is_bundle = False
    folders = [p.name for p in out.iterdir() if p.is_dir()] if is_bundle else []
    if not is_bundle or folders:
        why = f"it holds the folder {folders[0]}" if folders else f"no {MANIFEST} of a plkd bundle"
        raise BundleError(
            f"--out {out} exists and is not a model bundle ({why}): --overwrite replaces only a bundle; "
            "choose another --out"
        )


def zip_bundle(folder: str | os.PathLike[str], zip_path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Pack a bundle folder into ``zip_path`` (files under a top-level folder named after the zip).

    The folder is loaded (schema and checksums verified) first, so a broken bundle is never packed.
    """
    zip_path = Path(zip_path)
    if zip_path.exists() and not overwrite:
        raise BundleError(f"{zip_path} already exists; choose another path or allow overwriting")
    bundle = load_bundle(folder)
    if bundle.root != Path(folder):
        raise BundleError(f"{folder} is not an unpacked bundle folder")
    _zip_folder(Path(folder), zip_path, arcroot=zip_path.stem)
    return zip_path


def _complete_manifest(manifest: Mapping[str, Any], default_name: str) -> dict[str, Any]:
    try:
        man: dict[str, Any] = json.loads(json.dumps(dict(manifest), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"manifest is not JSON-serialisable: {exc}") from exc
    if "networks" in man:
        raise BundleError("pass networks through the 'networks' argument, not inside the manifest")
    man["format"] = FORMAT
    man["format_version"] = FORMAT_VERSION
    man.setdefault("name", default_name)
    man.setdefault("modality", "T2S")
    man.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    man.setdefault("plkd_version", plkd.__version__)
    man.setdefault("spacing_mm", list(DEFAULT_SPACING_MM))
    man.setdefault("patch_size", copy.deepcopy(DEFAULT_PATCH_SIZE))
    man.setdefault("normalisation", copy.deepcopy(DEFAULT_NORMALISATION))
    man["thresholds"] = {**DEFAULT_THRESHOLDS, **man.get("thresholds", {})}
    man.setdefault("disclaimer", DEFAULT_DISCLAIMER)
    return man


def _write_network(folder: Path, name: str, entry: Mapping[str, Any], half: bool) -> dict[str, Any]:
    if not _NAME_RE.match(name):
        raise BundleError(f"network name {name!r} must be letters, digits, '_', '-' or '.' (it becomes a file name)")
    if not isinstance(entry.get("module"), nn.Module):
        raise BundleError(f"network {name!r} needs a 'module' (a torch.nn.Module)")
    clash = sorted(set(entry) & set(_RESERVED_ENTRY_KEYS))
    if clash:
        raise BundleError(f"network {name!r}: {clash} are filled in by save_bundle, do not pass them")
    module = unwrap(entry["module"])
    try:
        cfg = network_config(module)
    except TypeError as exc:
        raise BundleError(f"network {name!r}: {exc}") from exc
    state = {k: _storable(v, half) for k, v in module.state_dict().items()}
    file = f"{name}.pt"
    torch_save(state, folder / file)
    record: dict[str, Any] = {"kind": cfg["kind"], "hparams": cfg["hparams"], "file": file}
    record["sha256"] = _sha256(folder / file)
    record["role"] = entry.get("role")
    if entry.get("lr_factor") is not None:
        record["lr_factor"] = entry["lr_factor"]
    record["parameters"] = count_parameters(module)
    record["dtype"] = "float16" if half else "float32"
    extra = {k: v for k, v in entry.items() if k not in ("module", "role", "lr_factor")}
    try:
        record.update(json.loads(json.dumps(extra, allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"network {name!r}: extra fields are not JSON-serialisable: {exc}") from exc
    return record


def _storable(t: torch.Tensor, half: bool) -> torch.Tensor:
    t = t.detach().to("cpu").contiguous().clone()  # clone: save only this tensor, not a shared storage
    if half and t.is_floating_point() and (t.numel() == 0 or float(t.abs().max()) <= _FP16_MAX):
        return t.half()
    return t


def move_into_place(tmp: Path, out: Path) -> None:
    """Rename the folder ``tmp`` to ``out``, an existing ``out`` moved aside first and removed after (never lost)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    # A non-empty folder cannot be replaced in one rename: move the old one aside first.
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    old.rmdir()
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def _zip_folder(folder: Path, zip_path: Path, arcroot: str) -> None:
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        # manifest.json last, as in the folder: a truncated archive lacks it and is refused.
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
        for p in [*files, folder / MANIFEST]:
            zf.write(p, f"{arcroot}/{p.name}")


# --------------------------------------------------------------------------------------------
# Reading


class Bundle:
    """A verified model bundle. Networks are built on first use and cached per device."""

    def __init__(self, path: Path, root: Path, manifest: dict[str, Any]) -> None:
        #: What the user passed (a folder or a ``.zip``).
        self.path = path
        #: Folder holding ``manifest.json`` and the weight files (a temporary one for a ``.zip``).
        self.root = root
        self.manifest = manifest
        #: sha256 of ``manifest.json``; ``verified`` when it is a pinned (shipped, unaltered) bundle.
        self.manifest_sha256 = ""
        self.verified = False
        #: One-line caveats for the outputs' ``notes`` (e.g. "unverified bundle: ...").
        self.notes: list[str] = []
        self._cache: dict[tuple[str, str], nn.Module] = {}

    @property
    def name(self) -> str:
        """The bundle's name."""
        return str(self.manifest["name"])

    @property
    def modality(self) -> str:
        """Image modality the networks were trained on (``T2S`` or ``SWI``)."""
        return str(self.manifest["modality"])

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size (mm) of the model grid."""
        return tuple(float(v) for v in self.manifest["spacing_mm"])  # type: ignore[return-value]

    @property
    def patch_size(self) -> dict[str, tuple[int, int, int]]:
        """``{"screening": (X, Y, Z), "segmentation": (X, Y, Z)}`` training patch sizes."""
        return {k: tuple(int(v) for v in s) for k, s in self.manifest["patch_size"].items()}  # type: ignore[misc]

    @property
    def normalisation(self) -> dict[str, Any]:
        """Intensity normalisation settings used in training."""
        return dict(self.manifest["normalisation"])

    @property
    def thresholds(self) -> dict[str, float]:
        """Decision thresholds (``screening``, ``segmentation``, ``voxel``, ``min_distance_mm``…)."""
        return {k: float(v) for k, v in self.manifest["thresholds"].items()}

    @property
    def screening_name(self) -> str:
        """Name of the screening network."""
        return next(n for n, e in self.manifest["networks"].items() if e["role"] == "screening")

    def segmenter_names(self) -> dict[str, float]:
        """Segmentation networks: name → LR factor (1 = the teacher / HR network), by factor."""
        nets = self.manifest["networks"]
        pairs = [(n, float(e["lr_factor"])) for n, e in nets.items() if e["role"] == "segmenter"]
        return dict(sorted(pairs, key=lambda p: p[1]))

    def choose_segmenter(self, lr_factor: float) -> str:
        """The segmenter trained for the LR factor nearest ``lr_factor`` (slice / in-plane spacing).

        Nearest on a log scale (factors are ratios: 3 is nearer 4 than 2); a tie goes to the
        larger factor, whose student was trained on the coarser data.
        """
        lr_factor = float(lr_factor)
        if not (math.isfinite(lr_factor) and lr_factor > 0):
            raise ValueError(f"lr_factor must be a positive number, not {lr_factor}")
        items = self.segmenter_names().items()
        return min(items, key=lambda p: (round(abs(math.log(p[1] / lr_factor)), 9), -p[1]))[0]

    def network(self, name: str, device: str | torch.device = "cpu") -> nn.Module:
        """Network ``name`` with its weights, in eval mode, float32, on ``device`` (cached)."""
        key = (name, str(torch.device(device)))
        if key not in self._cache:
            nets = self.manifest["networks"]
            if name not in nets:
                raise BundleError(f"bundle {self.name!r} has no network {name!r}; it has {sorted(nets)}")
            entry = nets[name]
            net = _build(name, entry)
            state = self._load_state(entry)
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise BundleError(
                    f"weights in {entry['file']} do not fit the {entry['kind']} in the manifest: {first}"
                ) from exc
            self._cache[key] = net.float().to(device).eval()
        return self._cache[key]

    def _load_state(self, entry: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        # Hash the very bytes that are deserialised, so nothing swapped after load_bundle slips in.
        data = _weight_path(self.root, entry["file"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BundleError(_checksum_message(entry["file"]))
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 (any unpickling failure means a bad file)
            raise BundleError(f"cannot read weights {entry['file']}: {exc}".splitlines()[0]) from exc
        if not isinstance(state, dict):
            raise BundleError(f"{entry['file']} does not hold a state dict")
        return state

    def summary(self) -> str:
        """A few human-readable lines describing the bundle."""
        m = self.manifest
        ps = self.patch_size
        lines = [
            f"Model bundle {self.name!r} ({self.modality}), format {m['format_version']}, "
            f"plkd {m['plkd_version']}, created {m['created']}",
            f"  location: {self.path}",
            f"  model grid: {' x '.join(f'{v:g}' for v in self.spacing_mm)} mm; patches: "
            + ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in ps.items()),
        ]
        for name, e in m["networks"].items():
            params = e.get("parameters")
            detail = ", ".join(f"{k}={v}" for k, v in e["hparams"].items())
            role = "screening" if e["role"] == "screening" else f"segmenter for LR x{float(e['lr_factor']):g}"
            size = f", {params:,} parameters" if isinstance(params, int) else ""
            lines.append(f"  {name}: {e['kind']} ({detail}){size}, {role}")
        lines.append("  thresholds: " + ", ".join(f"{k} {v:g}" for k, v in self.thresholds.items()))
        if m.get("disclaimer"):
            lines.append(f"  note: {m['disclaimer']}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, name={self.name!r})"


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Open a bundle folder or ``.zip``; validate its manifest and every checksum.

    Raises :class:`~plkd.errors.BundleError` with a one-line message on any problem.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"model bundle not found: {path}")
    tmpdir: Path | None = None
    if path.is_dir():
        base = path
    elif zipfile.is_zipfile(path):
        tmpdir = Path(tempfile.mkdtemp(prefix="plkd-bundle-"))
        try:
            _safe_extract(path, tmpdir)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        base = tmpdir
    elif path.suffix.lower() == ".zip":
        raise BundleError(f"{path} cannot be read as a .zip archive (truncated or damaged: copy or download it again)")
    else:
        raise BundleError(f"{path} is neither a bundle folder nor a .zip archive")
    try:
        root = _find_root(base, path)
        raw = _read_manifest_bytes(root)
        manifest = _parse_manifest(raw)
        validate_manifest(manifest, root)
        for entry in manifest["networks"].values():
            if _sha256(_weight_path(root, entry["file"])) != entry["sha256"]:
                raise BundleError(_checksum_message(entry["file"]))
    except BaseException:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    bundle = Bundle(path, root, manifest)
    bundle.manifest_sha256 = manifest_digest(raw)
    note = verification_note(bundle.name, bundle.manifest_sha256)
    bundle.verified = note is None
    if note is not None:
        log.warning(note)
        bundle.notes.append(note)
    if tmpdir is not None:
        weakref.finalize(bundle, shutil.rmtree, tmpdir, ignore_errors=True)
    return bundle


def validate_manifest(manifest: Any, root: Path | None = None) -> None:
    """Raise :class:`~plkd.errors.BundleError` naming the first schema problem of ``manifest``.

    With ``root``, also check that every listed weight file exists there.
    """
    if not isinstance(manifest, dict):
        raise BundleError("manifest.json is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"manifest.json: 'format' must be {FORMAT!r}, found {manifest.get('format')!r}")
    version = manifest.get("format_version")
    if not _is_int(version):
        raise BundleError("manifest.json: 'format_version' must be an integer")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise BundleError(
            f"unsupported bundle format_version {version} (this plkd {plkd.__version__} reads "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); install a matching plkd version"
        )
    for key in ("name", "modality", "created", "plkd_version"):
        _require(isinstance(manifest.get(key), str) and manifest[key], f"'{key}' must be a non-empty string")
    _require(_depth(manifest) <= _MANIFEST_MAX_DEPTH, f"nested deeper than {_MANIFEST_MAX_DEPTH} levels")
    lo, hi = SPACING_RANGE_MM
    _require(
        _is_triple(manifest.get("spacing_mm"), float) and all(lo <= v <= hi for v in manifest["spacing_mm"]),
        f"'spacing_mm' must be 3 numbers from {lo:g} to {hi:g} mm",
    )
    patch = manifest.get("patch_size")
    _require(isinstance(patch, dict), "'patch_size' must be an object")
    lo, hi = PATCH_RANGE
    for stage in ("screening", "segmentation"):
        _require(
            _is_triple(patch.get(stage), int) and all(lo <= v <= hi for v in patch[stage]),
            f"'patch_size.{stage}' must be 3 integers from {lo} to {hi}",
        )
    norm = manifest.get("normalisation")
    _require(isinstance(norm, dict) and isinstance(norm.get("method"), str), "'normalisation.method' is missing")
    clip = norm.get("clip_percentiles", [0.0, 100.0])
    two_numbers = isinstance(clip, list) and len(clip) == 2 and all(_is_number(v) for v in clip)
    _require(
        two_numbers and 0 <= clip[0] < clip[1] <= 100,
        "'normalisation.clip_percentiles' must be two increasing percentiles in [0, 100]",
    )
    thr = manifest.get("thresholds")
    _require(isinstance(thr, dict), "'thresholds' must be an object")
    for key in DEFAULT_THRESHOLDS:
        _require(_is_number(thr.get(key)), f"'thresholds.{key}' must be a number")
    _require(all(_is_number(v) for v in thr.values()), "every threshold must be a number")
    _check_threshold_ranges(thr, "thresholds")
    for key in ("training", "metrics"):
        _require(isinstance(manifest.get(key, {}), dict), f"'{key}' must be an object")
    _require(isinstance(manifest.get("disclaimer", ""), str), "'disclaimer' must be a string")
    _check_thick_slices(manifest.get("thick_slices"))

    nets = manifest.get("networks")
    _require(isinstance(nets, dict) and nets, "'networks' must be a non-empty object")
    for name, entry in nets.items():
        _validate_entry(name, entry, root)
    roles = [e["role"] for e in nets.values()]
    _require(roles.count("screening") == 1, f"need exactly one screening network, found {roles.count('screening')}")
    _require(roles.count("segmenter") >= 1, "need at least one segmenter network")
    factors = [float(e["lr_factor"]) for e in nets.values() if e["role"] == "segmenter"]
    _require(len(set(factors)) == len(factors), "two segmenters share the same lr_factor")


def validate_calibration(record: Any, where: str) -> None:
    """Refuse a network's ``calibration`` record that would give wrong probabilities without a word.

    Platt ``{"a", "b"}`` needs a finite slope ``a > 0`` (``a <= 0`` turns the ranking over: the strongest
    candidates get the lowest probabilities and the thresholds keep the weakest) and a finite ``b``; temperature
    scaling ``{"temperature": T}`` needs a finite ``T > 0``. Other keys (counts, ECE, data) are free.
    """
    if record is None:
        return
    _require(isinstance(record, dict), f"{where}: 'calibration' must be an object")
    if "a" not in record and "temperature" in record:
        t = record["temperature"]
        _require(_is_number(t) and t > 0, f"{where}: calibration 'temperature' must be above 0")
        return
    a, b = record.get("a", 1.0), record.get("b", 0.0)
    _require(
        _is_number(a) and a > 0,
        f"{where}: calibration slope 'a' must be above 0 (found {a!r}: it would reverse the candidates' ranking)",
    )
    _require(_is_number(b), f"{where}: calibration 'b' must be a finite number")


def _validate_entry(name: str, entry: Any, root: Path | None) -> None:
    where = f"network {name!r}"
    _require(isinstance(entry, dict), f"{where} must be an object")
    _require(entry.get("kind") in NETWORKS, f"{where}: unknown kind {entry.get('kind')!r}")
    _require(isinstance(entry.get("hparams"), dict), f"{where}: 'hparams' must be an object")
    file = entry.get("file")
    _require(
        isinstance(file, str)
        and file.endswith(".pt")
        and PurePosixPath(file).name == file
        and "\\" not in file
        and not file.startswith("."),
        f"{where}: 'file' must be a plain '.pt' file name inside the bundle",
    )
    _require(isinstance(entry.get("sha256"), str) and _SHA_RE.match(entry["sha256"]), f"{where}: bad 'sha256'")
    _require(entry.get("role") in ROLES, f"{where}: 'role' must be one of {ROLES}")
    if entry["role"] == "segmenter":
        lr = entry.get("lr_factor")
        lo, hi = LR_FACTOR_RANGE
        _require(_is_number(lr) and lo <= lr <= hi, f"{where}: a segmenter needs 'lr_factor' from {lo:g} to {hi:g}")
        # The name is what every JSON and log line reports ("student": "student_x4"): it must not contradict the
        # factor the segmenter is chosen by (a manifest edited by hand or a bundle pieced together from others).
        named = _NAMED_FACTOR.fullmatch(name)
        if named is not None:
            factor = 1.0 if named.group(1) == "teacher" else float(named.group(2))
            _require(float(lr) == factor, f"{where} is named for LR factor {factor:g} but its 'lr_factor' is {lr:g}")
    validate_calibration(entry.get("calibration"), where)
    own = entry.get("thresholds", {})
    _require(
        isinstance(own, dict) and all(k in DEFAULT_THRESHOLDS and _is_number(v) for k, v in own.items()),
        f"{where}: 'thresholds' must map threshold names ({', '.join(DEFAULT_THRESHOLDS)}) to numbers",
    )
    _check_threshold_ranges(own, f"{where}: thresholds")
    _require(
        all(v is None or isinstance(v, str | int | float | bool) for v in entry["hparams"].values()),
        f"{where}: 'hparams' values must be numbers, strings or booleans",
    )
    # Counted on the meta device: no memory is allocated, whatever the manifest asks for.
    try:
        with torch.device("meta"):
            n_params = count_parameters(_build(name, entry))
    except BundleError as exc:
        raise BundleError(f"manifest.json: {exc}") from None
    _require(
        n_params <= MAX_PARAMETERS,
        f"{where} would have {n_params:,} parameters (at most {MAX_PARAMETERS:,} are accepted)",
    )
    if root is None:
        return
    path = _weight_path(root, file)
    if not path.is_file():
        raise BundleError(f"missing weight file {file} listed in manifest.json")
    size = path.stat().st_size
    if size < 2 * n_params:  # float16 is the smallest storage
        raise BundleError(f"{file} ({size:,} bytes) cannot hold the {n_params:,} parameters of {where}")


def _check_threshold_ranges(thr: Mapping[str, Any], where: str) -> None:
    for key in PROBABILITY_THRESHOLDS:
        if key in thr:
            _require(0.0 <= thr[key] <= 1.0, f"'{where}.{key}' must be a probability in [0, 1], not {thr[key]}")
    if "min_distance_mm" in thr:
        v = thr["min_distance_mm"]
        span = f"(0, {MAX_MIN_DISTANCE_MM:g}]"
        _require(0.0 < v <= MAX_MIN_DISTANCE_MM, f"'{where}.min_distance_mm' must lie in {span}, not {v}")


def _weight_path(root: Path, file: str) -> Path:
    """``root/file``, refused when it is a link (or lies) outside the bundle folder."""
    path = root / file
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise BundleError(f"weight file {file} is a symbolic link leaving the bundle (to {real}); refusing to read it")
    return path


def _depth(obj: Any) -> int:
    """Nesting depth of a JSON value (iterative: a deep manifest cannot exhaust the stack)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, d = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, d)
            if d > _MANIFEST_MAX_DEPTH:
                return d
            stack.extend((v, d + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def _build(name: str, entry: Mapping[str, Any]) -> nn.Module:
    try:
        return build_network(entry["kind"], dict(entry["hparams"]))
    except ConfigError as exc:
        raise BundleError(f"network {name!r}: {exc}") from exc


def _check_thick_slices(entry: Any) -> None:
    """``thick_slices`` (optional): from which LR factor another installed model reads this contrast's scans
    (:class:`plkd.inference.model_choice.ThickSlices`)."""
    if entry is None:
        return
    _require(isinstance(entry, dict), "'thick_slices' must be an object")
    factor = entry.get("from_lr_factor")
    _require(
        _is_number(factor) and 1.0 <= float(factor) <= 16.0, "'thick_slices.from_lr_factor' must be a number, 1 to 16"
    )
    below = entry.get("below_lr_factor")
    _require(
        below is None or (_is_number(below) and float(factor) < float(below) <= 16.0),
        "'thick_slices.below_lr_factor' must be a number above from_lr_factor, at most 16",
    )
    _require(
        entry.get("model_modality") in MODALITIES,
        f"'thick_slices.model_modality' must be one of {', '.join(MODALITIES)}",
    )
    _require(isinstance(entry.get("why", ""), str), "'thick_slices.why' must be a string")


def _require(ok: Any, problem: str) -> None:
    if not ok:
        raise BundleError(f"manifest.json: {problem}" if not problem.startswith("manifest.json") else problem)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_triple(v: Any, kind: type) -> bool:
    check = _is_int if kind is int else _is_number
    return isinstance(v, list) and len(v) == 3 and all(check(x) and x > 0 for x in v)


def _checksum_message(file: str) -> str:
    return f"checksum mismatch for {file}: the bundle was modified or corrupted"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_manifest_bytes(root: Path) -> bytes:
    path = _weight_path(root, MANIFEST)
    try:
        size = path.stat().st_size
        if size > _MANIFEST_MAX_BYTES:
            raise BundleError(f"{MANIFEST} is {size:,} bytes; a bundle manifest is a few kB")
        return path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read {MANIFEST}: {exc}") from exc


def _parse_manifest(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise BundleError(f"{MANIFEST} is nested too deeply to be a bundle manifest") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read {MANIFEST}: {exc}") from exc


def _find_root(base: Path, shown: Path) -> Path:
    """``base`` itself, or its only sub-folder, whichever holds ``manifest.json``."""
    if (base / MANIFEST).is_file():
        return base
    subdirs = [p for p in base.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))]
    if len(subdirs) == 1 and (subdirs[0] / MANIFEST).is_file():
        return subdirs[0]
    raise BundleError(f"{shown} has no {MANIFEST}: not a model bundle (or an incomplete one)")


def _safe_extract(zip_path: Path, dest: Path) -> None:
    """Extract ``zip_path`` into ``dest``, refusing absolute paths, ``..``, links and archive bombs."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            if len(infos) > _ZIP_MAX_MEMBERS or sum(i.file_size for i in infos) > _ZIP_MAX_BYTES:
                raise BundleError(f"{zip_path.name} is too large to be a model bundle")
            for info in infos:
                name = info.filename
                parts = PurePosixPath(name.replace("\\", "/")).parts
                if (
                    name.startswith(("/", "\\"))
                    or PureWindowsPath(name).drive
                    or ".." in parts
                    or stat.S_ISLNK(info.external_attr >> 16)
                ):
                    raise BundleError(f"{zip_path.name} contains an unsafe entry {name!r}; refusing to extract it")
                target = dest.joinpath(*parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"cannot extract {zip_path.name}: {exc}".splitlines()[0]) from exc


# --------------------------------------------------------------------------------------------
# The bundle shipped inside the package


def default_bundle_dir() -> Path:
    """``plkd/bundled/`` inside the installed package (returned even if it does not exist)."""
    return Path(plkd.__file__).resolve().parent / "bundled"


def find_default_bundle(modality: str = "T2S") -> Path | None:
    """The shipped bundle for ``modality`` (``cmb-t2s`` for T2S), or None when none is installed.

    Looks in :func:`default_bundle_dir` for ``cmb-<modality>`` (folder or ``.zip``) first, then
    for any bundle whose manifest names that modality. The result is not verified: pass it to
    :func:`load_bundle`.
    """
    base = default_bundle_dir()
    if not base.is_dir():
        return None
    stem = f"cmb-{modality.lower()}"
    for candidate in (base / stem, base / f"{stem}.zip"):
        if candidate.exists():
            return candidate
    for candidate in sorted(base.iterdir()):
        if str(_peek_modality(candidate)).upper() == modality.upper():
            return candidate
    return None


def _peek_modality(candidate: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, KeyError, zipfile.BadZipFile, AttributeError):
        if candidate.is_dir() and (candidate / MANIFEST).is_file():
            return json.loads((candidate / MANIFEST).read_text(encoding="utf-8")).get("modality")
        if candidate.suffix.lower() == ".zip":
            with zipfile.ZipFile(candidate) as zf:
                names = [n for n in zf.namelist() if PurePosixPath(n).name == MANIFEST]
                if names:
                    return json.loads(zf.read(min(names, key=len))).get("modality")
    return None


def resolve_bundle(model: Any) -> tuple[Any, str]:
    """A loaded bundle and its display name from a bundle, a path or ``None`` (the installed T2* bundle).

    Raises :class:`BundleError` when ``None`` is given and no bundle is installed.
    """
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
