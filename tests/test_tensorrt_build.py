"""TensorRT engine builds: refusals, profiles, cache names (everywhere); real builds where
TensorRT and a GPU are (skipped elsewhere, with the reason)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gpmask.build.tensorrt import (
    DEFAULT_PROFILE,
    ShapeRange,
    build_bundle_engines,
    profile_shapes,
    timing_cache_name,
)
from gpmask.bundle import Bundle, TensorSpec
from gpmask.calibration.options import CalibrationOptions
from gpmask.cli import main
from gpmask.errors import GpmaskError
from gpmask.fileio import sha256_file
from gpmask.host import gpu
from tests.conftest import TENSORRT_SKIP_REASON, make_checkpoint, needs_tensorrt

#: Calibration settings that keep a test's calibration to seconds.
FAST = CalibrationOptions(max_psnr_drop=100, synthetic=4, calibration_size=(32, 32),
                          eval_size=(32, 32))
DYNAMIC = TensorSpec("image", 4)
SMALL_PROFILE = ShapeRange((32, 32), (64, 64), (128, 128))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from gpmask.export import export_bundle

    root = tmp_path_factory.mktemp("trt") / "bundle"
    export_bundle(make_checkpoint(), root, verify=False, progress=False)
    return root


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.skipif(TENSORRT_SKIP_REASON is None,
                    reason="TensorRT and a GPU are here: the refusal cannot happen")
def test_build_without_tensorrt_says_so_and_writes_nothing(exported: Path, capsys) -> None:
    before = _snapshot(exported)
    assert main(["build", str(exported), "--precision", "fp32"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpmask: error: ")
    assert "no file was written" in err and len(err.splitlines()) == 1
    assert _snapshot(exported) == before
    assert not (exported / "engines").exists()


@pytest.mark.skipif(TENSORRT_SKIP_REASON is None,
                    reason="TensorRT and a GPU are here: the refusal cannot happen")
def test_export_with_engine_refuses_before_exporting(tmp_path: Path, capsys) -> None:
    checkpoint = tmp_path / "model.gpmask.safetensors"
    make_checkpoint().save(checkpoint)
    code = main(["export", str(checkpoint), "-o", str(tmp_path / "bundle"), "--engine",
                 "--precision", "fp16", "--no-progress"])
    assert code == 2
    assert "no file was written" in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists()


def test_missing_precision_graphs_are_named(exported: Path) -> None:
    with pytest.raises(GpmaskError, match=r"no int8 graph for rain, raindrop, snow, common; "
                                          r"run: gpmask calibrate .* --precision int8"):
        build_bundle_engines(exported, "int8")


@pytest.mark.parametrize("profile, message", [
    (ShapeRange((64, 64), (256, 256), (130, 1280)), "--max-size 130x1280: height and width must "
                                                    "be multiples of 4"),
    (ShapeRange((64, 64), (512, 512), (256, 256)), "need min <= opt <= max"),
])
def test_bad_profiles_are_refused(profile: ShapeRange, message: str) -> None:
    with pytest.raises(GpmaskError, match=message):
        profile.check(4)


def test_timing_caches_are_kept_apart_by_tensorrt_version_and_gpu_model() -> None:
    names = {timing_cache_name("10.3.0", "8.7", "Orin (nvgpu)"),
             timing_cache_name("10.3.0", "8.7", "NVIDIA Jetson AGX Orin 64GB"),
             timing_cache_name("11.4.1", "9.0", "NVIDIA H100 80GB HBM3")}
    assert names == {"engines/timing.trt10.3.0.sm87.orin-nvgpu.cache",
                     "engines/timing.trt10.3.0.sm87.nvidia-jetson-agx-orin-64gb.cache",
                     "engines/timing.trt11.4.1.sm90.nvidia-h100-80gb-hbm3.cache"}
    assert timing_cache_name("10.3.0", "8.7", " /../ ") == \
        "engines/timing.trt10.3.0.sm87.unknown-gpu.cache"


def test_profiles_are_height_by_width() -> None:
    shapes = ShapeRange((64, 96), (720, 1280), (1080, 1920))
    assert shapes.to_dict() == {"min": [64, 96], "opt": [720, 1280], "max": [1080, 1920],
                                "batch": 1}
    assert str(shapes) == "min 64x96, opt 720x1280, max 1080x1920"


def test_dynamic_bundle_profile_comes_from_the_sizes_asked() -> None:
    assert profile_shapes(DYNAMIC, None) == DEFAULT_PROFILE
    assert profile_shapes(DYNAMIC, ShapeRange((32, 32), (64, 64), (128, 128))).max == \
        (128, 128)


def test_static_bundle_profile_is_its_shape() -> None:
    static = TensorSpec("image", 4, (2, 3, 720, 1280))
    profile = profile_shapes(static, None)
    assert profile.to_dict() == {"min": [720, 1280], "opt": [720, 1280], "max": [720, 1280],
                                 "batch": 2}
    assert profile_shapes(static, ShapeRange.fixed(720, 1280)) == profile


@pytest.mark.parametrize("profile", [DEFAULT_PROFILE,
                                     ShapeRange((720, 1280), (720, 1280), (1080, 1920))])
def test_static_bundle_refuses_sizes_that_contradict_it(profile: ShapeRange) -> None:
    static = TensorSpec("image", 4, (1, 3, 720, 1280))
    with pytest.raises(GpmaskError) as caught:
        profile_shapes(static, profile)
    assert str(caught.value) == (
        f"the profile ({profile}) contradicts the bundle's static input shape 1x3x720x1280: "
        f"its graphs accept 720x1280 only; leave --min-size, --opt-size and --max-size out, "
        f"or export without --size for a range")


def test_build_reads_its_profile_from_the_three_size_options(monkeypatch) -> None:
    """Sizes not given keep their defaults; none given leaves the profile to the bundle."""
    import gpmask.build.tensorrt as tensorrt_build

    asked = []
    monkeypatch.setattr(tensorrt_build, "build_bundle_engines",
                        lambda root, precision, shapes, *rest, **options: asked.append(shapes)
                        or [])
    assert main(["build", "b", "--max-size", "1440x2560", "--no-progress"]) == 0
    assert main(["build", "b", "--no-progress"]) == 0
    assert asked == [ShapeRange((64, 64), (720, 1280), (1440, 2560)), None]


# ----------------------------------------------------------------- real engines
def _engine_bundle(exported: Path, tmp_path: Path, precision: str,
                   shapes: ShapeRange | None) -> tuple[Path, list[str]]:
    from gpmask.calibration.pipeline import calibrate_bundle

    root = Path(shutil.copytree(exported, tmp_path / "bundle"))
    if precision != "fp32":
        calibrate_bundle(root, precision, FAST)
    return root, build_bundle_engines(root, precision, shapes)


def _assert_engines_recorded(root: Path, precision: str, written: list[str],
                             shapes: dict) -> None:
    import tensorrt as trt

    bundle = Bundle.open(root)
    device = gpu(0)
    cache = root / timing_cache_name(trt.__version__, device.compute_capability, device.name)
    assert cache.is_file()
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    for weather in [*bundle.weathers, "common"]:
        entry = bundle.engine(weather, precision)
        assert entry.path in written
        assert entry.sha256 == sha256_file(root / entry.path)
        assert (entry.target.tensorrt_version, entry.target.gpu) == (trt.__version__,
                                                                     device.name)
        assert entry.precision == precision and not entry.tf32
        assert entry.shapes == shapes
        engine = runtime.deserialize_cuda_engine((root / entry.path).read_bytes())
        assert engine is not None
    assert json.loads((root / "manifest.json").read_text())["engines"]


@needs_tensorrt
@pytest.mark.tensorrt
def test_fp32_engines_are_built_and_recorded(exported: Path, tmp_path: Path) -> None:
    root, written = _engine_bundle(exported, tmp_path, "fp32", SMALL_PROFILE)
    _assert_engines_recorded(root, "fp32", written, {"min": [32, 32], "opt": [64, 64],
                                                     "max": [128, 128], "batch": 1})


@needs_tensorrt
@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_calibrated_engines_are_built_and_match_their_graphs(
    exported: Path, tmp_path: Path, precision: str
) -> None:
    """fp16 (casts) and int8 (Q/DQ) graphs build strongly typed; the engine's frames agree
    with ONNX Runtime running the same graph."""
    import numpy as np

    from gpmask.metrics import psnr
    from gpmask.runtime import Restorer

    root, written = _engine_bundle(exported, tmp_path, precision, SMALL_PROFILE)
    _assert_engines_recorded(root, precision, written, {"min": [32, 32], "opt": [64, 64],
                                                        "max": [128, 128], "batch": 1})
    frame = np.random.default_rng(0).random((37, 50, 3), dtype=np.float32)
    with Restorer(root, backend="tensorrt", precision=precision) as engines, \
            Restorer(root, backend="onnxruntime-cpu", precision=precision) as graphs:
        for weather in ("rain", "common"):
            assert psnr(engines.restore(frame, weather), graphs.restore(frame, weather)) > 35


@needs_tensorrt
@pytest.mark.tensorrt
def test_static_shape_bundle_builds_with_its_shape(tmp_path: Path) -> None:
    import numpy as np

    from gpmask.export import export_bundle
    from gpmask.runtime import Restorer

    root = tmp_path / "static"
    export_bundle(make_checkpoint(), root, static_shape=(1, 3, 32, 48), verify=False,
                  progress=False)
    written = build_bundle_engines(root, "fp32")  # no sizes given: the bundle's own shape
    _assert_engines_recorded(root, "fp32", written, {"min": [32, 48], "opt": [32, 48],
                                                     "max": [32, 48], "batch": 1})
    frame = np.random.default_rng(1).random((32, 48, 3), dtype=np.float32)
    with Restorer(root, backend="tensorrt") as engines, \
            Restorer(root, backend="onnxruntime-cpu") as graphs:
        np.testing.assert_allclose(engines.restore(frame, "snow"), graphs.restore(frame, "snow"),
                                   atol=2e-3)
        with pytest.raises(GpmaskError, match="was exported for input 1x3x32x48 only"):
            engines.restore(frame[:28], "snow")


def test_the_fold_check_before_each_build_runs_at_the_profiles_batch(tmp_path: Path,
                                                                     monkeypatch) -> None:
    """A compact bundle exported for batches of 2 is folded and checked on a batch of 2,
    and TensorRT's parser would be handed the folded graph with that profile. TensorRT is
    stood in for at the point it would start (no engine is made, none is recorded)."""
    import numpy as np
    import onnx

    import gpmask.build.tensorrt as tensorrt_build
    from gpmask.bundle import EngineTarget
    from gpmask.export import export_bundle
    from gpmask.graph.session import cpu_session

    root = tmp_path / "batch2"
    export_bundle(make_checkpoint(), root, static_shape=(2, 3, 32, 48), verify=False,
                  progress=False)
    monkeypatch.setattr(tensorrt_build, "tensorrt_target",
                        lambda device, builder: EngineTarget("10.3.0", "Orin", "8.7"))
    handed = []

    def parser_would_start(graph, engine, input_name, shapes, *rest):
        model = onnx.load(str(graph))
        handed.append((shapes, [n.op_type for n in model.graph.node], model))
        raise GpmaskError("TensorRT would start here")

    monkeypatch.setattr(tensorrt_build, "build_engine", parser_would_start)
    with pytest.raises(GpmaskError, match="TensorRT would start here"):
        build_bundle_engines(root, "fp32", progress=False)
    shapes, ops, folded = handed[0]
    assert shapes == ShapeRange.fixed(32, 48, batch=2)
    assert shapes.nchw() == {"min": (2, 3, 32, 48), "opt": (2, 3, 32, 48),
                             "max": (2, 3, 32, 48)}
    compact = onnx.load(str(Bundle.open(root).graph_path("rain")))
    assert len(compact.graph.node) > len(ops)  # the rebuild was folded away
    batch = np.random.default_rng(0).random((2, 3, 32, 48), dtype=np.float32)
    original = cpu_session(Bundle.open(root).graph_path("rain"))
    np.testing.assert_array_equal(cpu_session(folded).run(None, {"image": batch})[0],
                                  original.run(None, {"image": batch})[0])
    assert Bundle.open(root).engines("fp32") == {}


def test_max_batch_gives_dynamic_engines_a_batch_range(monkeypatch, capsys) -> None:
    """Engines of a dynamic bundle take batches of 1 to --max-batch (tuned for one frame),
    and record it; a static bundle keeps its own batch."""
    import gpmask.build.tensorrt as tensorrt_build

    asked = []
    monkeypatch.setattr(tensorrt_build, "build_bundle_engines",
                        lambda root, precision, shapes, *rest, **options: asked.append(shapes)
                        or [])
    assert main(["build", "b", "--max-batch", "4", "--no-progress"]) == 0
    profile = profile_shapes(DYNAMIC, asked[0])
    assert profile == ShapeRange((64, 64), (720, 1280), (1080, 1920), batch=1, max_batch=4)
    assert profile.nchw() == {"min": (1, 3, 64, 64), "opt": (1, 3, 720, 1280),
                              "max": (4, 3, 1080, 1920)}
    assert profile.to_dict()["max_batch"] == 4 and "batch 1 to 4" in str(profile)
    assert ShapeRange.of(profile.to_dict()) == profile
    static = TensorSpec("image", 4, (2, 3, 32, 48))
    with pytest.raises(GpmaskError, match=r"^--max-batch 4 contradicts the bundle's static "
                                          r"input shape 2x3x32x48: its graphs take batches "
                                          r"of 2 only"):
        profile_shapes(static, ShapeRange.fixed(32, 48, max_batch=4))
    assert main(["build", "b", "--max-batch", "0"]) == 2
    assert "--max-batch must be a positive batch, got 0" in capsys.readouterr().err
