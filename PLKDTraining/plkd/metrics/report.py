"""Readable console tables of ``plkd evaluate`` results (percentages as in the paper)."""

from __future__ import annotations

import math
from collections.abc import Mapping


def _pct(x: object) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100.0 * float(x):.1f}"


def _num(x: object, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{float(x):.{digits}f}"


_COLUMNS = (
    "subject", "ref", "pred", "TP", "FP", "FN", "TPR", "PPV", "F1", "Dice", "V-F1", "V-cnt", "V-Dice", "RefDice",
)  # fmt: skip

#: Printed under the table: what every column means (V-Dice especially is easy to misread).
LEGEND = """\
Columns (%): ref/pred = microbleeds (26-connected components) in the reference/prediction; TP/FP/FN by the
  VALDO matching rule (a prediction takes its nearest reference within the matching distance; the nearest
  prediction of each reference is the TP); TPR, PPV, F1 from those counts; Dice = voxel Dice over the whole
  scan (every reference and prediction voxel).
  V-F1 = VALDO F1 with rater-agreement weights (empty reference: '-', left out of the median);
  V-cnt = |#reference - #predicted|;
  V-Dice = VALDO's Dice: per-microbleed Dice averaged over the FOUND references only, so missed microbleeds
  do not lower it (1 of 6 found and well outlined gives ~100; 0 when none is found);
  RefDice = the same per-microbleed Dice averaged over ALL references, a missed one counting 0."""


def format_table(result: Mapping) -> str:
    """The pairing, a per-subject table, the pooled row (paper), the VALDO medians and a legend, as text."""
    rows = []
    for sid, s in result["subjects"].items():
        rows.append(
            (
                sid,
                str(s["n_reference"]),
                str(s["n_predicted"]),
                str(s["TP"]),
                str(s["FP"]),
                str(s["FN"]),
                _pct(s["TPR"]),
                _pct(s["PPV"]),
                _pct(s["F1"]),
                _pct(s["Dice"]),
                _pct(s["valdo_F1"]),
                str(s["valdo_count_difference"]),
                _pct(s["valdo_Dice"]),
                _pct(s.get("valdo_Dice_all")),
            )
        )
    p = result["pooled"]
    pooled = ("pooled", "", "", str(p["TP"]), str(p["FP"]), str(p["FN"]), _pct(p["TPR"]), _pct(p["PPV"]))
    pooled += (_pct(p["F1"]), _pct(p["Dice"]), "", "", "", "")
    widths = [max(len(r[i]) for r in [_COLUMNS, pooled, *rows]) for i in range(len(_COLUMNS))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))]).rstrip()

    rule = "-" * len(line(_COLUMNS))
    out = [format_pairing(result), ""] if result.get("pairing") else []
    out += [line(_COLUMNS), rule, *(line(r) for r in rows), rule, line(pooled), ""]
    out.append(
        f"Paper (Table 2, pooled over {p['n_subjects']} subject(s): counts summed): "
        f"TPR {_pct(p['TPR'])}  PPV {_pct(p['PPV'])}  FPavg {_num(p['FPavg'])}  "
        f"F1 {_pct(p['F1'])}  Dice {_pct(p['Dice'])}"
    )
    v = result["valdo"]
    out.append(
        f"VALDO (per-subject medians; F1 and Dice over the {v['n_subjects_with_reference']} subject(s) with "
        f"microbleeds, the count difference over all {v['n_subjects']}): "
        f"F1 {_pct(v['F1_median'])} (mean {_pct(v['F1_mean'])})  "
        f"count difference {_num(v['count_difference_median'], 1)} (mean {_num(v['count_difference_mean'])})  "
        f"V-Dice {_pct(v['Dice_median'])} (mean {_pct(v['Dice_mean'])}, found microbleeds only)  "
        f"RefDice {_pct(v.get('Dice_all_median'))} (mean {_pct(v.get('Dice_all_mean'))}, all microbleeds)"
    )
    froc = result.get("froc")
    if froc:
        at = "  ".join(f"{k} FP: {_pct(s)}" for k, s in froc["sensitivity_at_fp"].items())
        out.append(f"FROC sensitivity at FP/subject ({froc['n_references']} microbleed(s), VALDO rule): {at}")
        op = froc.get("operating_point")
        if op:
            thr = ", ".join(f"{t:g}" for t in op.get("thresholds") or []) or "as written"
            out.append(
                f"FROC operating point (segmentation threshold applied: {thr}) = the pooled row: "
                f"TPR {_pct(op['sensitivity'])} at {_num(op['fp_per_subject'])} FP/subject"
            )
    unmatched = result.get("unmatched", {})
    if unmatched.get("predictions"):
        out.append(f"Predictions without reference (skipped): {', '.join(unmatched['predictions'])}")
    if unmatched.get("references"):
        out.append(f"References without prediction (scored as empty): {', '.join(unmatched['references'])}")
    for note in result.get("notes", []):
        out.append(f"Note: {note}")
    out.append(LEGEND)
    return "\n".join(out)


def format_pairing(result: Mapping, limit: int = 40) -> str:
    """One line per paired subject (prediction <- reference), then unpaired and ignored files."""
    pairing = result.get("pairing") or {}
    pairs = pairing.get("pairs", [])
    out = [f"Pairs ({len(pairs)}; prediction <- reference):"]
    for p in pairs[:limit]:
        pred = p["prediction"] or "(none: scored as an empty prediction)"
        out.append(f"  {p['subject']}: {pred} <- {p['reference']}")
    if len(pairs) > limit:
        out.append(f"  ... {len(pairs) - limit} more (all in the --json output under 'pairing')")
    ignored = pairing.get("ignored", [])
    if ignored:
        sides: dict[str, dict[str, int]] = {}
        for i in ignored:
            roles = sides.setdefault(i["side"], {})
            roles[i["role"]] = roles.get(i["role"], 0) + 1
        parts = [
            f"{side} side: " + ", ".join(f"{n} {r}" for r, n in sorted(roles.items())) for side, roles in sides.items()
        ]
        out.append("Files not used (names in the JSON): " + "; ".join(parts))
    return "\n".join(out)
