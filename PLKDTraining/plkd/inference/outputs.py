"""Writing a prediction: label map (input grid, input header) and the candidates JSON.

The JSON is written last, so "both files exist" means the input is finished; every file is
written atomically (temporary name, then rename).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plkd import __version__
from plkd.atomic import write_json_atomic
from plkd.inference.predictor import PredictionResult
from plkd.naming import output_stem
from plkd.volumes import Volume, save_volume


@dataclass(frozen=True)
class OutputPaths:
    """Where the outputs for one input go."""

    label: Path
    json: Path
    probability: Path
    model_grid: Path

    def finished(self) -> bool:
        """True when both required outputs exist (written atomically, so complete)."""
        return self.label.exists() and self.json.exists()


def output_paths(input_path: str | Path, output_dir: str | Path) -> OutputPaths:
    """``DIR/NAME_cmb.nii.gz``, ``DIR/NAME_cmb.json`` and the optional extras for ``NAME.nii[.gz]``."""
    stem = output_stem(input_path)
    out = Path(output_dir)
    return OutputPaths(
        label=out / f"{stem}_cmb.nii.gz",
        json=out / f"{stem}_cmb.json",
        probability=out / f"{stem}_cmb_prob.nii.gz",
        model_grid=out / f"{stem}_cmb_modelgrid.nii.gz",
    )


def result_record(result: PredictionResult, input_path: str | Path | None, model: str) -> dict[str, Any]:
    """The JSON document for one prediction (format in ``docs/design.md``)."""
    record = {
        "input": str(input_path) if input_path is not None else None,
        "model": model,
        "plkd_version": __version__,
        "student": result.student,
        "lr_factor": result.lr_factor,
        "thresholds": result.thresholds,
        "n_microbleeds": result.n_microbleeds,
        "candidates": result.candidates,
        "timings": result.timings,
        "notes": result.notes,
    }
    if result.location is not None:
        record["location"] = result.location
    return record


def write_prediction(
    result: PredictionResult,
    volume: Volume,
    paths: OutputPaths,
    model: str,
    *,
    save_probability: bool = False,
    save_model_grid: bool = False,
) -> list[Path]:
    """Write the label map (with the input's header and affine), extras, then the JSON."""
    written = [save_volume(paths.label, result.label_map, volume.affine, header=volume.header)]
    if save_probability and result.probability_map is not None:
        prob = result.probability_map.astype(np.float32)
        written.append(save_volume(paths.probability, prob, volume.affine, header=volume.header))
    if save_model_grid and result.model_label_map is not None and result.model_affine is not None:
        written.append(save_volume(paths.model_grid, result.model_label_map.astype(np.int32), result.model_affine))
    write_json_atomic(paths.json, result_record(result, volume.path, model))
    written.append(paths.json)
    return written
