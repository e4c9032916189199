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


def segmentVoxels(segmentationNode, segmentIds: list[str], referenceVolume) -> list[np.ndarray]:
    """Each segment's own voxels on ``referenceVolume``'s grid, as an ``(N, 3)`` int64 array of ``[i, j, k]``
    indices (``N`` 0 for a segment erased to nothing), hidden segments included.

    Exported one segment at a time, so two segments that overlap each keep all their voxels; in one label map
    (:func:`segmentLabels`) the later one would take the shared voxels, and a segment lying wholly inside a later
    one would vanish. Leaves no node in the scene.
    """
    if not segmentIds:
        return []
    from slicer import vtkSlicerSegmentationsModuleLogic

    out = []
    with scratchNodes(segmentationNode.GetScene()):
        labelNode = segmentationNode.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        for segmentId in segmentIds:
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segmentId)
            if not vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentationNode, ids, labelNode, referenceVolume
            ):
                raise RuntimeError(f"could not export segment {segmentId!r} to a label map")
            out.append(np.argwhere(arrayFromVolumeNode(labelNode)))
    return out


def flattenVoxels(
    voxels: list[np.ndarray], shape: tuple[int, int, int]
) -> tuple[np.ndarray, list[tuple[int, tuple[int, ...]]]]:
    """One label map (``shape``, int16) with ``voxels[n-1]`` as label ``n``, and the labels missing from it:
    ``(n, covering)`` when every voxel of segment ``n`` also belongs to the segments ``covering`` (labels).

    Where segments overlap the smaller one is drawn last and keeps the shared voxels, so a microbleed drawn
    inside a larger one stays visible; ties keep the later one, as Slicer's own export does.
    """
    labels = np.zeros(shape, dtype=np.int16)
    order = sorted(range(len(voxels)), key=lambda n: -len(voxels[n]))  # stable: later wins among equal sizes
    for n in order:
        if len(voxels[n]):
            labels[tuple(voxels[n].T)] = n + 1
    hidden = []
    for n, own in enumerate(voxels):
        if len(own):
            shown = np.unique(labels[tuple(own.T)])
            if n + 1 not in shown:
                hidden.append((n + 1, tuple(int(m) for m in shown)))
    return labels, hidden


def measureVoxels(voxels: list[np.ndarray], affine: np.ndarray) -> list[tuple[tuple[float, float, float], float]]:
    """Centre of mass (RAS mm, through the grid's ``affine``) and volume (mm³) of each segment's own voxels (from
    :func:`segmentVoxels`; overlaps counted in each segment), ``((0, 0, 0), 0.0)`` for an empty one."""
    voxelVolume = abs(float(np.linalg.det(affine[:3, :3])))
    out = []
    for own in voxels:
        if not len(own):
            out.append(((0.0, 0.0, 0.0), 0.0))
            continue
        ras = affine[:3, :3] @ own.mean(axis=0) + affine[:3, 3]
        out.append((tuple(float(v) for v in ras), float(len(own) * voxelVolume)))
    return out
