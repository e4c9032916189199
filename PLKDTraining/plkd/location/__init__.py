"""Microbleed location: registration to MNI ICBM152 2009a and the MARS region atlas.

``locate_candidates`` gives each candidate a MARS class (lobar / deep / infratentorial /
unknown), a region and its MNI coordinate, and summarises the scan (counts per class and
region, a descriptive pattern). See ``docs/design.md`` ("Location") for the JSON fields.
"""

from plkd.location.atlas import CLASSES, LABELS, MARS_CLASS, load_atlas, location_of
from plkd.location.locate import annotate, locate_candidates
from plkd.location.register import Registration, register_to_mni
from plkd.location.summary import PATTERNS, describe, pattern_of, summarise

__all__ = [
    "CLASSES",
    "LABELS",
    "MARS_CLASS",
    "PATTERNS",
    "Registration",
    "annotate",
    "describe",
    "load_atlas",
    "locate_candidates",
    "location_of",
    "pattern_of",
    "register_to_mni",
    "summarise",
]
