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


def measureLabels(labels: np.ndarray, affine: np.ndarray, n: int) -> list[tuple[tuple[float, float, float], float]]:
    """Centre of mass (RAS mm, through the ``affine`` of ``labels``' grid) and volume (mm³) of labels 1..n
    (0 mm³ for an empty one). Measured on the segments as the reader left them, Segment Editor edits included,
    which the engine's figures in the table may no longer describe."""
    index = np.nonzero(labels)
    which = labels[index].astype(np.int64)
    counts = np.bincount(which, minlength=n + 1)[1 : n + 1].astype(np.float64)
    centres = np.stack([np.bincount(which, weights=i, minlength=n + 1)[1 : n + 1] for i in index], axis=1)
    centres = centres / np.maximum(counts, 1)[:, None]
    ras = centres @ affine[:3, :3].T + affine[:3, 3]
    voxelVolume = abs(float(np.linalg.det(affine[:3, :3])))
    return [(tuple(float(v) for v in ras[k]), float(counts[k] * voxelVolume)) for k in range(n)]
