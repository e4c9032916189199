"""Show a candidate: the volume it was found on in every slice view, centred on its position.

With several volumes loaded, a candidate must be judged on the image the engine saw, so the reviewed volume
becomes the background of each slice view (its foreground and label layers are left as the reader set them).
"""

from __future__ import annotations

import vtk


def showVolumeInSliceViews(scene, volumeNode) -> int:
    """Make ``volumeNode`` the background of every slice view; return how many views changed."""
    changed = 0
    if volumeNode is None:
        return changed
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        if composite.GetBackgroundVolumeID() != volumeNode.GetID():
            composite.SetBackgroundVolumeID(volumeNode.GetID())
            changed += 1
    return changed


def centreSliceViews(scene, worldRas) -> None:
    """Move every slice view so that it passes through and is centred on ``worldRas`` (mm)."""
    x, y, z = (float(v) for v in worldRas)
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        scene.GetNthNodeByClass(i, "vtkMRMLSliceNode").JumpSliceByCentering(x, y, z)


def showCandidate(scene, volumeNode, worldRas) -> None:
    """Show ``volumeNode`` in the slice views, centred on the candidate at ``worldRas``."""
    showVolumeInSliceViews(scene, volumeNode)
    centreSliceViews(scene, worldRas)


def worldToVolumeFrame(volumeNode, worldRas) -> list[float]:
    """A world RAS point (mm) in ``volumeNode``'s own frame (where the engine works), through its parent transform."""
    return _throughParent(volumeNode, worldRas, toWorld=False)


def volumeFrameToWorld(volumeNode, ras) -> list[float]:
    """A point (RAS mm) of ``volumeNode``'s own frame in world RAS, through its parent transform."""
    return _throughParent(volumeNode, ras, toWorld=True)


def candidateCentreWorld(segmentationNode, referenceVolume, row) -> list[float]:
    """The world RAS (mm) of a candidate table ``row``'s centre, which the table keeps in the frame of the result's
    volume ``referenceVolume`` (see ``reviewState.measureRows``): through that volume's parent transform, the
    segmentation's when the volume is gone.

    The segmentation's transform was used always: with the volume's transform hardened (a registration made
    permanent) and the segmentation left under it, a selected candidate was shown where the transform moved it to a
    second time, off the microbleed.
    """
    return _throughParent(referenceVolume if referenceVolume is not None else segmentationNode, row.centerRas, True)


def _throughParent(node, point, toWorld: bool) -> list[float]:
    transformNode = node.GetParentTransformNode() if node is not None else None
    if transformNode is None:
        return [float(v) for v in point]
    transform = vtk.vtkGeneralTransform()
    if toWorld:
        transformNode.GetTransformToWorld(transform)
    else:
        transformNode.GetTransformFromWorld(transform)
    return list(transform.TransformPoint([float(v) for v in point]))
