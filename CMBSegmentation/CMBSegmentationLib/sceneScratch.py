"""Scratch nodes: whatever a block of code adds to the scene is removed again when the block ends.

Slicer's helpers add more nodes than the one asked for: exporting segments to a label map node also creates
its display node and a ``..._ColorTable`` node, which stay in the scene (and are saved with it) when only the
label map node is removed. Taking the difference of the scene's node ids catches all of them, whatever the
Slicer version adds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def scratchNodes(scene) -> Iterator[None]:
    """Remove, on leaving the block, every node that was added to ``scene`` inside it (singletons excepted)."""
    before = _nodeIds(scene)
    try:
        yield
    finally:
        added = [nodeId for nodeId in _nodeIds(scene) if nodeId not in before]
        for nodeId in reversed(added):  # dependants (display, storage, colour nodes) were added after their owner
            node = scene.GetNodeByID(nodeId)
            if node is not None and not node.GetSingletonTag():
                scene.RemoveNode(node)


def _nodeIds(scene) -> list[str]:
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]
