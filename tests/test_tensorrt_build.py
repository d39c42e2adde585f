"""TensorRT engine builds: the refusal where TensorRT is missing, shapes, and real builds."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from gpmask.bundle import Bundle
from gpmask.cli import main
from gpmask.errors import GpmaskError
from gpmask.export.tensorrt_build import (
    ShapeRange,
    build_bundle_engines,
    timing_cache_name,
    visible_gpu,
)
from gpmask.fileio import sha256_file
from tests.conftest import make_checkpoint

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_tensorrt = pytest.mark.skipif(
    not HAS_TENSORRT, reason="TensorRT is not installed (import tensorrt fails); engines "
    "can only be built where TensorRT and an NVIDIA GPU are present")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from gpmask.export import export_bundle

    root = tmp_path_factory.mktemp("trt") / "bundle"
    export_bundle(make_checkpoint(), root, verify=False, progress=False)
    return root


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed: the refusal cannot happen")
def test_build_without_tensorrt_says_so_and_writes_nothing(exported: Path, capsys) -> None:
    before = _snapshot(exported)
    assert main(["build", str(exported), "--precision", "fp32"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpmask: error: TensorRT is not installed here (import tensorrt failed")
    assert "no file was written" in err and len(err.splitlines()) == 1
    assert _snapshot(exported) == before
    assert not (exported / "engines").exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed: the refusal cannot happen")
def test_export_with_engine_refuses_before_exporting(tmp_path: Path, capsys) -> None:
    checkpoint = tmp_path / "model.gpmask.safetensors"
    make_checkpoint().save(checkpoint)
    code = main(["export", str(checkpoint), "-o", str(tmp_path / "bundle"), "--engine",
                 "--precision", "fp16", "--quiet"])
    assert code == 2
    assert "TensorRT is not installed here" in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists()


def test_missing_precision_graphs_are_named(exported: Path) -> None:
    with pytest.raises(GpmaskError, match=r"no int8 graph for rain, raindrop, snow, common; "
                                          r"run: gpmask calibrate .* --precision int8"):
        build_bundle_engines(exported, "int8")


@pytest.mark.parametrize("text, message", [
    ("64x64:256", "expected MINxMIN:OPTxOPT:MAXxMAX"),
    ("64x64:256x256:130x1280", "positive multiple of 4"),
    ("64x64:512x512:256x256", "min <= opt <= max"),
])
def test_bad_shapes_are_refused(text: str, message: str) -> None:
    with pytest.raises(GpmaskError, match=message):
        ShapeRange.parse(text, 4)


def test_timing_caches_are_kept_apart_by_tensorrt_version_and_gpu_architecture() -> None:
    jetson, desktop = timing_cache_name("10.3.0", "8.7"), timing_cache_name("11.4.1", "9.0")
    assert jetson == "engines/timing.trt10.3.0.sm87.cache"
    assert desktop == "engines/timing.trt11.4.1.sm90.cache"


def test_shapes_parse_height_by_width() -> None:
    shapes = ShapeRange.parse("64x96:720x1280:1080x1920", 4)
    assert shapes.to_dict() == {"min": [64, 96], "opt": [720, 1280], "max": [1080, 1920]}


@needs_tensorrt
@pytest.mark.tensorrt
def test_fp32_engines_are_built_and_recorded(exported: Path, tmp_path: Path) -> None:
    import tensorrt as trt

    root = Path(shutil.copytree(exported, tmp_path / "bundle"))
    written = build_bundle_engines(root, "fp32", "32x32:64x64:128x128")
    bundle = Bundle.open(root)
    gpu = visible_gpu()
    assert (root / timing_cache_name(trt.__version__, gpu.compute_capability)).is_file()
    for weather in [*bundle.weathers, "common"]:
        entry = bundle.engine_entry(weather, "fp32")
        assert entry["path"] in written
        assert entry["sha256"] == sha256_file(root / entry["path"])
        assert entry["tensorrt_version"] == trt.__version__
        assert entry["tf32"] is False
        assert entry["shapes"] == {"min": [32, 32], "opt": [64, 64], "max": [128, 128]}
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        engine = runtime.deserialize_cuda_engine((root / entry["path"]).read_bytes())
        assert engine is not None
    assert json.loads((root / "manifest.json").read_text())["engines"]
