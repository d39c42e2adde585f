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


def tensorrt_skip_reason() -> str | None:
    """Why the TensorRT tests cannot run here, or None where TensorRT and a GPU are present.

    ``import tensorrt`` working is not enough: a machine may have the package without a
    GPU, a driver or the CUDA runtime, and then every engine test would fail, not skip.
    """
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # ImportError, or OSError for a missing libnvinfer
        return (f"TensorRT is not installed (import tensorrt fails: {type(exc).__name__}); "
                f"engines can only be built where TensorRT and an NVIDIA GPU are present")
    from gpmask.errors import GpmaskError
    from gpmask.export.tensorrt_build import visible_gpu

    try:
        visible_gpu()
    except GpmaskError as exc:
        return f"TensorRT is installed, but {exc}"
    return None


TENSORRT_SKIP_REASON = tensorrt_skip_reason()
#: Marks a test that builds or runs real TensorRT engines.
needs_tensorrt = pytest.mark.skipif(TENSORRT_SKIP_REASON is not None,
                                    reason=TENSORRT_SKIP_REASON or "")
