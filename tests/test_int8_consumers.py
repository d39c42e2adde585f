"""The TensorRT-format int8 graph, read by two consumers: ONNX Runtime and OpenVINO.

TensorRT cannot run here, so the graph it will build from is cross-checked by two
other int8 engines: both must keep it within the quality budget, and its Q/DQ
placement must follow TensorRT's documented rules. Two OpenVINO behaviours found on
the way are kept as minimal graphs, each compared with the exact Q/DQ arithmetic
(ONNX Runtime with graph optimizations off: float convolutions on dequantized values):

- a Concat read by a convolution through signed (S8) Q/DQ gives wrong results in
  OpenVINO 2026.4 on any weight width on x86 CPUs without AMX (its int8 path shifts S8
  to U8 and loses the shift across the Concat; with AMX it multiplies S8 directly and
  is right); gpmask's int8 graph splits such convolutions, exactly, so the graph it
  ships is right on every CPU;
- on x86 CPUs without VNNI, OpenVINO's int8 convolution saturates the int16 sums of
  ``vpmaddubsw`` with 8-bit weights (documented by OpenVINO); gpmask's graphs use
  7-bit weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from gpmask.bundle import Bundle
from gpmask.calibration.frame_sets import heldout_frames
from gpmask.calibration.options import CalibrationOptions
from gpmask.calibration.pipeline import calibrate_bundle
from gpmask.calibration.quality import run_frames, score
from gpmask.graph.session import cpu_session
from gpmask.host import cpu_flags
from gpmask.metrics import psnr
from gpmask.runtime.backends.openvino import OpenVinoBackend
from tests.conftest import make_checkpoint

ov = pytest.importorskip("openvino", reason="OpenVINO publishes no wheel for this platform")

FAST = dict(synthetic=4, calibration_size=(32, 32), eval_size=(32, 32))
#: x86 CPUs whose int8 dot products accumulate in int32 directly (no int16 saturation).
VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> tuple[Path, dict]:
    from gpmask.export import export_bundle

    root = tmp_path_factory.mktemp("consumers") / "bundle"
    export_bundle(make_checkpoint(), root, verify=False, progress=False)
    entries = calibrate_bundle(root, "int8", CalibrationOptions(**FAST))
    return root, entries


def _exact_session(model: str | bytes) -> ort.InferenceSession:
    """ONNX Runtime with every graph optimization off: Q/DQ evaluated as written."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def test_int8_graph_within_budget_in_onnxruntime_and_openvino(calibrated) -> None:
    root, entries = calibrated
    bundle = Bundle.open(root)
    openvino = OpenVinoBackend(bundle, "int8")
    for weather in [*bundle.weathers, "common"]:
        budget = entries[weather].max_psnr_drop
        assert entries[weather].fits
        frames = heldout_frames(weather, bundle.weathers, FAST["eval_size"])
        fp32 = run_frames(cpu_session(bundle.graph_path(weather)), frames)
        graph = str(bundle.graph_path(weather, "int8"))
        exact = [np.clip(e, 0, 1) for e in run_frames(_exact_session(graph), frames)]
        consumers = {
            "onnxruntime": run_frames(cpu_session(graph), frames),
            "openvino": [np.clip(openvino.run(weather, frame.transpose(2, 0, 1)[None].copy())[0]
                                 .transpose(1, 2, 0), 0, 1) for frame in frames.degraded],
        }
        for name, outputs in consumers.items():
            scores = score(outputs, fp32, frames)
            assert scores.drop <= budget, f"{weather} on {name}: drop {scores.drop:.3f} dB"
            agreement = np.mean([psnr(o, e) for o, e in zip(outputs, exact, strict=True)])
            assert agreement > 45, f"{weather} on {name}: {agreement:.1f} dB from the Q/DQ math"


def test_int8_graph_follows_tensorrt_qdq_placement(calibrated) -> None:
    """Q/DQ on every input of a convolution and of an addition; int8 weights with
    per-channel scales on the output-channel axis (0 for Conv, 1 for ConvTranspose) and
    7-bit values; every Q read only by its DQ; no Q/DQ between a convolution and its
    ReLU (TensorRT would run the ReLU unfused); no Concat read by a convolution."""
    root, _ = calibrated
    bundle = Bundle.open(root)
    for weather in [*bundle.weathers, "common"]:
        model = onnx.load(bundle.graph_path(weather, "int8"))
        values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        producer = {out: node for node in model.graph.node for out in node.output}
        readers: dict[str, list] = {}
        for node in model.graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        source = producer.get
        for node in model.graph.node:
            if node.op_type in ("Conv", "ConvTranspose"):
                activation = source(node.input[0])
                assert activation.op_type == "DequantizeLinear"
                assert source(activation.input[0]).op_type == "QuantizeLinear"
                weight = source(node.input[1])
                assert weight.op_type == "DequantizeLinear" and weight.input[0] in values
                quantized = values[weight.input[0]]
                axis = next(a.i for a in weight.attribute if a.name == "axis")
                assert quantized.dtype == np.int8
                assert axis == (0 if node.op_type == "Conv" else 1)
                assert values[weight.input[1]].shape == (quantized.shape[axis],)
                assert np.abs(quantized.astype(int)).max() <= 64
                concat = source(source(activation.input[0]).input[0])
                assert concat is None or concat.op_type != "Concat"
            if node.op_type == "Add":
                assert all(source(name).op_type == "DequantizeLinear" for name in node.input)
            if node.op_type == "QuantizeLinear":
                assert {r.op_type for r in readers[node.output[0]]} == {"DequantizeLinear"}
            if node.op_type == "Relu":
                dequantize = source(node.input[0])
                if dequantize is not None and dequantize.op_type == "DequantizeLinear":
                    before = source(source(dequantize.input[0]).input[0])
                    assert before is None or before.op_type not in ("Conv", "ConvTranspose")


class _QdqGraph:
    """A small ONNX graph with explicit Q/DQ, built node by node."""

    def __init__(self, signed: bool) -> None:
        self.zero = np.int8(0) if signed else np.uint8(0)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(0)

    def _constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def qdq(self, name: str, scale: float) -> str:
        """``name`` quantized and dequantized with ``scale`` and zero point 0."""
        tag = f"{name}.qdq{len(self.nodes)}"
        inputs = [self._constant(f"{tag}.scale", np.float32(scale)),
                  self._constant(f"{tag}.zero", self.zero)]
        self.nodes.append(helper.make_node("QuantizeLinear", [name, *inputs], [f"{tag}.q"]))
        self.nodes.append(helper.make_node("DequantizeLinear", [f"{tag}.q", *inputs], [tag]))
        return tag

    def conv(self, name: str, channels_in: int, channels_out: int, weight_bits: int) -> str:
        """A 3x3 convolution with per-channel int8 weights of ``weight_bits`` bits."""
        tag = f"conv{len(self.nodes)}"
        weight = self.rng.normal(0, 0.3, (channels_out, channels_in, 3, 3))
        largest = 2 ** (weight_bits - 1) - 1
        scale = np.abs(weight).reshape(channels_out, -1).max(1) / largest
        quantized = np.round(weight / scale[:, None, None, None]).astype(np.int8)
        inputs = [self._constant(f"{tag}.w", quantized),
                  self._constant(f"{tag}.scale", scale.astype(np.float32)),
                  self._constant(f"{tag}.zero", np.zeros(channels_out, np.int8))]
        self.nodes.append(helper.make_node("DequantizeLinear", inputs, [f"{tag}.weight"], axis=0))
        self.nodes.append(helper.make_node("Conv", [name, f"{tag}.weight"], [tag], pads=[1] * 4))
        return tag

    def model(self, output: str, channels: int) -> bytes:
        graph = helper.make_graph(
            self.nodes, "repro",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, channels, 16, 16])],
            [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)],
            self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])\
            .SerializeToString()


def _has_signed_int8_tiles() -> bool:
    """Whether this CPU multiplies signed int8 by signed int8 directly (AMX ``tdpbssd``).

    Without it (AVX2 ``vpmaddubsw``, AVX-512/AVX VNNI ``vpdpbusd``: unsigned x signed
    only) OpenVINO shifts signed activations into the unsigned range, and that shift is
    what it loses across a Concat. Measured: wrong on Zen 3 (AVX2) and on Zen 4 (AVX-512
    VNNI, design notes section 4), right on a Xeon with AMX.
    """
    return "amx_int8" in (cpu_flags() or set())


def _shows_concat_defect() -> bool:
    """Whether the Concat defect is known to show on this CPU kind: x86 without AMX (both
    kinds measured). Elsewhere (ARM, no /proc/cpuinfo) the outcome was never measured,
    so the expectation is not strict there."""
    flags = cpu_flags() or set()
    return "avx2" in flags


def _openvino_error(model: bytes, frame: np.ndarray) -> tuple[float, float]:
    """Largest difference of OpenVINO's output from the exact Q/DQ arithmetic, and the
    largest output magnitude."""
    exact = _exact_session(model).run(None, {"x": frame})[0]
    compiled = ov.Core().compile_model(ov.Core().read_model(model, b""), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    return float(np.abs(compiled({0: frame})[0] - exact).max()), float(np.abs(exact).max())


@pytest.mark.parametrize("signed", [False, True], ids=["u8", "s8"])
def test_openvino_concat_read_by_a_quantized_convolution(signed: bool, request) -> None:
    """Concat(x, x) -> Q/DQ -> Conv, 7-bit weights: OpenVINO 2026.4 is wrong with S8."""
    if signed and not _has_signed_int8_tiles():
        request.applymarker(pytest.mark.xfail(strict=_shows_concat_defect(), reason=(
            "OpenVINO 2026.4 defect on CPUs without AMX: a Concat feeding a convolution "
            "through signed Q/DQ gives wrong output (max error ~1.3 on outputs of ~2.4); "
            "gpmask's int8 graph splits such convolutions (graph/concat_split.py), which "
            "test_int8_graph_within_budget_in_onnxruntime_and_openvino checks on every CPU")))
    graph = _QdqGraph(signed)
    joined = "joined"
    graph.nodes.append(helper.make_node("Concat", ["x", "x"], [joined], axis=1))
    output = graph.conv(graph.qdq(joined, 1 / 127), 16, 8, weight_bits=7)
    frame = np.random.default_rng(1).random((1, 8, 16, 16), dtype=np.float32)
    error, magnitude = _openvino_error(graph.model(output, 8), frame)
    assert error < 1e-3 * magnitude


@pytest.mark.parametrize("weight_bits", [7, 8])
def test_openvino_int8_convolution_with_full_range_activations(weight_bits: int,
                                                               request) -> None:
    """u8 activations up to 254 times weights up to 127: pairs of products reach 64516,
    beyond int16, on CPUs that multiply with vpmaddubsw (x86 without VNNI)."""
    flags = cpu_flags() or set()
    if weight_bits == 8 and "avx2" in flags and not flags & VNNI_FLAGS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "OpenVINO's int8 kernels on x86 without VNNI saturate int16 sums of u8*s8 "
            "pairs (its documented 'saturation issue'); gpmask quantizes weights to 7 bits")))
    graph = _QdqGraph(signed=False)
    output = graph.conv(graph.qdq("x", 1 / 127), 16, 16, weight_bits=weight_bits)
    frame = 2 * np.random.default_rng(1).random((1, 16, 16, 16), dtype=np.float32)
    error, magnitude = _openvino_error(graph.model(output, 16), frame)
    assert error < 1e-3 * magnitude


def test_seven_bit_weights_keep_the_cpu_schemes_exact_on_onnxruntime(calibrated, tmp_path):
    """ONNX Runtime's fused int8 kernels compute what the int8-cpu graph's Q/DQ says."""
    root, _ = calibrated
    copy = Path(shutil.copytree(root, tmp_path / "bundle"))
    calibrate_bundle(copy, "int8-cpu", CalibrationOptions(max_psnr_drop=100, **FAST))
    graph = str(Bundle.open(copy).graph_path("snow", "int8-cpu"))
    frame = np.random.default_rng(3).random((1, 3, 32, 32), dtype=np.float32)
    fused = cpu_session(graph).run(None, {"image": frame})[0]
    exact = _exact_session(graph).run(None, {"image": frame})[0]
    assert psnr(np.clip(fused, 0, 1), np.clip(exact, 0, 1)) > 50
