"""Which subjects an evaluation scored, and which it left out and why.

Every evaluation (``plkd evaluate``, ``plkd cv``, ``plkd tune`` and the evaluation scripts) pairs
subjects with what it needs (a label, a prediction); a subject without it cannot be scored. Left
out silently, a researcher reported figures on fewer subjects than they thought. So each entry
point counts them here, says so in one warning line, records :meth:`ScoredSubjects.to_dict` in its
JSON (``"scored"``) and the sentence in its ``notes``, and refuses with one ``plkd: error:`` line
(:meth:`ScoredSubjects.require_any`) when nothing could be scored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from plkd.errors import PLKDError

if TYPE_CHECKING:
    from plkd.data.datasets import Subject

log = logging.getLogger(__name__)

#: Subjects named in a one-line message; the JSON lists them all.
PREVIEW = 5

#: Reasons shared by several entry points (the JSON's ``skipped[].reason``).
NO_LABEL = "no label"
NO_PREDICTION = "no prediction"
NO_SUBJECT = "prediction without a subject in the data"
NO_REFERENCE = "prediction without a reference"


@dataclass
class ScoredSubjects:
    """Subjects scored and subjects left out (with a reason) by one evaluation named ``what``."""

    what: str
    scored: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def add(self, subject: str) -> None:
        """Count ``subject`` as scored."""
        self.scored.append(str(subject))

    def skip(self, subject: str, reason: str) -> None:
        """Count ``subject`` (or a file standing for one) as left out because of ``reason``."""
        self.skipped.append((str(subject), reason))

    def skip_all(self, subjects: Iterable[str], reason: str) -> None:
        """:meth:`skip` each of ``subjects`` for the same ``reason``."""
        for subject in subjects:
            self.skip(subject, reason)

    def sentence(self) -> str | None:
        """``"scored 8 of 10 subject(s); left out 2: sub-03 (no label), …"``, or None when none was left out."""
        if not self.skipped:
            return None
        named = ", ".join(f"{s} ({why})" for s, why in self.skipped[:PREVIEW])
        more = f", … (+{len(self.skipped) - PREVIEW})" if len(self.skipped) > PREVIEW else ""
        total = len(self.scored) + len(self.skipped)
        counts = f"scored {len(self.scored)} of {total} subject(s); left out {len(self.skipped)}"
        return f"{self.what}: {counts}: {named}{more}"

    def warn(self, notes: list[str] | None = None) -> str | None:
        """Log :meth:`sentence` as one warning line and append it to ``notes``; returns it (None: nothing left out)."""
        text = self.sentence()
        if text is not None:
            log.warning("%s", text)
            if notes is not None:
                notes.append(text)
        return text

    def require_any(self) -> None:
        """Raise :class:`PLKDError` (one line) when no subject could be scored."""
        if self.scored:
            return
        reasons = sorted({why for _s, why in self.skipped})
        detail = f" ({len(self.skipped)} left out: {'; '.join(reasons)})" if self.skipped else " (none found)"
        raise PLKDError(f"{self.what}: no subject could be scored{detail}")

    def to_dict(self) -> dict:
        """JSON form: ``{"n_scored", "n_skipped", "subjects": [...], "skipped": [{"subject", "reason"}]}``."""
        return {
            "n_scored": len(self.scored),
            "n_skipped": len(self.skipped),
            "subjects": list(self.scored),
            "skipped": [{"subject": s, "reason": why} for s, why in self.skipped],
        }


def labelled_subjects(subjects: Iterable[Subject], what: str) -> tuple[list[Subject], ScoredSubjects]:
    """The subjects that have a label file, and a :class:`ScoredSubjects` in which
    the others are already left out (``no label``); the caller adds those it scores (:meth:`ScoredSubjects.add`)."""
    record = ScoredSubjects(what)
    keep = []
    for subject in subjects:
        if subject.label is None:
            record.skip(subject.id, NO_LABEL)
        else:
            keep.append(subject)
    return keep, record


def scored_labelled_subjects(
    subjects: Iterable[Subject], what: str, *, first: int = 0, require: bool = True
) -> tuple[list[Subject], ScoredSubjects]:
    """For an evaluation that scores every labelled subject: those subjects (the first ``first`` of them when
    ``first`` > 0; the rest were not asked for, so they are not "left out"), all counted as scored, with the
    others left out (``no label``) and said in one warning line. Raises :class:`PLKDError` when none is
    labelled and ``require``."""
    labelled, record = labelled_subjects(subjects, what)
    labelled = labelled[:first] if first else labelled
    for subject in labelled:
        record.add(subject.id)
    if require:
        record.require_any()
    record.warn()
    return labelled, record


def candidate_files(
    subjects: Iterable[Subject], pred: Path, what: str
) -> tuple[list[tuple[Subject, Path]], ScoredSubjects]:
    """``[(subject, its NAME_cmb.json in pred)]`` for each labelled subject with a
    prediction, all counted as scored, and the record of what was left out: subjects without a label or a
    prediction, and candidate JSONs in ``pred`` of no subject. Two JSONs of one subject are refused."""
    subjects = list(subjects)
    labelled, record = labelled_subjects(subjects, what)
    pairs, used = [], set()
    for subject in labelled:
        # NAME_cmb.json and NAME_T2S_cmb.json alike ("_*_cmb" missed the first).
        found = sorted(pred.glob(f"{subject.id}_*cmb.json"))
        if len(found) > 1:
            raise PLKDError(f"{subject.id}: {len(found)} candidates JSONs in {pred} ({found[0].name}, ...)")
        if not found:
            record.skip(subject.id, NO_PREDICTION)
            continue
        used.add(found[0])
        pairs.append((subject, found[0]))
        record.add(subject.id)
    # Matched by the same prefix as above: plain-folder case names (case_001) hold "_" themselves.
    unlabelled = [f"{s.id}_" for s in subjects if s.label is None]
    for other in sorted(set(pred.glob("*cmb.json")) - used):
        if not other.name.startswith(tuple(unlabelled)):  # an unlabelled subject's is counted as its "no label"
            record.skip(other.name, NO_SUBJECT)
    return pairs, record
