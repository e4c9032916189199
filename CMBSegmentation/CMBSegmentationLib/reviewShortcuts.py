"""Keyboard shortcuts of the review, chosen among keys Slicer itself does not bind.

Slicer binds, application-wide or in every slice view (checked in Slicer 5.10-5.13's source):
Ctrl+Left / Ctrl+Right and Back / Forward (previous/next module, qSlicerModuleSelectorToolBar.cxx),
Ctrl+F (find module), Ctrl+O/S/W/Z/Y/X/C/V/H and Ctrl+0..6, Ctrl+` (qSlicerMainWindow.ui/.cxx,
qSlicerAppMainWindow.cxx), Ctrl+B (subject hierarchy), Ctrl+Shift+A/T/Space (Markups toolbar),
Ctrl+Shift+Left/Right/Down (Sequences), the menu mnemonics Alt+F/E/V/H (qSlicerMainWindow.ui), and plain
keys in slice views (arrows, b, f, g, r, t, v, V, [, ], {, } in vtkMRMLSliceIntersectionWidget.cxx; the Segment
Editor's digits, q, w, z, y, i, Space, Escape). Two QShortcuts with the same keys are ambiguous in Qt: neither
fires. The review therefore uses Alt with letters no Slicer menu claims.
"""

from __future__ import annotations

NEXT = "Alt+N"
PREVIOUS = "Alt+P"
ACCEPT = "Alt+A"
REJECT = "Alt+R"
#: Action name -> key sequence (Qt's portable text form).
REVIEW_SHORTCUTS = {"next": NEXT, "previous": PREVIOUS, "accept": ACCEPT, "reject": REJECT}

#: Key sequences Slicer binds by itself (see the module docstring), in Qt's portable text form.
SLICER_BOUND_KEYS = frozenset(
    {
        "Ctrl+Left", "Ctrl+Right", "Back", "Forward", "Ctrl+F",
        "Ctrl+O", "Ctrl+S", "Ctrl+W", "Ctrl+Z", "Ctrl+Y", "Ctrl+X", "Ctrl+C", "Ctrl+V", "Ctrl+H",
        "Ctrl+0", "Ctrl+1", "Ctrl+2", "Ctrl+3", "Ctrl+4", "Ctrl+5", "Ctrl+6", "Ctrl+`", "Ctrl+B",
        "Ctrl+Shift+A", "Ctrl+Shift+T", "Ctrl+Shift+Space",
        "Ctrl+Shift+Left", "Ctrl+Shift+Right", "Ctrl+Shift+Down",
        "Alt+F", "Alt+E", "Alt+V", "Alt+H",
    }
)  # fmt: skip
