"""The JSON sidecar of a ``plkd lowres`` output: the input's, without what no longer holds.

dcm2niix and BIDS keep an image's acquisition parameters in a JSON file beside it (``scan.nii.gz`` →
``scan.json``); ``plkd predict`` reads them to tell SWI from T2* (:mod:`plkd.inference.modality`). ``plkd lowres``
wrote its outputs without one, so an SWI scan made thick was analysed as T2*; copied as it is, the sidecar would
describe the input's slices instead (a 4 mm version saying ``"SliceThickness": 1``, a ``SliceTiming`` list for
slices that no longer exist). The output's sidecar therefore keeps what still holds (contrast, sequence, scanner,
echo times: the same tissue seen the same way), drops the fields about the slices that changed
(:data:`SLICE_FIELDS`, and with a new grid :data:`GRID_FIELDS`), sets those it knows for true thick slices
(``SliceThickness``, ``SpacingBetweenSlices``, ``SliceEncodingDirection``) and records all of it under
:data:`RECORD` (BIDS allows fields of one's own).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from plkd.atomic import write_json_atomic
from plkd.naming import strip_nifti_suffix
from plkd.sidecars import read_sidecar

#: Fields about the acquisition's slices: thickness, gap, timing, simultaneous slices, and the scan time that
#: follows from their number. A volume of other slices (thick slabs, or LR@k's every k-th slice) makes them false.
SLICE_FIELDS = (
    "SliceThickness",
    "SpacingBetweenSlices",
    "SliceTiming",
    "MultibandAccelerationFactor",
    "AcquisitionDuration",
)
#: Fields describing the stored voxel grid (dcmstack's meta data): false once the output has a grid of its own.
GRID_FIELDS = ("dcmmeta_shape", "dcmmeta_affine", "dcmmeta_slice_dim", "dcmmeta_reorient_transform")
#: The output sidecar's record of the conversion and of what was removed or set.
RECORD = "PLKDLowres"


def sidecar_of(image: Path) -> Path:
    """The JSON sidecar beside a NIfTI file: ``scan.nii.gz`` → ``scan.json``."""
    return image.with_name(strip_nifti_suffix(image.name) + ".json")


def lowres_fields(
    fields: dict[str, Any],
    settings: dict[str, Any],
    *,
    thickness_mm: float | None,
    axis: int,
    source: str | None,
    header_changed: list[str] | None = None,
) -> dict[str, Any]:
    """The output's sidecar from the input's ``fields``: thick slices of ``thickness_mm`` (mm) along array
    ``axis`` on a new grid, or LR@k on the input's grid (``thickness_mm`` None); ``settings`` are recorded, and
    ``header_changed``, the NIfTI header fields the output's header changed from the input's."""
    out = dict(fields)
    drop = SLICE_FIELDS + (GRID_FIELDS if thickness_mm is not None else ())
    removed = [k for k in drop if k in out]
    for key in removed:
        del out[key]
    changed: dict[str, Any] = {}
    if thickness_mm is not None:
        # Contiguous slabs: each slice is thickness_mm thick and as far from the next, along the thinned axis.
        changed = {
            "SliceThickness": float(thickness_mm),
            "SpacingBetweenSlices": float(thickness_mm),
            "SliceEncodingDirection": "ijk"[axis],
        }
        out.update(changed)
    removed = [k for k in removed if k not in changed]
    out[RECORD] = {
        "source": source,
        **settings,
        "axis": axis,
        "removed": removed,
        "set": changed,
        "header_changed": list(header_changed or []),
        "why": "fields about the input's slices no longer hold for this image",
    }
    return out


def write_lowres_sidecar(
    source: Path,
    output: Path,
    settings: dict[str, Any],
    *,
    thickness_mm: float | None,
    axis: int,
    header_changed: list[str] | None = None,
    always: bool = False,
) -> Path | None:
    """Write ``output``'s sidecar made from ``source``'s metadata (see :func:`lowres_fields`): its own sidecar merged
    with what it inherits in a BIDS data set (:func:`plkd.sidecars.read_sidecar`: a root-level ``T2starw.json`` that
    says SWI, which the output, written elsewhere, would no longer inherit); returns its path. When ``source`` has
    none, ``always`` writes one holding the :data:`RECORD` (and what thick slices set) with ``source`` ``null``: a
    single converted file has no other record of its conversion; else None is returned and a sidecar an earlier
    ``plkd lowres`` wrote for ``output`` is removed, as it describes another image. A sidecar that is not a JSON
    object is ignored."""
    merged = read_sidecar(source)
    if not merged.fields and not always:
        remove_lowres_sidecar(output)
        return None
    files = list(dict.fromkeys(merged.origin.values()))  # root first, as merged
    names = "; ".join(Path(os.path.relpath(f, Path(os.path.abspath(source)).parent)).as_posix() for f in files)
    fields = lowres_fields(
        dict(merged.fields),
        settings,
        thickness_mm=thickness_mm,
        axis=axis,
        source=names or None,
        header_changed=header_changed,
    )
    write_json_atomic(sidecar_of(output), fields)
    return sidecar_of(output)


def remove_lowres_sidecar(image: Path) -> None:
    """Remove the sidecar of ``image`` when ``plkd lowres`` wrote it (it carries :data:`RECORD`); others stay."""
    earlier = _read(sidecar_of(image))
    if earlier is not None and RECORD in earlier:
        sidecar_of(image).unlink()


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
