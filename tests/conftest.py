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


def manifest_only_bundle(folder: Path, weathers: list[str]) -> Path:
    """A bundle of a manifest alone: routers read only its weather list and router entry."""
    import json

    tensor = {"layout": "NCHW", "dtype": "float32"}
    manifest = {"format_version": 1, "weathers": weathers, "input": {"name": "image", **tensor},
                "output": {"name": "restored", **tensor}, "graphs": {}, "weights": []}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


#: A router recipe small enough for a test: 32x32 tiles, 2x2 per frame, a narrow network,
#: 300 steps on 4 crops per (training image, class) of strong synthetic weather.
SMALL_ROUTER = {"steps": 300, "renders": 4, "heldout_renders": 8, "tile": 32, "grid": (2, 2),
                "width": 8, "batch_size": 32, "crop_side": (64, 128), "severity": (1.2, 1.6)}


@pytest.fixture(scope="session")
def routed_bundle(tmp_path_factory: pytest.TempPathFactory):
    """A manifest-only bundle of rain and snow whose router was trained (small recipe) on
    synthetic weather, and the training report."""
    from gpmask.router.training import RouterSettings, train_router

    folder = manifest_only_bundle(tmp_path_factory.mktemp("routed"), ["rain", "snow"])
    report = train_router(folder, RouterSettings(**SMALL_ROUTER), progress=False)
    return folder, report
