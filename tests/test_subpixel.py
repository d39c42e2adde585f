"""Sub-pixel rewrite of upsampling ConvTranspose: same outputs in ONNX Runtime, others untouched."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from gpmask.graph.subpixel import subpixel_upsampling


def _deconv_model(kernel: int, stride: int, pad: int, output_padding: int, bias: bool,
                  channels: tuple[int, int] = (5, 3)) -> onnx.ModelProto:
    rng = np.random.default_rng(kernel * 10 + stride)
    c_in, c_out = channels
    initializers = [numpy_helper.from_array(
        rng.normal(size=(c_in, c_out, kernel, kernel)).astype(np.float32), "w")]
    if bias:
        initializers.append(numpy_helper.from_array(rng.normal(size=c_out).astype(np.float32), "b"))
    node = helper.make_node(
        "ConvTranspose", ["x", "w", *(["b"] if bias else [])], ["y"], name="up",
        kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4,
        output_padding=[output_padding] * 2,
    )
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, 7, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, None, None])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize(
    ("kernel", "stride", "pad", "output_padding", "bias"),
    [(4, 2, 1, 0, True), (3, 2, 1, 1, False), (5, 3, 1, 0, True), (2, 2, 0, 0, True)],
)
def test_rewrite_gives_the_transposed_convolution_s_output(
    kernel: int, stride: int, pad: int, output_padding: int, bias: bool
) -> None:
    model = _deconv_model(kernel, stride, pad, output_padding, bias)
    rewritten = subpixel_upsampling(model)
    onnx.checker.check_model(rewritten, full_check=True)
    assert [n.op_type for n in rewritten.graph.node] == ["Conv", "DepthToSpace"]
    assert {t.name for t in rewritten.graph.initializer}.isdisjoint({"w", "b"})
    x = np.random.default_rng(1).normal(size=(1, 5, 7, 9)).astype(np.float32)
    expected = _run(model, x)
    assert expected.shape == (1, 3, 7 * stride, 9 * stride)
    np.testing.assert_allclose(_run(rewritten, x), expected, atol=1e-5)
    assert [n.op_type for n in model.graph.node] == ["ConvTranspose"]  # the input is untouched


def test_transposed_convolutions_that_do_not_scale_exactly_are_left_alone() -> None:
    model = _deconv_model(3, 2, 1, 0, True)  # output 2H-1: no sub-pixel form
    rewritten = subpixel_upsampling(model)
    assert rewritten.SerializeToString() == model.SerializeToString()
