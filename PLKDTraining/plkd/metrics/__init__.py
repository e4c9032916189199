"""Metrics of the paper (Table 2), the VALDO challenge matching rule and FROC curves.

Public API:

- :func:`evaluate_subject` — all metrics for one prediction/reference pair on one grid;
- :func:`valdo_match` — the VALDO matching of component centres;
- :func:`pool_results` — pooled (paper) and per-subject median (VALDO) summaries;
- :func:`evaluate_paths` — files or folders paired by subject id (``plkd evaluate``);
- :func:`froc_subject`, :func:`froc_curve`, :func:`plot_froc` — FROC curves from ``plkd predict``
  candidates, matched by the VALDO rule like the tables.
"""

from plkd.metrics.detection import evaluate_subject, pool_results, table2
from plkd.metrics.evaluation import evaluate_paths
from plkd.metrics.froc import FrocCurve, FrocSubject, froc_curve, froc_subject, load_candidates, plot_froc
from plkd.metrics.report import format_pairing, format_table
from plkd.metrics.valdo import MAX_DISTANCE_MM, ValdoMatch, valdo_match

__all__ = [
    "MAX_DISTANCE_MM",
    "FrocCurve",
    "FrocSubject",
    "ValdoMatch",
    "evaluate_paths",
    "evaluate_subject",
    "format_pairing",
    "format_table",
    "froc_curve",
    "froc_subject",
    "load_candidates",
    "plot_froc",
    "pool_results",
    "table2",
    "valdo_match",
]
