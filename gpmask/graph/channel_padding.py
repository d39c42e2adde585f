"""Convolutions widened with zero channels, for ONNX Runtime's fast int8 kernels.

On x86, ONNX Runtime runs a U8S8 QLinearConv through its symmetric-quantization
convolution kernels (MLAS ``ConvSym``) only when the layer has at least 16 output
channels and multiples of 4 on both sides; any other layer falls back to a generic
im2col + integer GEMM path, several times slower per multiply-accumulate. On the demo
network every full-resolution layer has 12 channels, and the first and last layers 3,
so they took that path (``benchmarks/profile_layers.py`` shows it layer by layer);
widened to 16 channels they run faster despite the extra multiply-accumulates.

The rewrite is exact:

- a padded convolution gets zero filters and zero biases for its extra output
  channels, so those channels hold exact zeros; every convolution that reads a padded
  tensor gets zero weights for them. Zeros pass unchanged through the operators
  allowed in between (ReLU, pooling, addition of equally padded tensors, channel
  concatenation), and an int8 quantizer, which always keeps zero in an activation's
  range, gives such a tensor the same scale as before;
- where a padded tensor reaches anything else (an operator that does not keep zeros,
  an addition with an unpadded tensor), a Slice gives that reader the real channels;
  where the padding is not at the end (after a concatenation) or the tensor is a graph
  output, the convolutions it comes from are left unpadded;
- a convolution whose unpadded input has a channel count that is not a multiple of 4
  (an RGB image) reads it through a Pad that appends zero channels.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from gpmask.graph.nodes import (
    attribute,
    channel_counts,
    drop_replaced_initializers,
    is_plain_convolution,
)

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
) -> onnx.ModelProto:
    """A copy of ``model`` with its convolutions widened (each widened one reads the
    weights ``<name>.padded.weight``).

    Output channels: a 2-D Conv of one group with initializer weights (and bias) gets
    ``padded_channels(count, minimum, multiple)`` of them. Input channels: such a Conv
    reading an unpadded tensor whose channel count is not a multiple of ``multiple``
    reads it through a zero Pad. ``model`` must hold its initializers in memory and
    have channel counts that shape inference can find.
    """
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    channels = channel_counts(rewritten)
    padded = {}
    for node in graph.node:
        if is_plain_convolution(node, initializers):
            real = _out_channels(node, initializers)
            if padded_channels(real, minimum, multiple) != real:
                padded[node.name] = padded_channels(real, minimum, multiple)
    while True:
        layouts, sliced, blame = _propagate(graph, padded, initializers, channels)
        if not blame:
            break
        for name in blame:
            del padded[name]
    _insert_slices(graph, sliced, layouts)
    _pad_inputs(graph, initializers, layouts, channels, multiple)
    replaced = set()
    for node in graph.node:
        source = layouts.get(node.input[0]) if node.op_type == "Conv" else None
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
    drop_replaced_initializers(graph, replaced)
    # Intermediate shapes recorded before the rewrite no longer hold for padded tensors.
    del graph.value_info[:]
    return rewritten


def _out_channels(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> int:
    return initializers[node.input[1]].dims[0]


def _is_prefix(layout: Layout) -> bool:
    """True when the real channels come first, in order (a Slice recovers them)."""
    real = sum(c >= 0 for c in layout)
    return layout[:real] == tuple(range(real))


def _propagate(
    graph: onnx.GraphProto,
    padded: dict[str, int],
    initializers: dict[str, onnx.TensorProto],
    channels: dict[str, int],
) -> tuple[dict[str, Layout], dict[str, set[str]], set[str]]:
    """Layouts of the padded tensors; which readers of which tensors need a Slice
    (tensor -> reader names); and the padded convolutions that must be dropped.

    Each padded tensor also carries the convolutions its padding comes from, so that a
    tensor no Slice can fix blames exactly those.
    """
    layouts: dict[str, Layout] = {}
    origins: dict[str, frozenset[str]] = {}
    sliced: dict[str, set[str]] = {}
    blame: set[str] = set()

    def unpad(names: Iterable[str], reader: str) -> None:
        for name in names:
            if _is_prefix(layouts[name]):
                sliced.setdefault(name, set()).add(reader)
            else:
                blame.update(origins[name])

    for node in graph.node:
        inputs = [name for name in node.input if name and name not in initializers]
        carried = [name for name in inputs if name in layouts]
        if node.op_type == "Conv":
            if node.name in padded:
                size = padded[node.name]
                real = _out_channels(node, initializers)
                layouts[node.output[0]] = tuple(range(real)) + (-1,) * (size - real)
                origins[node.output[0]] = frozenset({node.name})
            plain = is_plain_convolution(node, initializers)
            if carried and (carried != [node.input[0]] or not plain):
                unpad(carried, node.name)
        elif not carried:
            continue
        elif node.op_type in _CHANNEL_PRESERVING and len(inputs) == 1:
            layouts[node.output[0]] = layouts[inputs[0]]
            origins[node.output[0]] = origins[inputs[0]]
        elif node.op_type in _ELEMENTWISE and len({layouts.get(n) for n in node.input}) == 1:
            layouts[node.output[0]] = layouts[node.input[0]]
            origins[node.output[0]] = frozenset().union(*(origins[n] for n in node.input))
        elif node.op_type == "Concat" and attribute(node, "axis") == 1 and all(
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
            unpad(carried, node.name)
    for output in graph.output:
        blame.update(origins.get(output.name, ()))
    return layouts, sliced, blame


def _pad_inputs(
    graph: onnx.GraphProto,
    initializers: dict[str, onnx.TensorProto],
    layouts: dict[str, Layout],
    channels: dict[str, int],
    multiple: int,
) -> None:
    """Give convolutions reading narrow unpadded tensors a zero-padded copy.

    The padded copy's layout is recorded in ``layouts`` under the copy's name, so the
    weights are gathered like those of any reader of a padded tensor.
    """
    pads: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        source = node.input[0] if node.op_type == "Conv" else None
        count = channels.get(source) if source else None
        if (source in layouts or count is None or count % multiple == 0
                or not is_plain_convolution(node, initializers)):
            nodes.append(node)
            continue
        if source not in pads:
            pads[source] = f"{source}.padded"
            size = -(-count // multiple) * multiple
            amounts = numpy_helper.from_array(
                np.array([0, 0, 0, 0, 0, size - count, 0, 0], np.int64), f"{source}.pads")
            graph.initializer.append(amounts)
            nodes.append(helper.make_node("Pad", [source, amounts.name], [pads[source]],
                                          name=f"{source}.pad", mode="constant"))
            layouts[pads[source]] = tuple(range(count)) + (-1,) * (size - count)
        node.input[0] = pads[source]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _insert_slices(graph: onnx.GraphProto, sliced: dict[str, set[str]],
                   layouts: dict[str, Layout]) -> None:
    """Put one Slice to the real channels in front of the readers that need it."""
    nodes, made = [], set()
    for node in graph.node:
        for index, name in enumerate(node.input):
            if node.name not in sliced.get(name, ()):
                continue
            real = f"{name}.real"
            if name not in made:
                made.add(name)
                bounds = [numpy_helper.from_array(np.array([v], np.int64), f"{real}.{key}")
                          for key, v in (("start", 0), ("end", sum(c >= 0 for c in layouts[name])),
                                         ("axis", 1))]
                graph.initializer.extend(bounds)
                nodes.append(helper.make_node("Slice", [name, *(b.name for b in bounds)],
                                              [real], name=f"{name}.slice"))
            node.input[index] = real
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


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
