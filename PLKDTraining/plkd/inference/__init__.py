"""Two-stage inference: brain mask, pre-processing, screening, candidate segmentation, outputs.

``Predictor`` is the engine shared by ``plkd predict``, ``plkd demo`` and the Slicer module;
``predict_files`` is the batch front end used by ``plkd predict``.
"""

from plkd.inference.batch import BatchReport, predict_files
from plkd.inference.predictor import PredictionResult, Predictor

__all__ = ["BatchReport", "PredictionResult", "Predictor", "predict_files"]
