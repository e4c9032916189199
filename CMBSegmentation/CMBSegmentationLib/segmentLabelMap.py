"""The segments of a result as one label map on a volume's grid, read through Slicer's own export.

Export, the click's review snapshot and the review itself (measuring a segment painted by hand) need the voxels
as the reader left them, Segment Editor edits included.
"""

from __future__ import annotations

import numpy as np
import vtk

from CMBSegmentationLib.sceneScratch import scratchNodes
from CMBSegmentationLib.volumeIO import arrayFromVolumeNode


def segmentLabels(segmentationNode, segmentIds: list[str], referenceVolume) -> np.ndarray:
    """The segments as one label map on ``referenceVolume``'s grid (``[i, j, k]``, int16): ``segmentIds[n-1]`` has
    label ``n``, hidden segments included, a later one winning where two overlap. Leaves no node in the scene."""
    shape = referenceVolume.GetImageData().GetDimensions()
    if not segmentIds:
        return np.zeros(shape, dtype=np.int16)
    from slicer import vtkSlicerSegmentationsModuleLogic

    with scratchNodes(segmentationNode.GetScene()):
        labelNode = segmentationNode.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        ids = vtk.vtkStringArray()
        for segmentId in segmentIds:
            ids.InsertNextValue(segmentId)
        # With the reference volume given, the label map comes back on exactly its grid, and the n-th id gets
        # label n.
        if not vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentationNode, ids, labelNode, referenceVolume
        ):
            raise RuntimeError("could not export the segments to a label map")
        return arrayFromVolumeNode(labelNode).astype(np.int16)
