"""Build the ``plkd predict`` command lines the module runs (argv lists, never a shell string).

Contract (docs/design.md, "Prediction outputs"):
``python -m plkd predict INPUT --output-dir DIR [--model BUNDLE] [--modality M] [--metadata-from=ORIGINAL] --device D
[--mask MASK] --progress jsonl [--threshold P]`` (``ORIGINAL``: the file the volume was loaded from, whose metadata the
engine reads as INPUT's: its JSON sidecar, inherited ones included, header text and name) and, to add one microbleed
the reader clicked, ``... --at-ras=X,Y,Z [--existing=PREV]`` (the ``=`` form: argparse would take a negative X in
``--at-ras -20,5,3`` for an option; ``PREV`` is the result being reviewed, so that a click on a microbleed it holds
returns that one instead of a duplicate).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

#: Device choices shown to the user.
DEVICE_CHOICES = ("Auto", "CPU", "GPU")


def engineDevice(device: str, platform: str | None = None) -> str:
    """Map the user's device choice to the engine's ``--device`` value.

    "GPU" is CUDA except on macOS, where the GPU is Apple's Metal (``mps``). "Auto" lets the engine pick
    the GPU when one is usable and fall back to the CPU otherwise, so Slicer never imports torch to probe.
    """
    platform = sys.platform if platform is None else platform
    choice = device.strip().lower()
    if choice == "auto":
        return "auto"
    if choice == "cpu":
        return "cpu"
    if choice == "gpu":
        return "mps" if platform == "darwin" else "cuda"
    raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICE_CHOICES)}")


#: The module's modality choices -> the engine's ``--modality`` values.
MODALITY_CHOICES = {"Auto": "auto", "T2*": "T2S", "SWI": "SWI"}


def engineModality(modality: str) -> str:
    """The engine's ``--modality`` for the module's choice ("Auto", "T2*" or "SWI")."""
    for choice, value in MODALITY_CHOICES.items():
        if modality.strip().lower() in (choice.lower(), value.lower()):
            return value
    raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITY_CHOICES)}")


@dataclass(frozen=True)
class PredictOutputs:
    """Files ``plkd predict`` writes for one input."""

    labelMap: Path
    candidates: Path


def predictOutputs(inputPath: str | Path, outputDir: str | Path) -> PredictOutputs:
    """Where the engine writes the results of ``inputPath``: ``NAME_cmb.nii.gz`` and ``NAME_cmb.json``."""
    name = Path(inputPath).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    outputDir = Path(outputDir)
    return PredictOutputs(outputDir / f"{name}_cmb.nii.gz", outputDir / f"{name}_cmb.json")


#: A run Threshold of 0 (the default, labelled "0: model's") leaves each segmenter the threshold tuned for it in the
#: bundle (0.1-0.4 for the shipped ones), as ``plkd predict`` does by default; any other value replaces them all.
MODEL_THRESHOLD = 0.0


def buildPredictCommand(
    pythonExecutable: str,
    inputPath: str | Path,
    outputDir: str | Path,
    modelPath: str | Path | None = None,
    device: str = "Auto",
    maskPath: str | Path | None = None,
    threshold: float | None = None,
    platform: str | None = None,
    modality: str | None = None,
    metadataPath: str | Path | None = None,
) -> list[str]:
    """The argv that segments every microbleed of ``inputPath``.

    An empty ``modelPath`` means the engine's shipped bundle for the scan's modality; ``threshold`` None or
    :data:`MODEL_THRESHOLD` (0) means each segmenter's own, tuned in the bundle; ``modality`` ("Auto", "T2*" or
    "SWI"; None: the engine's default, auto) chooses the shipped bundle, or is checked against the given one, by the
    metadata of ``metadataPath`` (the file the volume was loaded from; None: those of ``inputPath``).
    """
    argv = [str(pythonExecutable), "-m", "plkd", "predict", str(inputPath), "--output-dir", str(outputDir)]
    if modelPath is not None and str(modelPath).strip():
        argv += ["--model", str(modelPath)]
    if modality is not None:
        argv += ["--modality", engineModality(modality)]
    if metadataPath is not None and str(metadataPath).strip():
        argv += ["--metadata-from=" + str(metadataPath)]  # the "=" form takes any path, even one starting with "-"
    argv += ["--device", engineDevice(device, platform)]
    if maskPath is not None and str(maskPath).strip():
        argv += ["--mask", str(maskPath)]
    argv += ["--progress", "jsonl"]
    if threshold is not None and float(threshold) != MODEL_THRESHOLD:
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        argv += ["--threshold", _formatNumber(float(threshold))]
    return argv


def buildSinglePointCommand(
    pythonExecutable: str,
    inputPath: str | Path,
    outputDir: str | Path,
    pointRas: tuple[float, float, float] | list[float],
    modelPath: str | Path | None = None,
    device: str = "Auto",
    platform: str | None = None,
    existingPath: str | Path | None = None,
    modality: str | None = None,
    metadataPath: str | Path | None = None,
) -> list[str]:
    """The argv that segments the one microbleed at ``pointRas`` (RAS, mm) the reader clicked.

    ``existingPath``: the result under review as ``NAME_cmb.nii.gz`` (+ ``NAME_cmb.json`` beside it) on the input's
    grid; a click on one of its microbleeds then returns that one (``existing_label``) instead of a new one.
    ``metadataPath``: as for :func:`buildPredictCommand`, so that the click is segmented by the run's model.
    """
    if len(pointRas) != 3 or not all(math.isfinite(float(v)) for v in pointRas):
        raise ValueError(f"a point needs three finite RAS coordinates, got {pointRas!r}")
    argv = buildPredictCommand(
        pythonExecutable,
        inputPath,
        outputDir,
        modelPath,
        device,
        None,
        None,
        platform,
        modality=modality,
        metadataPath=metadataPath,
    )
    argv += ["--at-ras=" + ",".join(_formatNumber(float(v)) for v in pointRas)]
    if existingPath is not None and str(existingPath).strip():
        argv += ["--existing=" + str(existingPath)]  # the "=" form takes any path, even one starting with "-"
    return argv


def _formatNumber(value: float) -> str:
    # repr keeps every digit of a float and never uses a locale's decimal comma.
    return repr(float(value))
