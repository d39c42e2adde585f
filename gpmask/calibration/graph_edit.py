"""Small helpers the CPU graph rewrites share: channel counts and initializer clean-up."""

from __future__ import annotations

import onnx


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
