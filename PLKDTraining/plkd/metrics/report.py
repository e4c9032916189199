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


_COLUMNS = ("subject", "ref", "pred", "TP", "FP", "FN", "TPR", "PPV", "F1", "Dice", "V-F1", "V-cnt", "V-Dice")


def format_table(result: Mapping) -> str:
    """A per-subject table, the pooled row (paper) and the VALDO medians, as plain text."""
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
            )
        )
    p = result["pooled"]
    pooled = ("pooled", "", "", str(p["TP"]), str(p["FP"]), str(p["FN"]), _pct(p["TPR"]), _pct(p["PPV"]))
    pooled += (_pct(p["F1"]), _pct(p["Dice"]), "", "", "")
    widths = [max(len(r[i]) for r in [_COLUMNS, pooled, *rows]) for i in range(len(_COLUMNS))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))]).rstrip()

    rule = "-" * len(line(_COLUMNS))
    out = [line(_COLUMNS), rule, *(line(r) for r in rows), rule, line(pooled), ""]
    out.append(
        f"Paper (Table 2, pooled over {p['n_subjects']} subject(s): counts summed): "
        f"TPR {_pct(p['TPR'])}  PPV {_pct(p['PPV'])}  FPavg {_num(p['FPavg'])}  "
        f"F1 {_pct(p['F1'])}  Dice {_pct(p['Dice'])}"
    )
    v = result["valdo"]
    out.append(
        f"VALDO (per-subject medians, {v['n_subjects_with_reference']} subject(s) with microbleeds): "
        f"F1 {_pct(v['F1_median'])} (mean {_pct(v['F1_mean'])})  "
        f"count difference {_num(v['count_difference_median'], 1)} (mean {_num(v['count_difference_mean'])})  "
        f"Dice {_pct(v['Dice_median'])} (mean {_pct(v['Dice_mean'])})"
    )
    froc = result.get("froc")
    if froc:
        at = "  ".join(f"{k} FP: {_pct(s)}" for k, s in froc["sensitivity_at_fp"].items())
        out.append(f"FROC sensitivity at FP/subject ({froc['n_references']} microbleed(s)): {at}")
    unmatched = result.get("unmatched", {})
    if unmatched.get("predictions"):
        out.append(f"Predictions without reference (skipped): {', '.join(unmatched['predictions'])}")
    if unmatched.get("references"):
        out.append(f"References without prediction (scored as empty): {', '.join(unmatched['references'])}")
    out.append("Columns: TPR/PPV/F1/Dice in %, detection by the VALDO matching rule; V-* = VALDO rule per subject.")
    return "\n".join(out)
