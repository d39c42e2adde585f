"""Bake, export and build: masked checkpoint -> bundle of per-weather ONNX graphs (and engines).

``export_bundle`` is imported on first use, so that importing this package (for
:mod:`gpmask.export.summary` or :mod:`gpmask.export.weight_store`) does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_bundle"]


def __getattr__(name: str) -> Any:
    if name == "export_bundle":
        from gpmask.export.exporter import export_bundle

        return export_bundle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
