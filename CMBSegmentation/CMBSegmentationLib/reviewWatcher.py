"""Tell the review list when what it shows may have changed, whoever changed it.

The list shows one segmentation and its candidate table. It is stale when the table is edited elsewhere (Tables
module, a script), a segment is added, removed, renamed or painted (Segment Editor), a transform of the segmentation or
its volume changes (moved, hardened), either node is removed, or a scene is imported or closed. VTK observers only:
the same code runs in Slicer and against a ``slicer-core`` scene, and the widget merely coalesces the calls (many
events may arrive for one change).
"""

from __future__ import annotations

from collections.abc import Callable

import vtk


class ReviewWatcher:
    """Call ``onChange()`` whenever the watched result or the scene around it changes."""

    def __init__(self, scene, onChange: Callable[[], None]) -> None:
        from slicer import vtkMRMLScene

        self._onChange = onChange
        self._scene = scene
        self._nodes: list = []
        self._nodeObservations: list[tuple[object, int]] = []
        self._volumeObservations: list[tuple[object, int]] = []  # the result's volume, which a run may change
        self._sceneObservations = [
            (scene, scene.AddObserver(event, self._sceneChanged))
            for event in (vtkMRMLScene.EndImportEvent, vtkMRMLScene.EndCloseEvent, vtkMRMLScene.EndRestoreEvent)
        ]
        self._sceneObservations.append((scene, scene.AddObserver(vtkMRMLScene.NodeRemovedEvent, self._nodeRemoved)))

    def watch(self, segmentationNode, tableNode) -> None:
        """Watch these nodes (either may be None) instead of the previous ones."""
        from slicer import vtkMRMLSegmentationNode, vtkMRMLTransformableNode, vtkSegmentation

        if [segmentationNode, tableNode] == self._nodes:
            return
        self._removeNodeObservations()
        self._nodes = [segmentationNode, tableNode]
        if tableNode is not None:
            self._observe(tableNode, vtk.vtkCommand.ModifiedEvent)
        if segmentationNode is not None:
            for event in (
                vtkSegmentation.SegmentAdded,
                vtkSegmentation.SegmentRemoved,
                vtkSegmentation.SegmentModified,
                vtkMRMLTransformableNode.TransformModifiedEvent,
            ):
                self._observe(segmentationNode, event)
            # The table keeps centres in the frame of the result's volume: a transform hardened on it (or moved)
            # changes them, and the list jumped off the microbleeds until something else refreshed it. A run that
            # replaces the result may bring another volume.
            self._nodeObservations.append(
                (
                    segmentationNode,
                    segmentationNode.AddObserver(
                        vtkMRMLSegmentationNode.ReferenceImageGeometryChangedEvent, self._volumeChanged
                    ),
                )
            )
            self._observeVolume()

    def _observeVolume(self) -> None:
        from slicer import vtkMRMLTransformableNode

        for node, tag in self._volumeObservations:
            node.RemoveObserver(tag)
        self._volumeObservations = []
        segmentationNode = self._nodes[0] if self._nodes else None
        volume = (
            segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())
            if segmentationNode is not None
            else None
        )
        if volume is not None:
            tag = volume.AddObserver(vtkMRMLTransformableNode.TransformModifiedEvent, self._nodeChanged)
            self._volumeObservations.append((volume, tag))

    def _volumeChanged(self, caller, event) -> None:
        self._observeVolume()
        self._onChange()

    @property
    def watched(self) -> tuple:
        """The (segmentation, table) being watched."""
        return tuple(self._nodes) if self._nodes else (None, None)

    def close(self) -> None:
        """Stop observing anything."""
        self._removeNodeObservations()
        for obj, tag in self._sceneObservations:
            obj.RemoveObserver(tag)
        self._sceneObservations = []

    def _observe(self, node, event) -> None:
        self._nodeObservations.append((node, node.AddObserver(event, self._nodeChanged)))

    def _removeNodeObservations(self) -> None:
        for node, tag in self._nodeObservations + self._volumeObservations:
            node.RemoveObserver(tag)
        self._nodeObservations = []
        self._volumeObservations = []
        self._nodes = []

    def _nodeChanged(self, caller, event) -> None:
        self._onChange()

    def _sceneChanged(self, caller, event) -> None:
        self._onChange()

    def _nodeRemoved(self, caller, event) -> None:
        # The removed node is not passed to Python observers without call data; check whether ours are still there.
        if any(node is not None and node.GetScene() is None for node in self._nodes):
            self._removeNodeObservations()
            self._onChange()
