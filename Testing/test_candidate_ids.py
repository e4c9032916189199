"""Candidate ids in the JSON equal label values (issue 15: "candidate id differs from its label value")."""

from __future__ import annotations

from plkd.inference.outputs import renumber_candidates


def test_kept_ids_are_label_values_and_rejected_ones_follow() -> None:
    cands = [
        {"id": 1, "label": 2, "kept": True, "probability": 0.7},
        {"id": 2, "label": 0, "kept": False, "probability": 0.9, "reason": "duplicate", "merged_into": 3},
        {"id": 3, "label": 1, "kept": True, "probability": 0.95},
        {"id": 4, "label": 0, "kept": False, "probability": 0.2, "reason": "below threshold"},
    ]
    out = renumber_candidates(cands)
    assert [(c["id"], c["label"]) for c in out] == [(2, 2), (3, 0), (1, 1), (4, 0)]
    assert out[1]["merged_into"] == 1  # still points at the candidate it merged into (label 1)
    assert len({c["id"] for c in out}) == 4
    assert cands[0]["id"] == 1  # the caller's records are not changed
