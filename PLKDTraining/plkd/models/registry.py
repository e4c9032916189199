"""Build a network from ``(kind, hparams)`` and read them back, so bundles can rebuild networks."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from plkd.errors import ConfigError
from plkd.models.e2unet import E2UNet
from plkd.models.screening import ScreeningFCN
from plkd.models.unet3d import UNet3D

#: Network kinds by name (the ``kind`` field of a bundle manifest and of a training config).
NETWORKS: dict[str, type[nn.Module]] = {
    "screening_fcn": ScreeningFCN,
    "e2unet": E2UNet,
    "unet3d": UNet3D,
}


def build_network(kind: str, hparams: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """A freshly initialised network of ``kind`` built with the given hyper-parameters.

    Hyper-parameters may be passed as keywords or as a ``hparams`` dict, so both
    ``build_network("e2unet", base_channels=8)`` and ``build_network(**network_config(net))``
    work. Raises :class:`~plkd.errors.ConfigError` for an unknown kind or hyper-parameter.
    """
    if kind not in NETWORKS:
        raise ConfigError(f"unknown network kind {kind!r}; expected one of {sorted(NETWORKS)}")
    params = {**(hparams or {}), **kwargs}
    cls = NETWORKS[kind]
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"unknown hyper-parameter(s) {unknown} for {kind!r}; allowed: {sorted(allowed)}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid hyper-parameters for {kind!r}: {exc}") from exc


def unwrap(module: nn.Module) -> nn.Module:
    """The plain network inside a DistributedDataParallel / DataParallel / ``torch.compile`` wrapper."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel | nn.DataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def network_config(module: nn.Module) -> dict[str, Any]:
    """``{"kind": str, "hparams": dict}`` (JSON-safe) such that ``build_network(**cfg)`` rebuilds it."""
    net = unwrap(module)
    kind = getattr(net, "kind", None)
    if kind not in NETWORKS or not isinstance(net, NETWORKS[kind]):
        raise TypeError(f"{type(net).__name__} is not a plkd network ({sorted(NETWORKS)})")
    return {"kind": kind, "hparams": dict(net.hparams)}
