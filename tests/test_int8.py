"""INT8 calibration: Q/DQ structure, per-weather data, the budget loop, the cache, manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from gpmask.bundle import Bundle
from gpmask.calibration.budget import fit_budget
from gpmask.calibration.frame_sets import Frames, heldout_frames, synthetic_calibration_frames
from gpmask.calibration.int8 import Calibration
from gpmask.calibration.options import CalibrationOptions
from gpmask.calibration.pipeline import calibrate_bundle
from gpmask.calibration.quality import run_frames
from gpmask.cli import main
from gpmask.errors import GpmaskError
from gpmask.fileio import sha256_file
from gpmask.graph.fold import load_dense
from gpmask.graph.session import cpu_session
from gpmask.precision import precision
from tests.conftest import make_checkpoint

FAST = dict(synthetic=4, calibration_size=(32, 32), eval_size=(32, 32))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from gpmask.export import export_bundle

    root = tmp_path_factory.mktemp("int8") / "bundle"
    export_bundle(make_checkpoint(), root, verify=False, progress=False)
    return root


@pytest.fixture
def bundle_dir(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "bundle"))


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _psnr(restored: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of an int8 graph's output against fp32's (a noise frame is far from the
    calibration frames, so a few pixels clip: the mean, not the maximum, says whether the
    graph computes the network)."""
    return float(10 * np.log10(1 / np.mean((restored - reference) ** 2)))


def _load(bundle: Bundle, weather: str, precision: str) -> onnx.ModelProto:
    return onnx.load(bundle.graph_path(weather, precision))


def test_int8_graph_is_symmetric_qdq_with_per_channel_weights(bundle_dir: Path) -> None:
    entries = calibrate_bundle(bundle_dir, "int8", CalibrationOptions(max_psnr_drop=100, **FAST))
    bundle = Bundle.open(bundle_dir)
    for weather in [*bundle.weathers, "common"]:
        assert not entries[weather].budget.excluded
        path = bundle.graph_path(weather, "int8")
        onnx.checker.check_model(str(path))
        model = _load(bundle, weather, "int8")
        values = _initializers(model)
        producers = {o: n for n in model.graph.node for o in n.output}
        dequantize = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
        quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert quantize and dequantize
        for node in quantize + dequantize:
            zero_point = values[node.input[2]]
            assert zero_point.dtype == np.int8 and not zero_point.any()
        conv_weights = 0
        for node in dequantize:
            scale = values[node.input[1]]
            if node.input[0] in values:  # a weight: per output channel, with its axis
                weight = values[node.input[0]]
                if weight.ndim == 4:
                    conv_weights += 1
                    axis = next(a.i for a in node.attribute if a.name == "axis")
                    assert scale.shape == (weight.shape[axis],)
            else:  # an activation: one scale for the tensor
                assert scale.ndim == 0
                assert producers[node.input[0]].op_type == "QuantizeLinear"
        convs = sum(n.op_type in ("Conv", "ConvTranspose") for n in model.graph.node)
        assert conv_weights == convs
        # Biases stay float for TensorRT.
        assert all(v.dtype != np.int32 for v in values.values())
    session = ort.InferenceSession(str(bundle.graph_path("rain", "int8")))
    out = session.run(None, {"image": np.full((1, 3, 32, 32), 0.5, np.float32)})[0]
    assert out.shape == (1, 3, 32, 32) and np.isfinite(out).all()


def test_manifest_records_int8_graphs_and_shared_weights(bundle_dir: Path) -> None:
    calibrate_bundle(bundle_dir, "int8", CalibrationOptions(max_psnr_drop=100, **FAST))
    bundle = Bundle.open(bundle_dir)
    for weather in [*bundle.weathers, "common"]:
        record = bundle.manifest["graphs"][weather]["int8"]
        assert record["path"] == f"{weather}.int8.onnx"
        assert record["sha256"] == sha256_file(bundle_dir / record["path"])
    weights = {w["path"]: w for w in bundle.manifest["weights"]}
    assert weights["weights.int8.bin"]["sha256"] == sha256_file(bundle_dir / "weights.int8.bin")
    assert "weights.bin" in weights  # the fp32 weights are still listed
    locations = {
        e.value for t in onnx.load(bundle.graph_path("snow", "int8"), load_external_data=False)
        .graph.initializer for e in t.external_data if e.key == "location"
    }
    assert locations == {"weights.int8.bin"}
    bundle.verify()
    report = (bundle_dir / "reports" / "calibration.json").read_text()
    assert '"int8"' in report and '"snow"' in report


def test_cpu_scheme_has_uint8_activations_and_int32_bias(bundle_dir: Path) -> None:
    calibrate_bundle(bundle_dir, "int8-cpu", CalibrationOptions(max_psnr_drop=100, **FAST))
    model = _load(Bundle.open(bundle_dir), "rain", "int8-cpu")
    values = _initializers(model)
    dtypes = {values[n.input[2]].dtype for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert dtypes == {np.dtype(np.uint8)}
    weight_zero_points = [
        values[n.input[2]] for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in values
        and values[n.input[0]].dtype == np.int8
    ]
    assert weight_zero_points and all(not z.any() for z in weight_zero_points)
    assert any(v.dtype == np.int32 for v in values.values())


def test_cpu_scheme_quantizes_upsampling_as_subpixel_convolutions(bundle_dir: Path) -> None:
    """ONNX Runtime has no quantized ConvTranspose: int8-cpu has Conv + DepthToSpace instead."""
    calibrate_bundle(bundle_dir, "int8-cpu", CalibrationOptions(max_psnr_drop=100, **FAST))
    bundle = Bundle.open(bundle_dir)
    model = _load(bundle, "rain", "int8-cpu")
    fp32 = onnx.load(bundle.graph_path("rain"))
    deconvs = [n for n in fp32.graph.node if n.op_type == "ConvTranspose"]
    assert deconvs and not any(n.op_type == "ConvTranspose" for n in model.graph.node)
    producers = {out: n for n in model.graph.node for out in n.output}
    shuffles = [n for n in model.graph.node if n.op_type == "DepthToSpace"]
    assert len(shuffles) == len(deconvs)
    for shuffle in shuffles:  # DequantizeLinear -> DepthToSpace, fed by Q <- Conv <- DQ(weight)
        conv = producers[producers[producers[shuffle.input[0]].input[0]].input[0]]
        assert conv.op_type == "Conv"
        assert producers[conv.input[1]].op_type == "DequantizeLinear"
    session = onnxruntime.InferenceSession(str(bundle.graph_path("rain", "int8-cpu")))
    frame = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    reference = onnxruntime.InferenceSession(str(bundle.graph_path("rain")))
    restored = session.run(None, {"image": frame})[0]
    assert _psnr(restored, reference.run(None, {"image": frame})[0]) > 35


def test_cpu_scheme_pads_narrow_convolutions_to_16_channels(bundle_dir: Path) -> None:
    """ONNX Runtime's fast int8 convolution wants >= 16 output channels, multiples of 4."""
    calibrate_bundle(bundle_dir, "int8-cpu", CalibrationOptions(max_psnr_drop=100, **FAST))
    bundle = Bundle.open(bundle_dir)

    def output_channels(model: onnx.ModelProto) -> list[int]:
        """Each Conv's output channels, read through the weight's DequantizeLinear if any."""
        dims = {t.name: t.dims for t in model.graph.initializer}
        dequantized = {n.output[0]: n.input[0] for n in model.graph.node
                       if n.op_type == "DequantizeLinear"}
        return sorted(dims[dequantized.get(n.input[1], n.input[1])][0]
                      for n in model.graph.node if n.op_type == "Conv")

    fp32 = output_channels(load_dense(bundle.graph_path("rain")))
    model = _load(bundle, "rain", "int8-cpu")
    assert [c for c in fp32 if c % 4 or c < 16]
    assert not [c for c in output_channels(model) if c % 4 or c < 16]
    # The last layer's 16 channels are sliced back to the image's 3 before the residual add.
    assert [n.op_type for n in model.graph.node].count("Slice") == 1
    frame = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    restored = ort.InferenceSession(str(bundle.graph_path("rain", "int8-cpu"))).run(
        None, {"image": frame})[0]
    assert restored.shape == frame.shape


def test_conv_transpose_is_quantized_per_output_channel_and_runs(bundle_dir: Path) -> None:
    """ConvTranspose weights are (in, out, kH, kW): scales follow axis 1, as the bias does."""
    precision = "int8"
    calibrate_bundle(bundle_dir, precision, CalibrationOptions(max_psnr_drop=100, **FAST))
    bundle = Bundle.open(bundle_dir)
    model = _load(bundle, "rain", precision)
    values = _initializers(model)
    producers = {out: n for n in model.graph.node for out in n.output}
    deconvs = [n for n in model.graph.node if n.op_type == "ConvTranspose"]
    assert deconvs
    for node in deconvs:
        dequantize = producers[node.input[1]]
        assert dequantize.op_type == "DequantizeLinear"
        axis = next(a.i for a in dequantize.attribute if a.name == "axis")
        weight = values[dequantize.input[0]]
        assert axis == 1 and values[dequantize.input[1]].shape == (weight.shape[1],)
    session = onnxruntime.InferenceSession(str(bundle.graph_path("rain", precision)))
    frame = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    assert session.run(None, {"image": frame})[0].shape == frame.shape


def _input_scale(model: onnx.ModelProto) -> float:
    values = _initializers(model)
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear"
                and n.input[0] == "image")
    return float(values[node.input[1]])


def test_each_weather_is_calibrated_on_its_own_frames(bundle_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "frames"
    rng = np.random.default_rng(0)
    brightness = {"rain": 0.3, "raindrop": 0.3, "snow": 1.0}  # rain = raindrop data
    for weather, peak in brightness.items():
        (data / weather).mkdir(parents=True)
        for index in range(3):
            image = (rng.random((32, 32, 3)) * peak * 255).astype(np.uint8)
            cv2.imwrite(str(data / weather / f"{index}.png"), image)
    calibrate_bundle(bundle_dir, "int8", CalibrationOptions(
        data_dir=str(data), max_psnr_drop=100, calibration_size=(32, 32), eval_size=(32, 32)))
    bundle = Bundle.open(bundle_dir)
    scales = {w: _input_scale(_load(bundle, w, "int8")) for w in brightness}
    # The input's scale is its range over the weather's frames / 127.
    for weather in brightness:
        frames = [cv2.imread(str(p)) / 255.0 for p in sorted((data / weather).glob("*"))]
        assert scales[weather] == pytest.approx(max(f.max() for f in frames) / 127, rel=1e-3)
    assert scales["rain"] == pytest.approx(scales["raindrop"])
    assert scales["snow"] > 2 * scales["rain"]


def test_synthetic_calibration_frames_are_of_their_weather() -> None:
    weathers = ["rain", "raindrop", "snow"]
    rain = synthetic_calibration_frames("rain", weathers, 2, (32, 32))
    snow = synthetic_calibration_frames("snow", weathers, 2, (32, 32))
    assert [c.tobytes() for c in rain.clean] == [c.tobytes() for c in snow.clean]
    assert all(not np.array_equal(r, s) for r, s in zip(rain.degraded, snow.degraded, strict=True))


def test_tight_budget_keeps_more_layers_in_fp32_and_shrinks_the_drop(exported: Path,
                                                                     tmp_path: Path) -> None:
    """A near-perfect network's frames: clean = fp32 output + faint noise (45 dB).

    Against such references every quantization error shows as a PSNR drop, as it does
    for a trained network on its own data. The quantizer is given the fp32 graph with
    its weights as initializers (the compact graph folded), as the pipeline gives it.
    """
    bundle = Bundle.open(exported)
    graph = tmp_path / "rain.onnx"
    onnx.save(load_dense(bundle.graph_path("rain")), graph, save_as_external_data=True,
              location="rain.onnx.data")
    heldout = heldout_frames("rain", bundle.weathers, (32, 32))
    fp32 = run_frames(cpu_session(graph), heldout)
    rng = np.random.default_rng(1)
    clean = [np.clip(o, 0, 1) + rng.normal(0, 10 ** (-45 / 20), o.shape).astype(np.float32)
             for o in fp32]
    frames = Frames(heldout.degraded, [np.clip(c, 0, 1) for c in clean], "test")
    calibration = Calibration(graph, "test", synthetic_calibration_frames(
        "rain", bundle.weathers, 4, (32, 32)), "minmax", exported.parent / "cache")
    loose = fit_budget(calibration, precision("int8"), frames, fp32, max_drop=100)
    assert loose.fits and loose.excluded == [] and loose.scores.drop > 1.0
    tight = fit_budget(calibration, precision("int8"), frames, fp32, max_drop=0.5)
    assert tight.fits and tight.scores.drop <= 0.5
    assert 0 < len(tight.excluded) < tight.candidates
    assert tight.scores.drop < loose.scores.drop
    model = onnx.load_from_string(tight.graph)
    values = _initializers(model)
    kept = [n for n in model.graph.node if n.name in tight.excluded and n.op_type == "Conv"]
    quantized = [n for n in model.graph.node if n.name not in tight.excluded
                 and n.op_type == "Conv"]
    assert all(values[n.input[1]].dtype == np.float32 for n in kept)  # fp32 weights
    assert all(n.input[1] not in values for n in quantized)  # weights from a DQ node


def test_second_run_reuses_the_cached_calibration(bundle_dir: Path) -> None:
    options = CalibrationOptions(max_psnr_drop=100, **FAST)
    first = calibrate_bundle(bundle_dir, "int8", options)
    graph_hash = sha256_file(bundle_dir / "snow.int8.onnx")
    caches = sorted((bundle_dir / "calibration").iterdir())
    assert all(result.calibrated_now for result in first.values())
    second = calibrate_bundle(bundle_dir, "int8", options)
    assert not any(result.calibrated_now for result in second.values())
    assert sorted((bundle_dir / "calibration").iterdir()) == caches
    assert sha256_file(bundle_dir / "snow.int8.onnx") == graph_hash
    # The CPU scheme quantizes a graph with its upsampling rewritten: ranges of its own,
    # cached in turn; other settings compute new ones.
    cpu = calibrate_bundle(bundle_dir, "int8-cpu", options)
    assert all(result.calibrated_now for result in cpu.values())
    cpu = calibrate_bundle(bundle_dir, "int8-cpu", options)
    assert not any(result.calibrated_now for result in cpu.values())
    changed = calibrate_bundle(bundle_dir, "int8", CalibrationOptions(
        max_psnr_drop=100, synthetic=5, calibration_size=(32, 32), eval_size=(32, 32)))
    assert all(result.calibrated_now for result in changed.values())


def test_bad_input_is_refused(bundle_dir: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(GpmaskError, match="no such|not a gpmask bundle"):
        calibrate_bundle(tmp_path / "nothing", "int8")
    with pytest.raises(GpmaskError, match="--max-psnr-drop must be >= 0"):
        calibrate_bundle(bundle_dir, "int8", CalibrationOptions(max_psnr_drop=-1))
    with pytest.raises(GpmaskError, match="calibration folder .*rain does not exist"):
        calibrate_bundle(bundle_dir, "int8", CalibrationOptions(data_dir=str(tmp_path), **FAST))
    assert main(["calibrate", str(bundle_dir), "--precision", "int8", "--eval-size", "30x30"]) == 2
    assert "--eval-size 30x30: height and width must be multiples of 4" in capsys.readouterr().err
    assert "int8" not in Bundle.open(bundle_dir).manifest["graphs"]["rain"]


def test_openvino_scheme_has_subpixel_upsampling_no_padding_and_float_biases(
        bundle_dir: Path) -> None:
    """int8-openvino: uint8 activations, sub-pixel upsampling, no zero channels, float
    biases, and no Q/DQ between a convolution and its ReLU."""
    calibrate_bundle(bundle_dir, "int8-openvino", CalibrationOptions(max_psnr_drop=100, **FAST))
    bundle = Bundle.open(bundle_dir)
    model = _load(bundle, "rain", "int8-openvino")
    values = _initializers(model)
    ops = [n.op_type for n in model.graph.node]
    assert "ConvTranspose" not in ops and ops.count("DepthToSpace") == 2
    assert "Pad" not in ops and "Slice" not in ops and "Concat" not in ops
    zero_points = {values[n.input[2]].dtype for n in model.graph.node
                   if n.op_type == "QuantizeLinear"}
    assert zero_points == {np.dtype(np.uint8)}
    assert not any(v.dtype == np.int32 for v in values.values())
    producers = {out: n for n in model.graph.node for out in n.output}
    for relu in (n for n in model.graph.node if n.op_type == "Relu"):
        assert producers[relu.input[0]].op_type == "Conv"
    weights = [v for v in values.values() if v.dtype == np.int8 and v.ndim == 4]
    assert min(w.shape[0] for w in weights) < 16  # narrow layers stay narrow (4 channels)
    assert max(np.abs(w.astype(int)).max() for w in weights) <= 64  # 7-bit weights
    frame = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    restored = ort.InferenceSession(str(bundle.graph_path("rain", "int8-openvino"))).run(
        None, {"image": frame})[0]
    reference = ort.InferenceSession(str(bundle.graph_path("rain"))).run(
        None, {"image": frame})[0]
    assert _psnr(restored, reference) > 35
