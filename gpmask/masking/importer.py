"""Build a masked checkpoint from plain PyTorch files made elsewhere.

A user who trained GGPM with other code has a base state dict (the common values)
and, per weather, a fine-tuned state dict plus a mask (parameter name -> bool
tensor). Specific values are read from the fine-tuned weights at the mask.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gpmask.errors import GpmaskError
from gpmask.masking.checkpoint import MaskedCheckpoint


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ``.pth`` state dict loaded with ``weights_only=True`` (no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise GpmaskError(f"{path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or damaged files
        raise GpmaskError(f"{path} is not a readable PyTorch weights file: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GpmaskError(f"{path} does not hold a state dict (name -> tensor)")
    return state


def import_checkpoint(
    arch: str,
    arch_kwargs: dict[str, Any],
    base: str | os.PathLike,
    weathers: dict[str, tuple[str | os.PathLike, str | os.PathLike]],
) -> MaskedCheckpoint:
    """A :class:`MaskedCheckpoint` from a base state dict and per-weather (weights, mask) files."""
    common = load_state_dict(base)
    weights, masks = {}, {}
    for weather, (weights_path, mask_path) in weathers.items():
        weights[weather] = load_state_dict(weights_path)
        mask = load_state_dict(mask_path)
        for name, value in mask.items():
            if name not in common:
                raise GpmaskError(
                    f"mask {mask_path}: {name!r} is not a parameter of the base model"
                )
            if value.dtype != torch.bool:
                raise GpmaskError(f"mask {mask_path}: {name!r} is {value.dtype}, not bool")
        masks[weather] = mask
    provenance = {
        "method": "imported",
        "base": str(base),
        "weathers": {w: [str(p) for p in paths] for w, paths in weathers.items()},
    }
    return MaskedCheckpoint.from_weights(arch, arch_kwargs, common, weights, masks, provenance)
