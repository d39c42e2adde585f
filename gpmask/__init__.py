"""gpmask: deploy GGPM multi-weather restoration networks to ONNX Runtime and TensorRT.

The top-level import stays light (no torch): the runtime on an edge device imports
:mod:`gpmask.runtime` only. ``gpmask.MaskedCheckpoint`` is loaded on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["MaskedCheckpoint", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "MaskedCheckpoint":
        from gpmask.masking.checkpoint import MaskedCheckpoint

        return MaskedCheckpoint
    raise AttributeError(f"module 'gpmask' has no attribute {name!r}")
