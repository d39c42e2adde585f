"""Shared fixtures: small masked checkpoints made on the spot (no download, no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpmask.masking.checkpoint import MaskedCheckpoint

#: A very small MultiScaleUNet so graphs export and run in well under a second.
SMALL_ARCH = ("msunet", {"base_channels": 4, "num_res_blocks": 1})


def make_checkpoint(
    weathers: tuple[str, ...] = ("rain", "raindrop", "snow"),
    density: float = 0.3,
    seed: int = 0,
    arch: tuple[str, dict] = SMALL_ARCH,
) -> MaskedCheckpoint:
    """A checkpoint with random common values and, per weather, a random mask and values.

    Specific values differ from the common ones by a visible amount so that baked
    weathers produce different outputs.
    """
    import torch

    from gpmask.model import build_model

    torch.manual_seed(seed)
    model = build_model(*arch)
    common = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    rng = np.random.default_rng(seed)
    masks, weights = {}, {}
    for weather in weathers:
        masks[weather] = {n: rng.random(v.shape) < density for n, v in common.items()}
        weights[weather] = {
            n: v + rng.normal(0, 0.05, v.shape).astype(v.dtype) for n, v in common.items()
        }
    return MaskedCheckpoint.from_weights(
        arch[0], arch[1], common, weights, masks, provenance={"made_by": "tests"}
    )


@pytest.fixture
def checkpoint_path(tmp_path: Path) -> Path:
    """A saved three-weather checkpoint of a very small network."""
    path = tmp_path / "model.gpmask.safetensors"
    make_checkpoint().save(path)
    return path
