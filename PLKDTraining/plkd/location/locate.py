"""Give every candidate its MARS location, region and MNI coordinate; summarise the scan.

This is the one call the predictor makes (:func:`locate_candidates`). It registers the scan to
MNI ICBM152 2009a (:mod:`plkd.location.register`), maps each candidate's ``center_ras``
through the registration and looks the point up in the MARS atlas
(:mod:`plkd.location.atlas`). When the registration fails every candidate is ``"unknown"``
with ``center_mni = None``: no region is better than a wrong one.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping, Sequence
from typing import Any

import numpy as np

from plkd.errors import PLKDError
from plkd.location.atlas import load_atlas, location_of
from plkd.location.register import Registration, register_to_mni
from plkd.location.summary import summarise

log = logging.getLogger(__name__)


def annotate(candidates: Sequence[MutableMapping[str, Any]], registration: Registration) -> None:
    """Set ``location``, ``region`` and ``center_mni`` (mm, rounded to 0.1) on every candidate, in place."""
    if not candidates:
        return
    centres = np.array([c["center_ras"] for c in candidates], dtype=np.float64).reshape(-1, 3)
    mni = registration.to_mni(centres)
    regions = load_atlas().lookup(mni) if registration.ok else [None] * len(candidates)
    for cand, point, region in zip(candidates, mni, regions, strict=True):
        cand["location"] = location_of(region)
        cand["region"] = region or "unknown"
        cand["center_mni"] = [round(float(v), 1) for v in point] if np.all(np.isfinite(point)) else None


def locate_candidates(
    image: np.ndarray,
    affine: np.ndarray,
    candidates: Sequence[MutableMapping[str, Any]],
    mask: np.ndarray | None = None,
    *,
    notes: list[str] | None = None,
    deformable: bool = False,
    reuse: Registration | None = None,
) -> dict[str, Any]:
    """Annotate ``candidates`` in place and return the scan's ``location`` block (``docs/design.md``).

    ``image`` (``[i, j, k]``) with its voxel-to-RAS ``affine`` and optional brain ``mask`` (same
    grid) is the scan; each candidate needs ``center_ras`` (RAS mm) and ``kept``. The block is
    ``{"status": "ok"|"failed"|"skipped", "reason", "counts", "regions", "pattern",
    "registration"}``; counts cover kept candidates only. A failure or skip is logged and, when
    ``notes`` is given, added to it as one sentence. Never raises for a registration problem.
    ``reuse``, a registration of this same scan made before (a click on a scan predicted whole: the JSON's
    ``scan_to_mni``), is used instead of registering again (a few seconds per click). An affine registration that
    passed its checks is kept in the block as ``scan_to_mni`` (4x4, scan RAS mm → MNI RAS mm).
    """
    if not candidates:
        registration = Registration("skipped", "no candidates to locate")
    elif reuse is not None:
        registration = reuse
    else:
        registration = register_to_mni(image, affine, mask, deformable=deformable)
        if registration.status == "failed" and registration.reason and "not installed" in registration.reason:
            registration.status = "skipped"
    try:
        annotate(candidates, registration)
    except PLKDError as exc:  # a broken installation (atlas or template file missing): no location, no crash
        registration = Registration("failed", str(exc), checks=registration.checks)
        annotate(candidates, registration)
    block: dict[str, Any] = {"status": registration.status, "reason": registration.reason}
    block.update(summarise(candidates))
    block["registration"] = registration.checks
    matrix = registration.matrix()
    if matrix is not None:
        block["scan_to_mni"] = [[round(float(v), 6) for v in row] for row in matrix]
    if registration.status == "failed":
        message = f"location unknown: registration to MNI failed ({registration.reason})"
        log.warning(message)
        if notes is not None:
            notes.append(message)
    elif registration.status == "skipped" and candidates:
        message = f"location not determined: {registration.reason}"
        log.warning(message)
        if notes is not None:
            notes.append(message)
    return block
