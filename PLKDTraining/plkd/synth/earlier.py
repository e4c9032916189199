"""What an earlier data set in ``plkd synth``'s output folder would leave behind.

A folder is one data set: ``manifest.json`` lists its subjects, and every reader of it (``plkd
train``, ``plkd tune``, and ``plkd predict``/``plkd evaluate``, which walk the folder) must see
those subjects and no others. Writing a new data set over an earlier one used to replace only the
subjects it wrote: with fewer subjects, another contrast or after an interruption, the earlier
subjects stayed beside the new ones, and predicting and evaluating the folder scored both
together without a word. So, before any work:

- files in the folder that ``plkd synth`` does not write are refused (they are someone else's);
- an earlier data set made with other settings, or with subjects this run does not write again,
  is refused unless ``overwrite``, which removes it first.

A rerun with the same settings (an interrupted run, or more subjects) regenerates the same
subjects and needs nothing removed.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from plkd.errors import InputError
from plkd.modalities import MODALITIES

#: Manifest keys that decide what a subject of a data set looks like, with the value an older
#: manifest that lacks the key was made with.
SETTINGS_DEFAULTS: dict[str, Any] = {
    "modality": "T2S",
    "spacing_mm": None,
    "base_seed": None,
    "lesion_model": "dipole",
    "domain": "standard",
    "count": None,
    "phase_mask": 0.0,
    "fine_spacing": 1.0,
}

_SUBJECT_DIR = re.compile(r"sub-\d{4,}")


def data_set_settings(manifest: dict[str, Any]) -> dict[str, Any]:
    """The settings of a manifest that decide its subjects' content (absent keys at their defaults)."""
    settings = {key: manifest.get(key, default) for key, default in SETTINGS_DEFAULTS.items()}
    share = settings["phase_mask"]
    settings["phase_mask"] = 1.0 if share is True else float(share or 0.0)
    if settings["spacing_mm"] is not None:
        settings["spacing_mm"] = [float(v) for v in settings["spacing_mm"]]
    return settings


def _synth_file_names(sid: str) -> set[str]:
    names = {f"{sid}_preview.png"}
    for m in MODALITIES:
        names |= {f"{sid}_space-{m}_desc-masked_{m}.nii.gz", f"{sid}_space-{m}_CMB.nii.gz"}
        names.add(f"{sid}_space-{m}_desc-brain_mask.nii.gz")
    return names


def _visible(folder: Path) -> list[Path]:
    """Entries of ``folder`` not hidden (temporaries of killed runs are hidden and cleaned elsewhere)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _is_subject_folder(path: Path) -> bool:
    """A folder ``plkd synth`` wrote: ``sub-NNNN`` holding only the files it writes for that subject."""
    if not path.is_dir() or not _SUBJECT_DIR.fullmatch(path.name):
        return False
    names = _synth_file_names(path.name)
    return all(p.is_file() and p.name in names for p in _visible(path))


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(manifest, dict) and str(manifest.get("format", "")).startswith("plkd-synth/"):
        return manifest
    return None


def clear_earlier_data_set(
    out: Path, subject_ids: list[str], settings: dict[str, Any], *, overwrite: bool = False
) -> list[Path]:
    """Check ``out`` before a data set of ``subject_ids`` made with ``settings`` (manifest form, see
    :func:`data_set_settings`) is written there; with ``overwrite`` remove an earlier data set that
    would otherwise be left mixed with it. Returns what was removed.

    Raises:
        InputError: ``out`` holds files ``plkd synth`` does not write, or (without ``overwrite``)
            an earlier data set made with other settings or holding subjects this run does not
            write again.
    """
    if not out.is_dir():
        return []
    entries = [p for p in _visible(out) if p.name != "manifest.json"]
    foreign = [p for p in entries if not _is_subject_folder(p)]
    if foreign:
        names = ", ".join(p.name for p in foreign[:4]) + (f" … (+{len(foreign) - 4})" if len(foreign) > 4 else "")
        raise InputError(
            f"{out} holds files plkd synth did not write ({names}); a data set written there would be read "
            "together with them: give an empty or new folder"
        )
    manifest_path = out / "manifest.json"
    manifest = _read_manifest(manifest_path) if manifest_path.exists() else None
    if manifest_path.exists() and manifest is None:
        raise InputError(f"{manifest_path} is not a plkd synth manifest; give an empty or new folder")
    if not entries and manifest is None:
        return []
    wanted = set(subject_ids)
    extra = [p for p in entries if p.name not in wanted]
    why = []
    other = []
    if manifest is not None:  # without one (a run stopped in its first subject) only extra subjects count
        old = data_set_settings(manifest)
        other = [f"{k} {old[k]!r} -> {settings[k]!r}" for k in SETTINGS_DEFAULTS if old[k] != settings[k]]
    if other:
        why.append("made with other settings (" + ", ".join(other) + ")")
    if extra:
        names = ", ".join(p.name for p in extra[:3]) + (" …" if len(extra) > 3 else "")
        why.append(f"with {len(extra)} subject(s) this run does not write ({names})")
    if not why:
        return []  # the same data set again: every subject is regenerated as it was
    if not overwrite:
        raise InputError(
            f"{out} holds an earlier data set " + " and ".join(why) + ": written over, its subjects would stay "
            "mixed with the new ones; give another folder, or --overwrite to remove the earlier data set first"
        )
    removed = []
    if manifest is not None:
        manifest_path.unlink()  # first: an interruption must never leave a manifest naming removed subjects
        removed.append(manifest_path)
    for p in entries:
        shutil.rmtree(p)
        removed.append(p)
    return removed
