"""CMB Segmentation: detect, segment and review cerebral microbleeds in T2*/SWI MRI.

This file holds the Slicer-facing classes only; the work is done in ``CMBSegmentationLib`` and by the
``plkd`` inference engine, which runs as a separate process.
"""

import contextlib
import logging
import os
import shutil
import sys
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
from CMBSegmentationLib import (
    clickReview,
    commandBuilder,
    dependencies,
    inferenceJob,
    modelBundle,
    moduleReload,
    reportExport,
    resultImport,
    reviewNavigation,
    reviewShortcuts,
    reviewState,
    reviewWatcher,
    runLog,
    segmentPresentation,
    workFolders,
)
from CMBSegmentationLib.runState import RunState, RunStateMachine

MODALITIES = list(commandBuilder.MODALITY_CHOICES)  # "Auto", "T2*", "SWI"


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
            "each candidate (Alt+N / Alt+P: next / previous, Alt+A / Alt+R: accept / reject; add a missed one by "
            "clicking) and export the result.<br>"
            "<b>Research software, not a medical device.</b>"
        )
        # A run's folder holds a copy of the patient image; those of a Slicer that crashed go at the next start.
        slicer.app.connect("startupCompleted()", _removeStaleWorkFolders)
        self.parent.acknowledgementText = _(
            "Based on the PLKD method for cerebral microbleed segmentation in low-resolution MRI. "
            "The shipped model is trained on synthetic data."
        )


@parameterNodeWrapper
class CMBSegmentationParameterNode:
    """Parameters of the module, saved with the scene.

    inputVolume: T2* or SWI volume to analyse.
    brainMask: optional brain mask (volume, label map or segmentation); the engine computes one otherwise.
    modality: contrast of the input: T2*, SWI, or Auto (the engine reads it from the DICOM tags, the metadata of the
        file the volume was loaded from, as ``plkd predict`` reads them for that file, or the name, else T2*); chooses
        the shipped model, or is checked against the given one.
    modelPath: model bundle folder or .zip; empty = the engine's default bundle.
    device: Auto (GPU when usable, else CPU), CPU or GPU.
    threshold: minimum candidate probability of a run; 0 (the default, "model's"): the threshold tuned
        for each segmenter in the model bundle, as ``plkd predict`` uses.
    reviewThreshold: candidates not yet seen are shown and exported from this probability; also saved on the
        candidate table, so each result keeps the value its reader chose.
    outputSegmentation: one segment per microbleed (None: Apply creates a new one).
    candidateTable: one row per candidate with its review status (None: Apply creates a new one).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    brainMask: Optional[Union[vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode]] = None  # noqa: UP007, UP045
    modality: Annotated[str, Choice(MODALITIES)] = "Auto"
    modelPath: str = ""
    device: Annotated[str, Choice(list(commandBuilder.DEVICE_CHOICES))] = "Auto"
    threshold: Annotated[float, WithinRange(0.0, 1.0)] = commandBuilder.MODEL_THRESHOLD
    reviewThreshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    outputSegmentation: vtkMRMLSegmentationNode
    candidateTable: vtkMRMLTableNode


class CMBSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Inputs, Apply/Cancel with progress and log, candidate review and export. The work is in CMBSegmentationLib."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._runner = None
        self._preparedRun = None
        self._runVolume = None  # the volume the running engine works on (the selection may change meanwhile)
        self._runOutputs = (None, None, False)  # (segmentation, table, replace: False or the outputs' state) at Apply
        self._runState = RunStateMachine()
        self._runLog = runLog.RunLog()
        self._overallProgress = runLog.OverallProgress()
        self._pointsNode = None
        self._shortcuts = []
        self._watcher = None
        self._refreshTimer = None
        self._elapsedTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CMBSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CMBSegmentationLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        # Many events may arrive for one change (a table edit, a scene import): one refresh after them.
        self._refreshTimer = qt.QTimer()
        self._refreshTimer.setSingleShot(True)
        self._refreshTimer.setInterval(0)
        self._refreshTimer.connect("timeout()", self.refreshCandidates)
        self._watcher = reviewWatcher.ReviewWatcher(slicer.mrmlScene, self._refreshTimer.start)
        self._elapsedTimer = qt.QTimer()
        self._elapsedTimer.setInterval(1000)
        self._elapsedTimer.connect("timeout()", self._showElapsed)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        browseMenu = qt.QMenu(self.ui.browseModelButton)
        browseMenu.addAction(_("Bundle folder...")).connect("triggered()", self.onBrowseModelFolder)
        browseMenu.addAction(_("Bundle .zip file...")).connect("triggered()", self.onBrowseModelZip)
        self.ui.browseModelButton.setMenu(browseMenu)
        self.ui.reinstallButton.connect("clicked(bool)", self.onReinstallDependencies)
        self.ui.candidatesTableWidget.connect("itemSelectionChanged()", self.onCandidateSelected)
        self.ui.nextButton.connect("clicked(bool)", lambda: self.selectRelative(+1))
        self.ui.previousButton.connect("clicked(bool)", lambda: self.selectRelative(-1))
        self.ui.acceptButton.connect("clicked(bool)", lambda: self.setSelectedStatus(candidateTableLib.STATUS_ACCEPTED))
        self.ui.rejectButton.connect("clicked(bool)", lambda: self.setSelectedStatus(candidateTableLib.STATUS_REJECTED))
        self.ui.addMissedButton.connect("clicked(bool)", self.onAddMissed)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        # Keys Slicer does not bind (see reviewShortcuts). Without a main window (e.g. "Slicer --no-main-window")
        # the shortcuts belong to the module panel.
        shortcutParent = slicer.util.mainWindow() or self.parent
        actions = {
            "next": lambda: self.selectRelative(+1),
            "previous": lambda: self.selectRelative(-1),
            "accept": lambda: self.setSelectedStatus(candidateTableLib.STATUS_ACCEPTED),
            "reject": lambda: self.setSelectedStatus(candidateTableLib.STATUS_REJECTED),
        }
        for name, keys in reviewShortcuts.REVIEW_SHORTCUTS.items():
            shortcut = qt.QShortcut(qt.QKeySequence(keys), shortcutParent)
            shortcut.setEnabled(False)  # only while the module is shown, see enter()/exit()
            shortcut.connect("activated()", actions[name])
            self._shortcuts.append(shortcut)
        self._runState.addListener(lambda old, new: self._updateRunGui())
        # Quitting Slicer during a run: stop the engine and remove the copy of the patient image.
        slicer.app.connect("aboutToQuit()", self._onAboutToQuit)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._onAboutToQuit()
        slicer.app.disconnect("aboutToQuit()", self._onAboutToQuit)
        for timer in (self._refreshTimer, self._elapsedTimer):
            if timer is not None:
                timer.stop()
        if self._watcher is not None:
            self._watcher.close()
        for shortcut in self._shortcuts:
            shortcut.setParent(None)
        self.removeObservers()

    def onReload(self) -> None:
        """Developer reload: also read CMBSegmentationLib again (Slicer reloads only this file)."""
        moduleReload.forgetPackage("CMBSegmentationLib")
        ScriptedLoadableModuleWidget.onReload(self)

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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelRun()
        self.setParameterNode(None)
        self._watcher.watch(None, None)

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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        """Follow the selected result (another segmentation or table) and the review threshold."""
        self._updateRunGui()
        if self._pairResultNodes():
            return  # the parameter node changed again: handled by that call
        nodes = self._reviewNodes() or (None, None)
        if tuple(nodes) != self._watcher.watched:
            self._watcher.watch(*nodes)
            if nodes[1] is not None:
                # The result brings its own review: statuses onto the segments, and the threshold its reader chose.
                reviewState.restoreReview(*nodes)
                self._parameterNode.reviewThreshold = reviewState.reviewThreshold(nodes[1])
            self._refreshTimer.start()
        if nodes[1] is not None:
            wanted = self._parameterNode.reviewThreshold
            if abs(reviewState.reviewThreshold(nodes[1], wanted) - wanted) > 1e-9 or (
                nodes[1].GetAttribute(candidateTableLib.ATTRIBUTE_REVIEW_THRESHOLD) is None
            ):
                kept = reviewState.setReviewThreshold(nodes[0], nodes[1], wanted)
                if abs(kept - wanted) > 1e-9:  # below the run's threshold: the slider goes back to it
                    self._parameterNode.reviewThreshold = kept
                self._refreshTimer.start()
            # The slider shows the threshold as the list's probabilities are compared with it: at 2 decimals a run
            # threshold of 0.999 read "1.00". ctkSliderWidget keeps the exact value (its slider never rounds); only
            # the spin box's text changes, and setDecimals re-emits valueChanged, hence only when it differs.
            decimals = reviewState.thresholdDecimals(reviewState.reviewThreshold(nodes[1]))
            if self.ui.reviewThresholdSliderWidget.decimals != decimals:
                self.ui.reviewThresholdSliderWidget.decimals = decimals

    def _pairResultNodes(self) -> bool:
        """Selecting a result's table selects its segmentation, and the other way round; True when one changed."""
        p = self._parameterNode
        segmentation, table = p.outputSegmentation, p.candidateTable
        watchedSegmentation, watchedTable = self._watcher.watched
        # A candidate table without its columns (its file unreadable) pairs with nothing: its segmentation's table is
        # rebuilt instead.
        if table is not None and table is not watchedTable and not candidateTableLib.lostItsColumns(table):
            owner = candidateTableLib.segmentationOfTable(table)
            if owner is not None and owner is not segmentation:
                p.outputSegmentation = owner
                return True
        elif segmentation is not None and segmentation is not watchedSegmentation:
            listed = candidateTableLib.tableOfSegmentation(slicer.mrmlScene, segmentation)
            if listed is None and reviewState.canRebuildTable(segmentation):
                # Its table is gone (deleted, its file lost): the segments' tags hold the review, which would be
                # neither shown nor exportable without one.
                listed = reviewState.rebuildTable(segmentation)
                self.ui.statusLabel.text = _("The candidate table of {name} was rebuilt from its segments.").format(
                    name=segmentation.GetName()
                )
            if listed is not None and listed is not table:
                p.candidateTable = listed
                return True
        return False

    # Run ----------------------------------------------------------------------------------------------------

    def _updateRunGui(self) -> None:
        state = self._runState.state
        busy = self._runState.busy
        installing = state == RunState.INSTALLING
        hasInput = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.text = _("Cancel") if busy and not installing else _("Apply")
        self.ui.applyButton.enabled = (busy and not installing) or (not busy and hasInput)
        self.ui.applyButton.toolTip = _("Stop the running detection") if busy else _("Detect microbleeds")
        self.ui.reinstallButton.enabled = not busy
        self.ui.progressBar.visible = busy and not installing
        self.ui.addMissedButton.enabled = not busy and self._reviewNodes() is not None
        self.ui.exportButton.enabled = not busy and self.ui.candidatesTableWidget.rowCount > 0
        if state == RunState.CANCELLING:
            self.ui.statusLabel.text = _("Cancelling...")
        elif installing:
            self.ui.statusLabel.text = _("Installing the dependencies...")

    def _ensureEngine(self, reinstall: bool = False) -> bool:
        """Install torch and plkd if needed (after asking); False when declined, failed or busy.

        The whole installation is one busy state, so that clicks processed meanwhile (Slicer 5.10 runs pip while
        the GUI keeps handling events) cannot start a second installation or a run.
        """
        if self._runState.busy:
            return False
        if not reinstall and not dependencies.missingPackages(self.logic.moduleDir()):
            return True
        self._runState.transition(RunState.INSTALLING)
        ok = False
        try:
            ok = self.logic.ensureDependencies(reinstall=reinstall)
        except dependencies.DependencyError as exc:
            if not exc.shown:  # Slicer >= 5.12 already showed pip's failure in its own dialog
                slicer.util.errorDisplay(str(exc), windowTitle=_("Install dependencies"))
            self.ui.statusLabel.text = _("Installing the dependencies failed; see the Python console.")
        except Exception as exc:
            slicer.util.errorDisplay(_("Failed to install the dependencies: {error}").format(error=exc))
        finally:
            self._runState.transition(RunState.IDLE)
        if self.ui.statusLabel.text == _("Installing the dependencies..."):
            self.ui.statusLabel.text = ""
        return ok

    def onApplyButton(self) -> None:
        if self._runState.busy:
            self._cancelRun()
            return
        if not self._ensureEngine():
            return
        p = self._parameterNode
        outputs = self._chooseOutputs(p)
        if outputs is None:
            return
        modelPath, warning = modelBundle.chooseModel(p.modelPath, p.modality)
        if warning and not slicer.util.confirmOkCancelDisplay(
            _("The {warning}.\n\nRun anyway?").format(warning=warning), windowTitle=_("Modality")
        ):
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the microbleed detection."), waitCursor=True):
            self._runOutputs = outputs
            self._startRun(p.inputVolume, p.brainMask, modelPath, p.threshold, self._onRunFinished)
            if warning:
                self._logLine(_("warning: the {warning}").format(warning=warning), warning=True)

    def _chooseOutputs(self, p):
        """(segmentation, table, replace) for a run; None when the user cancels.

        New nodes unless the selected ones are empty; replacing a result (above all a reviewed one) needs a yes.
        ``replace``: False, or the outputs' state when the user agreed (:func:`resultImport.outputState`); a result
        reviewed further while the engine runs is then not replaced.
        """
        segmentation, table = p.outputSegmentation, p.candidateTable
        protected = [n for n in (p.inputVolume, p.brainMask) if n is not None]
        try:
            resultImport.checkOutputTargets(segmentation, table, protected, replace=True)
        except resultImport.OutputNotEmptyError as exc:
            slicer.util.warningDisplay(_("Not a valid output: {reason}.").format(reason=exc))
            return None
        content = resultImport.existingContent(segmentation, table)
        if not content:
            return segmentation, table, False
        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setWindowTitle(_("Outputs already hold a result"))
        box.setIcon(qt.QMessageBox.Question)
        box.setText(_("The selected outputs already hold a result:\n{content}").format(content="\n".join(content)))
        box.setInformativeText(_("Create new output nodes (the result stays as it is), or replace it?"))
        newButton = box.addButton(_("Create new"), qt.QMessageBox.AcceptRole)
        box.addButton(_("Replace"), qt.QMessageBox.DestructiveRole)
        box.addButton(qt.QMessageBox.Cancel)
        box.setDefaultButton(newButton)
        box.exec_()
        role = box.buttonRole(box.clickedButton()) if box.clickedButton() is not None else qt.QMessageBox.RejectRole
        if role == qt.QMessageBox.AcceptRole:
            return None, None, False
        if role == qt.QMessageBox.DestructiveRole:
            return segmentation, table, resultImport.outputState(segmentation, table)
        return None

    def _startRun(
        self, volume, brainMask, modelPath, threshold, onFinished, pointRas=None, reviewNodes=None, modality=None
    ) -> None:
        """Write the inputs and start the engine in the background; ``onFinished`` runs on the main thread.

        ``reviewNodes`` (segmentation, table) with ``pointRas``: the result the clicked microbleed is added to.
        ``modality``: the engine's contrast ("Auto", "T2*", "SWI"; None: the Modality choice).
        """
        p = self._parameterNode
        self._runState.transition(RunState.STARTING)
        try:
            self._runLog = runLog.RunLog()
            self._overallProgress = runLog.OverallProgress()
            self.ui.logTextEdit.clear()
            self.ui.progressBar.maximum = 100
            self.ui.progressBar.value = 0
            self._showElapsed()
            self._preparedRun, argv = self.logic.prepareRun(
                volume,
                brainMask,
                modelPath,
                p.device,
                threshold,
                pointRas=pointRas,
                reviewNodes=reviewNodes,
                modality=modality or p.modality,
            )
            self._runVolume = volume
            self._logLine("$ " + " ".join(argv), warning=False)
            self._runner = self.logic.createRunner(argv, self._onProgress, onFinished, self._onEngineLine)
            self._runner.start()
            self._elapsedTimer.start()
            self._runState.transition(RunState.RUNNING)
            self.ui.statusLabel.text = _("Starting the engine...")
        except Exception:
            self._runState.transition(RunState.FAILED)
            self._cleanupRun()
            raise

    def _cancelRun(self) -> None:
        """Kill the engine's whole process tree (returns at once); results of a cancelled run are never imported."""
        if self._runner is None or not self._runner.running:
            return
        if self._runState.canTransition(RunState.CANCELLING):
            self._runState.transition(RunState.CANCELLING)
        self._runner.cancel()

    def _onAboutToQuit(self) -> None:
        """Slicer quits: stop the engine now and remove the run's folder (it holds a copy of the patient image)."""
        if self._runner is not None and self._runner.running:
            self._runner.kill()
        self._cleanupRun()

    def _onEngineLine(self, stream, line) -> None:
        self._logLine(line)

    def _logLine(self, line, warning=None) -> None:
        self.ui.logTextEdit.appendPlainText(self._runLog.add(line, warning))

    def _onProgress(self, event) -> None:
        self.ui.progressBar.value = int(round(100 * self._overallProgress.update(event)))
        stage = event.message or event.stage
        if event.total:
            stage = f"{stage} ({event.done}/{event.total})"
        self.ui.statusLabel.text = stage

    def _showElapsed(self) -> None:
        self.ui.progressBar.format = "%p%  " + runLog.formatElapsed(self._runLog.elapsed)

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
            # The engine's own one-line message is what the user needs; the whole log goes into the details.
            slicer.util.errorDisplay(
                _("Microbleed detection failed: {reason}").format(reason=reason),
                detailedText="\n".join(self._runLog.lines) or errorMessage,
            )
        self._cleanupRun()

    def _onRunFinished(self, errorMessage, cancelled) -> None:
        self._elapsedTimer.stop()
        self._showElapsed()
        if cancelled or errorMessage:
            self._endUnfinishedRun(errorMessage, cancelled)
            return
        self._runState.transition(RunState.IMPORTING)
        self.ui.statusLabel.text = _("Importing results...")
        p = self._parameterNode
        segmentation, table, replace = self._runOutputs
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to import the results."), waitCursor=True):
                if p is None or self._runVolume is None or self._runVolume.GetScene() is None:
                    raise RuntimeError(_("The input volume or the scene was closed during the run."))
                result = self.logic.importRun(
                    self._preparedRun,
                    self._runVolume,
                    segmentation,
                    table,
                    p.threshold,
                    bool(replace),
                    [p.brainMask],
                    replaceState=replace or None,
                )
                wasModified = p.StartModify()  # one change: never a new segmentation paired with the old table
                p.outputSegmentation = result.segmentationNode
                p.candidateTable = result.tableNode
                # The new result's own threshold (the run's). Replaced into the selected nodes, they are no new
                # selection (the parameter node fires nothing for an unchanged node reference, vtkMRMLNode.cxx): the
                # slider kept the replaced review's value, beside a list shown from the run's, and the next change of
                # any setting imposed it on the new result, hiding candidates the reader had been shown.
                p.reviewThreshold = reviewState.reviewThreshold(result.tableNode)
                p.EndModify(wasModified)
                for shown in self._runLog.addNotes(result.notes):  # the engine's notes, after its lines
                    self.ui.logTextEdit.appendPlainText(shown)
                self._runState.transition(RunState.DONE)
                self._reportWarnings(_("{count} microbleed candidate(s) found.").format(count=len(result.segmentIds)))
        finally:
            if self._runState.state == RunState.IMPORTING:
                self._runState.transition(RunState.FAILED)
            self._cleanupRun()
            self._refreshTimer.start()

    def _reportWarnings(self, message) -> None:
        """Status line of a successful run, with its first warning; the log panel opens when there are any."""
        warnings = self._runLog.warnings
        if warnings:
            message += " " + _("{count} warning(s): {first} (see Log)").format(count=len(warnings), first=warnings[0])
            self.ui.logCollapsibleButton.collapsed = False
            logging.warning("CMBSegmentation: %d warning(s): %s", len(warnings), " | ".join(warnings))
        self.ui.statusLabel.text = message

    def _cleanupRun(self) -> None:
        if self._preparedRun is not None:
            shutil.rmtree(self._preparedRun.workFolder, ignore_errors=True)
        self._preparedRun = None
        self._runVolume = None
        self._runner = None

    def onBrowseModelFolder(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(
            self.parent, _("Select a model bundle folder"), self._parameterNode.modelPath or ""
        )
        if path:
            self._parameterNode.modelPath = path

    def onBrowseModelZip(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            self.parent,
            _("Select a model bundle .zip file"),
            self._parameterNode.modelPath or "",
            _("Model bundle (*.zip)"),
        )
        if path:
            self._parameterNode.modelPath = path

    def onReinstallDependencies(self) -> None:
        if self._ensureEngine(reinstall=True):
            slicer.util.infoDisplay(
                _("The inference engine was reinstalled. PyTorch itself is managed in the PyTorch Utils module.")
            )

    # Review -------------------------------------------------------------------------------------------------

    def _reviewNodes(self):
        p = self._parameterNode
        if not p or not p.outputSegmentation or not p.candidateTable:
            return None
        if not candidateTableLib.isCandidateTable(p.candidateTable):
            return None
        if not candidateTableLib.belongsTo(p.candidateTable, p.outputSegmentation):
            return None  # a table of another result (or run): its statuses must not be applied to these segments
        return p.outputSegmentation, p.candidateTable

    def refreshCandidates(self) -> None:
        """Fill the review list, highest probability first; the views stay where they are."""
        table = self.ui.candidatesTableWidget
        selected = self._selectedSegmentId()
        nodes = self._reviewNodes()
        rows = []
        if nodes:
            # The table may have been edited elsewhere (Tables module): segment tags and visibility follow it.
            rows = sorted(
                reviewState.restoreReview(*nodes), key=lambda r: -(r.probability if r.probability is not None else 2)
            )
        headers = [_("Segment"), _("Probability"), _("Volume (mm³)"), _("Status"), _("Location"), _("Region")]
        threshold = reviewState.reviewThreshold(nodes[1]) if nodes else 0.0
        # Refilling and reselecting are not the reader's choice of a candidate: no jump of the slice views.
        wasBlocked = table.blockSignals(True)
        try:
            table.clearContents()
            table.setColumnCount(len(headers))
            table.setHorizontalHeaderLabels(headers)
            table.setRowCount(len(rows))
            for r, row in enumerate(rows):
                segment = nodes[0].GetSegmentation().GetSegment(row.segmentId)
                status = row.status
                if segment is None:  # deleted (or moved away): neither shown nor exported, whatever its status says
                    status = _("{status} (segment deleted)").format(status=status)
                elif status == candidateTableLib.STATUS_NOT_SEEN and not reviewState.isIncluded(row, threshold):
                    status = _("below threshold")
                elif status not in candidateTableLib.STATUSES:  # typed in the Tables module: Export refuses it
                    status = _("{status} (unknown status)").format(status=status)
                values = [
                    # The Status column says why one is left out; its name's marker (segmentPresentation) is for
                    # Slicer's own exports.
                    segmentPresentation.baseName(segment.GetName()) if segment else row.segmentId,
                    # As many decimals as the status needs: 0.4996 read "0.50" beside "below threshold" at 0.50.
                    reviewState.probabilityText(row.probability, threshold),
                    f"{row.volumeMm3:.1f}",
                    status,
                    row.location,
                    row.region,
                ]
                for c, text in enumerate(values):
                    item = qt.QTableWidgetItem(text)
                    item.setData(qt.Qt.UserRole, row.segmentId)
                    table.setItem(r, c, item)
                if row.segmentId == selected:
                    table.selectRow(r)
            table.resizeColumnsToContents()
        finally:
            table.blockSignals(wasBlocked)
        for button in (self.ui.nextButton, self.ui.previousButton, self.ui.acceptButton, self.ui.rejectButton):
            button.enabled = bool(rows)
        self._updateRunGui()

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
        """The reader chose a candidate: show it on the volume it was found on."""
        nodes, segmentId = self._reviewNodes(), self._selectedSegmentId()
        if not nodes or not segmentId:
            return
        rowIndex = candidateTableLib.rowIndexOfSegment(nodes[1], segmentId)
        if rowIndex < 0:
            return
        ras = self.logic.candidateCenterWorld(nodes[0], candidateTableLib.readRows(nodes[1])[rowIndex])
        reviewNavigation.showCandidate(slicer.mrmlScene, resultImport.referenceVolume(nodes[0]), ras)

    def setSelectedStatus(self, status: str) -> None:
        nodes, segmentId = self._reviewNodes(), self._selectedSegmentId()
        if not nodes or not segmentId:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not change the candidate's status.")):
            reviewState.setStatus(nodes[0], nodes[1], segmentId, status, reviewState.reviewThreshold(nodes[1]))
            row = self.ui.candidatesTableWidget.currentRow()
            self.refreshCandidates()
            self.ui.candidatesTableWidget.selectRow(min(row + 1, self.ui.candidatesTableWidget.rowCount - 1))

    def onAddMissed(self) -> None:
        """Let the reader click a point; then segment the microbleed there, on the volume of the result."""
        nodes = self._reviewNodes()
        if self._runState.busy:
            return
        if nodes is None:
            self.ui.statusLabel.text = _("Run the detection first; missed microbleeds are added to its result.")
            return
        if resultImport.referenceVolume(nodes[0]) is None:
            self.ui.statusLabel.text = _("The volume this result was computed on is no longer in the scene.")
            return
        if not self._ensureEngine():  # before the click: the engine segments the point
            return
        if self._pointsNode is None or self._pointsNode.GetScene() is None:
            self._pointsNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", _("Missed microbleeds"))
            self._pointsNode.SetSaveWithScene(False)
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
        nodes = self._reviewNodes()
        volume = resultImport.referenceVolume(nodes[0]) if nodes else None
        if volume is None:
            self.ui.statusLabel.text = _("Run the detection first; missed microbleeds are added to its result.")
            return
        # The engine works in the volume's own frame (see importRun); the click is in world coordinates.
        ras = self.logic.worldToVolumeFrame(volume, world)
        # The model that made the result under review, not the one the Modality choice names now (changed since
        # for another volume): a click segmented by the other contrast's model would join it without a word.
        modality = resultImport.reviewedModality(nodes[0], p.modality)
        modelPath, _warning = modelBundle.chooseModel(p.modelPath, modality)
        with slicer.util.tryWithErrorDisplay(_("Failed to segment the clicked microbleed."), waitCursor=True):
            # The result as it is now goes with the click (--existing), so a microbleed already in it is not added
            # twice; the answer goes into this same result, even if the reader selects another one meanwhile.
            self._startRun(
                volume,
                None,
                modelPath,
                None,
                lambda e, c: self._onPointFinished(e, c, ras, nodes),
                pointRas=ras,
                reviewNodes=nodes,
                modality=modality,
            )

    def _onPointFinished(self, errorMessage, cancelled, ras, nodes) -> None:
        self._elapsedTimer.stop()
        if cancelled or errorMessage:
            self._endUnfinishedRun(errorMessage, cancelled)
            return
        self._runState.transition(RunState.IMPORTING)
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to add the microbleed."), waitCursor=True):
                if any(node.GetScene() is None for node in nodes):
                    raise RuntimeError(_("The segmentation or candidate table was removed during the run."))
                outputs = self._preparedRun.outputs
                outcome = clickReview.applyClickResult(
                    nodes[0],
                    nodes[1],
                    outputs.labelMap,
                    outputs.candidates,
                    ras,
                    self._preparedRun.existingPath,
                    reviewState.reviewThreshold(nodes[1]),
                )
                self._runState.transition(RunState.DONE)
                self._reportWarnings(self._clickMessage(outcome, nodes[0]))
                if outcome.segmentId is not None and self._reviewNodes() == nodes:
                    self.refreshCandidates()
                    self._selectSegment(outcome.segmentId)  # shows it, centred, in the slice views
        finally:
            if self._runState.state == RunState.IMPORTING:
                self._runState.transition(RunState.FAILED)
            self._cleanupRun()
            self._refreshTimer.start()

    @staticmethod
    def _clickMessage(outcome, segmentationNode) -> str:
        """The status line after a click: what was added, or which microbleed was there already."""
        if outcome.kind == clickReview.NOTHING:
            return _("Nothing darker than the surrounding tissue at the click: no microbleed added.")
        name = segmentationNode.GetSegmentation().GetSegment(outcome.segmentId).GetName()
        if outcome.kind == clickReview.ADDED:
            if outcome.note:  # outlined by another model than the result's: the export names it too
                return _("Added {name}, {note}.").format(name=name, note=outcome.note)
            if outcome.segmentation == "intensity":
                return _("Added {name} (outlined by intensity: the model's mask missed most of it).").format(name=name)
            return _("Added {name}.").format(name=name)
        if outcome.previousStatus == outcome.status:
            return _("{name} is already in the result ({status}); nothing added.").format(
                name=name, status=outcome.status
            )
        if not outcome.previousStatus:
            return _("{name} was already segmented; now in the review as added by reader, nothing added.").format(
                name=name
            )
        return _("{name} was already in the result ({previous}); marked {status}, nothing added.").format(
            name=name, previous=outcome.previousStatus, status=outcome.status
        )

    def _selectSegment(self, segmentId) -> None:
        table = self.ui.candidatesTableWidget
        for r in range(table.rowCount):
            item = table.item(r, 0)
            if item is not None and item.data(qt.Qt.UserRole) == segmentId:
                if item.isSelected():  # no selection change, no signal: show it anyway
                    self.onCandidateSelected()
                else:
                    table.selectRow(r)
                return

    def onExport(self) -> None:
        nodes = self._reviewNodes()
        directory = self.ui.exportDirectoryPathLineEdit.currentPath
        if not nodes:
            return
        if not directory:
            slicer.util.warningDisplay(_("Choose an output folder first."))
            return
        try:
            if not dependencies.ensureExportDependencies():
                return
        except dependencies.DependencyError as exc:
            if not exc.shown:
                slicer.util.errorDisplay(str(exc))
            return
        with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
            # The grid the result was computed on, even when another input volume is selected now.
            volume = resultImport.referenceVolume(nodes[0])
            if volume is None:
                raise ValueError(_("The volume this result was computed on is no longer in the scene."))
            files = reportExport.exportReview(
                nodes[0], nodes[1], volume, directory, inferenceJob.safeFileName(volume.GetName())
            )
            self.ui.exportDirectoryPathLineEdit.addCurrentPathToHistory()  # remembered for the next session
            # The name may differ from the volume's: another result's export there is never replaced.
            self.ui.statusLabel.text = _("Exported {count} microbleed(s) to {folder} as {name}.").format(
                count=files.count, folder=directory, name=files.reportJson.name
            )
            if files.notes:
                slicer.util.warningDisplay("\n".join(files.notes), windowTitle=_("Export"))


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

    def prepareRun(
        self, inputVolume, brainMask, modelPath, device, threshold, pointRas=None, reviewNodes=None, modality=None
    ):
        """Write the inputs to a new working folder; return (PreparedRun, argv).

        ``modelPath`` is what :func:`modelBundle.chooseModel` returned (empty: the engine's shipped bundle for the
        ``modality``, "Auto", "T2*" or "SWI"; None: the engine decides, as for "Auto").
        ``pointRas``: segment only the microbleed there (the volume's own frame); ``reviewNodes`` (segmentation,
        candidate table) is the result under review on ``inputVolume``, written as the click's ``--existing``.
        """
        if inputVolume is None:
            raise ValueError(_("Select an input volume."))
        workDir = workFolders.createWorkFolder(_temporaryRoot())
        try:
            if pointRas is None:
                prepared = inferenceJob.prepareInputs(inputVolume, brainMask, workDir)
            elif reviewNodes is None:
                prepared = inferenceJob.prepareInputs(inputVolume, None, workDir)
            else:
                prepared = clickReview.prepareClickInputs(inputVolume, *reviewNodes, workDir)
            argv = inferenceJob.engineCommand(
                prepared, self.pythonExecutable(), modelPath, device, threshold, modality, pointRas
            )
        except BaseException:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        return prepared, argv

    @staticmethod
    def createRunner(argv, onProgress, onFinished, onLog=None):
        from CMBSegmentationLib.processRunner import ProcessRunner

        return ProcessRunner(argv, onProgress, onFinished, onLog=onLog)

    @staticmethod
    def importRun(
        prepared,
        inputVolume,
        outputSegmentation=None,
        candidateTable=None,
        threshold=None,
        replace=False,
        inputNodes=(),
        replaceState=None,
    ):
        """Import a finished run (see :func:`resultImport.importResults`; existing content only with ``replace``, and
        with ``replaceState`` only when unchanged since)."""
        return resultImport.importResults(
            inputVolume.GetScene(),
            inputVolume,
            prepared.outputs.labelMap,
            prepared.outputs.candidates,
            outputSegmentation,
            candidateTable,
            runThreshold=threshold,
            replace=replace,
            inputNodes=inputNodes,
            replaceState=replaceState,
        )

    @staticmethod
    def worldToVolumeFrame(volumeNode, worldRas):
        """A world RAS point in the volume's own frame (where the engine works), through its parent transform."""
        return reviewNavigation.worldToVolumeFrame(volumeNode, worldRas)

    @staticmethod
    def candidateCenterWorld(segmentationNode, row):
        """The candidate's centre in world RAS (the table stores it in the frame of the result's volume)."""
        volume = resultImport.referenceVolume(segmentationNode)
        return reviewNavigation.candidateCentreWorld(segmentationNode, volume, row)

    def process(
        self,
        inputVolume,
        brainMask=None,
        modality="Auto",
        modelPath="",
        device="Auto",
        threshold=None,
        outputSegmentation=None,
        waitForCompletion=True,
        candidateTable=None,
        onProgress=None,
        onFinished=None,
        replace=False,
    ):
        """Detect and segment the microbleeds of ``inputVolume``; return the segmentation node.

        New output nodes are created unless given; given nodes that hold something are replaced only with
        ``replace=True`` (see :func:`resultImport.checkOutputTargets`), and only as they are at the call: changed
        while the engine runs (reviewed meanwhile), they are kept and the result goes into new nodes.
        With ``waitForCompletion=True`` the call returns when the results are in the scene; in Slicer with a main
        window a progress dialog with Cancel is shown meanwhile and the application stays responsive (Cancel raises
        ``inferenceJob.EngineCancelledError``).
        With ``waitForCompletion=False`` (needs Slicer's event loop) the ProcessRunner is returned and
        ``onFinished(segmentationNode or None, errorMessage or None)`` is called on the main thread.
        The engine's warnings are logged (``logging.warning``).
        """
        resultImport.checkOutputTargets(outputSegmentation, candidateTable, (inputVolume, brainMask), replace)
        # Replaced as they are now: reviewed meanwhile (the progress dialog keeps Slicer responsive), they are kept.
        replaceState = resultImport.outputState(outputSegmentation, candidateTable) if replace else None
        modelPath, warning = modelBundle.chooseModel(modelPath, modality)
        if warning:
            logging.warning("CMBSegmentation: the %s", warning)
        prepared, argv = self.prepareRun(inputVolume, brainMask, modelPath, device, threshold, modality=modality)

        def importAndLog():
            result = self.importRun(
                prepared, inputVolume, outputSegmentation, candidateTable, threshold, replace, [brainMask], replaceState
            )
            for note in result.notes:
                logging.warning("CMBSegmentation: %s: %s", inputVolume.GetName(), note)
            return result

        if not waitForCompletion:

            def finished(errorMessage, cancelled):
                segmentationNode = None
                try:
                    if not errorMessage and not cancelled:
                        segmentationNode = importAndLog().segmentationNode
                except Exception as exc:
                    errorMessage = str(exc)
                finally:
                    shutil.rmtree(prepared.workFolder, ignore_errors=True)
                if onFinished is not None:
                    onFinished(segmentationNode, errorMessage or (_("Cancelled.") if cancelled else None))

            runner = self.createRunner(argv, onProgress or (lambda event: None), finished, _logEngineLine)
            runner.start()
            return runner
        dialog = _progressDialog(inputVolume.GetName())
        overall = runLog.OverallProgress()

        def progress(event):
            if dialog is not None:
                dialog.value = int(round(100 * overall.update(event)))
                dialog.labelText = event.message or event.stage
            if onProgress is not None:
                onProgress(event)

        try:
            inferenceJob.runBlocking(
                argv,
                progress,
                onLog=_logEngineLine,
                idle=slicer.app.processEvents if dialog is not None else None,
                shouldCancel=(lambda: dialog.wasCanceled) if dialog is not None else None,
            )
            result = importAndLog()
        finally:
            if dialog is not None:
                dialog.close()
            shutil.rmtree(prepared.workFolder, ignore_errors=True)
        choice = resultImport.describeModelChoice(result.modelChoice)
        logging.info(
            "CMBSegmentation: %d microbleed(s) in %s%s",
            len(result.segmentIds),
            inputVolume.GetName(),
            f"; {choice}" if choice else "",
        )
        return result.segmentationNode


def _logEngineLine(stream, line) -> None:
    """Engine output of a scripted run: warnings to the log, the rest only when debugging."""
    if runLog.isWarning(line):
        logging.warning("CMBSegmentation engine: %s", line)
    else:
        logging.debug("CMBSegmentation engine: %s", line)


def _progressDialog(name):
    """A modal progress dialog with Cancel for a blocking run in Slicer's GUI; None without a main window."""
    if getattr(slicer, "app", None) is None or slicer.util.mainWindow() is None:
        return None
    return slicer.util.createProgressDialog(
        labelText=_("Detecting microbleeds in {name}...").format(name=name),
        windowTitle=_("CMB Segmentation"),
        maximum=100,
        windowModality=qt.Qt.ApplicationModal,
    )


def _removeStaleWorkFolders() -> None:
    """Remove run folders whose Slicer has ended (quit or crashed during a run)."""
    with contextlib.suppress(OSError):
        workFolders.removeStaleWorkFolders(_temporaryRoot())


def _temporaryRoot():
    app = getattr(slicer, "app", None)
    return app.temporaryPath if app is not None else None


class CMBSegmentationTest(ScriptedLoadableModuleTest):
    """Tests inside Slicer ("Reload and Test", or ctest).

    ``test_WidgetBindsParameters`` needs only Slicer. ``test_ApplyReviewExport`` goes through the module as a reader
    does - Apply, review (jump, accept, reject, review threshold), export - on the shipped sample
    ``tiny-case/tiny_T2S.nii.gz`` (a phantom with three planted microbleeds, centres in ``tiny-case/truth.json``)
    with the tiny test bundle ``tiny-bundle``. The sample ships with the extension (``Resources/TestData``) and
    lies in ``Testing/data`` of a source checkout; CMBSEGMENTATION_TEST_DATA overrides both. It needs torch and
    plkd in Slicer's Python (installed by the first Apply); without them, or without the data, it says so and is
    skipped - a skip is not a failure popup.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_WidgetBindsParameters()
        self.setUp()
        self.test_ApplyReviewExport()

    @staticmethod
    def _dataDir() -> Path:
        if os.environ.get("CMBSEGMENTATION_TEST_DATA"):
            return Path(os.environ["CMBSEGMENTATION_TEST_DATA"])
        moduleDir = Path(__file__).resolve().parent
        for candidate in (moduleDir / "Resources" / "TestData", moduleDir.parent / "Testing" / "data"):
            if (candidate / "tiny-bundle" / "manifest.json").is_file():
                return candidate
        return moduleDir / "Resources" / "TestData"

    def _skip(self, reason) -> None:
        # Not self.skipTest: "Reload and Test" shows any exception, SkipTest included, as a failure popup.
        logging.warning("CMBSegmentationTest: skipped: %s", reason)
        self.delayDisplay(f"Skipped: {reason}")

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
        ui.reviewThresholdSliderWidget.value = 0.7
        self.assertAlmostEqual(p.reviewThreshold, 0.7)
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
        # The review keys are not Slicer's own (Ctrl+Left/Right switch modules).
        keys = sorted(s.key.toString(qt.QKeySequence.PortableText) for s in widget._shortcuts)
        self.assertEqual(keys, sorted(reviewShortcuts.REVIEW_SHORTCUTS.values()))
        self.delayDisplay("CMBSegmentation widget test passed")

    def _applyAndWait(self, widget) -> None:
        """Press Apply and process Qt events until the background run ends (10 minutes at most); it must succeed."""
        import time

        widget.onApplyButton()
        deadline = time.monotonic() + 600
        while widget._runState.busy and time.monotonic() < deadline:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertEqual(widget._runState.state, RunState.DONE, widget.ui.statusLabel.text)

    def test_ApplyReviewExport(self):
        import json
        import tempfile

        import numpy as np

        dataDir = self._dataDir()
        image, truthFile = dataDir / "tiny-case" / "tiny_T2S.nii.gz", dataDir / "tiny-case" / "truth.json"
        bundleDir = dataDir / "tiny-bundle"
        if not (image.is_file() and truthFile.is_file() and (bundleDir / "manifest.json").is_file()):
            return self._skip(f"test data not found in {dataDir} (set CMBSEGMENTATION_TEST_DATA)")
        if dependencies.missingPackages(CMBSegmentationLogic.moduleDir()):
            return self._skip("plkd and torch are not installed in this Slicer, or outdated (click Apply once)")
        truth = json.loads(truthFile.read_text(encoding="utf-8"))["centres_ras"]

        slicer.util.selectModule("CMBSegmentation")
        widget = slicer.modules.cmbsegmentation.widgetRepresentation().self()
        other = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "another series")
        volume = slicer.util.loadVolume(str(image))
        p = widget._parameterNode
        p.inputVolume, p.brainMask, p.modality = volume, None, "T2*"
        p.modelPath, p.device, p.threshold = str(bundleDir), "CPU", 0.5
        p.outputSegmentation, p.candidateTable = None, None
        slicer.util.setSliceViewerLayers(background=other)

        # Apply: the engine runs in the background; the GUI stays responsive.
        self._applyAndWait(widget)
        self.assertIn("segment", widget.ui.logTextEdit.toPlainText())  # the engine's lines reached the log panel
        segmentation, table = widget._reviewNodes()
        rows = candidateTableLib.readRows(table)
        self.assertEqual(len(rows), len(truth))
        for centre in truth:
            nearest = min(float(np.linalg.norm(np.subtract(r.centerRas, centre))) for r in rows)
            self.assertLess(nearest, 2.0, f"no candidate within 2 mm of the microbleed at {centre}")
        self.assertIs(resultImport.referenceVolume(segmentation), volume)

        # Review: jumping shows the reviewed volume, not the other series; accept the first, reject the second.
        listed = widget.ui.candidatesTableWidget
        self.assertEqual(listed.rowCount, len(truth))
        listed.selectRow(0)
        slicer.app.processEvents()
        composite = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
        self.assertEqual(composite.GetBackgroundVolumeID(), volume.GetID())
        first = widget._selectedSegmentId()
        widget.setSelectedStatus(candidateTableLib.STATUS_ACCEPTED)
        second = widget._selectedSegmentId()
        self.assertNotEqual(first, second)
        widget.setSelectedStatus(candidateTableLib.STATUS_REJECTED)
        statuses = {r.segmentId: r.status for r in candidateTableLib.readRows(table)}
        self.assertEqual(statuses[first], candidateTableLib.STATUS_ACCEPTED)
        self.assertEqual(statuses[second], candidateTableLib.STATUS_REJECTED)
        # Slicer's own exports (File > Save, DICOM SEG) write hidden segments too: the rejected one says it is none.
        rejected = segmentation.GetSegmentation().GetSegment(second)
        self.assertTrue(rejected.GetName().endswith(" (rejected)"))
        self.assertTrue(segmentPresentation.isExcludedTerminology(rejected.GetTerminology()))
        # The review threshold goes into the parameter node and onto the table, and cannot go below the run's.
        widget.ui.reviewThresholdSliderWidget.value = 0.2
        slicer.app.processEvents()
        self.assertAlmostEqual(p.reviewThreshold, 0.5)
        widget.ui.reviewThresholdSliderWidget.value = 0.99
        slicer.app.processEvents()
        self.assertAlmostEqual(reviewState.reviewThreshold(table), 0.99)

        # Export: what the reader saw (accepted first one, the rest only above 0.99).
        expected = reportExport.includedRows(segmentation, table, 0.99)
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        with tempfile.TemporaryDirectory() as folder:
            widget.ui.exportDirectoryPathLineEdit.currentPath = folder
            widget.onExport()
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)  # no helper nodes left behind
            name = inferenceJob.safeFileName(volume.GetName())
            report = json.loads((Path(folder) / f"{name}_cmb-report.json").read_text(encoding="utf-8"))
            self.assertEqual(report["n_microbleeds"], len(expected))
            self.assertIn(first, [r.segmentId for r in expected])
            self.assertEqual(report["n_rejected"], 1)
            self.assertTrue((Path(folder) / f"{name}_cmb-final.nii.gz").is_file())

        # Apply again, replacing the reviewed result (as if "Replace" was chosen): the slider follows the new result's
        # threshold (the run's), not the replaced review's 0.99, and keeps it when another setting changes.
        widget._chooseOutputs = lambda _p: (segmentation, table, resultImport.outputState(segmentation, table))
        self._applyAndWait(widget)
        del widget._chooseOutputs
        self.assertAlmostEqual(reviewState.reviewThreshold(table), 0.5)
        self.assertAlmostEqual(p.reviewThreshold, 0.5)
        p.device = "Auto"
        slicer.app.processEvents()
        self.assertAlmostEqual(reviewState.reviewThreshold(table), 0.5)
        self.delayDisplay("CMBSegmentation Apply -> review -> export test passed")
