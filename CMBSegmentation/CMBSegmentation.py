"""CMB Segmentation: detect, segment and review cerebral microbleeds in T2*/SWI MRI.

This file holds the Slicer-facing classes only; the work is done in ``CMBSegmentationLib`` and by the
``plkd`` inference engine, which runs as a separate process.
"""

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional, Union

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from CMBSegmentationLib import candidateTable as candidateTableLib
from CMBSegmentationLib import commandBuilder, dependencies, inferenceJob, reportExport, resultImport, reviewState
from CMBSegmentationLib.runState import RunState, RunStateMachine

MODALITIES = ["T2*", "SWI"]


class CMBSegmentation(ScriptedLoadableModule):
    """Module description shown by Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("CMB Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["CMB Segmentation contributors"]
        self.parent.helpText = _(
            "Detects and segments cerebral microbleeds in T2*-weighted or susceptibility-weighted MRI, also "
            "in thick-slice (low-resolution) scans, with a two-stage network (screening + E2U-Net) trained by "
            "progressive-learning knowledge distillation. Select the input volume and click Apply; then review "
            "each candidate (Accept/Reject, add a missed one by clicking) and export the result.<br>"
            "<b>Research software, not a medical device.</b>"
        )
        self.parent.acknowledgementText = _(
            "Based on the PLKD method for cerebral microbleed segmentation in low-resolution MRI. "
            "The shipped model is trained on synthetic data."
        )


@parameterNodeWrapper
class CMBSegmentationParameterNode:
    """Parameters of the module, saved with the scene.

    inputVolume: T2* or SWI volume to analyse.
    brainMask: optional brain mask (volume, label map or segmentation); the engine computes one otherwise.
    modality: contrast of the input; checked against the model bundle.
    modelPath: model bundle folder or .zip; empty = the engine's default bundle.
    device: Auto (GPU when usable, else CPU), CPU or GPU.
    threshold: minimum candidate probability.
    outputSegmentation: one segment per microbleed.
    candidateTable: one row per candidate with its review status.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    brainMask: Optional[Union[vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode]] = None  # noqa: UP007, UP045
    modality: Annotated[str, Choice(MODALITIES)] = "T2*"
    modelPath: str = ""
    device: Annotated[str, Choice(list(commandBuilder.DEVICE_CHOICES))] = "Auto"
    threshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    outputSegmentation: vtkMRMLSegmentationNode
    candidateTable: vtkMRMLTableNode


class CMBSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Inputs, Apply/Cancel with progress, candidate review and export."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._runner = None
        self._preparedRun = None
        self._runVolume = None  # the volume the running engine works on (the selection may change meanwhile)
        self._runState = RunStateMachine()
        self._pointsNode = None
        self._shortcuts = []

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CMBSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CMBSegmentationLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.browseModelButton.connect("clicked(bool)", self.onBrowseModel)
        self.ui.reinstallButton.connect("clicked(bool)", self.onReinstallDependencies)
        self.ui.candidatesTableWidget.connect("itemSelectionChanged()", self.onCandidateSelected)
        self.ui.nextButton.connect("clicked(bool)", lambda: self.selectRelative(+1))
        self.ui.previousButton.connect("clicked(bool)", lambda: self.selectRelative(-1))
        self.ui.acceptButton.connect("clicked(bool)", lambda: self.setSelectedStatus(candidateTableLib.STATUS_ACCEPTED))
        self.ui.rejectButton.connect("clicked(bool)", lambda: self.setSelectedStatus(candidateTableLib.STATUS_REJECTED))
        self.ui.reviewThresholdSliderWidget.connect("valueChanged(double)", self.onReviewThresholdChanged)
        self.ui.addMissedButton.connect("clicked(bool)", self.onAddMissed)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        # Without a main window (e.g. "Slicer --no-main-window") the shortcuts belong to the module panel.
        shortcutParent = slicer.util.mainWindow() or self.parent
        for keys, action in (
            ("Ctrl+Right", lambda: self.selectRelative(+1)),
            ("Ctrl+Left", lambda: self.selectRelative(-1)),
            ("Alt+A", lambda: self.setSelectedStatus(candidateTableLib.STATUS_ACCEPTED)),
            ("Alt+R", lambda: self.setSelectedStatus(candidateTableLib.STATUS_REJECTED)),
        ):
            shortcut = qt.QShortcut(qt.QKeySequence(keys), shortcutParent)
            shortcut.setEnabled(False)  # only while the module is shown, see enter()/exit()
            shortcut.connect("activated()", action)
            self._shortcuts.append(shortcut)
        self._runState.addListener(lambda old, new: self._updateRunGui())
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelRun()
        for shortcut in self._shortcuts:
            shortcut.setParent(None)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        for shortcut in self._shortcuts:
            shortcut.setEnabled(True)

    def exit(self) -> None:
        for shortcut in self._shortcuts:
            shortcut.setEnabled(False)
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelRun()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, inputParameterNode: Optional[CMBSegmentationParameterNode]) -> None:  # noqa: UP007, UP045
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()
            self.refreshCandidates()

    # Run ----------------------------------------------------------------------------------------------------

    def _checkCanApply(self, caller=None, event=None) -> None:
        self._updateRunGui()

    def _updateRunGui(self) -> None:
        busy = self._runState.busy
        hasInput = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.text = _("Cancel") if busy else _("Apply")
        self.ui.applyButton.enabled = busy or hasInput
        self.ui.applyButton.toolTip = _("Stop the running detection") if busy else _("Detect microbleeds")
        self.ui.progressBar.visible = busy
        self.ui.addMissedButton.enabled = not busy and hasInput and self._reviewNodes() is not None
        if self._runState.state == RunState.CANCELLING:
            self.ui.statusLabel.text = _("Cancelling...")

    def onApplyButton(self) -> None:
        if self._runState.busy:
            self._cancelRun()
            return
        # Outside the wait cursor: the confirmation and pip's progress are dialogs the user works with.
        with slicer.util.tryWithErrorDisplay(_("Failed to install the dependencies.")):
            if not self.logic.ensureDependencies():
                return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to start the microbleed detection."), waitCursor=True):
            self._startRun(p.inputVolume, p.brainMask, p.threshold, self._onRunFinished)

    def _startRun(self, volume, brainMask, threshold, onFinished, pointRas=None) -> None:
        """Write the inputs and start the engine in the background; ``onFinished`` runs on the main thread."""
        p = self._parameterNode
        self._runState.transition(RunState.STARTING)
        try:
            self.ui.progressBar.value = 0
            self._preparedRun, argv = self.logic.prepareRun(
                volume, brainMask, p.modality, p.modelPath, p.device, threshold, pointRas=pointRas
            )
            self._runVolume = volume
            self._runner = self.logic.createRunner(argv, self._onProgress, onFinished)
            self._runner.start()
            self._runState.transition(RunState.RUNNING)
            self.ui.statusLabel.text = _("Starting the engine...")
        except Exception:
            self._runState.transition(RunState.FAILED)
            self._cleanupRun()
            raise

    def _cancelRun(self) -> None:
        """Kill the running engine (whole process tree); results of a cancelled run are never imported."""
        if self._runner is None or not self._runner.running:
            return
        if self._runState.canTransition(RunState.CANCELLING):
            self._runState.transition(RunState.CANCELLING)
        self._runner.cancel()

    def _onProgress(self, event) -> None:
        if event.fraction is not None:
            self.ui.progressBar.maximum = 100
            self.ui.progressBar.value = int(round(100 * event.fraction))
        stage = event.message or event.stage
        if event.total:
            stage = f"{stage} ({event.done}/{event.total})"
        self.ui.statusLabel.text = stage

    def _endUnfinishedRun(self, errorMessage, cancelled) -> None:
        """A cancelled or failed run: nothing is imported, the working folder is removed."""
        if cancelled:
            if self._runState.canTransition(RunState.CANCELLING):
                self._runState.transition(RunState.CANCELLING)
            self._runState.transition(RunState.IDLE)
            self.ui.statusLabel.text = _("Cancelled; the scene was not changed.")
        else:
            self._runState.transition(RunState.FAILED)
            reason = errorMessage.strip().splitlines()[0] if errorMessage.strip() else ""
            self.ui.statusLabel.text = _("Failed: {reason}").format(reason=reason)
            # The engine's own one-line message is what the user needs; the rest goes into the details.
            slicer.util.errorDisplay(
                _("Microbleed detection failed: {reason}").format(reason=reason), detailedText=errorMessage
            )
        self._cleanupRun()

    def _onRunFinished(self, errorMessage, cancelled) -> None:
        if cancelled or errorMessage:
            self._endUnfinishedRun(errorMessage, cancelled)
            return
        self._runState.transition(RunState.IMPORTING)
        self.ui.statusLabel.text = _("Importing results...")
        p = self._parameterNode
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to import the results."), waitCursor=True):
                if p is None or self._runVolume is None or self._runVolume.GetScene() is None:
                    raise RuntimeError(_("The input volume or the scene was closed during the run."))
                result = self.logic.importRun(
                    self._preparedRun, self._runVolume, p.outputSegmentation, p.candidateTable, p.threshold
                )
                p.outputSegmentation = result.segmentationNode
                p.candidateTable = result.tableNode
                self.ui.reviewThresholdSliderWidget.value = p.threshold
                self._runState.transition(RunState.DONE)
                self.ui.statusLabel.text = _("{count} microbleed candidate(s) found.").format(
                    count=len(result.segmentIds)
                )
        finally:
            if self._runState.state == RunState.IMPORTING:
                self._runState.transition(RunState.FAILED)
            self._cleanupRun()
            self.refreshCandidates()

    def _cleanupRun(self) -> None:
        if self._preparedRun is not None:
            shutil.rmtree(self._preparedRun.outputDir.parent, ignore_errors=True)
        self._preparedRun = None
        self._runVolume = None
        self._runner = None

    def onBrowseModel(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(
            self.parent, _("Select a model bundle folder"), self._parameterNode.modelPath or ""
        )
        if path:
            self._parameterNode.modelPath = path

    def onReinstallDependencies(self) -> None:
        if self._runState.busy:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to reinstall the dependencies.")):
            if self.logic.ensureDependencies(reinstall=True):
                slicer.util.infoDisplay(
                    _("The inference engine was reinstalled. PyTorch itself is managed in the PyTorch Utils module.")
                )

    # Review -------------------------------------------------------------------------------------------------

    def _reviewNodes(self):
        p = self._parameterNode
        if not p or not p.outputSegmentation or not p.candidateTable:
            return None
        if p.candidateTable.GetAttribute(candidateTableLib.ATTRIBUTE_ROLE) != candidateTableLib.ROLE_CANDIDATES:
            return None
        return p.outputSegmentation, p.candidateTable

    def _reviewThreshold(self) -> float:
        return float(self.ui.reviewThresholdSliderWidget.value)

    def refreshCandidates(self) -> None:
        """Fill the review table, highest probability first."""
        table = self.ui.candidatesTableWidget
        selected = self._selectedSegmentId()
        table.clearContents()
        nodes = self._reviewNodes()
        rows = []
        if nodes:
            rows = sorted(
                candidateTableLib.readRows(nodes[1]), key=lambda r: -(r.probability if r.probability is not None else 2)
            )
        headers = [_("Segment"), _("Probability"), _("Volume (mm³)"), _("Status"), _("Location")]
        table.setColumnCount(len(headers))
        table.setHorizontalHeaderLabels(headers)
        table.setRowCount(len(rows))
        threshold = self._reviewThreshold()
        for r, row in enumerate(rows):
            segment = nodes[0].GetSegmentation().GetSegment(row.segmentId)
            values = [
                segment.GetName() if segment else row.segmentId,
                "" if row.probability is None else f"{row.probability:.2f}",
                f"{row.volumeMm3:.1f}",
                row.status
                if reviewState.isIncluded(row, threshold) or row.status != candidateTableLib.STATUS_NOT_SEEN
                else _("below threshold"),
                row.location,
            ]
            for c, text in enumerate(values):
                item = qt.QTableWidgetItem(text)
                item.setData(qt.Qt.UserRole, row.segmentId)
                table.setItem(r, c, item)
            if row.segmentId == selected:
                table.selectRow(r)
        table.resizeColumnsToContents()
        for button in (
            self.ui.nextButton,
            self.ui.previousButton,
            self.ui.acceptButton,
            self.ui.rejectButton,
            self.ui.exportButton,
        ):
            button.enabled = bool(rows)

    def _selectedSegmentId(self):
        items = self.ui.candidatesTableWidget.selectedItems()
        return items[0].data(qt.Qt.UserRole) if items else None

    def selectRelative(self, step: int) -> None:
        table = self.ui.candidatesTableWidget
        if table.rowCount == 0:
            return
        current = table.currentRow()
        table.selectRow(min(max(current + step, 0), table.rowCount - 1) if current >= 0 else 0)

    def onCandidateSelected(self) -> None:
        nodes, segmentId = self._reviewNodes(), self._selectedSegmentId()
        if not nodes or not segmentId:
            return
        rowIndex = candidateTableLib.rowIndexOfSegment(nodes[1], segmentId)
        if rowIndex < 0:
            return
        ras = self.logic.candidateCenterWorld(nodes[0], candidateTableLib.readRows(nodes[1])[rowIndex])
        for sliceNode in slicer.util.getNodesByClass("vtkMRMLSliceNode"):
            sliceNode.JumpSliceByCentering(*ras)

    def setSelectedStatus(self, status: str) -> None:
        nodes, segmentId = self._reviewNodes(), self._selectedSegmentId()
        if not nodes or not segmentId:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not change the candidate's status.")):
            reviewState.setStatus(nodes[0], nodes[1], segmentId, status, self._reviewThreshold())
            row = self.ui.candidatesTableWidget.currentRow()
            self.refreshCandidates()
            self.ui.candidatesTableWidget.selectRow(min(row + 1, self.ui.candidatesTableWidget.rowCount - 1))

    def onReviewThresholdChanged(self, value: float) -> None:
        nodes = self._reviewNodes()
        if nodes:
            reviewState.updateVisibility(nodes[0], nodes[1], value)
            self.refreshCandidates()

    def onAddMissed(self) -> None:
        """Let the reader click a point; then segment the microbleed there."""
        if self._pointsNode is None or self._pointsNode.GetScene() is None:
            self._pointsNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", _("Missed microbleeds"))
            self.addObserver(self._pointsNode, self._pointsNode.PointPositionDefinedEvent, self._onPointPlaced)
        selectionNode = slicer.app.applicationLogic().GetSelectionNode()
        selectionNode.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsFiducialNode")
        selectionNode.SetActivePlaceNodeID(self._pointsNode.GetID())
        slicer.app.applicationLogic().GetInteractionNode().SetCurrentInteractionMode(
            slicer.vtkMRMLInteractionNode.Place
        )
        self.ui.statusLabel.text = _("Click the missed microbleed in a slice view.")

    def _onPointPlaced(self, caller, event) -> None:
        # Handled once the placement is over: the markups widget is still busy with this point now.
        qt.QTimer.singleShot(0, lambda: self._segmentClickedPoint(caller))

    def _segmentClickedPoint(self, pointsNode) -> None:
        n = pointsNode.GetNumberOfControlPoints()
        if n == 0:
            return
        world = [0.0, 0.0, 0.0]
        pointsNode.GetNthControlPointPositionWorld(n - 1, world)
        pointsNode.RemoveNthControlPoint(n - 1)  # the new segment replaces the point
        p = self._parameterNode
        if self._runState.busy:
            self.ui.statusLabel.text = _("Wait for the running detection to finish, then click again.")
            return
        if not p or not p.inputVolume or self._reviewNodes() is None:
            self.ui.statusLabel.text = _("Run the detection first; missed microbleeds are added to its result.")
            return
        # The engine works in the volume's own frame (see importRun); the click is in world coordinates.
        ras = self.logic.worldToVolumeFrame(p.inputVolume, world)
        with slicer.util.tryWithErrorDisplay(_("Failed to segment the clicked microbleed."), waitCursor=True):
            self._startRun(p.inputVolume, None, None, lambda e, c: self._onPointFinished(e, c, ras), pointRas=ras)

    def _onPointFinished(self, errorMessage, cancelled, ras) -> None:
        if cancelled or errorMessage:
            self._endUnfinishedRun(errorMessage, cancelled)
            return
        self._runState.transition(RunState.IMPORTING)
        nodes = self._reviewNodes()
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to add the microbleed."), waitCursor=True):
                if nodes is None:
                    raise RuntimeError(_("The segmentation or candidate table was removed during the run."))
                outputs = self._preparedRun.outputs
                segmentId = reviewState.addReaderMicrobleed(
                    nodes[0], nodes[1], outputs.labelMap, outputs.candidates, ras, self._reviewThreshold()
                )
                self._runState.transition(RunState.DONE)
                self.ui.statusLabel.text = _("Added {name}.").format(
                    name=nodes[0].GetSegmentation().GetSegment(segmentId).GetName()
                )
        finally:
            if self._runState.state == RunState.IMPORTING:
                self._runState.transition(RunState.FAILED)
            self._cleanupRun()
            self.refreshCandidates()

    def onExport(self) -> None:
        nodes = self._reviewNodes()
        directory = self.ui.exportDirectoryPathLineEdit.currentPath
        if not nodes:
            return
        if not directory:
            slicer.util.warningDisplay(_("Choose an output folder first."))
            return
        with slicer.util.tryWithErrorDisplay(_("Export failed.")):
            if not dependencies.ensureExportDependencies():
                return
        with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
            # The grid the result was computed on, even when another input volume is selected now.
            role = nodes[0].GetReferenceImageGeometryReferenceRole()
            volume = nodes[0].GetNodeReference(role) or self._parameterNode.inputVolume
            if volume is None:
                raise ValueError(_("Select the input volume the segmentation was computed on."))
            files = reportExport.exportReview(
                nodes[0],
                nodes[1],
                volume,
                directory,
                inferenceJob.safeFileName(volume.GetName()),
                self._reviewThreshold(),
            )
            self.ui.statusLabel.text = _("Exported {count} microbleed(s) to {folder}.").format(
                count=files.count, folder=directory
            )


class CMBSegmentationLogic(ScriptedLoadableModuleLogic):
    """Runs the engine and imports its results; usable from scripts without the widget."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return CMBSegmentationParameterNode(super().getParameterNode())

    @staticmethod
    def moduleDir() -> Path:
        return Path(__file__).resolve().parent

    @staticmethod
    def pythonExecutable() -> str:
        """The Python that runs the engine: PythonSlicer inside Slicer, else this interpreter.

        Slicer puts PythonSlicer on PATH and also sets ``sys.executable`` to it (the Slicer executable itself is
        not a Python interpreter); outside Slicer ``sys.executable`` is the plain interpreter.
        """
        executable = shutil.which("PythonSlicer") or sys.executable
        if not executable:
            raise RuntimeError(_("Cannot find Slicer's Python interpreter (PythonSlicer) to run the engine."))
        return executable

    def ensureDependencies(self, reinstall: bool = False) -> bool:
        """Install torch and plkd after asking the user (first Apply, or on request)."""
        return dependencies.ensureDependencies(self.moduleDir(), reinstall=reinstall)

    def prepareRun(self, inputVolume, brainMask, modality, modelPath, device, threshold, pointRas=None):
        """Write the inputs to a new working folder; return (PreparedRun, argv)."""
        if inputVolume is None:
            raise ValueError(_("Select an input volume."))
        _warnOnModalityMismatch(modelPath, modality)
        workDir = tempfile.mkdtemp(prefix="CMBSegmentation-", dir=_temporaryRoot())
        prepared = inferenceJob.prepareInputs(inputVolume, brainMask, workDir)
        if pointRas is None:
            argv = commandBuilder.buildPredictCommand(
                self.pythonExecutable(),
                prepared.inputPath,
                prepared.outputDir,
                modelPath,
                device,
                prepared.maskPath,
                threshold,
            )
        else:
            argv = commandBuilder.buildSinglePointCommand(
                self.pythonExecutable(), prepared.inputPath, prepared.outputDir, pointRas, modelPath, device
            )
        return prepared, argv

    @staticmethod
    def createRunner(argv, onProgress, onFinished):
        from CMBSegmentationLib.processRunner import ProcessRunner

        return ProcessRunner(argv, onProgress, onFinished)

    @staticmethod
    def importRun(prepared, inputVolume, outputSegmentation=None, candidateTable=None, threshold=0.0):
        result = resultImport.importResults(
            inputVolume.GetScene(),
            inputVolume,
            prepared.outputs.labelMap,
            prepared.outputs.candidates,
            outputSegmentation,
            candidateTable,
        )
        reviewState.updateVisibility(result.segmentationNode, result.tableNode, threshold)
        return result

    @staticmethod
    def worldToVolumeFrame(volumeNode, worldRas):
        """A world RAS point in the volume's own frame (where the engine works), through its parent transform."""
        transformNode = volumeNode.GetParentTransformNode()
        if transformNode is None:
            return [float(v) for v in worldRas]
        transform = vtk.vtkGeneralTransform()
        transformNode.GetTransformFromWorld(transform)
        return list(transform.TransformPoint([float(v) for v in worldRas]))

    @staticmethod
    def candidateCenterWorld(segmentationNode, row):
        """The candidate's centre in world RAS (the table stores it in the volume's own frame)."""
        transformNode = segmentationNode.GetParentTransformNode()
        if transformNode is None:
            return list(row.centerRas)
        transform = vtk.vtkGeneralTransform()
        transformNode.GetTransformToWorld(transform)
        return list(transform.TransformPoint(row.centerRas))

    def process(
        self,
        inputVolume,
        brainMask=None,
        modality="T2*",
        modelPath="",
        device="Auto",
        threshold=0.5,
        outputSegmentation=None,
        waitForCompletion=True,
        candidateTable=None,
        onProgress=None,
        onFinished=None,
    ):
        """Detect and segment the microbleeds of ``inputVolume``; return the segmentation node.

        With ``waitForCompletion=False`` (needs Slicer's event loop) the run goes on in the background and
        the ProcessRunner is returned; ``onFinished(segmentationNode or None, errorMessage or None)`` is
        called on the main thread when the results are in the scene (or the run failed or was cancelled).
        """
        prepared, argv = self.prepareRun(inputVolume, brainMask, modality, modelPath, device, threshold)
        if not waitForCompletion:

            def finished(errorMessage, cancelled):
                segmentationNode = None
                try:
                    if not errorMessage and not cancelled:
                        segmentationNode = self.importRun(
                            prepared, inputVolume, outputSegmentation, candidateTable, threshold
                        ).segmentationNode
                except Exception as exc:
                    errorMessage = str(exc)
                finally:
                    shutil.rmtree(prepared.outputDir.parent, ignore_errors=True)
                if onFinished is not None:
                    onFinished(segmentationNode, errorMessage or (_("Cancelled.") if cancelled else None))

            runner = self.createRunner(argv, onProgress or (lambda event: None), finished)
            runner.start()
            return runner
        try:
            inferenceJob.runBlocking(argv, onProgress)
            result = self.importRun(prepared, inputVolume, outputSegmentation, candidateTable, threshold)
        finally:
            shutil.rmtree(prepared.outputDir.parent, ignore_errors=True)
        logging.info("CMBSegmentation: %d microbleed(s) in %s", len(result.segmentIds), inputVolume.GetName())
        return result.segmentationNode


def _temporaryRoot():
    app = getattr(slicer, "app", None)
    return app.temporaryPath if app is not None else None


def _warnOnModalityMismatch(modelPath, modality) -> None:
    """Log when the bundle was trained on another contrast than the user's choice (the engine still runs)."""
    import json

    manifest = Path(modelPath) / "manifest.json" if modelPath else None
    if manifest is None or not manifest.is_file():
        return
    try:
        trained = json.loads(manifest.read_text(encoding="utf-8")).get("modality", "")
    except (OSError, ValueError):
        return
    wanted = "T2S" if modality == "T2*" else modality
    if trained and trained != wanted:
        logging.warning("CMBSegmentation: model bundle was trained on %s, input is %s", trained, modality)


class CMBSegmentationTest(ScriptedLoadableModuleTest):
    """Tests inside Slicer.

    ``test_WidgetBindsParameters`` needs only Slicer. ``test_ProcessFindsKnownMicrobleeds`` runs the engine end to
    end on ``tiny-case/tiny_T2S.nii.gz`` (a phantom with three planted microbleeds whose centres are listed in
    ``tiny-case/truth.json``) with the tiny test bundle ``tiny-bundle``; it needs torch and plkd in Slicer's
    Python (installed by the first Apply) and is skipped without them. The data folder is taken from the
    environment variable CMBSEGMENTATION_TEST_DATA (set by CMake for ctest) or is ``Testing/data`` of a source
    checkout whose ``CMBSegmentation`` folder Slicer loads the module from.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_WidgetBindsParameters()
        self.setUp()
        self.test_ProcessFindsKnownMicrobleeds()

    @staticmethod
    def _dataDir() -> Path:
        default = Path(__file__).resolve().parent.parent / "Testing" / "data"
        return Path(os.environ.get("CMBSEGMENTATION_TEST_DATA") or default)

    def test_WidgetBindsParameters(self):
        widget = slicer.modules.cmbsegmentation.widgetRepresentation().self()
        widget.initializeParameterNode()
        p, ui = widget._parameterNode, widget.ui
        # Choice annotations fill the combo boxes; both directions of the binding work.
        devices = [ui.deviceComboBox.itemText(i) for i in range(ui.deviceComboBox.count)]
        self.assertEqual(devices, list(commandBuilder.DEVICE_CHOICES))
        p.device = "CPU"
        self.assertEqual(ui.deviceComboBox.currentText, "CPU")
        ui.modalityComboBox.currentIndex = MODALITIES.index("SWI")
        self.assertEqual(p.modality, "SWI")
        p.threshold = 0.3
        self.assertAlmostEqual(ui.thresholdSliderWidget.value, 0.3)
        ui.modelPathLineEdit.text = "/models/bundle"
        self.assertEqual(p.modelPath, "/models/bundle")
        # The input selector offers scalar volumes but no label maps; the mask selector takes both and segmentations.
        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T2star")
        label = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "mask")
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "brain")
        offered = [ui.inputVolumeSelector.nodeFromIndex(i) for i in range(ui.inputVolumeSelector.nodeCount())]
        self.assertIn(volume, offered)
        self.assertNotIn(label, offered)
        p.inputVolume = volume
        self.assertEqual(ui.inputVolumeSelector.currentNode(), volume)
        for mask in (label, segmentation, None):
            ui.brainMaskSelector.setCurrentNode(mask)
            self.assertEqual(p.brainMask, mask)
        self.assertTrue(ui.applyButton.enabled)
        self.delayDisplay("CMBSegmentation widget test passed")

    def test_ProcessFindsKnownMicrobleeds(self):
        import json

        import numpy as np

        dataDir = self._dataDir()
        image, truthFile = dataDir / "tiny-case" / "tiny_T2S.nii.gz", dataDir / "tiny-case" / "truth.json"
        bundleDir = dataDir / "tiny-bundle"
        if not (image.is_file() and truthFile.is_file() and (bundleDir / "manifest.json").is_file()):
            self.skipTest(f"test data not found in {dataDir} (set CMBSEGMENTATION_TEST_DATA)")
        if dependencies.missingPackages():
            self.skipTest("plkd and torch are not installed in this Slicer (click Apply once to install them)")
        truth = json.loads(truthFile.read_text(encoding="utf-8"))["centres_ras"]

        volume = slicer.util.loadVolume(str(image))
        table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "candidates")
        segmentation = CMBSegmentationLogic().process(
            volume, modelPath=str(bundleDir), device="CPU", threshold=0.5, candidateTable=table, waitForCompletion=True
        )
        segments = segmentation.GetSegmentation()
        self.assertEqual(segments.GetNumberOfSegments(), len(truth))
        self.assertEqual(table.GetNumberOfRows(), len(truth))
        centres = [
            segmentation.GetSegmentCenterRAS(segments.GetNthSegmentID(i)) for i in range(segments.GetNumberOfSegments())
        ]
        for centre in truth:
            nearest = min(float(np.linalg.norm(np.subtract(c, centre))) for c in centres)
            self.assertLess(nearest, 2.0, f"no segment within 2 mm of the microbleed at {centre}")
        self.delayDisplay("CMBSegmentation end-to-end test passed")
