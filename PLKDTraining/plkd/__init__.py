"""plkd: cerebral microbleed detection and segmentation in low-resolution MRI.

Implements the two-stage framework, the E2U-Net and Progressive-Learning Knowledge
Distillation (PLKD) of Xia et al. The package never imports Slicer, Qt or VTK.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
