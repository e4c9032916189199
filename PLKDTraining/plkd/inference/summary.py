"""The batch summary of ``plkd predict``: one row per scan, as a CSV file and a printed table.

Columns (CSV, UTF-8, header row): ``scan`` (output stem; empty for a folder or glob pattern that gave
no scan, a failed row of its own), ``input``, ``status`` (done, skipped = reused outputs, failed),
``n_microbleeds``, ``total_volume_mm3``, ``volumes_mm3`` (kept microbleeds, ``;``-separated, largest
first), the MARS location counts ``lobar``, ``deep``, ``infratentorial``, ``unknown`` (empty when the
outputs carry no ``location`` block), ``modality`` (the contrast decided for the scan, ``T2S`` or
``SWI``), ``model_modality`` (the contrast of the model that analysed it; they differ with a warning, or by
the installed bundle's ``thick_slices`` hand-over), ``model_reason`` (why, for a hand-over; see
:mod:`plkd.inference.model_choice`), ``model``, ``student``, ``lr_factor``, ``seconds`` (time of this run on the scan),
``warnings`` (`` | ``-separated) and ``error``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from plkd.atomic import write_text_atomic

LOCATIONS = ("lobar", "deep", "infratentorial", "unknown")
COLUMNS = (
    "scan",
    "input",
    "status",
    "n_microbleeds",
    "total_volume_mm3",
    "volumes_mm3",
    *LOCATIONS,
    "modality",
    "model_modality",
    "model_reason",
    "model",
    "student",
    "lr_factor",
    "seconds",
    "warnings",
    "error",
)


def summary_row(
    stem: str, input_path: str, status: str, record: dict[str, Any] | None, seconds: float | None, error: str = ""
) -> dict[str, Any]:
    """One CSV row from a scan's prediction JSON (``None`` for a failed scan)."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    row.update(scan=stem, input=input_path, status=status, error=error)
    if seconds is not None:
        row["seconds"] = f"{seconds:.1f}"
    if record is None:
        return row
    volumes = sorted(
        (float(c.get("volume_mm3") or 0.0) for c in record.get("candidates", []) if c.get("kept")), reverse=True
    )
    row.update(
        n_microbleeds=record.get("n_microbleeds", len(volumes)),
        total_volume_mm3=f"{sum(volumes):.1f}",
        volumes_mm3=";".join(f"{v:.1f}" for v in volumes),
        model=record.get("model", ""),
        student=record.get("student", ""),
        lr_factor=record.get("lr_factor", ""),
        warnings=" | ".join(record.get("warnings") or []),
    )
    decision = record.get("modality")  # absent in outputs of older versions
    if isinstance(decision, dict):
        row.update(
            modality=decision.get("modality") or "",
            model_modality=decision.get("model_modality") or "",
            model_reason=decision.get("model_reason") or "",
        )
    location = record.get("location")
    counts = location.get("counts") if isinstance(location, dict) else None
    if isinstance(counts, dict):
        for key in LOCATIONS:
            row[key] = counts.get(key, 0)
    return row


def write_summary_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``rows`` as CSV (atomically)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())
    return Path(path)


#: Summary file names: ``plkd_summary.csv`` or ``plkd_summary_shard-I-of-N.csv``.
SUMMARY_NAME = re.compile(r"plkd_summary(?:_shard-\d+-of-(?P<n>\d+))?\.csv")


def withdraw_rows(folder: str | Path, own: str | Path, stems: set[str], shards: int | None) -> list[Path]:
    """Drop the rows of the scans ``stems`` from the other summaries in ``folder``; return the files changed.

    A run writes its own summary (``own``) only; an earlier run's summary of another sharding stayed beside it
    (``plkd_summary.csv`` after a run with ``--shard``, or shard files after a run without), and its rows for the
    scans this run recomputes contradicted their outputs. Summaries of sibling shards of the same ``shards`` count
    list other scans and are left alone (they may be written at the same time). A summary left without rows is
    removed; one that cannot be read is left as it is.
    """
    changed = []
    for path in sorted(Path(folder).glob("plkd_summary*.csv")):
        match = SUMMARY_NAME.fullmatch(path.name)
        if match is None or path.resolve() == Path(own).resolve():
            continue
        if shards is not None and match["n"] is not None and int(match["n"]) == shards:
            continue
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                rows = list(csv.DictReader(handle))
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        if not rows:  # a shard that had no scan: nothing of it to keep beside another sharding's summary
            path.unlink(missing_ok=True)
            continue
        keep = [{k: r.get(k) or "" for k in COLUMNS} for r in rows if r.get("scan") not in stems]
        if len(keep) == len(rows):
            continue
        if keep:
            write_summary_csv(path, keep)
        else:
            path.unlink()
        changed.append(path)
    return changed


def print_summary_table(rows: Sequence[dict[str, Any]], out: TextIO) -> None:
    """A fixed-width table of the main columns, one line per scan."""
    head = ("scan", "status", "contrast", "CMBs", "mm3", "lobar/deep/infra", "student", "s", "warnings")
    lines = [head]
    for r in rows:
        loc = "/".join(str(r[k]) for k in LOCATIONS[:3]) if r["lobar"] != "" else "-"
        note = r["error"] or r["warnings"]
        lines.append(
            (
                r["scan"] or r["input"],  # an input that gave no scan has no output name
                r["status"],
                _contrast(r["modality"], r["model_modality"]),
                str(r["n_microbleeds"]),
                r["total_volume_mm3"],
                loc,
                str(r["student"]),
                r["seconds"],
                note[:60] + ("..." if len(note) > 60 else ""),
            )
        )
    widths = [max(len(str(line[c])) for line in lines) for c in range(len(head))]
    for line in lines:
        out.write("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")


def _contrast(modality: str, model_modality: str) -> str:
    """``"SWI"``, or ``"SWI, T2* model"`` when the model is of another contrast (``"-"`` when unknown)."""
    shown = {"T2S": "T2*"}
    text = shown.get(modality, modality) or "-"
    if model_modality and model_modality != modality:
        text += f", {shown.get(model_modality, model_modality)} model"
    return text
