"""Show a candidate: the volume it was found on in every slice view, centred on its position.

With several volumes loaded, a candidate must be judged on the image the engine saw, so the reviewed volume
becomes the background of each slice view (its foreground and label layers are left as the reader set them).
"""

from __future__ import annotations


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
