"""What the scene knows about how a volume was acquired, handed to the engine with the volume it analyses.

The engine's ``--modality auto`` (and its phase, projection and sequence checks) reads the scan's metadata: its JSON
sidecar with what a BIDS data set states for it higher up (``swi.json`` at the data set's root: the inheritance
principle, ``plkd.sidecars``), its NIfTI header's text and its file name (``plkd.inference.modality``). The module
writes the volume to a temporary file, which has none of these, so:

- a volume loaded from a file is described by that file: the engine is given it with ``--metadata-from``
  (:func:`loadedFile`) and reads its metadata itself, by its own rules, so the choice is the one ``plkd predict``
  makes for the file (a copy of those rules here read only the file's own sidecar: a BIDS scan whose sequence is
  stated at the data set's root went to the other model, without a word);
- a volume loaded from DICOM is described by the tags of its series in Slicer's DICOM database (the
  ``DICOM.instanceUIDs`` attribute), written as the temporary file's sidecar (:func:`writeSequenceSidecar`);
- otherwise the node's name, which goes into the temporary file's name, is all the engine reads.
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


def sidecarOf(path: str | Path) -> Path:
    """``scan.nii.gz`` -> ``scan.json`` (also ``.nii`` and single suffixes)."""
    path = Path(path)
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_suffix(".json")


def _fromDicom(volumeNode) -> bool:
    return volumeNode is not None and bool((volumeNode.GetAttribute("DICOM.instanceUIDs") or "").strip())


def loadedFile(volumeNode) -> Path | None:
    """The file ``volumeNode`` was loaded from (or last saved to), for the engine's ``--metadata-from``; None when it
    has none, the file is gone, or the volume came from DICOM (its series' tags describe it: a DICOM storage file is
    one slice of the series, which the engine does not read as a scan)."""
    if volumeNode is None or _fromDicom(volumeNode):
        return None
    storage = volumeNode.GetStorageNode()
    fileName = storage.GetFileName() if storage is not None else None
    if not fileName:
        return None
    path = Path(fileName)
    return path if path.is_file() else None


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
    """The sidecar fields of the DICOM series ``volumeNode`` was loaded from (may be empty; a volume loaded from a
    file is described by that file: :func:`loadedFile`).

    ``dicomDatabase`` is Slicer's ``slicer.dicomDatabase`` (None outside Slicer or when it is not open).
    """
    return _fromDicomDatabase(volumeNode, dicomDatabase) if _fromDicom(volumeNode) else {}


def writeSequenceSidecar(volumeNode, inputPath: str | Path, dicomDatabase=None) -> Path | None:
    """Write the sidecar of the engine input ``inputPath`` when the DICOM database knows the sequence; return its
    path."""
    info = sequenceInfo(volumeNode, dicomDatabase)
    if not info:
        return None
    path = sidecarOf(inputPath)
    path.write_text(json.dumps(info, indent=1), encoding="utf-8")
    return path
