"""Architectures by name, or any ``nn.Module`` by import path.

A checkpoint records ``arch`` and ``arch_kwargs``; :func:`build_model` turns them back
into a module. Built-in names map to presets; ``package.module:ClassName`` imports a
user's own network, which needs no registration. A network may declare a class
attribute ``size_multiple`` (the factor its height and width must divide by); 1 is
assumed otherwise. It may also declare ``training_only_parameters``: names its original
code registers ahead of all its own parameters and never reads in the forward pass,
which ``gpmask import`` drops from state dicts and from the head of mask lists.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from gpmask.errors import GpmaskError
from gpmask.model.ggpm_unet import GGPMUNet
from gpmask.model.msunet import MultiScaleUNet

#: Built-in architectures: name -> (class, default keyword arguments).
ARCHITECTURES: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "msunet": (MultiScaleUNet, {"base_channels": 32, "num_res_blocks": 8}),
    "msunet-small": (MultiScaleUNet, {"base_channels": 16, "num_res_blocks": 4}),
    "msunet-tiny": (MultiScaleUNet, {"base_channels": 12, "num_res_blocks": 2}),
    # The GGPM paper's own network at its run settings (loads its checkpoints as they are).
    "ggpm-unet": (GGPMUNet, {"base_channels": 18, "num_blocks": 6}),
}
#: ``tiny`` is the preset that trains on a CPU in minutes (the shipped demo model).
ARCHITECTURES["tiny"] = ARCHITECTURES["msunet-tiny"]


def resolve_architecture(arch: str) -> tuple[type[nn.Module], dict[str, Any]]:
    """Class and default kwargs of a built-in name or a ``module:Class`` import path."""
    if arch in ARCHITECTURES:
        cls, defaults = ARCHITECTURES[arch]
        return cls, dict(defaults)
    if ":" not in arch:
        known = ", ".join(sorted(ARCHITECTURES))
        raise GpmaskError(
            f"unknown architecture {arch!r}: use one of {known} or an import path module:Class"
        )
    module_name, _, attr = arch.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GpmaskError(f"cannot import architecture module {module_name!r}: {exc}") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise GpmaskError(f"{arch!r} does not name an nn.Module class")
    return cls, {}


def build_model(arch: str, arch_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate ``arch`` with its defaults overridden by ``arch_kwargs``."""
    cls, kwargs = resolve_architecture(arch)
    if not isinstance(arch_kwargs or {}, dict):
        raise GpmaskError(f"architecture keyword arguments must be a JSON object, got "
                          f"{arch_kwargs!r}")
    kwargs.update(arch_kwargs or {})
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:  # a wrong name or value
        raise GpmaskError(f"cannot build {arch!r} with {kwargs}: {exc}") from exc


def size_multiple(model: nn.Module) -> int:
    """The factor input height and width must be multiples of."""
    return int(getattr(model, "size_multiple", 1))
