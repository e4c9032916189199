"""Install what the engine needs into Slicer's Python, at the first Apply and after one confirmation.

Order matters: torch first, installed by light-the-torch (as the PyTorch extension does, it picks the CUDA build
that matches the driver) in a child process, so torch is never imported into Slicer's process; then the other
requirements with lower bounds, then ``plkd`` from the extension's own copy of ``PLKDTraining`` with ``--no-deps``
so pip never replaces that torch. Nothing is installed at import time.
Only :func:`findPLKDSource`, :func:`missingPackages`, :func:`sourceVersion`, :func:`requirementsPath`,
:func:`torchInstallArguments` and :func:`copySourceForBuild` run outside Slicer. :func:`ensureExportDependencies`
installs only what the export needs.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import shutil
import tempfile
from pathlib import Path

#: Lower bound of torch, as in PLKDTraining/pyproject.toml; passed to the PyTorch extension's installer.
TORCH_REQUIREMENT = ">=2.1"


class DependencyError(RuntimeError):
    """Installation failed or was declined; the message says what to do.

    ``shown`` is True when Slicer already showed the failure to the user (its pip dialog, Slicer >= 5.12).
    """

    def __init__(self, message: str, shown: bool = False) -> None:
        super().__init__(message)
        self.shown = shown


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


def sourceVersion(source: str | Path) -> str | None:
    """The ``version`` of the ``[project]`` table of ``source/pyproject.toml`` (None when not found)."""
    try:
        text = (Path(source) / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    # tomllib is Python >= 3.11 only; the one line needed is easy to find.
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    match = re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), re.M) if project else None
    return match.group(1) if match else None


def requirementsPath(moduleDir: str | Path) -> Path:
    """``Resources/requirements.txt`` of the module."""
    return Path(moduleDir) / "Resources" / "requirements.txt"


def missingPackages(moduleDir: str | Path | None = None) -> list[str]:
    """Import names of the engine's packages that this Python lacks (checked without importing them).

    With ``moduleDir``, an installed ``plkd`` whose version differs from the extension's own copy (the
    extension was updated) counts as missing, so the first Apply after an update reinstalls it.
    """
    missing = [name for name in ("torch", "plkd", "nibabel", "scipy") if importlib.util.find_spec(name) is None]
    source = findPLKDSource(moduleDir) if moduleDir is not None else None
    if "plkd" not in missing and source is not None:
        try:
            installed = importlib.metadata.version("plkd")
        except importlib.metadata.PackageNotFoundError:
            installed = None
        wanted = sourceVersion(source)
        if wanted is not None and installed != wanted:
            missing.append("plkd")
    return missing


def copySourceForBuild(source: str | Path, destination: str | Path) -> Path:
    """Copy ``PLKDTraining`` without build leftovers into ``destination``/PLKDTraining; return that folder.

    pip builds a local project in its own folder (setuptools writes ``build/`` and ``*.egg-info`` there), and
    the extension folder may be read-only (e.g. inside a signed macOS application bundle).
    """
    target = Path(destination) / "PLKDTraining"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "*.pyc", ".*"))
    return target


def ensureDependencies(moduleDir: str | Path, reinstall: bool = False) -> bool:
    """Make torch and plkd importable in Slicer; ask the user once. Return False when the user declines.

    Raises :class:`DependencyError` with a clear message when an installation fails (``shown`` tells whether
    Slicer already displayed pip's failure). The caller must keep the user from starting a second installation
    meanwhile: on Slicer 5.10 pip runs while Slicer processes clicks.
    """
    import slicer
    from slicer.i18n import tr as _

    missing = missingPackages(moduleDir)
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
    _installTorch()
    # No --upgrade: packages that already meet the lower bounds (numpy, scipy ... that Slicer ships and has loaded)
    # must stay as they are.
    _pipInstall(["-r", str(requirementsPath(moduleDir))])
    with tempfile.TemporaryDirectory(prefix="CMBSegmentation-pip-") as tmp:
        # A copy, not editable: the extension folder may be read-only or replaced by an update.
        _pipInstall(["--force-reinstall", "--no-deps", str(copySourceForBuild(source, tmp))])
    importlib.invalidate_caches()
    stillMissing = missingPackages(moduleDir)
    if stillMissing:
        raise DependencyError(
            _("Still missing after installation: {names}. Restart Slicer, then Apply again.").format(
                names=", ".join(stillMissing)
            )
        )
    logging.info("CMBSegmentation: dependencies installed")
    return True


def torchInstallArguments(requirement: str = TORCH_REQUIREMENT) -> list[str]:
    """Arguments of ``python -m light_the_torch`` that install torch alone (no torchvision: the engine needs none).

    light-the-torch picks the CUDA build that matches the driver, as the PyTorch extension does, but here it runs
    in a child process: Slicer's own process never imports torch.
    """
    return ["install", f"torch{requirement}"]


def hasPipDialog() -> bool:
    """Whether this Slicer's ``pip_install`` shows its own progress and error dialogs (Slicer >= 5.12)."""
    try:
        import slicer.packaging  # noqa: F401
    except ImportError:
        return False
    return hasattr(slicer.packaging, "pip_install")


def ensureExportDependencies() -> bool:
    """Make nibabel (NIfTI writing) importable for the export; ask first. Return False when the user declines.

    Export also works in a Slicer that never ran the engine (a saved scene reviewed on another computer), so it
    must not need torch; Slicer itself does not ship nibabel.
    """
    if importlib.util.find_spec("nibabel") is not None:
        return True
    import slicer
    from slicer.i18n import tr as _

    question = _("Exporting needs the Python package nibabel in Slicer's Python. Install it now?")
    if not slicer.util.confirmOkCancelDisplay(question, windowTitle=_("Install nibabel")):
        return False
    _pipInstall(["nibabel>=5.0"])
    importlib.invalidate_caches()
    return importlib.util.find_spec("nibabel") is not None


def _pipInstall(args: list[str]) -> None:
    """``pip install ARGS`` in Slicer's Python, with one error message for the user.

    Slicer >= 5.12 shows a progress dialog and, on failure, its own error dialog with pip's log: the
    :class:`DependencyError` raised then is marked ``shown`` so the module does not show a second one. Slicer 5.10
    shows nothing: a busy cursor marks the wait and the error is the module's.
    """
    import slicer
    from slicer.i18n import tr as _

    shown = hasPipDialog()
    try:
        if shown:
            slicer.packaging.pip_install(args, requester=_("CMB Segmentation"))
        else:
            with slicer.util.WaitCursor():
                slicer.util.pip_install(args)
    except Exception as exc:  # pip reports every failure as a CalledProcessError or similar
        raise DependencyError(
            _(
                "Installing the engine failed: {error}\nSee the Python console for pip's output; to try again, use "
                "'Reinstall dependencies' in the Advanced section."
            ).format(error=exc),
            shown=shown,
        ) from exc


def _runPythonModule(module: str, args: list[str]) -> None:
    """``python -m MODULE ARGS`` in Slicer's Python (a child process), blocking, output to the console."""
    import slicer

    run = getattr(slicer.util, "executePythonModule", None) or slicer.util._executePythonModule  # 5.10: private
    with slicer.util.WaitCursor():
        run(module, args)


def _installTorch() -> None:
    """Install torch through light-the-torch in a child process (never imported into Slicer, no torchvision)."""
    from slicer.i18n import tr as _

    if importlib.util.find_spec("torch") is not None:
        return  # a reinstall of torch itself is done in the PyTorch Utils module
    try:
        if importlib.util.find_spec("light_the_torch") is None:
            _pipInstall(["light-the-torch>=0.5"])
        _runPythonModule("light_the_torch", torchInstallArguments())
    except DependencyError:
        raise
    except Exception as exc:  # light-the-torch failures (CalledProcessError)
        raise DependencyError(
            _(
                "PyTorch could not be installed: {error}\nSee the Python console, or install it in the PyTorch Utils "
                "module."
            ).format(error=exc)  # fmt: skip
        ) from exc
    importlib.invalidate_caches()
    if importlib.util.find_spec("torch") is None:
        raise DependencyError(_("PyTorch could not be installed; see the PyTorch Utils module for details."))
