"""Keep a result's registration to MNI in the scene, so a click on it need not register the scan again.

A run's candidates file holds the scan→MNI registration it made (``location.scan_to_mni``, 4x4, scan RAS mm → MNI RAS
mm) and the sha256 of the very file it read (``input_sha256``: the NIfTI the module wrote for it). Both are kept on
the result's segmentation; a click sends them in its review snapshot (``clickReview.writeReviewSnapshot``), and the
engine reuses the registration only when the file the click writes has that same sha256 (``plkd.inference.click``).

Why the sha256 is the identity: the module writes the volume the same way each time (nibabel's gzip stream has no time
stamp and no file name), so equal bytes mean equal voxels, data type, grid and placement in the volume's own frame. A
volume edited, resampled, cast or moved by a hardened transform writes other bytes and is registered again: a reused
registration of another scan would put the microbleed in the wrong lobe without a word. A parent transform that is not
hardened changes nothing the engine sees (it works in the volume's own frame, where the click is given too), so the
registration stays valid under it.
"""

from __future__ import annotations

import json
import math

#: On a result's segmentation: JSON ``{"input_sha256": str, "location": {"status": "ok", "scan_to_mni": 4x4 list,
#: "registration": {...}}}``, the fields of the candidates file it came from (:func:`registrationOf`).
ATTRIBUTE_REGISTRATION = "CMBSegmentation.Registration"


def registrationOf(data: dict) -> dict | None:
    """The registration a candidates file's content ``data`` recorded for the file it was made from, as
    ``{"input_sha256", "location": {"status": "ok", "reason": None, "scan_to_mni", "registration"}}``; None when it has
    none (none made, failed, not affine, or no ``input_sha256``: older outputs)."""
    sha = data.get("input_sha256") if isinstance(data, dict) else None
    block = data.get("location") if isinstance(data, dict) else None
    if not isinstance(sha, str) or len(sha) != 64 or not isinstance(block, dict) or block.get("status") != "ok":
        return None
    try:
        rows = [[float(v) for v in row] for row in block.get("scan_to_mni")]
    except (TypeError, ValueError):
        return None
    if len(rows) != 4 or any(len(row) != 4 for row in rows) or not all(math.isfinite(v) for r in rows for v in r):
        return None
    checks = block.get("registration")
    checks = {k: v for k, v in checks.items() if k != "reused_from"} if isinstance(checks, dict) else {}
    return {
        "input_sha256": sha,
        "location": {"status": "ok", "reason": None, "scan_to_mni": rows, "registration": checks},
    }


def recordRegistration(segmentationNode, data: dict, keepEarlier: bool = False) -> None:
    """Keep the registration of the run whose candidates file's content is ``data`` on ``segmentationNode``.

    Without one in ``data`` the node's earlier one is removed (a result replaced by a run that made none), unless
    ``keepEarlier`` (a click that located nothing: the result's own registration still holds for its scan)."""
    found = registrationOf(data)
    if found is not None:
        segmentationNode.SetAttribute(ATTRIBUTE_REGISTRATION, json.dumps(found))
    elif not keepEarlier:
        segmentationNode.RemoveAttribute(ATTRIBUTE_REGISTRATION)


def recordedRegistration(segmentationNode) -> dict | None:
    """The registration :func:`recordRegistration` kept on ``segmentationNode`` (checked again), or None."""
    text = segmentationNode.GetAttribute(ATTRIBUTE_REGISTRATION) if segmentationNode is not None else None
    try:
        return registrationOf(json.loads(text)) if text else None
    except ValueError:
        return None


def snapshotFields(segmentationNode) -> dict:
    """What a review snapshot's JSON carries so that the engine may reuse the result's registration: ``input_sha256``
    and a ``location`` block with ``scan_to_mni`` (empty when the result has none)."""
    return recordedRegistration(segmentationNode) or {}
