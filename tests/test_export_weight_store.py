"""The shared external-data writer, on small hand-built graphs read back by stock tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from gpmask.bundle.weight_store import ALIGNMENT, write_shared_weights
from gpmask.errors import GpmaskError


def affine_graph(weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """y = x @ weight + bias, with both as initializers."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, weight.shape[1]])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def external_record(tensor: onnx.TensorProto) -> tuple[str, int, int]:
    record = {entry.key: entry.value for entry in tensor.external_data}
    return record["location"], int(record["offset"]), int(record["length"])


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "w": rng.normal(size=(5, 3)).astype(np.float32),
        "b1": rng.normal(size=3).astype(np.float32),
        "b2": rng.normal(size=3).astype(np.float32),
        "w2": rng.normal(size=(5, 3)).astype(np.float32),
    }


def test_identical_tensors_are_stored_once_and_read_back(tmp_path: Path, arrays) -> None:
    models = {
        "one": affine_graph(arrays["w"], arrays["b1"]),
        "two": affine_graph(arrays["w"], arrays["b2"]),  # same weight, other bias
        "three": affine_graph(arrays["w2"], arrays["b1"]),  # other weight, same bias as one
    }
    shared = write_shared_weights(models, tmp_path, "weights.bin")

    distinct = [arrays["w"], arrays["b1"], arrays["b2"], arrays["w2"]]
    assert shared.tensors_stored == 4 and shared.tensors_referenced == 6
    assert shared.bytes_referenced == 3 * (arrays["w"].nbytes + arrays["b1"].nbytes)
    padded = sum(-(-a.nbytes // ALIGNMENT) * ALIGNMENT for a in distinct)
    assert shared.bytes_stored == padded == (tmp_path / "weights.bin").stat().st_size

    records = {name: {t.name: external_record(t) for t in m.graph.initializer}
               for name, m in models.items()}
    assert records["one"]["w"] == records["two"]["w"] != records["three"]["w"]
    assert records["one"]["b"] == records["three"]["b"] != records["two"]["b"]
    assert {loc for r in records.values() for loc, _, _ in r.values()} == {"weights.bin"}
    assert all(offset % ALIGNMENT == 0 for r in records.values() for _, offset, _ in r.values())

    x = np.random.default_rng(2).normal(size=(2, 5)).astype(np.float32)
    for name, (weight, bias) in {"one": ("w", "b1"), "two": ("w", "b2"),
                                 "three": ("w2", "b1")}.items():
        path = tmp_path / f"{name}.onnx"
        onnx.save(models[name], str(path))
        onnx.checker.check_model(str(path), full_check=True)
        loaded = onnx.load(str(path), load_external_data=True)
        values = {t.name: numpy_helper.to_array(t) for t in loaded.graph.initializer}
        np.testing.assert_array_equal(values["w"], arrays[weight])
        np.testing.assert_array_equal(values["b"], arrays[bias])
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (y,) = session.run(None, {"x": x})
        np.testing.assert_allclose(y, x @ arrays[weight] + arrays[bias], rtol=1e-5, atol=1e-6)
    # graph files hold no tensor data of their own
    assert (tmp_path / "one.onnx").stat().st_size < arrays["w"].nbytes + 200


def test_typed_field_tensors_are_written_as_raw_bytes(tmp_path: Path) -> None:
    bias = np.array([1.5, -2.0, 0.25], np.float32)
    weight = np.eye(2, 3, dtype=np.float32)
    model = affine_graph(weight, bias)
    model.graph.initializer[1].CopyFrom(
        helper.make_tensor("b", TensorProto.FLOAT, [3], bias.tolist(), raw=False)
    )
    write_shared_weights({"typed": model}, tmp_path, "w.bin")
    onnx.save(model, str(tmp_path / "typed.onnx"))
    loaded = onnx.load(str(tmp_path / "typed.onnx"))
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[1]), bias)


def test_graph_with_external_data_not_loaded_is_refused(tmp_path: Path, arrays) -> None:
    model = affine_graph(arrays["w"], arrays["b1"])
    write_shared_weights({"first": model}, tmp_path, "weights.bin")
    before = (tmp_path / "weights.bin").read_bytes()
    with pytest.raises(GpmaskError, match=r"second: initializer 'w' already lives in external"):
        write_shared_weights({"second": model}, tmp_path, "weights.bin")
    assert (tmp_path / "weights.bin").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


def test_weight_store_and_summary_import_without_torch() -> None:
    """Calibration and ``gpmask inspect`` use these modules; neither may pull in torch."""
    code = ("import sys, gpmask.export, gpmask.bundle.weight_store, gpmask.bundle.summary; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


class InterpolatingNet(torch.nn.Module):
    """Pool, convolve, and upsample back with ``F.interpolate(scale_factor=2)``: the
    exported Resize reads a float ``scales`` initializer."""

    size_multiple = 2

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        coarse = self.conv(torch.nn.functional.avg_pool2d(image, 2))
        return image + torch.nn.functional.interpolate(coarse, scale_factor=2.0, mode="nearest")


def test_resize_scales_stay_in_the_graph_and_the_export_verifies(tmp_path: Path) -> None:
    """A network resizing by a scale factor exports: the scales are a shape operand that
    onnx.checker and ONNX Runtime read at load, so they are not moved to weights.bin."""
    from gpmask.bundle.weight_store import shape_operands
    from gpmask.export import export_bundle
    from gpmask.masking.checkpoint import MaskedCheckpoint

    torch.manual_seed(0)
    common = {k: v.numpy() for k, v in InterpolatingNet().state_dict().items()}
    weights = {"rain": {k: v + 0.1 for k, v in common.items()}}
    masks = {"rain": {k: np.ones(v.shape, bool) for k, v in common.items()}}
    checkpoint = MaskedCheckpoint.from_weights(
        "tests.test_export_weight_store:InterpolatingNet", {}, common, weights, masks)
    bundle = export_bundle(checkpoint, tmp_path / "bundle", layout="dense", progress=False)
    assert bundle.manifest["verification"]["status"] == "passed"  # checker + ORT vs torch
    graph = onnx.load(str(tmp_path / "bundle" / "rain.onnx"), load_external_data=False)
    resize = next(node for node in graph.graph.node if node.op_type == "Resize")
    inline = {t.name for t in graph.graph.initializer
              if t.data_location != TensorProto.EXTERNAL}
    scales = [name for name in resize.input[1:] if name]
    assert scales and set(scales) <= inline and set(scales) <= shape_operands(graph)
    weight = next(t for t in graph.graph.initializer if t.name == "conv.weight")
    assert weight.data_location == TensorProto.EXTERNAL


def test_resize_scales_read_through_the_fp16_converters_cast_stay_in_the_graph(
    tmp_path: Path,
) -> None:
    """ONNX Runtime's fp16 converter gives a Resize its scales through a Cast to float32 when
    the exporter described them in value_info, as torch.onnx does; the fp16 conversion folds
    that Cast into a constant, which stays in the graph where ONNX Runtime's shape
    inference reads it when it loads the graph."""
    from gpmask.graph.fp16 import convert_graph

    weight = np.random.default_rng(6).normal(size=(2, 2, 1, 1)).astype(np.float32)
    scales = np.array([1, 1, 2, 2], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]),
         helper.make_node("Resize", ["c", "", "scales"], ["y"], mode="nearest",
                          coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
        "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 12])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(scales, "scales")],
        value_info=[helper.make_tensor_value_info("scales", TensorProto.FLOAT, [4])],
    )
    model = convert_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    resize = next(node for node in model.graph.node if node.op_type == "Resize")
    assert resize.input[2] != "scales"  # the converter's Cast, folded
    assert resize.input[2] in {t.name for t in model.graph.initializer}
    write_shared_weights({"fp16": model}, tmp_path, "weights.bin")
    onnx.save(model, str(tmp_path / "fp16.onnx"))
    stored = {t.name: t.data_location for t in model.graph.initializer}
    assert stored == {"w": TensorProto.EXTERNAL, resize.input[2]: TensorProto.DEFAULT}
    x = np.random.default_rng(7).random((1, 2, 4, 6), dtype=np.float32)
    session = ort.InferenceSession(str(tmp_path / "fp16.onnx"),
                                   providers=["CPUExecutionProvider"])
    expected = np.einsum("oi,nihw->nohw", weight[:, :, 0, 0], x).repeat(2, 2).repeat(2, 3)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=2e-3, atol=2e-3)
