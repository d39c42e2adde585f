"""Restoration networks: the built-in registry and bring-your-own modules."""

from gpmask.model.ggpm_unet import GGPMUNet
from gpmask.model.msunet import MultiScaleUNet
from gpmask.model.registry import ARCHITECTURES, build_model, resolve_architecture, size_multiple

__all__ = [
    "ARCHITECTURES",
    "GGPMUNet",
    "MultiScaleUNet",
    "build_model",
    "resolve_architecture",
    "size_multiple",
]
