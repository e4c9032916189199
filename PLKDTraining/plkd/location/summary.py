"""Counts per MARS class and region, and the descriptive distribution pattern of a scan.

The pattern only describes where the kept microbleeds lie (Gregoire et al., Neurology 2009
classes); it is not a diagnosis. It follows how the Boston criteria read a distribution (Knudsen et
al., Neurology 2001; Linn et al., Neurology 2010; Charidimou et al., Lancet Neurology 2022):
"strictly lobar" allows cerebellar microbleeds (they count as neither lobar nor deep), while a
brainstem microbleed is a deep (hypertensive-type) lesion, so lobar + brainstem is ``mixed``.
A microbleed whose location is unknown could lie in any class, so it makes the pattern
``unknown`` unless the known ones are already ``mixed``: "1 lobar, 3 unknown" is not "strictly
lobar", a pattern read as a marker of cerebral amyloid angiopathy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from plkd.location.atlas import CLASSES

#: The possible patterns, in the order a report lists them.
PATTERNS = ("none", "strictly lobar", "deep", "mixed", "infratentorial only", "unknown")


def pattern_of(counts: Mapping[str, int], regions: Mapping[str, int] | None = None) -> str:
    """The distribution pattern for counts per class (``lobar``, ``deep``, ``infratentorial``, ``unknown``).

    ``regions`` (counts per region name, as :func:`summarise` gives) tells cerebellar from
    brainstem microbleeds; without it every infratentorial microbleed is treated as possibly
    brainstem (the cautious reading: never "strictly lobar" with an infratentorial one).

    ``none``: no microbleed; ``strictly lobar``: lobar, possibly with cerebellar ones (Boston
    criteria: "cerebellar hemorrhage allowed"); ``deep``: deep, possibly with infratentorial, and
    no lobar; ``mixed``: lobar together with deep or brainstem;
    ``infratentorial only``: brainstem and/or cerebellum only; ``unknown``: microbleeds whose
    location could not be determined, and which could change the pattern of the others (every
    pattern but ``mixed``).
    """
    lobar, deep, infra = (int(counts.get(k, 0)) for k in ("lobar", "deep", "infratentorial"))
    unknown = int(counts.get("unknown", 0))
    cerebellar = min(infra, int((regions or {}).get("cerebellum", 0)))
    brainstem = infra - cerebellar  # or infratentorial of unrecorded region: counted as deep-type
    if lobar + deep + infra + unknown == 0:
        return "none"
    if lobar and (deep or brainstem):
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
    return {"counts": counts, "regions": ordered, "pattern": pattern_of(counts, regions)}


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
