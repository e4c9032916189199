"""Training configuration: the packaged defaults, a user YAML file and ``--set`` overrides.

Every hyper-parameter lives in ``plkd/configs/default.yaml``. A user file or a ``--set
key.sub=value`` override may only change keys that exist there (a typo is a
:class:`~plkd.errors.ConfigError`, never a silently ignored setting) and its value is parsed as
the type of the default. Two sections are open, because their keys depend on the network or
the experiment: ``networks.*.hparams`` and ``cv.variants``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from plkd.atomic import write_text_atomic
from plkd.devices import DEVICE_CHOICES
from plkd.errors import ConfigError
from plkd.normalise import LEGACY_CLIP_PERCENTILES
from plkd.training.geometry_augment import PROFILES

Config = dict[str, Any]

#: Dotted prefixes under which new keys may be added (network hyper-parameters, CV variants).
OPEN_SECTIONS = (
    "networks.screening.hparams",
    "networks.segmenter.hparams",
    "cv.variants",
    "sampling.mimic_kind_weights",
)

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def packaged_configs() -> list[str]:
    """Names of the configurations shipped with plkd (``default``, ``cpu``, ``tiny``, ...)."""
    return sorted(
        p.name[: -len(".yaml")]
        for p in resources.files("plkd").joinpath("configs").iterdir()
        if p.name.endswith(".yaml")
    )


def packaged_config(name: str) -> Path:
    """Path of a configuration shipped with plkd (see :func:`packaged_configs`)."""
    path = Path(str(resources.files("plkd") / "configs" / f"{name}.yaml"))
    if not path.is_file():
        raise ConfigError(f"no packaged configuration {name!r} (shipped: {', '.join(packaged_configs())})")
    return path


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"configuration file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p.name} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p.name} must be a mapping of settings, not {type(data).__name__}")
    return data


def default_config() -> Config:
    """The packaged defaults (a fresh copy)."""
    return _read_yaml(packaged_config("default"))


def _is_open(dotted: str) -> bool:
    return any(dotted == s or dotted.startswith(s + ".") for s in OPEN_SECTIONS)


def coerce(value: Any, default: Any, key: str) -> Any:
    """Convert ``value`` (a string from ``--set`` or a parsed YAML value) to the type of ``default``."""
    if isinstance(value, str) and not isinstance(default, str):
        if isinstance(default, bool):
            low = value.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ConfigError(f"{key} must be true or false, not {value!r}")
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{key}: cannot parse {value!r}") from None
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, not {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ConfigError(f"{key} must be an integer, not {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, str):
            # YAML 1.1 (PyYAML) reads "1e-4" as a string: accept every float Python accepts.
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, not {value!r}")
        return float(value)
    if isinstance(default, str):
        return str(value)
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list like {default!r}, not {value!r}")
        if default and not isinstance(default[0], str):
            return [coerce(v, default[0], f"{key}[{i}]") for i, v in enumerate(value)]
        return list(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, not {value!r}")
        return value
    return value


def merge(base: Config, override: Mapping[str, Any], prefix: str = "") -> Config:
    """Recursively merge ``override`` into a copy of ``base``, refusing unknown keys."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in out:
            if _is_open(prefix.rstrip(".")):
                out[key] = yaml.safe_load(value) if isinstance(value, str) else copy.deepcopy(value)
                continue
            raise ConfigError(f"unknown configuration key {dotted!r}")
        if isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = merge(out[key], value, dotted + ".")
        else:
            out[key] = coerce(value, out[key], dotted)
    return out


def set_value(config: Config, dotted: str, value: Any) -> Config:
    """Return a copy of ``config`` with ``dotted`` (``a.b.c``) set to ``value`` typed by the current value."""
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"invalid configuration key {dotted!r}")
    # Build the nested override, then merge, so typing and unknown-key rules are shared.
    override: Any = value
    for part in reversed(parts):
        override = {part: override}
    return merge(config, override)


def parse_set(items: Iterable[str]) -> list[tuple[str, str]]:
    """Split ``--set key=value`` strings."""
    pairs = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        pairs.append((key.strip(), value.strip()))
    return pairs


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Iterable[str] = (), base: Config | None = None
) -> Config:
    """Defaults (or ``base``), then ``path`` (a YAML file or a packaged name, e.g. ``"cpu"``), then overrides."""
    cfg = default_config() if base is None else copy.deepcopy(base)
    if path is not None:
        p = Path(path)
        if not p.exists() and str(path) in packaged_configs():
            p = packaged_config(str(path))
        cfg = merge(cfg, _read_yaml(p))
    for key, value in parse_set(overrides):
        cfg = set_value(cfg, key, value)
    validate(cfg)
    return cfg


#: Ranges of numeric settings: dotted key → (lowest, highest, whether the lowest is allowed).
#: A count of steps, a batch size or a learning rate outside them would run for ever, crash
#: later with a traceback, or train nothing.
_RANGES: dict[str, tuple[float, float, bool]] = {
    "seed": (0, 2**63 - 1, True),
    "num_threads": (0, 1024, True),
    "data.val_fraction": (0.0, 0.9, True),
    "data.max_subjects": (0, math.inf, True),
    "sampling.positive_fraction": (0.0, 1.0, True),
    "sampling.hard_negative_fraction": (0.0, 1.0, True),
    "sampling.minima_threshold": (-math.inf, math.inf, True),
    "sampling.max_minima": (0, math.inf, True),
    "sampling.exclusion_mm": (0.0, math.inf, True),
    "sampling.screening_candidates": (0, math.inf, True),
    "augment.noise_p": (0.0, 1.0, True),
    "augment.flip_p": (0.0, 1.0, True),
    "augment.swap_xy_p": (0.0, 1.0, True),
    "augment.intensity_p": (0.0, 1.0, True),
    "augment.bias_p": (0.0, 1.0, True),
    "augment.bias_strength": (0.0, 1.0, True),
    "augment.geometry_p": (0.0, 1.0, True),
    "augment.oblique_p": (0.0, 1.0, True),
    "augment.oblique_deg": (0.0, 45.0, True),
    "augment.geometry_noise_std": (0.0, 1.0, True),
    "optim.weight_decay": (0.0, math.inf, True),
    "optim.warmup_steps": (0, math.inf, True),
    "optim.grad_clip": (0.0, math.inf, True),
    "screening.lr_noise_std": (0.0, math.inf, True),
    "students.lambda_g": (0.0, math.inf, True),
    "students.lambda_s": (0.0, math.inf, True),
    "students.lr_noise_std": (0.0, math.inf, True),
    "students.stage_steps": (1, math.inf, True),
    "students.single_stage_steps": (0, math.inf, True),
    "students.finetune.steps": (0, math.inf, True),
    "students.finetune.lr_factor": (0.0, math.inf, False),
    "students.finetune.lr_noise_std": (0.0, math.inf, True),
    "cv.folds": (2, math.inf, True),
    "cv.factor": (1, math.inf, True),
    "export.thresholds.screening": (0.0, 1.0, True),
    "export.thresholds.segmentation": (0.0, 1.0, True),
    "export.thresholds.voxel": (0.0, 1.0, True),
    "export.thresholds.min_distance_mm": (0.0, 100.0, False),
}
#: Per training stage (screening, teacher, students): the loop's own settings.
_STAGE_RANGES: dict[str, tuple[float, float, bool]] = {
    "steps": (1, math.inf, True),
    "batch_size": (1, math.inf, True),
    "lr": (0.0, 10.0, False),
    "checkpoint_every": (1, math.inf, True),
    "log_every": (1, math.inf, True),
    "val_every": (0, math.inf, True),
    "val_batches": (0, math.inf, True),
}


#: Settings whose default changed after runs had been saved without them: dotted key -> the value
#: those runs used. A saved configuration that lacks such a key is read with this value, not the default.
LEGACY_VALUES: dict[str, Any] = {"data.clip_percentiles": list(LEGACY_CLIP_PERCENTILES)}


def missing_legacy_keys(saved: Mapping[str, Any]) -> list[str]:
    """The :data:`LEGACY_VALUES` keys a saved run configuration predates."""
    return [k for k in LEGACY_VALUES if lookup(dict(saved), k) is None]


def with_legacy_values(saved: Mapping[str, Any]) -> Config:
    """A copy of a saved run configuration with the settings it predates at the values it ran with."""
    out = copy.deepcopy(dict(saved))
    for dotted in missing_legacy_keys(saved):
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[leaf] = copy.deepcopy(LEGACY_VALUES[dotted])
    return out


def lookup(cfg: Config, dotted: str) -> Any:
    """The value at ``dotted`` (``a.b.c``) in ``cfg``, None when absent."""
    value: Any = cfg
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _check_ranges(cfg: Config) -> None:
    checks = dict(_RANGES)
    for stage in ("screening", "teacher", "students"):
        checks.update({f"{stage}.{k}": r for k, r in _STAGE_RANGES.items() if k != "steps" or stage != "students"})
    for key, (lo, hi, lo_ok) in checks.items():
        value = lookup(cfg, key)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value) or value < lo or value > hi or (value == lo and not lo_ok):
            low = f"{'>=' if lo_ok else '>'} {lo:g}"
            span = f"{low}" if math.isinf(hi) else f"{low} and <= {hi:g}"
            raise ConfigError(f"{key} must be {span}, not {value}")
    spacing = lookup(cfg, "data.spacing_mm")
    if not (isinstance(spacing, list) and len(spacing) == 3 and all(0.05 <= float(s) <= 20 for s in spacing)):
        raise ConfigError(f"data.spacing_mm must be three voxel sizes from 0.05 to 20 mm, not {spacing}")
    for key in ("students.alpha", "students.beta"):
        value = lookup(cfg, key)
        if value is not None and not (isinstance(value, int | float) and 0 <= value < math.inf):
            raise ConfigError(f"{key} must be a non-negative number or null, not {value}")


#: ``augment`` ranges given as ``[low, high]`` in mm: the limits each end must keep.
_MM_RANGES = {"augment.inplane_mm": (0.2, 3.0), "augment.thickness_mm": (0.5, 10.0)}


def _check_augment(cfg: Config) -> None:
    for key, (lo, hi) in _MM_RANGES.items():
        value = lookup(cfg, key)
        if value is None:
            continue
        if not (isinstance(value, list) and len(value) == 2 and lo <= value[0] <= value[1] <= hi):
            raise ConfigError(f"{key} must be [low, high] with {lo:g} <= low <= high <= {hi:g} mm, not {value}")
    profiles = lookup(cfg, "augment.slice_profiles")
    if profiles is not None and (not profiles or any(p not in PROFILES for p in profiles)):
        raise ConfigError(f"augment.slice_profiles must be a non-empty list of {', '.join(PROFILES)}, not {profiles}")


def validate(cfg: Config) -> None:
    """Check values whose type alone does not make them valid (ranges, choices, sizes)."""
    _check_ranges(cfg)
    _check_augment(cfg)
    st = cfg["students"]
    if st["mode"] not in ("plkd", "kd", "none"):
        raise ConfigError(f"students.mode must be plkd, kd or none, not {st['mode']!r}")
    f = int(st["target_factor"])
    if f < 2 or f & (f - 1):
        raise ConfigError(f"students.target_factor must be a power of two >= 2, not {f}")
    for key in ("screening_patch", "segmentation_patch"):
        size = cfg["sampling"][key]
        if len(size) != 3 or min(size) < 2:
            raise ConfigError(f"sampling.{key} must be three sizes >= 2, not {size}")
    sc = cfg["screening"]
    if not 0 <= sc["lr_share"] <= 1:
        raise ConfigError(f"screening.lr_share must lie in [0, 1], not {sc['lr_share']}")
    bad_factors = [k for k in sc["lr_factors"] if k < 2 or k & (k - 1)]
    if bad_factors or (sc["lr_share"] > 0 and not sc["lr_factors"]):
        raise ConfigError(f"screening.lr_factors must be powers of two >= 2, not {sc['lr_factors']}")
    for modes in (st["lr_modes"], st["finetune"]["lr_modes"], sc["lr_modes"]):
        bad = [m for m in modes if m not in ("interp", "slab")]
        if bad or not modes:
            raise ConfigError(f"LR modes must be a non-empty list of interp/slab, not {modes}")
    if cfg["modality"] not in ("auto", "T2S", "SWI"):
        raise ConfigError(f"modality must be auto, T2S or SWI, not {cfg['modality']!r}")
    if cfg["device"] not in DEVICE_CHOICES:
        raise ConfigError(f"device must be auto, cpu, cuda or mps, not {cfg['device']!r}")
    pf, hf = cfg["sampling"]["positive_fraction"], cfg["sampling"]["hard_negative_fraction"]
    if pf < 0 or hf < 0 or pf + hf > 1:
        raise ConfigError("sampling.positive_fraction + hard_negative_fraction must lie in [0, 1]")
    if not 0 <= cfg["sampling"]["mimic_share"] <= 1:
        raise ConfigError(f"sampling.mimic_share must lie in [0, 1], not {cfg['sampling']['mimic_share']}")
    if cfg["sampling"]["mimic_balance"] not in ("kind", "instance"):
        raise ConfigError(f"sampling.mimic_balance must be kind or instance, not {cfg['sampling']['mimic_balance']!r}")
    weights = cfg["sampling"].get("mimic_kind_weights", {})
    bad = {
        k: w
        for k, w in weights.items()
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w < math.inf
    }
    if bad:
        raise ConfigError(f"sampling.mimic_kind_weights must be finite numbers >= 0, not {bad}")


def loss_weights(cfg: Config, modality: str) -> tuple[float, float]:
    """(alpha, beta) of the PLKD loss: explicit values, else the paper's optimum for the modality."""
    st = cfg["students"]
    table = st["loss_weights"].get(modality, st["loss_weights"]["T2S"])
    alpha = float(table[0] if st["alpha"] is None else st["alpha"])
    beta = float(table[1] if st["beta"] is None else st["beta"])
    return alpha, beta


def dump_config(cfg: Config) -> str:
    """YAML text of a configuration (keys in their original order)."""
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)


def save_config(cfg: Config, path: str | os.PathLike[str]) -> None:
    """Write the resolved configuration atomically (``RUN/config.yaml``)."""
    write_text_atomic(path, dump_config(cfg))
