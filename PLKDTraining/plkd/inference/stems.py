"""Output names that stay with their input from run to run into one output folder.

:func:`plkd.inference.inputs.assign_stems` names each scan after its file, with parent folders in front
only when the run holds another scan of that name. Alone, that makes a name depend on what else is in the
run: ``study/`` gives ``sub-01_T2S``, a rerun of ``study/sub-01/T2S.nii`` alone gives ``T2S``. Into the
same folder, the rerun left the earlier result beside its own under the other name (``plkd evaluate``
scored the old one for sub-01), and a run of ``sub-02/T2S.nii`` alone after one of ``sub-01/T2S.nii``
replaced sub-01's result with sub-02's ("the input changed").

So the folder's earlier outputs (each ``NAME_cmb.json`` records its input) take part in the naming:

- a scan whose input already has outputs in the folder keeps their name, unless the run now puts parent
  folders in front of that name (it holds another scan of it): then those outputs are renamed to it;
- a name whose outputs belong to another input that still exists is not given to this scan: its parent
  folders go in front, one more at a time, until the name is free.

Outputs of an input that no longer exists at the recorded path (moved, renamed, deleted) do not hold their
name: the usual rerun rules (same bytes and settings: reused; else recomputed) apply to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from plkd.errors import InputError
from plkd.inference.inputs import ScanInput
from plkd.inference.outputs import read_record
from plkd.naming import strip_nifti_suffix

#: (input file or DICOM series folder, resolved; the series UID or ``None``) — one scan.
Identity = tuple[Path, str | None]


def scan_identity(scan: ScanInput) -> Identity:
    """What makes a scan the same scan in another run: its resolved path (and DICOM series UID)."""
    return (_resolved(scan.path), scan.series.uid if scan.series is not None else None)


def record_identity(record: dict[str, Any]) -> Identity | None:
    """The scan a prediction JSON was made from, or ``None`` when it cannot be told.

    ``input_path`` (absolute, written since plkd records it) is used, else ``input`` as it was given
    (relative names are taken from the current folder, as a rerun from the same place gives them).
    """
    path = record.get("input_path") or record.get("input")
    if not isinstance(path, str) or not path:
        return None
    dicom = record.get("dicom")
    uid = dicom.get("series_instance_uid") if isinstance(dicom, dict) else None
    return (_resolved(Path(path)), uid if isinstance(uid, str) else None)


def folder_names(output_dir: str | Path) -> dict[str, Identity | None]:
    """Every output name in ``output_dir`` (``NAME`` of ``NAME_cmb.json``) with the scan it was made from."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return {}
    names: dict[str, Identity | None] = {}
    for path in sorted(folder.glob("*_cmb.json")):
        record = read_record(path)
        if record is not None and "candidates" in record:
            names[path.name[: -len("_cmb.json")]] = record_identity(record)
    return names


@dataclass
class Settled:
    """Names settled by :func:`settle_stems`: the scans, lines for the user, and earlier outputs to rename."""

    scans: list[ScanInput]
    lines: list[str] = field(default_factory=list)
    #: ``(scan, earlier name)``: the scan's outputs in the folder are to be renamed to its (more specific) name.
    renames: list[tuple[ScanInput, str]] = field(default_factory=list)


def settle_stems(scans: list[ScanInput], output_dir: str | Path) -> Settled:
    """Names for ``scans`` that keep to their inputs across runs into ``output_dir``.

    ``scans`` carry the names of :func:`plkd.inference.inputs.assign_stems` (unique in the run). A scan
    whose input has outputs in the folder keeps their name, unless the run now tells it apart from another
    scan of that name (``T2S`` earlier, ``sub-01_T2S`` in a run that also holds ``sub-02/T2S``): then those
    outputs are to be renamed (``renames``), so the name is the more specific one and no second result of the
    scan is made. A name held in the folder by another input that still exists gets parent folders in front
    until it is free (a line says so). Other lines name inputs that have outputs under several names (from plkd
    versions that named by the run alone), which ``plkd evaluate`` would each score. Raises
    :class:`InputError` when no free name can be made.
    """
    existing = folder_names(output_dir)
    by_identity: dict[Identity, list[str]] = {}
    for name, ident in existing.items():
        if ident is not None:
            by_identity.setdefault(ident, []).append(name)
    owners = {name.lower(): ident for name, ident in existing.items() if _held_by_another(ident)}
    settled = Settled([])
    wanted: list[str | None] = []
    earlier: list[str | None] = []
    for scan in scans:
        kept = by_identity.get(scan_identity(scan), [])
        name, old = (None, None) if not kept else (scan.stem, None) if scan.stem in kept else (kept[0], kept[0])
        if old is not None and scan.stem.lower().endswith("_" + old.lower()):
            owner = owners.get(scan.stem.lower())
            if owner is None or owner == scan_identity(scan):
                name = scan.stem  # more specific now: the earlier outputs take this name
        wanted.append(name)
        earlier.append(old if name != old else None)
        if len(kept) > 1:
            others = ", ".join(f"{n}_cmb.*" for n in kept if n != name)
            settled.lines.append(
                f"{Path(output_dir) / (str(name) + '_cmb.json')} and {others} are all results of {scan.display} "
                "(earlier runs named it otherwise); plkd evaluate would score each: remove the ones not wanted"
            )
    used = {n.lower() for n in wanted if n is not None}
    held = set(owners)
    for scan, name, old in zip(scans, wanted, earlier, strict=True):
        if name is None:
            name = _free_name(scan, held | used)
            used.add(name.lower())
            if name != scan.stem:
                owner = owners.get(scan.stem.lower())
                settled.lines.append(
                    f"{scan.display} is written as {name}_cmb.*: {scan.stem}_cmb.* in {output_dir} is the result of "
                    f"{owner[0] if owner else 'another input'}"
                )
        named = replace(scan, stem=name)
        settled.scans.append(named)
        if old is not None:
            settled.renames.append((named, old))
    return settled


def _held_by_another(ident: Identity | None) -> bool:
    """A name whose outputs were made from an input that is still there (another scan's result to keep)."""
    return ident is not None and ident[0].exists()


def _free_name(scan: ScanInput, taken: set[str]) -> str:
    if scan.stem.lower() not in taken:
        return scan.stem
    # From the file's own name (the run may have put parent folders in front already).
    base = strip_nifti_suffix(scan.path.name) if scan.series is None else scan.stem
    parents = [p for p in _resolved(scan.path).parent.parts if p not in ("/", "\\")]
    for k in range(1, len(parents) + 1):
        name = "_".join([*parents[-k:], base])
        if name.lower() not in taken:
            return name
    raise InputError(
        f"{scan.display}: every name for its outputs ({scan.stem}_cmb.*, ...) is held in the output folder by "
        "the result of another input; give another --output-dir"
    )


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()
