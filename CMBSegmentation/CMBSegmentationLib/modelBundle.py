"""Which contrast a model bundle was trained on, read without loading it (no torch, no plkd import).

A bundle is a folder or a ``.zip`` holding ``manifest.json`` (at its root or in its only sub-folder) with a
``"modality"`` key ("T2S" or "SWI"). The default bundle is the one the engine uses without ``--model``:
``plkd/bundled/cmb-t2s`` in the installed engine (``plkd.bundle.find_default_bundle``), found here through the
package's location only.
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path, PurePosixPath

MANIFEST = "manifest.json"
#: The module's modality names -> the manifests' names.
MANIFEST_MODALITY = {"T2*": "T2S", "SWI": "SWI"}


def bundleModality(path: str | Path) -> str | None:
    """The ``modality`` of the bundle folder or ``.zip`` at ``path`` (upper case), or None when unreadable."""
    path = Path(path)
    try:
        if path.is_dir():
            manifest = path / MANIFEST
            if not manifest.is_file():
                subfolders = [p for p in path.iterdir() if p.is_dir() and (p / MANIFEST).is_file()]
                manifest = subfolders[0] / MANIFEST if len(subfolders) == 1 else manifest
            data = json.loads(manifest.read_text(encoding="utf-8"))
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if PurePosixPath(n).name == MANIFEST]
                if not names:
                    return None
                data = json.loads(archive.read(min(names, key=len)))
        else:
            return None
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    modality = data.get("modality") if isinstance(data, dict) else None
    return str(modality).upper() if modality else None


def defaultBundleDir() -> Path | None:
    """``plkd/bundled`` of the installed engine, or None when the engine is not installed."""
    spec = importlib.util.find_spec("plkd")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "bundled"


def defaultBundle(modality: str = "T2S", bundledDir: str | Path | None = None) -> Path | None:
    """The shipped bundle for ``modality`` (manifest name), as ``plkd.bundle.find_default_bundle`` finds it."""
    base = Path(bundledDir) if bundledDir is not None else defaultBundleDir()
    if base is None or not base.is_dir():
        return None
    stem = f"cmb-{modality.lower()}"
    for candidate in (base / stem, base / f"{stem}.zip"):
        if candidate.exists():
            return candidate
    for candidate in sorted(base.iterdir()):
        if bundleModality(candidate) == modality.upper():
            return candidate
    return None


def chooseModel(modelPath: str, modality: str, bundledDir: str | Path | None = None) -> tuple[str, str | None]:
    """The ``--model`` value for a run and a warning when the model does not match the chosen modality.

    ``modelPath`` empty: the engine's default bundle; when the user chose a modality for which a shipped bundle
    exists that is not the engine's default (e.g. SWI), that bundle is passed explicitly. ``modality`` is the
    module's name ("T2*" or "SWI").
    """
    wanted = MANIFEST_MODALITY.get(modality, modality).upper()
    path = (modelPath or "").strip()
    if not path:
        engineDefault = defaultBundle("T2S", bundledDir)
        matching = defaultBundle(wanted, bundledDir)
        if matching is not None and matching != engineDefault:
            return str(matching), None
        trained = bundleModality(engineDefault) if engineDefault is not None else None
        described = "the default model"
    else:
        trained = bundleModality(path)
        described = f"model '{Path(path).name}'"
    if trained and trained != wanted:
        return path, f"{described} was trained on {trained} images, but the input is {modality}; results may be poor"
    return path, None
