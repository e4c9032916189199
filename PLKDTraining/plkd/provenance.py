"""Which plkd code made an output: a fingerprint of the package's own files.

The version number alone does not say it: it stays the same from one change of the code to the next (0.1.0 since
the first commit), so a rerun after an update that changes results (a new candidate rule, another reading of a
header) skipped every scan as "finished earlier with the same settings" and kept the old results.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

#: Folders of the package that are not code: the shipped models, whose manifests' checksums are recorded already.
NOT_CODE = ("bundled",)


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """The first 16 hex digits of the sha256 over every file of the installed ``plkd`` package (its path relative
    to the package, then its bytes, in path order), the shipped models, compiled caches and hidden files left
    out. Python sources, configurations and the location atlas all decide a result; about 2 MB, read once per
    process."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        hidden = any(part.startswith(".") for part in rel.parts)  # an editor's swap file, a checkout's metadata
        if rel.parts[0] in NOT_CODE or hidden or "__pycache__" in rel.parts or path.suffix in (".pyc", ".pyo"):
            continue
        h.update(rel.as_posix().encode("utf-8") + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]
