"""Summarise the per-condition results of ``evaluate_resolutions.sh``: a Markdown table and one FROC plot.

python scripts/summarise_evaluations.py OUT hr x2 x4 x8 slab3 slab4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from plkd.atomic import write_text_atomic
from plkd.metrics import FrocCurve, plot_froc

LABELS = {
    "hr": "1 mm (HR)",
    "x2": "LR@2 (2 mm slices, cubic to 1 mm)",
    "x4": "LR@4",
    "x8": "LR@8",
    "slab3": "3 mm thick slabs",
    "slab4": "4 mm thick slabs",
}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("conditions", nargs="+")
    args = parser.parse_args()
    rows = [
        "| input | subjects | TPR | PPV | FP/subject | F1 | Dice | VALDO F1 (median) | sens. @ 1 FP/subj. |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    curves = {}
    for c in args.conditions:
        res = json.loads((args.out / c / "eval.json").read_text())
        p, v = res["pooled"], res["valdo"]
        froc = res.get("froc") or {}
        at1 = froc.get("sensitivity_at_fp", {}).get("1")
        rows.append(
            f"| {LABELS.get(c, c)} | {p['n_subjects']} | {_pct(p['TPR'])} | {_pct(p['PPV'])} | {p['FPavg']:.2f} | "
            f"{_pct(p['F1'])} | {_pct(p['Dice'])} | {_pct(v.get('F1_median'))} | {_pct(at1)} |"
        )
        if froc.get("points"):
            curves[LABELS.get(c, c)] = FrocCurve.from_dict(froc)
    table = "\n".join(rows) + "\n"
    write_text_atomic(args.out / "summary.md", table)
    if curves:
        plot_froc(curves, args.out / "froc.png", title="FROC on held-out synthetic subjects")
    print(table)


if __name__ == "__main__":
    main()
