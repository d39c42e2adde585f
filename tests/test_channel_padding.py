"""Zero-channel padding of narrow convolutions: same outputs in ONNX Runtime, unsafe paths left."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from gpmask.graph.channel_padding import pad_convolution_channels, padded_channels

RNG = np.random.default_rng(7)


def _conv(name: str, source: str, c_in: int, c_out: int, kernel: int = 3) -> tuple:
    weight = numpy_helper.from_array(
        RNG.normal(scale=(c_in * kernel * kernel) ** -0.5,
                   size=(c_out, c_in, kernel, kernel)).astype(np.float32), f"{name}.w")
    bias = numpy_helper.from_array(RNG.normal(size=c_out).astype(np.float32), f"{name}.b")
    node = helper.make_node("Conv", [source, weight.name, bias.name], [name], name=name,
                            kernel_shape=[kernel, kernel], pads=[kernel // 2] * 4)
    return node, [weight, bias]


def _model(nodes_and_weights: list[tuple], output: str, channels: int) -> onnx.ModelProto:
    nodes = [item for item, _ in nodes_and_weights]
    initializers = [w for _, weights in nodes_and_weights for w in weights]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, channels, None, None])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _u_net_level() -> onnx.ModelProto:
    """head -> residual block -> concat with a second branch -> 1x1 fuse -> 3-channel out."""
    return _model([
        _conv("head", "x", 3, 6),
        _conv("block.conv1", "head", 6, 6),
        (helper.make_node("Relu", ["block.conv1"], ["block.relu"]), []),
        _conv("block.conv2", "block.relu", 6, 6),
        (helper.make_node("Add", ["head", "block.conv2"], ["block"]), []),
        (helper.make_node("MaxPool", ["block"], ["pooled"], kernel_shape=[1, 1]), []),
        _conv("branch", "x", 3, 5),
        (helper.make_node("Concat", ["branch", "pooled"], ["cat"], axis=1), []),
        _conv("fuse", "cat", 11, 10, kernel=1),
        _conv("out", "fuse", 10, 3),
    ], "out", 3)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _out_channels(model: onnx.ModelProto) -> dict[str, int]:
    dims = {t.name: t.dims for t in model.graph.initializer}
    return {n.name: dims[n.input[1]][0] for n in model.graph.node if n.op_type == "Conv"}


def _in_channels(model: onnx.ModelProto) -> dict[str, int]:
    dims = {t.name: t.dims for t in model.graph.initializer}
    return {n.name: dims[n.input[1]][1] for n in model.graph.node if n.op_type == "Conv"}


@pytest.mark.parametrize(("channels", "padded"), [(3, 16), (12, 16), (16, 16), (18, 20), (24, 24)])
def test_padded_channel_counts(channels: int, padded: int) -> None:
    assert padded_channels(channels) == padded


def test_padding_keeps_the_outputs_and_widens_every_narrow_layer() -> None:
    model = _u_net_level()
    rewritten = pad_convolution_channels(model)
    onnx.checker.check_model(rewritten, full_check=True)
    # "out" is the graph output, so it keeps its 3 channels; the rest get 16, and the
    # two layers reading the 3-channel image read it through one zero Pad to 4.
    assert _out_channels(rewritten) == {"head": 16, "block.conv1": 16, "block.conv2": 16,
                                        "branch": 16, "fuse": 16, "out": 3}
    # fuse reads branch (5 of 16 stored) then block (6 of 16 stored).
    assert _in_channels(rewritten) == {"head": 4, "block.conv1": 16, "block.conv2": 16,
                                       "branch": 4, "fuse": 32, "out": 16}
    assert [n.op_type for n in rewritten.graph.node].count("Pad") == 1
    x = np.random.default_rng(1).normal(size=(1, 3, 9, 11)).astype(np.float32)
    np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=1e-5, atol=1e-5)
    assert _out_channels(model)["head"] == 6  # the input is untouched


def test_readers_that_would_not_keep_zeros_get_the_real_channels_through_a_slice() -> None:
    constant = numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32), "one")
    cases = {
        "sigmoid": helper.make_node("Sigmoid", ["head"], ["mid"]),
        "constant": helper.make_node("Add", ["head", "one"], ["mid"]),
        "unpadded": helper.make_node("Add", ["head", "x"], ["mid"]),  # x: the 3-channel input
    }
    for case, middle in cases.items():
        model = _model([_conv("head", "x", 3, 3), (middle, [constant]),
                        _conv("out", "mid", 3, 3)], "out", 3)
        rewritten = pad_convolution_channels(model, minimum=16, multiple=4)
        onnx.checker.check_model(rewritten, full_check=True)
        assert _out_channels(rewritten)["head"] == 16, case
        assert [n.op_type for n in rewritten.graph.node].count("Slice") == 1, case
        x = np.random.default_rng(2).normal(size=(1, 3, 5, 5)).astype(np.float32)
        np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=1e-5, atol=1e-5)


def test_padding_that_no_slice_can_remove_is_not_made() -> None:
    """Padding in the middle of a concatenation reaching a Sigmoid; padding at an output."""
    middle = _model([
        _conv("head", "x", 3, 6),
        _conv("wide", "x", 3, 16),
        (helper.make_node("Concat", ["head", "wide"], ["cat"], axis=1), []),
        (helper.make_node("Sigmoid", ["cat"], ["y"]), []),
    ], "y", 22)
    output = _model([
        _conv("head", "x", 3, 6),
        (helper.make_node("Relu", ["head"], ["y"]), []),
    ], "y", 6)
    for model in (middle, output):
        rewritten = pad_convolution_channels(model)
        assert _out_channels(rewritten)["head"] == 6
        assert "Slice" not in [n.op_type for n in rewritten.graph.node]
        x = np.random.default_rng(3).normal(size=(1, 3, 5, 5)).astype(np.float32)
        np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=1e-5, atol=1e-5)
