"""Whether two data sets hold the same scans: the sha256 of each image's voxel values.

Subject ids repeat across data sets (``sub-0001`` in every ``plkd synth`` folder) and a scan copied into another
folder may be renamed, so ids cannot tell whether ``plkd tune`` or ``plkd cv --tune-data`` is given subjects the
networks were trained on (or are tested on); the voxel values can: a copy, a renamed or re-compressed file, or one
with another header, has the digest of its source. A resampled or re-converted scan does not, and is not found.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np

from plkd.data.datasets import Subject
from plkd.volumes import load_volume


def image_sha256(data: np.ndarray) -> str:
    """sha256 of a 3-D image's voxel values as :func:`plkd.volumes.load_volume` gives them (float32) and its shape."""
    arr = np.ascontiguousarray(data, dtype=np.float32)
    h = hashlib.sha256(repr(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def scan_digests(subjects: Iterable[Subject]) -> dict[str, str]:
    """``{subject id: image_sha256}`` of each subject's image (every image is read)."""
    return {s.id: image_sha256(load_volume(s.image, what=f"image of {s.id}").data) for s in subjects}


def shared_scans(digests: Mapping[str, str], known: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(subject id, id in known)`` for every subject of ``digests`` whose image is one of ``known``'s, by id."""
    by_digest = {digest: sid for sid, digest in known.items()}
    return sorted((sid, by_digest[d]) for sid, d in digests.items() if d in by_digest)


def shared_sentence(shared: list[tuple[str, str]], n: int, noun: str, what: str) -> str:
    """``"2 of 12 NOUN (sub-0001 = WHAT sub-0003, ...)"``: the shared scans named, for an error line."""
    pairs = ", ".join(f"{a} = {what} {b}" for a, b in shared[:3])
    return f"{len(shared)} of {n} {noun} ({pairs}{', ...' if len(shared) > 3 else ''})"


def same_scan_groups(digests: Mapping[str, str]) -> dict[str, str]:
    """``{subject id: group}`` for the subjects whose image is another subject's too (``digests`` from
    :func:`scan_digests`): two raters' labels of one scan given as two cases, or a scan copied under another name.
    The group is the first id of the scan, sorted; subjects with an image of their own are left out."""
    by_digest: dict[str, list[str]] = {}
    for sid in sorted(digests):
        by_digest.setdefault(digests[sid], []).append(sid)
    return {sid: ids[0] for ids in by_digest.values() if len(ids) > 1 for sid in ids}
