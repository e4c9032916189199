"""Counts per MARS class and region, and the descriptive distribution pattern of a scan.

The pattern only describes where the kept microbleeds lie (Gregoire et al., Neurology 2009
classes); it is not a diagnosis. A microbleed whose location is unknown could lie in any class, so
it makes the pattern ``unknown`` unless the known ones are already ``mixed``: "1 lobar, 3 unknown"
is not "strictly lobar", a pattern read as a marker of cerebral amyloid angiopathy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from plkd.location.atlas import CLASSES

#: The possible patterns, in the order a report lists them.
PATTERNS = ("none", "strictly lobar", "deep", "mixed", "infratentorial only", "unknown")


def pattern_of(counts: Mapping[str, int]) -> str:
    """The distribution pattern for counts per class (``lobar``, ``deep``, ``infratentorial``, ``unknown``).

    ``none``: no microbleed; ``strictly lobar``: lobar only; ``infratentorial only``;
    ``deep``: deep, possibly with infratentorial, and no lobar; ``mixed``: lobar together with
    deep or infratentorial; ``unknown``: microbleeds whose location could not be determined, and
    which could change the pattern of the others (every pattern but ``mixed``).
    """
    lobar, deep, infra = (int(counts.get(k, 0)) for k in ("lobar", "deep", "infratentorial"))
    unknown = int(counts.get("unknown", 0))
    if lobar + deep + infra + unknown == 0:
        return "none"
    if lobar and (deep or infra):
        return "mixed"
    if unknown:
        return "unknown"
    if lobar:
        return "strictly lobar"
    if deep:
        return "deep"
    return "infratentorial only"


def summarise(candidates: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"counts": {class: n}, "regions": {region: n}, "pattern": str}`` over KEPT candidates.

    A candidate without a ``location``, or with one that is not a class (an older or hand-edited
    record: "Lobar", "cortical"), counts as unknown, so the counts always add up to the kept
    candidates. Every class appears in ``counts`` (zeros included); ``regions`` lists only regions
    that occur, most frequent first.
    """
    kept = [c for c in candidates if c.get("kept")]
    # A value outside CLASSES fell out of the counts: their sum was then smaller than the kept microbleeds.
    classes = Counter(str(c.get("location")) if c.get("location") in CLASSES else "unknown" for c in kept)
    counts = {k: int(classes.get(k, 0)) for k in CLASSES}
    regions = Counter(str(c.get("region") or "unknown") for c in kept)
    ordered = dict(sorted(regions.items(), key=lambda kv: (-kv[1], kv[0])))
    return {"counts": counts, "regions": ordered, "pattern": pattern_of(counts)}


def describe(block: Mapping[str, Any] | None) -> str:
    """One line for a terminal, e.g. ``location: 3 lobar, 1 deep, 0 infratentorial, 0 unknown (pattern: mixed)``."""
    if not block:
        return "location: not determined"
    counts = block.get("counts") or {}
    text = ", ".join(f"{int(counts.get(k, 0))} {k}" for k in CLASSES)
    line = f"location: {text} (pattern: {block.get('pattern', 'unknown')})"
    if block.get("status") not in (None, "ok"):
        line += f" [{block.get('status')}: {block.get('reason')}]"
    return line
