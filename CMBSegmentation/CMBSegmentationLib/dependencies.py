"""Install what the engine needs into Slicer's Python, at the first Apply and after one confirmation.

Order matters: torch comes from the PyTorch extension (it picks the CUDA build that matches the driver),
then the other requirements with lower bounds, then ``plkd`` from the extension's own copy of
``PLKDTraining`` with ``--no-deps`` so pip never replaces that torch. Nothing is installed at import time.
Only :func:`findPLKDSource`, :func:`missingPackages` and :func:`requirementsPath` run outside Slicer.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path


class DependencyError(RuntimeError):
    """Installation failed or was declined; the message says what to do."""


def findPLKDSource(moduleDir: str | Path) -> Path | None:
    """The ``PLKDTraining`` folder shipped with the module, or None.

    Installed extension and build tree: ``<module dir>/Resources/PLKDTraining`` (copied by CMake).
    Source checkout (module added from the repository): ``<repository>/PLKDTraining``.
    """
    moduleDir = Path(moduleDir)
    for candidate in (moduleDir / "Resources" / "PLKDTraining", moduleDir.parent / "PLKDTraining"):
        if (candidate / "pyproject.toml").is_file() and (candidate / "plkd" / "__init__.py").is_file():
            return candidate
    return None


def requirementsPath(moduleDir: str | Path) -> Path:
    """``Resources/requirements.txt`` of the module."""
    return Path(moduleDir) / "Resources" / "requirements.txt"


def missingPackages() -> list[str]:
    """Import names of the engine's packages that this Python lacks (checked without importing them)."""
    return [name for name in ("torch", "plkd", "nibabel", "scipy") if importlib.util.find_spec(name) is None]


def ensureDependencies(moduleDir: str | Path, reinstall: bool = False) -> bool:
    """Make torch and plkd importable in Slicer; ask the user once. Return False when the user declines.

    Raises :class:`DependencyError` with a clear message when an installation fails.
    """
    import slicer
    from slicer.i18n import tr as _

    missing = missingPackages()
    if not missing and not reinstall:
        return True
    source = findPLKDSource(moduleDir)
    if source is None:
        raise DependencyError(_("The extension's copy of PLKDTraining is missing; please reinstall the extension."))
    question = _(
        "CMB Segmentation needs PyTorch and its inference engine (plkd) in Slicer's Python.\n"
        "They will be downloaded and installed now (several hundred MB; this can take minutes).\n\nContinue?"
    )
    if not slicer.util.confirmOkCancelDisplay(question, windowTitle=_("Install dependencies")):
        return False
    with slicer.util.WaitCursor():
        _installTorch()
        try:
            upgrade = ["--upgrade"] if reinstall else []
            slicer.util.pip_install([*upgrade, "-r", str(requirementsPath(moduleDir))])
            # A copy, not editable: the extension folder may be read-only or replaced by an update.
            slicer.util.pip_install([*upgrade, *(["--force-reinstall"] if reinstall else []), "--no-deps", str(source)])
        except Exception as exc:  # pip reports every failure as a CalledProcessError or similar
            raise DependencyError(
                _("Installing the engine failed: {error}\nSee the Python console for pip's output.").format(error=exc)
            ) from exc
    importlib.invalidate_caches()
    stillMissing = missingPackages()
    if stillMissing:
        raise DependencyError(_("Still missing after installation: {names}").format(names=", ".join(stillMissing)))
    logging.info("CMBSegmentation: dependencies installed")
    return True


def _installTorch() -> None:
    from slicer.i18n import tr as _

    if importlib.util.find_spec("torch") is not None:
        return
    try:
        import PyTorchUtils
    except ImportError as exc:
        raise DependencyError(
            _("The PyTorch extension is required: install 'PyTorch' from the Extensions Manager and restart Slicer.")
        ) from exc
    # The user already confirmed the whole installation once: no second dialog.
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
    if torch is None:
        raise DependencyError(_("PyTorch could not be installed; see the PyTorch module for details."))
