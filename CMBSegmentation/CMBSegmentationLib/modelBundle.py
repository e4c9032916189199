"""Which contrast a model bundle was trained on, read without loading it (no torch, no plkd import).

A bundle is a folder or a ``.zip`` holding ``manifest.json`` (at its root or in its only sub-folder) with a
``"modality"`` key ("T2S" or "SWI"). Without ``--model`` the engine uses its installed bundle for the scan's
modality: ``plkd/bundled/cmb-t2s`` or ``cmb-swi`` (``plkd.bundle.find_default_bundle``), found here through the
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
    """The ``modality`` of the bundle folder or ``.zip`` at ``path`` ("T2S", "SWI"; another name upper case), or None
    when unreadable."""
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
    if not modality:
        return None
    # As the engine reads it: "T2*" and "t2s" are T2S (else a bundle that names it so was "another modality").
    value = str(modality).strip().upper()
    return MANIFEST_MODALITY.get(value, value)


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
    """The ``--model`` value for a run and a warning when the run will not use a model of the chosen modality.

    ``modelPath`` empty: the engine chooses its installed bundle for the modality (``--modality``), so ``""`` is
    returned; the warning says when none is installed for it. A given model is returned as it is, with a warning
    when its manifest names another modality. ``modality`` is the module's name ("Auto", "T2*" or "SWI"); "Auto"
    is decided by the engine from the scan, which reports its choice.
    """
    path = (modelPath or "").strip()
    if modality.strip().lower() == "auto":
        return path, None
    wanted = MANIFEST_MODALITY.get(modality, modality).upper()
    if not path:
        if defaultBundle(wanted, bundledDir) is not None:
            return "", None
        fallback = defaultBundle("T2S", bundledDir) or defaultBundle("SWI", bundledDir)
        trained = bundleModality(fallback) if fallback is not None else None
        if trained and trained != wanted:
            return "", f"no {modality} model is installed: the {trained} model will be used; results may be poor"
        return "", None
    trained = bundleModality(path)
    if trained and trained != wanted:
        return path, (
            f"model '{Path(path).name}' was trained on {trained} images, but the input is {modality}; "
            "results may be poor"
        )
    return path, None
