"""Upsampling transposed convolutions rewritten as convolution + DepthToSpace, for int8 on the CPU.

ONNX Runtime's CPU kernels have no quantized ConvTranspose: in a U8S8 graph each one stays
in fp32 between a DequantizeLinear and a QuantizeLinear (the upsampling layers then
dominate a profile of the int8 run, ``benchmarks/profile_layers.py``). A transposed
convolution whose output is exactly ``stride`` times its input is the same map as an
ordinary convolution with ``stride**2`` times the output channels followed by DepthToSpace
("sub-pixel convolution"): output pixel ``s*m + a`` only ever sees input pixels ``m + d``
through kernel tap ``a + pad - s*d``. As a Conv it is quantized into a QLinearConv like
every other layer. The ``int8-cpu`` and ``int8-openvino`` schemes use it (OpenVINO too
runs a quantized ConvTranspose in float32 on x86): in fp32 the convolution form does more
multiply-accumulates (2.25x for kernel 4, stride 2) and was no faster, and TensorRT
quantizes deconvolutions itself.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from gpmask.graph.nodes import drop_replaced_initializers


def subpixel_upsampling(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every eligible ConvTranspose rewritten (each becomes the
    nodes ``<name>.subpixel.conv`` and ``<name>.subpixel.shuffle``).

    Eligible: 2-D, one group, no dilation, explicit symmetric pads, weights (and bias)
    given as initializers, and an output exactly ``stride`` times the input in both
    directions (``kernel - 2*pad - stride + output_padding == 0``). Others are left as
    they are. ``model`` must hold its initializers in memory.
    """
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    nodes, replaced = [], set()
    for node in graph.node:
        plan = _plan(node, initializers) if node.op_type == "ConvTranspose" else None
        if plan is None:
            nodes.append(node)
            continue
        weight, bias, stride, pad = plan
        replaced.update(node.input[1:])
        kernel, reach = _subpixel_kernel(weight, stride, pad)
        name = node.name or node.output[0]
        inputs = [node.input[0], f"{name}.subpixel.weight"]
        graph.initializer.append(numpy_helper.from_array(kernel, inputs[1]))
        if bias is not None:
            inputs.append(f"{name}.subpixel.bias")
            graph.initializer.append(numpy_helper.from_array(
                np.repeat(bias, stride * stride), inputs[2]))
        phases = f"{name}.subpixel.phases"
        nodes.append(helper.make_node(
            "Conv", inputs, [phases], name=f"{name}.subpixel.conv",
            kernel_shape=list(kernel.shape[2:]), pads=[reach] * 4,
        ))
        nodes.append(helper.make_node(
            "DepthToSpace", [phases], [node.output[0]], name=f"{name}.subpixel.shuffle",
            blocksize=stride, mode="CRD",
        ))
    del graph.node[:]
    graph.node.extend(nodes)
    drop_replaced_initializers(graph, replaced)
    return rewritten


def _plan(
    node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]
) -> tuple[np.ndarray, np.ndarray | None, int, int] | None:
    """``(weight, bias, stride, pad)`` when ``node`` can be rewritten, else None."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.input[1] not in initializers or (
        len(node.input) > 2 and node.input[2] and node.input[2] not in initializers
    ):
        return None
    weight = numpy_helper.to_array(initializers[node.input[1]])
    if weight.ndim != 4 or attributes.get("group", 1) != 1 or "output_shape" in attributes:
        return None
    if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    if any(d != 1 for d in attributes.get("dilations", [1, 1])):
        return None
    strides = list(attributes.get("strides", [1, 1]))
    pads = list(attributes.get("pads", [0, 0, 0, 0]))
    extra = list(attributes.get("output_padding", [0, 0]))
    stride, pad = strides[0], pads[0]
    if strides != [stride] * 2 or pads != [pad] * 4 or stride < 2:
        return None
    if any(k - 2 * pad - stride + e != 0 for k, e in zip(weight.shape[2:], extra, strict=True)):
        return None
    bias = (numpy_helper.to_array(initializers[node.input[2]])
            if len(node.input) > 2 and node.input[2] else None)
    return weight, bias, stride, pad


def _subpixel_kernel(weight: np.ndarray, stride: int, pad: int) -> tuple[np.ndarray, int]:
    """The convolution kernel (out*stride^2, in, 2r+1, 2r+1) and its reach r.

    Output channel ``c*stride^2 + a*stride + b`` (DepthToSpace's CRD order) holds the
    phase ``(a, b)`` of ConvTranspose output channel ``c``; at input offset ``d`` the
    phase ``a`` uses tap ``a + pad - stride*d`` of the transposed kernel.
    """
    channels_in, channels_out, height, width = weight.shape
    row_taps, column_taps = _taps(height, stride, pad), _taps(width, stride, pad)
    reach = max(abs(d) for _, d, _ in row_taps + column_taps)
    kernel = np.zeros(
        (channels_out * stride * stride, channels_in, 2 * reach + 1, 2 * reach + 1), weight.dtype
    )
    rows = np.arange(channels_out) * stride * stride
    for a, dy, ky in row_taps:
        for b, dx, kx in column_taps:
            kernel[rows + a * stride + b, :, dy + reach, dx + reach] = weight[:, :, ky, kx].T
    return kernel, reach


def _taps(size: int, stride: int, pad: int) -> list[tuple[int, int, int]]:
    """``(phase, input offset, kernel tap)`` of every tap along one axis of ``size`` taps."""
    return [
        (a, d, a + pad - stride * d)
        for a in range(stride)
        for d in range(-size, size + 1)
        if 0 <= a + pad - stride * d < size
    ]
