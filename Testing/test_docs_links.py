"""Links of README.md and docs/*.md to files and section anchors of this repository lead somewhere.

The README links deep into docs/results.md and docs/design.md (``#step-11-the-normalisation-...``); a heading
renamed there silently breaks them on GitHub, which only scrolls to the top of the page.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, markup and punctuation other than ``-``/``_``
    dropped, spaces turned into ``-`` (a repeated heading gets ``-1``, ``-2``, ... in :func:`anchors`)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # a link keeps its text
    text = re.sub(r"[`*\\]", "", text)
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (headings inside fenced code blocks are not headings)."""
    found: set[str] = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"^#{1,6}\s+(.*)", line)
        if m:
            base = anchor = github_anchor(m.group(1))
            n = 0
            while anchor in found:
                n += 1
                anchor = f"{base}-{n}"
            found.add(anchor)
    return found


def test_anchor_rule_matches_githubs() -> None:
    assert github_anchor("T2\\* or SWI: which model") == "t2-or-swi-which-model"
    assert github_anchor("1b. The SWI model (`cmb-swi`)") == "1b-the-swi-model-cmb-swi"
    assert github_anchor("Simulator domains (`plkd synth --domain standard|wide`)") == (
        "simulator-domains-plkd-synth---domain-standardwide"
    )


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_reach_a_file_and_its_anchor(doc: Path) -> None:
    broken = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:: not checked offline
            continue
        path, _, fragment = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{doc.name}: {broken}"
