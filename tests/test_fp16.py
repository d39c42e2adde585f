"""FP16 graphs: dtype layout, fp32 islands, accuracy against fp32, shared fp16 weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from gpmask.bundle import Bundle
from gpmask.calibration.options import CalibrationOptions
from gpmask.calibration.pipeline import calibrate_bundle
from gpmask.cli import main
from gpmask.fileio import sha256_file
from gpmask.graph.fold import fold_rebuild
from gpmask.graph.fp16 import convert_graph
from tests.conftest import make_checkpoint

SMALL = CalibrationOptions(eval_size=(32, 32))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from gpmask.export import export_bundle

    root = tmp_path_factory.mktemp("fp16") / "bundle"
    export_bundle(make_checkpoint(), root, verify=False, progress=False)
    return root


@pytest.fixture
def bundle_dir(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "bundle"))


def _io_types(model: onnx.ModelProto) -> set[int]:
    return {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}


def test_fp16_graphs_keep_float32_io_and_match_fp32(bundle_dir: Path) -> None:
    entries = calibrate_bundle(bundle_dir, "fp16", SMALL)
    bundle = Bundle.open(bundle_dir)
    frame = np.random.default_rng(0).random((1, 3, 48, 64), dtype=np.float32)
    for weather in [*bundle.weathers, "common"]:
        path = bundle.graph_path(weather, "fp16")
        onnx.checker.check_model(str(path))
        model = fold_rebuild(onnx.load(path))  # a compact graph's weights as initializers
        assert _io_types(model) == {TensorProto.FLOAT}
        weights = [t for t in model.graph.initializer if len(t.dims) == 4]
        assert weights and all(t.data_type == TensorProto.FLOAT16 for t in weights)
        fp32 = ort.InferenceSession(str(bundle.graph_path(weather))).run(None, {"image": frame})
        fp16 = ort.InferenceSession(str(path)).run(None, {"image": frame})
        assert fp16[0].dtype == np.float32
        assert np.abs(fp16[0] - fp32[0]).max() < 5e-3
        assert abs(entries[weather].scores.drop) < 0.05
        record = bundle.manifest["graphs"][weather]["fp16"]
        assert record["sha256"] == sha256_file(bundle_dir / record["path"])
    bundle.verify()


def test_fp16_weights_are_shared_and_half_size(bundle_dir: Path) -> None:
    calibrate_bundle(bundle_dir, "fp16", SMALL)
    bundle = Bundle.open(bundle_dir)
    sizes = {w["path"]: w["bytes"] for w in bundle.manifest["weights"]}
    # Each distinct tensor once, in half the bytes (up to alignment padding).
    assert sizes["weights.fp16.bin"] == pytest.approx(sizes["weights.bin"] / 2, rel=0.05)
    for weather in [*bundle.weathers, "common"]:
        locations = {
            e.value for t in onnx.load(bundle.graph_path(weather, "fp16"),
                                       load_external_data=False).graph.initializer
            for e in t.external_data if e.key == "location"
        }
        assert locations == {"weights.fp16.bin"}


def test_fp16_io_option_makes_half_inputs(bundle_dir: Path) -> None:
    assert main(["calibrate", str(bundle_dir), "--precision", "fp16", "--fp16-io",
                 "--eval-size", "32x32"]) == 0
    path = Bundle.open(bundle_dir).graph_path("snow", "fp16")
    assert _io_types(onnx.load(path)) == {TensorProto.FLOAT16}
    out = ort.InferenceSession(str(path)).run(None, {"image": np.zeros((1, 3, 32, 32), np.float16)})
    assert out[0].dtype == np.float16
    assert "fp16" in (bundle_dir / "reports" / "calibration.md").read_text()


def test_sensitive_ops_stay_float32() -> None:
    """A reduction is fed through a Cast to float32 and computed in fp32."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
    scale = numpy_helper.from_array(np.full((1, 4), 2.0, np.float32), "scale")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["doubled"]),
         helper.make_node("Mul", ["doubled", "doubled"], ["squared"]),
         helper.make_node("ReduceMean", ["squared"], ["y"], axes=[1], keepdims=1)],
        "g", [x], [y], [scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    converted = convert_graph(model)
    reduce_input = next(n for n in converted.graph.node if n.op_type == "ReduceMean").input[0]
    cast = next(n for n in converted.graph.node if reduce_input in n.output)
    assert cast.op_type == "Cast" and cast.attribute[0].i == TensorProto.FLOAT
    value = np.full((1, 4), 60.0, np.float32)  # (2 * 60) ** 2 = 14400
    result = ort.InferenceSession(converted.SerializeToString()).run(None, {"x": value})[0]
    assert result[0, 0] == pytest.approx(14400.0, rel=1e-3)


def test_fp16_graphs_of_the_papers_network_are_stored_compact(tmp_path: Path) -> None:
    """The converter casts constants shared by fp32 and fp16 ops (GELU's square root of two)
    with a node of its own; folded, the fp16 graphs compact like any other and match the
    dense fp32 graph's outputs closely."""
    from gpmask.export import export_bundle

    checkpoint = make_checkpoint(arch=("ggpm-unet", {"base_channels": 4, "num_blocks": 1}))
    root = export_bundle(checkpoint, tmp_path / "bundle", verify=False, progress=False).root
    calibrate_bundle(root, "fp16", SMALL)
    bundle = Bundle.open(root)
    assert bundle.graph("rain", "fp16").layout == "compact"
    x = np.random.default_rng(0).random((1, 3, 32, 48), dtype=np.float32)
    outputs = [ort.InferenceSession(str(bundle.graph_path("rain", p)),
                                    providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
               for p in ("fp32", "fp16")]
    assert np.abs(outputs[0] - outputs[1]).max() < 0.02
