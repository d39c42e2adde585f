"""Restorer on ONNX Runtime: frames equal each graph's own output, sharing, integrity.

Expected frames are computed independently: the bundle's graph run by a plain
``onnxruntime.InferenceSession`` (default options) on a numpy reflect-padded input,
cropped and converted here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.host import gpu_problem, physical_cores, tensorrt_problem
from gpmask.runtime import Restorer
from gpmask.runtime.backends import BACKENDS
from gpmask.runtime.backends.onnxruntime import (
    OnnxRuntimeBackend,
    SessionSettings,
    available_providers,
    provider_problem,
)
from tests.conftest import make_checkpoint

RNG = np.random.default_rng(1)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gpmask.export.exporter import export_bundle

    folder = tmp_path_factory.mktemp("runtime") / "bundle"
    export_bundle(make_checkpoint(), folder, verify=False, progress=False)
    return folder


@pytest.fixture(scope="module")
def dense_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same checkpoint in the dense layout, where weathers share whole tensors."""
    from gpmask.export.exporter import export_bundle

    folder = tmp_path_factory.mktemp("runtime-dense") / "bundle"
    export_bundle(make_checkpoint(), folder, verify=False, progress=False, layout="dense")
    return folder


@pytest.fixture(scope="module")
def restorer(bundle_dir: Path) -> Restorer:
    with Restorer(bundle_dir, backend="onnxruntime-cpu") as loaded:
        yield loaded


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))


_direct_sessions: dict[Path, ort.InferenceSession] = {}


def direct_rgb(bundle_dir: Path, weather: str, rgb: np.ndarray) -> np.ndarray:
    """The graph's own output on an HxWx3 float RGB image: pad, run, crop."""
    path = Bundle.open(bundle_dir).graph_path(weather)
    if path not in _direct_sessions:
        _direct_sessions[path] = ort.InferenceSession(str(path),
                                                      providers=["CPUExecutionProvider"])
    session = _direct_sessions[path]
    height, width = rgb.shape[:2]
    pad = ((0, 0), (0, 0), (0, -height % 4), (0, -width % 4))
    batch = np.pad(rgb.transpose(2, 0, 1)[None].astype(np.float32), pad, mode="reflect")
    output = session.run(None, {session.get_inputs()[0].name: batch})[0]
    return np.clip(output[0, :, :height, :width].transpose(1, 2, 0), 0, 1)


def as_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.rint(rgb * 255).astype(np.uint8)


def assert_close_uint8(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to one level: the two sessions may sum in a different order."""
    assert actual.shape == expected.shape and actual.dtype == np.uint8
    assert np.abs(actual.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("size", [(721, 1283), (33, 47), (5, 3), (1, 1), (64, 64)])
def test_restored_rgb_equals_graph_output_at_any_size(restorer, bundle_dir, size):
    frame = RNG.integers(0, 256, (*size, 3), dtype=np.uint8)
    restored = restorer.restore(frame, "rain")
    assert_close_uint8(restored, as_uint8(direct_rgb(bundle_dir, "rain", frame / 255)))


def test_float_frames_give_float_output_equal_to_graph(restorer, bundle_dir):
    frame = RNG.random((19, 30, 3), dtype=np.float32)
    restored = restorer.restore(frame, "snow")
    assert restored.dtype == np.float32 and restored.shape == frame.shape
    np.testing.assert_allclose(restored, direct_rgb(bundle_dir, "snow", frame), atol=1e-5)


def test_bgr_flag_restores_the_same_image_in_bgr_order(restorer, bundle_dir):
    rgb = RNG.integers(0, 256, (21, 18, 3), dtype=np.uint8)
    restored = restorer.restore(np.ascontiguousarray(rgb[:, :, ::-1]), "raindrop", bgr=True)
    expected = as_uint8(direct_rgb(bundle_dir, "raindrop", rgb / 255))
    assert_close_uint8(restored, np.ascontiguousarray(expected[:, :, ::-1]))


@pytest.mark.parametrize("shape", [(23, 17), (23, 17, 1)])
def test_gray_frames_get_the_restored_luminance(restorer, bundle_dir, shape):
    frame = RNG.integers(0, 256, shape, dtype=np.uint8)
    restored = restorer.restore(frame, "rain")
    assert restored.shape == shape and restored.dtype == np.uint8
    gray = frame.reshape(23, 17, 1) / 255
    colour = direct_rgb(bundle_dir, "rain", np.repeat(gray, 3, axis=2))
    luminance = colour @ np.array([0.299, 0.587, 0.114])
    assert np.abs(restored.reshape(23, 17) - luminance * 255).max() <= 1.0


def test_rgba_frames_keep_their_alpha(restorer, bundle_dir):
    frame = RNG.integers(0, 256, (14, 26, 4), dtype=np.uint8)
    restored = restorer.restore(frame, "snow")
    assert restored.shape == frame.shape
    np.testing.assert_array_equal(restored[:, :, 3], frame[:, :, 3])
    expected = as_uint8(direct_rgb(bundle_dir, "snow", frame[:, :, :3] / 255))
    assert_close_uint8(restored[:, :, :3], expected)


def test_switching_weather_per_frame_gives_each_weathers_output(restorer, bundle_dir):
    frame = RNG.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    outputs = {}
    for weather in ("rain", "snow", "raindrop", "rain", "common", "snow"):
        outputs[weather] = restorer.restore(frame, weather)
        assert_close_uint8(outputs[weather],
                           as_uint8(direct_rgb(bundle_dir, weather, frame / 255)))
    assert np.abs(outputs["rain"].astype(int) - outputs["snow"]).max() > 5


def test_switching_weather_keeps_the_bound_buffers(bundle_dir):
    backend = OnnxRuntimeBackend(Bundle.open(bundle_dir))
    batch = RNG.random((1, 3, 16, 20), dtype=np.float32)
    backend.run("rain", batch)
    pointers = (backend._input_value.data_ptr(), backend._output_value.data_ptr())
    for weather in ("snow", "common", "raindrop", "rain"):
        output = backend.run(weather, batch)
        assert (backend._input_value.data_ptr(), backend._output_value.data_ptr()) == pointers
        assert output.ctypes.data == pointers[1]  # the result is read from the bound buffer
    backend.run("rain", RNG.random((1, 3, 8, 8), dtype=np.float32))
    assert backend._bound_shape == (1, 3, 8, 8)  # a new frame size rebinds


def test_batch_equals_frame_by_frame(restorer):
    frames = RNG.integers(0, 256, (3, 18, 22, 3), dtype=np.uint8)
    batch = restorer.restore_batch(frames, "raindrop")
    assert isinstance(batch, np.ndarray) and batch.shape == frames.shape
    for frame, restored in zip(frames, batch, strict=True):
        assert_close_uint8(restored, restorer.restore(frame, "raindrop"))
    as_list = restorer.restore_batch(list(frames), "raindrop")
    assert isinstance(as_list, list) and len(as_list) == 3


def test_unknown_weather_lists_the_bundles_weathers(restorer):
    with pytest.raises(GpmaskError, match="unknown weather 'fog'; this bundle has: "
                                          "rain, raindrop, snow, common"):
        restorer.restore(np.zeros((8, 8, 3), np.uint8), "fog")
    assert restorer.weathers == ["rain", "raindrop", "snow"]


def test_initializers_are_created_once_per_distinct_tensor(dense_bundle_dir):
    bundle_dir = dense_bundle_dir
    bundle = Bundle.open(bundle_dir)
    distinct, references = set(), 0
    for weather in (*bundle.weathers, "common"):
        graph = onnx.load(str(bundle.graph_path(weather)), load_external_data=False)
        for tensor in graph.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                info = {e.key: e.value for e in tensor.external_data}
                distinct.add((info["location"], info["offset"], info["length"],
                              tensor.data_type, tuple(tensor.dims)))
                references += 1
    backend = OnnxRuntimeBackend(bundle)
    values = backend.initializers.values
    assert len(values) == len(distinct)
    assert len(values) < references  # weathers do share tensors in this bundle
    # and the values are the tensors themselves, read from weights.bin
    full = onnx.load(str(bundle.graph_path("snow")))
    inline = onnx.load(str(bundle.graph_path("snow")), load_external_data=False)
    for tensor, stored in zip(full.graph.initializer, inline.graph.initializer, strict=True):
        if stored.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in stored.external_data}
            key = (bundle_dir / info["location"], int(info["offset"]), int(info["length"]),
                   stored.data_type, tuple(stored.dims))
            np.testing.assert_array_equal(values[key].numpy(), onnx.numpy_helper.to_array(tensor))
    backend.close()


def test_session_settings_reach_the_session_options():
    settings = SessionSettings()
    options = settings.session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    threads = settings.describe()["intra_op_threads"]
    assert options.intra_op_num_threads == physical_cores() == threads
    assert options.get_session_config_entry("session.use_env_allocators") == "1"
    siblings = {
        Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text()
        for cpu in os.sched_getaffinity(0)
    }
    assert physical_cores() == len(siblings)


def test_auto_picks_cuda_then_openvino_on_a_bundle_without_engines(restorer, bundle_dir):
    from gpmask.runtime.backends.openvino import openvino_available

    cpu = "openvino" if openvino_available() else "onnxruntime-cpu"
    expected = "onnxruntime-cuda" if provider_problem("cuda", 0) is None else cpu
    assert Restorer(bundle_dir).backend_name == expected
    assert restorer.backend_name == "onnxruntime-cpu"


def test_unknown_and_unavailable_backends_are_refused(bundle_dir):
    with pytest.raises(GpmaskError, match="unknown backend 'onnx'; choose one of auto, "
                                          "onnxruntime, tensorrt"):
        Restorer(bundle_dir, backend="onnx")
    assert "onnxruntime-cuda" in BACKENDS
    if "cuda" not in available_providers():
        with pytest.raises(GpmaskError, match="^backend onnxruntime-cuda: this ONNX Runtime has "
                                              "no CUDAExecutionProvider"):
            Restorer(bundle_dir, backend="onnxruntime-cuda")
    elif provider_problem("cuda", 0):  # onnxruntime-gpu without a GPU it can use
        with pytest.raises(GpmaskError) as caught:
            Restorer(bundle_dir, backend="onnxruntime-cuda")
        assert str(caught.value) == f"backend onnxruntime-cuda: {provider_problem('cuda', 0)}"
    if tensorrt_problem():
        with pytest.raises(GpmaskError, match="^backend tensorrt: the tensorrt package cannot "
                                              "be imported"):
            Restorer(bundle_dir, backend="tensorrt")
    elif gpu_problem(0):  # TensorRT (or its lean runtime) without a GPU
        with pytest.raises(GpmaskError) as caught:
            Restorer(bundle_dir, backend="tensorrt")
        assert str(caught.value) == f"backend tensorrt: {gpu_problem(0)}"


def test_missing_precision_is_refused(bundle_dir):
    with pytest.raises(GpmaskError, match="has no int8 graphs"):
        Restorer(bundle_dir, backend="onnxruntime-cpu", precision="int8")


def test_tampered_weights_are_refused_by_name(bundle_copy):
    weights = bundle_copy / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(GpmaskError, match="weights.bin does not match its manifest sha256"):
        Restorer(bundle_copy, backend="onnxruntime-cpu")


def test_missing_graph_is_refused_by_name(bundle_copy):
    (bundle_copy / "snow.onnx").unlink()
    with pytest.raises(GpmaskError, match="bundle file snow.onnx is missing"):
        Restorer(bundle_copy, backend="onnxruntime-cpu")


def test_weight_file_missing_from_manifest_is_refused(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["weights"] = []
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GpmaskError, match="weights.bin is not recorded"):
        Restorer(bundle_copy, backend="onnxruntime-cpu")


def test_loading_only_some_weathers(bundle_dir):
    backend = OnnxRuntimeBackend(Bundle.open(bundle_dir), weathers=["snow"])
    assert backend.weathers == ["snow"]
    with pytest.raises(GpmaskError, match="unknown weather 'hail'"):
        OnnxRuntimeBackend(Bundle.open(bundle_dir), weathers=["hail"])


def test_runtime_imports_no_torch(bundle_dir):
    script = (
        "import sys, numpy as np\n"
        "from gpmask.runtime import Restorer\n"
        "import gpmask.runtime.backends.tensorrt\n"
        f"r = Restorer({str(bundle_dir)!r})\n"
        "r.restore(np.zeros((9, 9, 3), np.uint8), 'rain')\n"
        "heavy = [m for m in ('torch', 'gpmask.masking', 'gpmask.model', 'gpmask.export')"
        " if m in sys.modules]\n"
        "print('imported:', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert "imported: []" in result.stdout


def test_same_bytes_read_as_different_tensors_get_their_own_values(tmp_path):
    """The weight store shares bytes; int32[4] and int8[16] zeros are not one tensor."""
    from onnx import helper, numpy_helper

    from gpmask.bundle.weight_store import write_shared_weights
    from gpmask.runtime.backends.onnxruntime import SharedInitializers

    def graph(name: str, value: np.ndarray) -> onnx.ModelProto:
        initializer = numpy_helper.from_array(value, "zeros")
        output = helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(value.dtype),
                                               list(value.shape))
        node = helper.make_node("Identity", ["zeros"], ["y"])
        return helper.make_model(helper.make_graph([node], name, [], [output], [initializer]))

    models = {"a.onnx": graph("a", np.zeros(4, np.int32)),
              "b.onnx": graph("b", np.zeros(16, np.int8))}
    stored = write_shared_weights(models, tmp_path, "w.bin")
    assert stored.tensors_stored == 1  # one run of 16 zero bytes
    for name, model in models.items():
        onnx.save(model, tmp_path / name)
    shared = SharedInitializers()
    outputs = {}
    for name in models:
        options = ort.SessionOptions()
        graph_proto = onnx.load(tmp_path / name, load_external_data=False)
        shared.add_graph(graph_proto, tmp_path, options)
        session = ort.InferenceSession(str(tmp_path / name), options)
        outputs[name] = session.run(None, {})[0]
    assert len(shared.values) == 2
    assert outputs["a.onnx"].dtype == np.int32 and outputs["a.onnx"].shape == (4,)
    assert outputs["b.onnx"].dtype == np.int8 and outputs["b.onnx"].shape == (16,)


# ----------------------------------------------------------------- GPU providers
def test_a_gpu_provider_that_cannot_start_is_never_taken(bundle_dir, monkeypatch):
    """ONNX Runtime lists its CUDA provider whenever the GPU build is installed and falls
    back to the CPU without a word when it cannot start. Here the build is made to list it
    and the driver to report a GPU; the real ONNX Runtime then cannot start it, and
    neither auto nor --backend takes it: no frame ever reaches a CUDA buffer."""
    import gpmask.runtime.backends.onnxruntime as ort_backend

    if gpu_problem(0) is None and "cuda" in available_providers():
        pytest.skip("a GPU and onnxruntime-gpu are here: the CUDA provider can start")
    monkeypatch.setattr(ort_backend, "available_providers", lambda: ["cuda", "cpu"])
    monkeypatch.setattr(ort_backend, "gpu_problem", lambda device: None)
    problem = ort_backend.provider_problem("cuda", 0)  # a real session, on the real build
    assert problem.startswith("ONNX Runtime could not start its CUDAExecutionProvider")
    with pytest.raises(GpmaskError) as caught:
        Restorer(bundle_dir, backend="onnxruntime-cuda")
    assert str(caught.value) == f"backend onnxruntime-cuda: {problem}"
    with Restorer(bundle_dir) as auto:
        assert auto.backend_name in ("openvino", "onnxruntime-cpu")
        assert f"onnxruntime-cuda: {problem}" in auto.choice.reason
    # a session that falls back all the same is refused when the backend loads
    monkeypatch.setattr(ort_backend, "provider_start", lambda kind, device: None)
    with pytest.raises(GpmaskError, match=r"^backend onnxruntime-cuda: ONNX Runtime could not "
                                          r"start its CUDAExecutionProvider \(the session runs "
                                          r"on CPUExecutionProvider\)$"):
        OnnxRuntimeBackend(Bundle.open(bundle_dir), provider="cuda")


def test_shared_weights_are_placed_where_the_sessions_compute(dense_bundle_dir, monkeypatch):
    """ONNX Runtime uses a shared initializer only on the device it planned the weight for:
    CUDA sessions get the values on their GPU (no host copy kept), TensorRT's provider
    none (its engines hold their own), CPU sessions host memory. No GPU here: the values
    asked for on the GPU are made on the host, and the device asked is what is checked."""
    from gpmask.runtime.backends.onnxruntime import WEIGHT_DEVICES, SharedInitializers

    placed = []
    make = ort.OrtValue.ortvalue_from_numpy

    def record(array, device_type="cpu", device_id=0):
        placed.append((device_type, device_id))
        return make(array)

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy", staticmethod(record))
    bundle = Bundle.open(dense_bundle_dir)
    path = bundle.graph_path("rain")
    shared = SharedInitializers((WEIGHT_DEVICES["cuda"], 1))
    shared.add_graph(onnx.load(str(path), load_external_data=False), path.parent,
                     ort.SessionOptions())
    assert len(placed) == len(shared.values) > 0 and set(placed) == {("cuda", 1)}
    assert WEIGHT_DEVICES["tensorrt"] is None and WEIGHT_DEVICES["cpu"] == "cpu"
    placed.clear()
    backend = OnnxRuntimeBackend(bundle, weathers=["rain"])  # the CPU provider
    assert set(placed) == {("cpu", 0)} and len(placed) == len(backend.initializers.values)


needs_cuda_provider = pytest.mark.skipif(
    provider_problem("cuda", 0) is not None,
    reason=f"ONNX Runtime's CUDA provider cannot run here ({provider_problem('cuda', 0)})")


@needs_cuda_provider
def test_cuda_sessions_share_one_gpu_copy_of_each_weight(dense_bundle_dir):
    backend = OnnxRuntimeBackend(Bundle.open(dense_bundle_dir), provider="cuda")
    assert {value.device_name() for value in backend.initializers.values.values()} == {"cuda"}
    frame = RNG.random((1, 3, 32, 32), dtype=np.float32)
    reference = OnnxRuntimeBackend(Bundle.open(dense_bundle_dir)).run("snow", frame).copy()
    np.testing.assert_allclose(backend.run("snow", frame), reference, atol=1e-3)


def test_tensorrt_provider_gets_the_bundles_profile_and_caches(bundle_copy, tmp_path):
    """ONNX Runtime's TensorRT provider is given the profile `gpmask build` uses (so one
    engine serves every frame size in it) and an engine and timing cache in the bundle,
    named after each graph's content (the weathers share one structure)."""
    from gpmask.export.exporter import export_bundle
    from gpmask.runtime.backends.onnxruntime import (
        TENSORRT_CACHE_FOLDER,
        _provider_chain,
        tensorrt_provider_options,
    )

    bundle = Bundle.open(bundle_copy)
    rain = tensorrt_provider_options(bundle, "rain", "fp32")
    cache = bundle_copy / TENSORRT_CACHE_FOLDER
    assert rain == {
        "trt_profile_min_shapes": "image:1x3x64x64",
        "trt_profile_opt_shapes": "image:1x3x720x1280",
        "trt_profile_max_shapes": "image:1x3x1080x1920",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_engine_cache_prefix": f"rain.fp32.{bundle.graph_digest('rain', 'fp32')[:16]}",
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
    }
    assert cache.is_dir()
    snow = tensorrt_provider_options(bundle, "snow", "fp32")["trt_engine_cache_prefix"]
    assert snow.startswith("snow.fp32.") and snow[-16:] != rain["trt_engine_cache_prefix"][-16:]
    assert _provider_chain("tensorrt", 1, rain) == [
        ("TensorrtExecutionProvider", {"device_id": 1, **rain}),
        ("CUDAExecutionProvider", {"device_id": 1}), ("CPUExecutionProvider", {})]
    static = export_bundle(make_checkpoint(), tmp_path / "static", static_shape=(2, 3, 32, 48),
                           verify=False, progress=False)
    fixed = tensorrt_provider_options(static, "rain", "fp32")
    assert {fixed[f"trt_profile_{w}_shapes"] for w in ("min", "opt", "max")} == \
        {"image:2x3x32x48"}
