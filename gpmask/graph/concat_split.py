"""Convolutions over a channel concatenation rewritten as sums of convolutions (int8, CPU).

A convolution is linear in its input channels, so ``Conv(Concat(a, b), W) + bias`` is
``Conv(a, W_a) + bias + Conv(b, W_b)`` with ``W`` split along its input channels. In
ONNX Runtime's U8S8 graphs the concatenation is costly where it sits: its inputs come
from different layouts (the sub-pixel upsampling's DepthToSpace runs in NCHW, the
convolutions in NHWC), so it runs in NCHW as a requantizing QLinearConcat and the
concatenated tensor is transposed back to NHWC for the convolution that reads it (a
visible share of the demo network's int8 run in ``benchmarks/profile_layers.py``).
Split, each part goes to its own QLinearConv and the
partial sums meet in one QLinearAdd. Every int8 scheme uses it (for the TensorRT
``int8`` graph it also avoids an OpenVINO defect; see :mod:`gpmask.calibration.int8`).
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

from gpmask.graph.nodes import (
    attribute,
    channel_counts,
    drop_replaced_initializers,
    is_plain_convolution,
)


def split_concatenated_convolutions(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every eligible Concat + Conv pair split.

    Eligible: a Concat along channels (axis 1) read by exactly one node, a 2-D Conv of
    one group with initializer weights, and no graph output. ``model`` must hold its
    initializers in memory and have channel counts that shape inference can find.
    """
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    channels = channel_counts(rewritten)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {output.name for output in graph.output}
    split: dict[str, onnx.NodeProto] = {}  # concat output -> the conv reading it
    for node in graph.node:
        if node.op_type != "Concat" or attribute(node, "axis") != 1:
            continue
        reader = readers.get(node.output[0], [])
        if (len(reader) == 1 and node.output[0] not in outputs
                and reader[0].input[0] == node.output[0]
                and is_plain_convolution(reader[0], initializers)
                and all(name in channels for name in node.input)):
            split[node.output[0]] = reader[0]
    if not split:
        return rewritten
    concats = {node.output[0]: node for node in graph.node if node.output[0] in split}
    replaced, nodes = set(), []
    for node in graph.node:
        if node.output[0] in split:
            continue  # the Concat disappears; its conv is rewritten where it stands
        if node.op_type != "Conv" or node.input[0] not in split:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        replaced.add(node.input[1])
        parts, start = [], 0
        for index, source in enumerate(concats[node.input[0]].input):
            stop = start + channels[source]
            name = f"{node.name}.part{index}"
            inputs = [source, name + ".weight"]
            graph.initializer.append(numpy_helper.from_array(weight[:, start:stop], inputs[1]))
            if index == 0 and len(node.input) > 2 and node.input[2]:
                inputs.append(node.input[2])  # the bias is added once, by the first part
            part = helper.make_node("Conv", inputs, [name], name=name)
            part.attribute.extend(node.attribute)
            nodes.append(part)
            parts.append(name)
            start = stop
        total = parts[0]
        for index, part in enumerate(parts[1:], 1):
            last = index == len(parts) - 1
            out = node.output[0] if last else f"{node.name}.sum{index}"
            nodes.append(helper.make_node("Add", [total, part], [out],
                                          name=f"{node.name}.sum{index}"))
            total = out
    del graph.node[:]
    graph.node.extend(nodes)
    drop_replaced_initializers(graph, replaced)
    del graph.value_info[:]
    return rewritten

