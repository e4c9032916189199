"""What the scene knows about how a volume was acquired, handed to the engine as a JSON sidecar.

The engine's ``--modality auto`` reads the sequence from a JSON sidecar next to its input (the fields dcm2niix
and BIDS write; see ``plkd.inference.modality``). The module writes the input to a temporary file, so it writes
that sidecar too, from what the scene holds: the sidecar of the file the volume was loaded from (its storage
node's file name with ``.json``), else the DICOM tags of the series it was loaded from (the ``DICOM.instanceUIDs``
attribute and Slicer's DICOM database). The node's name goes into the temporary file's name, where the engine
reads it last.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

#: The sidecar fields the engine reads, with their DICOM tags (group,element as ctkDICOMDatabase takes them).
SEQUENCE_TAGS = {
    "SequenceName": "0018,0024",
    "ImageType": "0008,0008",
    "SeriesDescription": "0008,103E",
    "ProtocolName": "0018,1030",
}
#: A sidecar larger than this is not a dcm2niix sidecar; it is not read.
MAX_SIDECAR_BYTES = 1_000_000


def sidecarOf(path: str | Path) -> Path:
    """``scan.nii.gz`` -> ``scan.json`` (also ``.nii``, ``.nrrd``, ``.mha`` and other single suffixes)."""
    path = Path(path)
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_suffix(".json")


def _fromLoadedFile(volumeNode) -> dict:
    storage = volumeNode.GetStorageNode() if volumeNode is not None else None
    fileName = storage.GetFileName() if storage is not None else None
    if not fileName:
        return {}
    sidecar = sidecarOf(fileName)
    try:
        if not sidecar.is_file() or sidecar.stat().st_size > MAX_SIDECAR_BYTES:
            return {}
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        key: data[key]
        for key in (*SEQUENCE_TAGS, "PulseSequenceName", "ImageTypeText")
        if data.get(key) not in (None, "")
    }


def _fromDicomDatabase(volumeNode, database) -> dict:
    uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split() if volumeNode is not None else []
    if not uids or database is None:
        return {}
    try:
        if not database.isOpen:
            return {}
        path = database.fileForInstance(uids[0])
        if not path:
            return {}
        values = {key: database.fileValue(path, tag) for key, tag in SEQUENCE_TAGS.items()}
    except Exception:  # noqa: BLE001 - the database is optional help; the file name remains
        logging.debug("CMBSegmentation: could not read the DICOM tags of %s", volumeNode.GetName(), exc_info=True)
        return {}
    return {key: str(value) for key, value in values.items() if value}


def sequenceInfo(volumeNode, dicomDatabase=None) -> dict:
    """The sidecar fields known for ``volumeNode`` (may be empty).

    ``dicomDatabase`` is Slicer's ``slicer.dicomDatabase`` (None outside Slicer or when it is not open).
    """
    return _fromLoadedFile(volumeNode) or _fromDicomDatabase(volumeNode, dicomDatabase)


def writeSequenceSidecar(volumeNode, inputPath: str | Path, dicomDatabase=None) -> Path | None:
    """Write the sidecar of the engine input ``inputPath`` when the scene knows the sequence; return its path."""
    info = sequenceInfo(volumeNode, dicomDatabase)
    if not info:
        return None
    path = sidecarOf(inputPath)
    path.write_text(json.dumps(info, indent=1), encoding="utf-8")
    return path
