"""Fine-tuning: start a run's networks from an existing model bundle (``init_from``).

A researcher with their own scans, or a new contrast such as SWI, rarely has the data or the
hardware to train from random weights; nnU-Net and MONAI call this "pretrained weights". With
``init_from: BUNDLE`` (``plkd train --init-from BUNDLE``) every stage starts from the bundle's
network with the same role: the screening FCN from its screening network, the teacher from its
HR segmenter, and each student stage from the student trained for the same LR factor (a stage
the bundle has no student for, and the final fine-tune, start as usual from the stage before).
The run adopts the bundle's network architectures, so the weights always fit.
"""

from __future__ import annotations

import functools
import inspect
import logging
from pathlib import Path
from typing import Any

import torch

from plkd.bundle import Bundle, load_bundle
from plkd.errors import BundleError, ConfigError
from plkd.models import NETWORKS

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _bundle(path: str, stamp: tuple[int, int] | None = None) -> Bundle:
    """The bundle at ``path``, read once per ``stamp`` (its manifest's modification time and size: a bundle replaced
    at the same path is read again, not served as the one read before)."""
    try:
        return load_bundle(path)
    except BundleError as exc:
        raise ConfigError(f"init_from: {exc}") from exc


def init_bundle(cfg: dict[str, Any]) -> Bundle | None:
    """The verified bundle named by ``cfg["init_from"]``, or None when the run starts from scratch.

    Raises ConfigError when the path is not a loadable bundle.
    """
    path = str(cfg.get("init_from") or "")
    if not path:
        return None
    if not Path(path).exists():
        raise ConfigError(f"init_from: no such bundle: {path}")
    resolved = Path(path).resolve()
    manifest = resolved / "manifest.json" if resolved.is_dir() else resolved
    try:
        info = manifest.stat()
        stamp: tuple[int, int] | None = (info.st_mtime_ns, info.st_size)
    except OSError:
        stamp = None
    return _bundle(str(resolved), stamp)


def _with_defaults(kind: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` completed with the network class's own defaults (``in_channels: 1`` written out or
    not is the same network)."""
    cls = NETWORKS.get(kind)
    if cls is None:
        return dict(hparams)
    params = inspect.signature(cls.__init__).parameters.values()
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return {**defaults, **hparams}


def adopt_architectures(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with its screening and segmenter networks replaced by the ``init_from`` bundle's.

    Unchanged when ``init_from`` is empty. Logs what changed, so a run never trains a network
    other than the one the user configured without saying so.
    """
    bundle = init_bundle(cfg)
    if bundle is None:
        return cfg
    nets = bundle.manifest["networks"]
    teacher = _segmenter_name(bundle, 1.0)
    if teacher is None:
        raise ConfigError(f"init_from: bundle {bundle.name!r} has no HR (lr_factor 1) segmenter to start from")
    wanted = {
        "screening": {
            "kind": nets[bundle.screening_name]["kind"],
            "hparams": dict(nets[bundle.screening_name]["hparams"]),
        },
        "segmenter": {"kind": nets[teacher]["kind"], "hparams": dict(nets[teacher]["hparams"])},
    }
    out = {**cfg, "networks": {**cfg["networks"]}}
    for role, net in wanted.items():
        current = cfg["networks"][role]
        if current.get("kind") != net["kind"] or _with_defaults(net["kind"], current.get("hparams", {})) != (
            _with_defaults(net["kind"], net["hparams"])
        ):
            log.info(
                "init_from %s: %s network set to the bundle's %s %s", bundle.name, role, net["kind"], net["hparams"]
            )
        out["networks"][role] = net
    return out


def _segmenter_name(bundle: Bundle, lr_factor: float) -> str | None:
    return next((n for n, f in bundle.segmenter_names().items() if f == lr_factor), None)


def initial_weights(
    cfg: dict[str, Any], role: str, lr_factor: float = 1.0
) -> tuple[dict[str, torch.Tensor], str] | None:
    """The ``init_from`` bundle's weights for a stage, as ``(state dict, description)``, or None.

    ``role`` is ``"screening"`` or ``"segmenter"``; a segmenter is matched on its exact
    ``lr_factor`` (1 = the teacher). None when there is no ``init_from`` or no such network.
    The weights are float32 on the CPU (bundles may store float16).
    """
    bundle = init_bundle(cfg)
    if bundle is None:
        return None
    name = bundle.screening_name if role == "screening" else _segmenter_name(bundle, float(lr_factor))
    if name is None:
        return None
    net = bundle.network(name, "cpu")
    state = {k: v.detach().float().clone() if v.is_floating_point() else v.clone() for k, v in net.state_dict().items()}
    return state, f"{bundle.name}:{name}"
