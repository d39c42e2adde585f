"""Restorer on OpenVINO: frames equal each graph's own output, compiled once, bf16 refused.

Expected frames are computed independently of the backend under test: the bundle's
graph run by a plain ``onnxruntime.InferenceSession`` on a numpy reflect-padded input
(``tests.test_runtime.direct_rgb``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.host import physical_cores
from gpmask.runtime import Restorer
from gpmask.runtime.backends import BACKENDS, choose
from gpmask.runtime.backends import openvino as openvino_backend
from gpmask.runtime.backends.openvino import (
    OPENVINO_DEFAULTS,
    CompileSettings,
    OpenVinoBackend,
    core,
)
from tests.conftest import make_checkpoint
from tests.test_runtime import as_uint8, assert_close_uint8, direct_rgb

pytest.importorskip("openvino", reason="OpenVINO publishes no wheel for this platform")

RNG = np.random.default_rng(2)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gpmask.export.exporter import export_bundle

    folder = tmp_path_factory.mktemp("openvino") / "bundle"
    export_bundle(make_checkpoint(), folder, verify=False, progress=False)
    return folder


@pytest.fixture(scope="module")
def restorer(bundle_dir: Path) -> Restorer:
    with Restorer(bundle_dir, backend="openvino") as loaded:
        yield loaded


@pytest.mark.parametrize("size", [(64, 64), (33, 47), (5, 3)])
def test_restored_frames_equal_graph_output(restorer, bundle_dir, size):
    frame = RNG.integers(0, 256, (*size, 3), dtype=np.uint8)
    assert restorer.backend_name == "openvino"
    restored = restorer.restore(frame, "rain")
    assert_close_uint8(restored, as_uint8(direct_rgb(bundle_dir, "rain", frame / 255)))


def test_float_frames_match_graph_output_closely(restorer, bundle_dir):
    frame = RNG.random((19, 30, 3), dtype=np.float32)
    restored = restorer.restore(frame, "snow")
    np.testing.assert_allclose(restored, direct_rgb(bundle_dir, "snow", frame), atol=1e-5)


def test_switching_per_frame_compiles_nothing_and_reuses_the_output(bundle_dir, monkeypatch):
    backend = OpenVinoBackend(Bundle.open(bundle_dir))
    assert backend.weathers == ["rain", "raindrop", "snow", "common"]
    assert set(backend.compiled) == set(backend.requests) == set(backend.weathers)

    def no_compiling(*args, **kwargs):
        raise AssertionError("compile_model called after loading")

    monkeypatch.setattr(core(), "compile_model", no_compiling)
    monkeypatch.setattr(core(), "read_model", no_compiling)
    batch = RNG.random((1, 3, 16, 20), dtype=np.float32)
    first = backend.run("rain", batch)
    pointer = first.ctypes.data
    outputs = {}
    for weather in ("snow", "common", "raindrop", "rain"):
        output = backend.run(weather, batch)
        assert output.ctypes.data == pointer  # every request writes the one bound array
        outputs[weather] = output.copy()
        request = backend.requests[weather]
        assert np.shares_memory(request.get_input_tensor().data, batch)  # no input copy
    assert np.abs(outputs["rain"] - outputs["snow"]).max() > 1e-3
    smaller = RNG.random((1, 3, 8, 8), dtype=np.float32)
    assert backend.run("rain", smaller).shape == (1, 3, 8, 8)  # a new size rebinds


def test_switching_releases_the_previous_weathers_activation_memory(bundle_dir, monkeypatch):
    backend = OpenVinoBackend(Bundle.open(bundle_dir))
    released = []
    for weather, model in backend.compiled.items():
        monkeypatch.setattr(model, "release_memory", lambda w=weather: released.append(w))
    batch = RNG.random((1, 3, 16, 16), dtype=np.float32)
    for weather in ("rain", "rain", "snow", "snow", "common", "rain"):
        backend.run(weather, batch)
    assert released == ["rain", "snow", "common"]
    keeping = OpenVinoBackend(Bundle.open(bundle_dir), settings=CompileSettings(
        release_on_switch=False), weathers=["rain", "snow"])
    for model in keeping.compiled.values():
        monkeypatch.setattr(model, "release_memory", lambda: released.append("kept"))
    keeping.run("rain", batch)
    keeping.run("snow", batch)
    assert "kept" not in released


def test_compile_settings_reach_the_compiled_models(bundle_dir):
    backend = OpenVinoBackend(Bundle.open(bundle_dir), weathers=["rain"])
    compiled = backend.compiled["rain"]
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    assert backend.inference_precision == "f32"
    assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("LATENCY")
    assert compiled.get_property("INFERENCE_NUM_THREADS") == physical_cores()
    assert CompileSettings().config("bf16")["INFERENCE_PRECISION_HINT"] == "bf16"
    assert OPENVINO_DEFAULTS.config("fp32") == {}


def test_bf16_is_refused_on_a_cpu_without_it(bundle_dir, monkeypatch):
    monkeypatch.setattr(openvino_backend, "cpu_capabilities", lambda: ["FP32", "INT8"])
    with pytest.raises(GpmaskError, match="^backend openvino: this CPU has no bfloat16 "
                                          r"arithmetic \(OpenVINO reports FP32, INT8; bf16 "
                                          "needs AVX-512 BF16 or AMX\\)$"):
        Restorer(bundle_dir, backend="openvino", precision="bf16")
    with pytest.raises(GpmaskError, match="openvino: this CPU has no bfloat16"):
        Restorer(bundle_dir, backend="auto", precision="bf16")


def test_bf16_compiles_the_fp32_graphs_with_the_bf16_hint(bundle_dir, monkeypatch):
    """Where the CPU has bfloat16 (faked here if it has not), bf16 is the fp32 graph
    compiled with INFERENCE_PRECISION_HINT bf16; no bf16 file is read."""
    real = openvino_backend.cpu_capabilities()
    monkeypatch.setattr(openvino_backend, "cpu_capabilities", lambda: [*real, "BF16"])
    configs = []
    compile_model = core().compile_model

    def spy(model, device, config):
        configs.append(dict(config))
        return compile_model(model, device, config)

    monkeypatch.setattr(core(), "compile_model", spy)
    backend = OpenVinoBackend(Bundle.open(bundle_dir), "bf16")
    assert [c["INFERENCE_PRECISION_HINT"] for c in configs] == ["bf16"] * 4
    frame = RNG.random((1, 3, 32, 32), dtype=np.float32)
    restored = backend.run("rain", frame)
    reference = ort.InferenceSession(str(Bundle.open(bundle_dir).graph_path("rain"))).run(
        None, {"image": frame})[0]
    error = np.abs(restored - reference).max()
    if "BF16" in real:  # bfloat16 has 8 bits of mantissa: close, not equal
        assert backend.inference_precision == "bf16" and 1e-6 < error < 0.05
    else:  # OpenVINO runs float32 where the CPU has no bfloat16
        assert backend.inference_precision == "f32" and error < 1e-5


def test_bf16_is_refused_on_other_backends_with_the_reason(bundle_dir):
    for backend in ("onnxruntime", "onnxruntime-cpu"):
        with pytest.raises(GpmaskError, match="bf16 has no graphs of its own; only OpenVINO "
                                              "computes it"):
            Restorer(bundle_dir, backend=backend, precision="bf16")


def test_auto_picks_openvino_without_a_gpu_and_says_why(bundle_dir, monkeypatch):
    from gpmask.runtime.backends import onnxruntime as ort_backend

    bundle = Bundle.open(bundle_dir)

    def backend(name: str, precision: str = "fp32") -> str:
        return choose(bundle, name, precision, 0).spec.name

    monkeypatch.setattr(ort_backend, "available_providers", lambda: ["cpu"])
    choice = choose(bundle, "auto", "fp32", 0)
    assert choice.spec.name == "openvino"
    assert "onnxruntime-cuda: this ONNX Runtime has no CUDAExecutionProvider" in choice.reason
    assert backend("onnxruntime") == "onnxruntime-cpu"
    # onnxruntime-gpu installed, but no GPU the driver reports: still the CPU
    monkeypatch.setattr(ort_backend, "available_providers", lambda: ["cuda", "cpu"])
    monkeypatch.setattr(ort_backend, "gpu_problem", lambda device: "no NVIDIA GPU visible")
    assert backend("auto") == "openvino"
    assert backend("onnxruntime") == "onnxruntime-cpu"
    monkeypatch.setattr(ort_backend, "gpu_problem", lambda device: None)
    # listed and a GPU visible, but the provider cannot start (a missing cuDNN, say)
    monkeypatch.setattr(ort_backend, "provider_start",
                        lambda kind, device: "ONNX Runtime could not start its "
                                             "CUDAExecutionProvider (libcudnn.so.9: not found)")
    choice = choose(bundle, "auto", "fp32", 0)
    assert choice.spec.name == "openvino"
    assert "onnxruntime-cuda: ONNX Runtime could not start its CUDAExecutionProvider " \
           "(libcudnn.so.9: not found)" in choice.reason
    monkeypatch.setattr(ort_backend, "provider_start", lambda kind, device: None)
    assert backend("auto") == "onnxruntime-cuda"
    if openvino_backend.precision_refusal("bf16") is None:
        assert backend("auto", "bf16") == "openvino"
    else:  # every backend says why not, OpenVINO that the CPU lacks bfloat16
        with pytest.raises(GpmaskError, match="openvino: this CPU has no bfloat16 arithmetic"):
            backend("auto", "bf16")
    monkeypatch.setattr(ort_backend, "available_providers", lambda: ["cpu"])
    monkeypatch.setattr(openvino_backend, "openvino_available", lambda: False)
    assert backend("auto") == "onnxruntime-cpu"
    with pytest.raises(GpmaskError, match=r"^backend openvino: not installed \(pip install "
                                          r"openvino\)$"):
        choose(bundle, "openvino", "fp32", 0)
    assert "openvino" in BACKENDS


@pytest.mark.parametrize("precision", ["int8-cpu", "int8-openvino"])
def test_cpu_int8_graphs_run_close_to_fp32(bundle_dir, tmp_path, precision):
    from gpmask.calibration.options import CalibrationOptions
    from gpmask.calibration.pipeline import calibrate_bundle

    copy = Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))
    calibrate_bundle(copy, precision, CalibrationOptions(
        max_psnr_drop=100, synthetic=4, calibration_size=(32, 32), eval_size=(32, 32)))
    with Restorer(copy, backend="openvino", precision=precision) as quantized:
        frame = RNG.random((32, 32, 3), dtype=np.float32)
        restored = quantized.restore(frame, "rain")
    reference = direct_rgb(copy, "rain", frame)
    assert restored.shape == frame.shape
    assert np.abs(restored - reference).max() < 0.1


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_compact_and_dense_bundles_give_equal_outputs(bundle_dir, tmp_path, precision):
    """A compact graph reaches OpenVINO with its weight rebuild folded: the compiled model
    runs no rebuild operator, and its outputs are the dense bundle's, element for element."""
    from gpmask.calibration.options import CalibrationOptions
    from gpmask.calibration.pipeline import calibrate_bundle
    from gpmask.export.exporter import export_bundle

    dense = export_bundle(make_checkpoint(), tmp_path / "dense", verify=False, progress=False,
                          layout="dense").root
    compact = Path(shutil.copytree(bundle_dir, tmp_path / "compact"))
    assert Bundle.open(compact).graph("rain").layout == "compact"
    if precision != "fp32":
        options = CalibrationOptions(synthetic=2, calibration_size=(32, 32), eval_size=(32, 32))
        for root in (compact, dense):
            calibrate_bundle(root, precision, options)
        assert Bundle.open(compact).graph("rain", precision).layout == "compact"
    frame = RNG.random((1, 3, 24, 40), dtype=np.float32)
    loaded = [OpenVinoBackend(Bundle.open(root), precision) for root in (compact, dense)]
    for weather in ("rain", "snow", "common"):
        outputs = [backend.run(weather, frame).copy() for backend in loaded]
        np.testing.assert_array_equal(outputs[0], outputs[1])
    rebuild = {"ScatterElementsUpdate", "CumSum", "Select", "Gather", "Split"}
    ops = {op.get_rt_info()["layerType"].astype(str) for op in
           loaded[0].compiled["rain"].get_runtime_model().get_ordered_ops()}
    assert "Convolution" in ops
    assert not rebuild & ops, rebuild & ops


def test_tampered_graph_is_refused_before_openvino_reads_it(bundle_dir, tmp_path):
    copy = Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))
    weights = copy / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(GpmaskError, match="weights.bin does not match its manifest sha256"):
        Restorer(copy, backend="openvino")


def test_unknown_weather_and_missing_precision_are_refused(bundle_dir):
    with pytest.raises(GpmaskError, match="unknown weather 'hail'"):
        OpenVinoBackend(Bundle.open(bundle_dir), weathers=["hail"])
    with pytest.raises(GpmaskError, match="has no int8 graphs"):
        OpenVinoBackend(Bundle.open(bundle_dir), "int8")


def test_openvino_runtime_imports_no_torch(bundle_dir):
    script = (
        "import sys, numpy as np\n"
        "from gpmask.runtime import Restorer\n"
        f"r = Restorer({str(bundle_dir)!r}, backend='openvino')\n"
        "r.restore(np.zeros((9, 9, 3), np.uint8), 'rain')\n"
        "print('backend', r.backend_name)\n"
        "heavy = [m for m in ('torch', 'gpmask.masking', 'gpmask.model', 'gpmask.export')"
        " if m in sys.modules]\n"
        "print('imported:', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert "backend openvino" in result.stdout and "imported: []" in result.stdout
