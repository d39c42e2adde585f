"""Shared fixtures: small masked checkpoints made on the spot (no download, no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpmask.bench.fixtures import random_checkpoint
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
    return random_checkpoint(arch[0], arch[1], weathers, density, seed=seed, made_by="tests")


@pytest.fixture
def checkpoint_path(tmp_path: Path) -> Path:
    """A saved three-weather checkpoint of a very small network."""
    path = tmp_path / "model.gpmask.safetensors"
    make_checkpoint().save(path)
    return path


def tensorrt_skip_reason() -> str | None:
    """Why the TensorRT tests cannot run here, or None where TensorRT's builder and a GPU
    are present.

    ``import tensorrt`` working is not enough: a machine may have the package without a
    GPU, a driver or the CUDA runtime, and then every engine test would fail, not skip.
    The tests build their engines, so TensorRT's lean runtime alone (which builds none)
    does not do either.
    """
    from gpmask.host import gpu_problem, tensorrt_problem

    problem = tensorrt_problem(builder=True)
    if problem:
        return (f"TensorRT is not usable here ({problem}); engines can only be built where "
                f"TensorRT and an NVIDIA GPU are present")
    problem = gpu_problem(0)
    return f"TensorRT is installed, but {problem}" if problem else None


TENSORRT_SKIP_REASON = tensorrt_skip_reason()
#: Marks a test that builds or runs real TensorRT engines.
needs_tensorrt = pytest.mark.skipif(TENSORRT_SKIP_REASON is not None,
                                    reason=TENSORRT_SKIP_REASON or "")


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped demo model exported with its router (``auto`` routing works)."""
    from gpmask.export import export_bundle

    folder = tmp_path_factory.mktemp("demo") / "bundle"
    export_bundle("demo", folder, verify=False, progress=False)
    return folder
