"""Prepare the files of one engine run and run it to completion (the blocking path used by scripts).

The widget runs the same command through ``processRunner`` so Slicer stays responsive; batch scripts and
``CMBSegmentationLogic.process(waitForCompletion=True)`` use :func:`runBlocking`, which needs no Qt.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from CMBSegmentationLib.backgroundProcess import BackgroundProcess
from CMBSegmentationLib.commandBuilder import (
    PredictOutputs,
    buildPredictCommand,
    buildSinglePointCommand,
    predictOutputs,
)
from CMBSegmentationLib.progressParsing import ProgressEvent, errorMessageFromStderr
from CMBSegmentationLib.sceneScratch import scratchNodes
from CMBSegmentationLib.segmentLabelMap import segmentationToVolumeFrame
from CMBSegmentationLib.sequenceInfo import loadedFile, writeSequenceSidecar
from CMBSegmentationLib.volumeIO import (
    arrayFromVolumeNode,
    gridDisplacementMm,
    ijkToRas,
    sameGridToleranceMm,
    writeVolumeNodeAsNifti,
)

#: A scalar volume of whole numbers with more distinct values is an image (``plkd.inference.brainmask``'s rule).
MAX_MASK_LABELS = 1000


class EngineError(RuntimeError):
    """The engine failed; the message is its own one-line error when it gave one."""


class EngineCancelledError(EngineError):
    """The run was cancelled; nothing was imported."""


@dataclass(frozen=True)
class PreparedRun:
    """Files of one run inside its working folder."""

    inputPath: Path
    maskPath: Path | None
    outputDir: Path
    outputs: PredictOutputs
    #: For a click: the result under review as the engine's ``--existing`` label map (see ``clickReview``).
    existingPath: Path | None = None
    #: The file the input volume was loaded from: the engine reads its metadata as the input's (``--metadata-from``).
    metadataPath: Path | None = None

    @property
    def workFolder(self) -> Path:
        """The folder of the whole run (inputs and outputs): remove it when the run is over."""
        return self.outputDir.parent


def safeFileName(name: str) -> str:
    """A node name made safe as a file name ("T2* axial" -> "T2_axial"); the engine splits ids at "_"."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in name).strip("-.")
    return cleaned or "volume"


def prepareInputs(inputVolume, brainMask, workDir: str | Path) -> PreparedRun:
    """Write the input volume (and the brain mask, if any) as NIfTI into ``workDir``.

    ``workDir`` holds a copy of the patient image: make it with ``workFolders.createWorkFolder`` and remove it
    after the run (``workFolder`` of the result).
    """
    workDir = Path(workDir)
    # The engine's --modality auto reads the file name last: "T2*" must stay a word ("T2star"), not become "T2".
    name = safeFileName(inputVolume.GetName().replace("*", "star"))
    inputPath = writeVolumeNodeAsNifti(inputVolume, workDir / "input" / f"{name}.nii.gz")
    # The sequence, for the engine's --modality auto: the file the volume was loaded from, read by the engine itself
    # (--metadata-from), else its DICOM series' tags as the input's sidecar, else the node's name (the file's name).
    metadataPath = loadedFile(inputVolume)
    if metadataPath is None:
        writeSequenceSidecar(inputVolume, inputPath, _dicomDatabase())
    maskPath = None
    if brainMask is not None:
        maskPath = writeMaskAsNifti(brainMask, inputVolume, workDir / "input" / f"{name}-brainmask.nii.gz")
    outputDir = workDir / "output"
    outputDir.mkdir(parents=True, exist_ok=True)
    return PreparedRun(inputPath, maskPath, outputDir, predictOutputs(inputPath, outputDir), metadataPath=metadataPath)


def engineCommand(
    prepared: PreparedRun,
    pythonExecutable: str,
    modelPath=None,
    device: str = "Auto",
    threshold: float | None = None,
    modality: str | None = None,
    pointRas=None,
) -> list[str]:
    """The ``plkd predict`` argv of a prepared run: the whole scan, or with ``pointRas`` (RAS mm, the volume's own
    frame) the one microbleed clicked there (the threshold is then the bundle's). Every file of ``prepared`` goes with
    it: the brain mask, the result under review (``--existing``) and the file the volume was loaded from
    (``--metadata-from``), so that the click is read as the run was."""
    if pointRas is None:
        return buildPredictCommand(
            pythonExecutable,
            prepared.inputPath,
            prepared.outputDir,
            modelPath,
            device,
            prepared.maskPath,
            threshold,
            modality=modality,
            metadataPath=prepared.metadataPath,
        )
    return buildSinglePointCommand(
        pythonExecutable,
        prepared.inputPath,
        prepared.outputDir,
        pointRas,
        modelPath,
        device,
        existingPath=prepared.existingPath,
        modality=modality,
        metadataPath=prepared.metadataPath,
    )


def _dicomDatabase():
    """Slicer's DICOM database, or None (outside Slicer, or before the DICOM module has opened one)."""
    try:
        import slicer
    except ImportError:
        return None
    return getattr(slicer, "dicomDatabase", None)


def writeMaskAsNifti(maskNode, inputVolume, path: str | Path) -> Path:
    """Write a brain mask given as a volume, label map or segmentation on the input volume's grid.

    Label maps and segmentations are written as 0/1; a scalar volume with fractional values (a
    probability map) keeps its values, so the engine applies its own rule to it (cut at half the
    maximum, with a warning). Raises ValueError for an empty mask or one on another grid.
    """
    import nibabel

    scene = inputVolume.GetScene()
    soft = None
    if maskNode.IsA("vtkMRMLSegmentationNode"):
        import vtk
        from slicer import vtkSlicerSegmentationsModuleLogic

        # Every segment, shown or hidden: the visible ones alone made a brain mask of whatever the reader happened to
        # show (cortex hidden to look at deep structures: no lobar microbleed searched, without a word).
        segmentation = maskNode.GetSegmentation()
        ids = vtk.vtkStringArray()
        for i in range(segmentation.GetNumberOfSegments()):
            ids.InsertNextValue(segmentation.GetNthSegmentID(i))
        # The export also adds a display node and a colour table: all of them go again.
        with scratchNodes(scene):
            labelNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
            if ids.GetNumberOfValues() and not vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                maskNode, ids, labelNode, inputVolume
            ):
                raise ValueError(f"could not turn segmentation '{maskNode.GetName()}' into a brain mask")
            mask = arrayFromVolumeNode(labelNode) > 0
    else:
        values = arrayFromVolumeNode(maskNode)
        mask = values > 0
        # A scalar volume with fractional values is a probability map: the engine cuts it at half its
        # maximum and says so (``plkd predict --mask``); ``> 0`` here would keep its faint tail. One of many whole
        # numbers is an image chosen by mistake (the input itself): with its values the engine refuses it.
        if not maskNode.IsA("vtkMRMLLabelMapVolumeNode") and (
            np.any(values[mask] != np.round(values[mask])) or np.unique(values[mask]).size > MAX_MASK_LABELS
        ):
            soft = values.astype(np.float32)
        # Where Slicer shows the mask: through its parent transform and back through the input's (a mask moved off the
        # brain by a transform was written onto the input as if it lay there; one registered onto it was refused).
        toInputFrame = segmentationToVolumeFrame(maskNode, inputVolume)
        if toInputFrame is None:
            raise ValueError(
                f"brain mask '{maskNode.GetName()}' lies under a non-linear transform relative to "
                f"'{inputVolume.GetName()}'; harden it first"
            )
        # The engine's rule (volumeIO.gridDisplacementMm): the mask is written with the input's matrix, so one tilted
        # within an element-wise 1e-3 would be moved onto the input by up to a few tenths of a mm without a word.
        sameGrid = mask.shape == inputVolume.GetImageData().GetDimensions() and gridDisplacementMm(
            toInputFrame @ ijkToRas(maskNode), ijkToRas(inputVolume), mask.shape
        ) <= sameGridToleranceMm(ijkToRas(inputVolume))
        if not sameGrid:
            raise ValueError(
                f"brain mask '{maskNode.GetName()}' is not on the grid of '{inputVolume.GetName()}'; "
                "resample it first or give it as a segmentation"
            )
    if not mask.any():
        raise ValueError(f"brain mask '{maskNode.GetName()}' is empty")
    affine = ijkToRas(inputVolume)
    image = nibabel.Nifti1Image(soft if soft is not None else mask.astype(np.uint8), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(image, str(path))
    return path


#: The engine stops once the process with this id (Slicer's) is gone (``plkd.parent.ENV_VAR``).
PARENT_PID_VARIABLE = "PLKD_PARENT_PID"


def engineEnvironment() -> dict[str, str]:
    """Environment for the engine's Python process.

    Inside Slicer: the environment Slicer was started with (``slicer.util.startupEnvironment()``), as
    ``slicer.util.launchConsoleProcess`` does by default; ``PythonSlicer`` is itself a launcher that adds
    Slicer's Python paths. Elsewhere (scripts, CI): this process's environment. Either way the child writes
    UTF-8, unbuffered, so progress lines and error messages arrive whole and in time, and it knows this process
    (``PLKD_PARENT_PID``, ``plkd.parent``): the engine runs in a process group of its own (so that Cancel stops its
    tree), which nothing stops when Slicer is killed; it stops itself, writing nothing more, once Slicer is gone.
    """
    env = None
    try:
        import slicer

        if getattr(slicer, "app", None) is not None and hasattr(slicer.util, "startupEnvironment"):
            env = dict(slicer.util.startupEnvironment())
    except ImportError:
        pass
    env = dict(os.environ) if env is None else env
    env.update({"PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1", PARENT_PID_VARIABLE: str(os.getpid())})
    return env


def runBlocking(
    argv: Sequence[str],
    onProgress: Callable[[ProgressEvent], None] | None = None,
    env: dict[str, str] | None = None,
    onLog: Callable[[str, str], None] | None = None,
    idle: Callable[[], None] | None = None,
    shouldCancel: Callable[[], bool] | None = None,
) -> None:
    """Run the engine to the end; raise :class:`EngineError` with the engine's message when it fails.

    ``env`` None means :func:`engineEnvironment`. ``onLog(stream, line)`` receives every output line as it
    arrives; ``idle()`` is called about ten times a second (Slicer: process GUI events so the application does not
    freeze), and when ``shouldCancel()`` becomes True the whole process tree is stopped and
    :class:`EngineCancelledError` is raised.
    """
    try:
        process = BackgroundProcess(argv, env=engineEnvironment() if env is None else env)
    except OSError as exc:
        raise EngineError(f"cannot start the engine ({argv[0]}): {exc}") from exc
    code = process.wait(onProgress, onLog=onLog, idle=idle, shouldCancel=shouldCancel)
    if process.cancelled:
        raise EngineCancelledError("cancelled")
    if code != 0:
        raise EngineError(describeFailure(code, process.stderr))


def describeFailure(code: int, stderr: str) -> str:
    """One message for a failed run: the engine's own error line, else the end of its stderr."""
    message = errorMessageFromStderr(stderr)
    if message:
        return message
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    if code < 0:  # POSIX: ended by a signal, which leaves no message of its own
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = " (the system may have run out of memory)" if name == "SIGKILL" else ""
        return f"the engine was killed by {name}{why}" + (f":\n{tail}" if tail else "")
    return f"the engine stopped with exit code {code}" + (f":\n{tail}" if tail else "")
