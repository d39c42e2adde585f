"""Multiply-accumulates of an ONNX graph at one input size, from its inferred shapes.

The work a network does is fixed by its shapes: ONNX shape inference gives every
tensor's shape once the input's height and width are set, and the layers that do
nearly all the arithmetic of a convolutional network are counted from them:

- ``Conv``: every output element is a dot product over ``C_in / group * kH * kW``
  inputs, so MACs = output elements x weight elements per output channel;
- ``ConvTranspose``: every input element is scattered through ``C_out / group * kH *
  kW`` weights, so MACs = input elements x ``C_out / group * kH * kW``;
- ``MatMul`` and ``Gemm``: output elements x the shared (contracted) dimension ``K``.

Element-wise ops, pooling and activations are left out: they are memory-bound and
small next to the convolutions. Control-flow subgraphs are not entered.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from gpmask.errors import GpmaskError

COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def count_macs(graph_path: str | os.PathLike, input_shape: Sequence[int]) -> int:
    """MACs of the graph at ``graph_path`` run on one input of ``input_shape`` (NCHW)."""
    import onnx

    model = onnx.load(str(graph_path), load_external_data=False)
    _fix_input_shape(model, input_shape)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        raise GpmaskError(f"{graph_path}: ONNX shape inference failed at {input_shape} "
                          f"({exc})") from exc
    shapes = _known_shapes(model)
    return sum(_node_macs(node, shapes) for node in model.graph.node
               if node.op_type in COUNTED_OPS)


def _fix_input_shape(model, input_shape: Sequence[int]) -> None:
    """Give the graph's (first non-initializer) input the static ``input_shape``."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != len(input_shape):
        raise GpmaskError(f"graph input {inputs[0].name!r} has {len(dims)} dimensions, "
                          f"not {len(input_shape)}")
    for dim, value in zip(dims, input_shape, strict=True):
        dim.Clear()
        dim.dim_value = int(value)


def _known_shapes(model) -> dict[str, tuple[int, ...]]:
    """Tensor name -> static shape, for every tensor whose dimensions are all known."""
    shapes = {tensor.name: tuple(tensor.dims) for tensor in model.graph.initializer}
    graph = model.graph
    for value in (*graph.input, *graph.value_info, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.type.HasField("tensor_type") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    return shapes


def _node_macs(node, shapes: dict[str, tuple[int, ...]]) -> int:
    def shape(name: str) -> tuple[int, ...]:
        if name not in shapes:
            raise GpmaskError(f"{node.op_type} node {node.name!r}: shape of {name!r} unknown "
                              f"after shape inference; cannot count its MACs")
        return shapes[name]

    out = int(np.prod(shape(node.output[0]), dtype=np.int64))
    if node.op_type == "Conv":
        weight = shape(node.input[1])
        return out * int(np.prod(weight[1:], dtype=np.int64))
    if node.op_type == "ConvTranspose":
        x, weight = shape(node.input[0]), shape(node.input[1])
        return int(np.prod(x, dtype=np.int64)) * int(np.prod(weight[1:], dtype=np.int64))
    a = shape(node.input[0])
    if node.op_type == "Gemm":
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        return out * (a[0] if trans_a else a[1])
    return out * a[-1]  # MatMul
