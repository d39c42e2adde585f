"""Convolutions over a concatenation split into sums: same outputs in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from gpmask.graph.concat_split import split_concatenated_convolutions

RNG = np.random.default_rng(11)


def _weights(name: str, c_out: int, c_in: int, kernel: int) -> list[onnx.TensorProto]:
    scale = (c_in * kernel * kernel) ** -0.5
    return [numpy_helper.from_array(
                RNG.normal(scale=scale, size=(c_out, c_in, kernel, kernel)).astype(np.float32),
                f"{name}.w"),
            numpy_helper.from_array(RNG.normal(size=c_out).astype(np.float32), f"{name}.b")]


def _model(extra_reader: bool = False) -> onnx.ModelProto:
    """x -> (a: 3->5, b: 3->6 channels) -> Concat -> 3x3 fuse (11 -> 7) -> y."""
    initializers = _weights("a", 5, 3, 1) + _weights("b", 6, 3, 1) + _weights("fuse", 7, 11, 3)
    nodes = [
        helper.make_node("Conv", ["x", "a.w", "a.b"], ["a"], name="a"),
        helper.make_node("Conv", ["x", "b.w", "b.b"], ["b"], name="b"),
        helper.make_node("Concat", ["a", "b"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "fuse.w", "fuse.b"], ["y"], name="fuse",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7, None, None])]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["cat"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def test_split_gives_the_same_output_with_no_concatenation() -> None:
    model = _model()
    rewritten = split_concatenated_convolutions(model)
    onnx.checker.check_model(rewritten, full_check=True)
    assert [n.op_type for n in rewritten.graph.node] == ["Conv", "Conv", "Conv", "Conv", "Add"]
    weights = {t.name: t.dims for t in rewritten.graph.initializer}
    assert weights["fuse.part0.weight"] == [7, 5, 3, 3]
    assert weights["fuse.part1.weight"] == [7, 6, 3, 3]
    assert "fuse.w" not in weights
    x = RNG.normal(size=(1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=1e-5, atol=1e-5)


def test_a_concatenation_read_elsewhere_is_kept() -> None:
    rewritten = split_concatenated_convolutions(_model(extra_reader=True))
    assert [n.op_type for n in rewritten.graph.node] == ["Conv", "Conv", "Concat", "Conv", "Relu"]
