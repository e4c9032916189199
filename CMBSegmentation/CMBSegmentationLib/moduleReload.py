"""Make the developer "Reload" of the module also reload ``CMBSegmentationLib``.

Slicer's reload re-executes ``CMBSegmentation.py`` only; its ``from CMBSegmentationLib import ...`` would find the
old sub-modules in ``sys.modules``. Forgetting them first makes that import read every file again.
"""

from __future__ import annotations

import sys


def forgetPackage(package: str) -> list[str]:
    """Remove ``package`` and its sub-modules from ``sys.modules``; return their names."""
    names = [name for name in sys.modules if name == package or name.startswith(package + ".")]
    for name in names:
        del sys.modules[name]
    return names
