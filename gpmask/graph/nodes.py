"""Small helpers the CPU graph rewrites share: node checks, channel counts, clean-up."""

from __future__ import annotations

from typing import Any

import onnx
from onnx import helper


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of ``node``'s attribute ``name``, or ``default`` when it has none."""
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name),
                default)


def is_plain_convolution(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    """A named 2-D Conv of one group whose weights (and bias, if any) are initializers:
    one whose weights a rewrite can change."""
    if node.op_type != "Conv" or not node.name or node.input[1] not in initializers:
        return False
    if len(node.input) > 2 and node.input[2] and node.input[2] not in initializers:
        return False
    return attribute(node, "group", 1) == 1 and len(initializers[node.input[1]].dims) == 4


def channel_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Channel count (dimension 1) of every tensor whose count shape inference knows."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    counts = {}
    for info in (*graph.input, *graph.value_info, *graph.output):
        dims = info.type.tensor_type.shape.dim
        if len(dims) >= 2 and dims[1].HasField("dim_value"):
            counts[info.name] = dims[1].dim_value
    return counts


def drop_replaced_initializers(graph: onnx.GraphProto, replaced: set[str]) -> None:
    """Remove the initializers in ``replaced`` that no node reads any more."""
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used or t.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept)
