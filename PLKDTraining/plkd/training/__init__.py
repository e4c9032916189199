"""Training: configuration, patch sampling, augmentation, resumable trainers, PLKD students, CV.

Entry points: :func:`plkd.training.pipeline.train` (``plkd train``),
:func:`plkd.training.export.export_run` (``plkd export``) and
:func:`plkd.training.crossval.run_cv` (``plkd cv``). See ``plkd/configs/default.yaml`` for every
hyper-parameter.
"""

from plkd.training.config import ConfigError, load_config, set_value

__all__ = ["ConfigError", "load_config", "set_value"]
