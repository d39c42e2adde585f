"""Trace, specialize, verify: masked checkpoint -> bundle of per-weather ONNX graphs.

The network is traced once (:mod:`~gpmask.export.trace`, or the shipped trace of the
demo architecture, :mod:`~gpmask.export.shipped_trace`), each weather binds its own
weights into that structure (:mod:`~gpmask.export.specialize`), and every graph is
checked against PyTorch (:mod:`~gpmask.export.verify`) before
:mod:`~gpmask.export.exporter` writes the bundle through :mod:`gpmask.bundle`.

``export_bundle`` is imported on first use, so importing this package does not
import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_bundle"]


def __getattr__(name: str) -> Any:
    if name == "export_bundle":
        from gpmask.export.exporter import export_bundle

        return export_bundle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
