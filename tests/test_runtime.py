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
from gpmask.host import physical_cores, tensorrt_problem
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
    if tensorrt_problem():
        with pytest.raises(GpmaskError, match="^backend tensorrt: the tensorrt package cannot "
                                              "be imported"):
            Restorer(bundle_dir, backend="tensorrt")


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
