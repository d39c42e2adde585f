"""Convolution outputs padded with zero channels, for ONNX Runtime's fast int8 kernels.

On x86, ONNX Runtime runs a U8S8 QLinearConv through its symmetric-quantization
convolution kernels (MLAS ``ConvSym``) only when the layer has at least 16 output
channels and multiples of 4 on both sides; any other layer falls back to a generic
im2col + integer GEMM path. On the demo network every full-resolution layer has 12
channels and took the slow path: 0.86 ms per 3x3 layer at 256x256, four times the
time per multiply-accumulate of its 24-channel layers. With 16 channels the same layer
took 0.49 ms for 1.8x the multiply-accumulates.

The rewrite is exact: each padded convolution gets zero filters and zero biases for its
extra output channels, so those channels hold exact zeros; every layer that reads a
padded tensor gets zero weights for them. Zeros pass unchanged through the operators
allowed between the two (ReLU, addition of equally padded tensors, pooling, channel
concatenation), and an int8 quantizer that always keeps zero in an activation's range
gives them the same scale as before. Where a padded tensor would reach anything else
(a graph output, DepthToSpace, an operator that does not map zero to zero), the
convolutions feeding it are left unpadded.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: Operators whose output holds the input's channels in order and zeros where it has zeros.
_CHANNEL_PRESERVING = {"Relu", "LeakyRelu", "AveragePool", "MaxPool"}
#: Element-wise operators that keep zeros when every input is zero there.
_ELEMENTWISE = {"Add", "Sub", "Mul"}

#: A tensor's channels: for each stored channel, the original channel it holds (-1: padding).
Layout = tuple[int, ...]


def padded_channels(channels: int, minimum: int = 16, multiple: int = 4) -> int:
    """The channel count a layer of ``channels`` output channels is padded to."""
    return max(minimum, -(-channels // multiple) * multiple)


def pad_convolution_channels(
    model: onnx.ModelProto, minimum: int = 16, multiple: int = 4
) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with eligible Conv outputs padded; and how many were.

    Eligible: a 2-D Conv of one group with initializer weights (and bias) whose output
    channel count is not already ``padded_channels(count, minimum, multiple)``, and
    whose output reaches only convolutions through the operators named in the module
    docstring. ``model`` must hold its initializers in memory and have channel counts
    that shape inference can find.
    """
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    channels = _channel_counts(rewritten)
    padded = {}
    for node in graph.node:
        if _paddable(node, initializers):
            real = _out_channels(node, initializers)
            if padded_channels(real, minimum, multiple) != real:
                padded[node.name] = padded_channels(real, minimum, multiple)
    while True:
        layouts, blame = _propagate(graph, padded, initializers, channels)
        if not blame:
            break
        for name in blame:
            del padded[name]
    if not padded:
        return rewritten, 0
    replaced = set()
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        source = layouts.get(node.input[0])
        size = padded.get(node.name)
        if source is None and size is None:
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if source is not None:
            weight = _gather_input_channels(weight, source)
        if size is not None:
            weight = _pad_rows(weight, size)
        replaced.add(node.input[1])
        node.input[1] = _add_initializer(graph, weight, f"{node.name}.padded.weight")
        if size is not None and len(node.input) > 2 and node.input[2]:
            bias = _pad_rows(numpy_helper.to_array(initializers[node.input[2]]), size)
            replaced.add(node.input[2])
            node.input[2] = _add_initializer(graph, bias, f"{node.name}.padded.bias")
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used or t.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    # Intermediate shapes recorded before the rewrite no longer hold for padded tensors.
    del graph.value_info[:]
    return rewritten, len(padded)


def _paddable(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    if node.op_type != "Conv" or not node.name or node.input[1] not in initializers:
        return False
    if len(node.input) > 2 and node.input[2] and node.input[2] not in initializers:
        return False
    group = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
    return group == 1 and len(initializers[node.input[1]].dims) == 4


def _out_channels(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> int:
    return initializers[node.input[1]].dims[0]


def _channel_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Channel count (dimension 1) of every tensor whose count shape inference knows."""
    inferred = onnx.shape_inference.infer_shapes(model)
    counts = {}
    graph = inferred.graph
    for info in (*graph.input, *graph.value_info, *graph.output):
        dims = info.type.tensor_type.shape.dim
        if len(dims) >= 2 and dims[1].HasField("dim_value"):
            counts[info.name] = dims[1].dim_value
    return counts


def _propagate(
    graph: onnx.GraphProto,
    padded: dict[str, int],
    initializers: dict[str, onnx.TensorProto],
    channels: dict[str, int],
) -> tuple[dict[str, Layout], set[str]]:
    """Layouts of every padded tensor, and the padded convolutions that must be dropped.

    Each padded tensor also carries the convolutions its padding comes from, so that a
    tensor reaching an operator that cannot take it blames exactly those.
    """
    layouts: dict[str, Layout] = {}
    origins: dict[str, frozenset[str]] = {}
    blame: set[str] = set()

    def reject(names: Iterable[str]) -> None:
        for name in names:
            blame.update(origins.get(name, ()))

    for node in graph.node:
        inputs = [name for name in node.input if name and name not in initializers]
        carried = [name for name in inputs if name in layouts]
        if node.op_type == "Conv":
            if node.name in padded:
                size = padded[node.name]
                real = _out_channels(node, initializers)
                layouts[node.output[0]] = tuple(range(real)) + (-1,) * (size - real)
                origins[node.output[0]] = frozenset({node.name})
            if carried and (carried != [node.input[0]] or not _paddable(node, initializers)):
                reject(carried)
        elif not carried:
            continue
        elif node.op_type in _CHANNEL_PRESERVING and len(inputs) == 1:
            layouts[node.output[0]] = layouts[inputs[0]]
            origins[node.output[0]] = origins[inputs[0]]
        elif node.op_type in _ELEMENTWISE and len({layouts.get(n) for n in node.input}) == 1:
            layouts[node.output[0]] = layouts[node.input[0]]
            origins[node.output[0]] = frozenset().union(*(origins[n] for n in node.input))
        elif node.op_type == "Concat" and _axis(node) == 1 and all(
                name in layouts or name in channels for name in inputs):
            layout: list[int] = []
            offset = 0
            for name in inputs:
                part = layouts.get(name) or tuple(range(channels[name]))
                layout += [offset + c if c >= 0 else -1 for c in part]
                offset += sum(c >= 0 for c in part)
            layouts[node.output[0]] = tuple(layout)
            origins[node.output[0]] = frozenset().union(*(origins[n] for n in carried))
        else:
            reject(carried)
    reject(output.name for output in graph.output if output.name in layouts)
    return layouts, blame


def _axis(node: onnx.NodeProto) -> int:
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == "axis")


def _gather_input_channels(weight: np.ndarray, layout: Layout) -> np.ndarray:
    """``weight`` (out, in, kh, kw) reading a tensor stored in ``layout``."""
    index = np.array(layout)
    gathered = weight[:, np.maximum(index, 0)]
    gathered[:, index < 0] = 0
    return gathered


def _pad_rows(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` with zero rows appended along its first axis up to ``size``."""
    padding = np.zeros((size - array.shape[0], *array.shape[1:]), array.dtype)
    return np.concatenate([array, padding])


def _add_initializer(graph: onnx.GraphProto, array: np.ndarray, name: str) -> str:
    graph.initializer.append(numpy_helper.from_array(array, name))
    return name
